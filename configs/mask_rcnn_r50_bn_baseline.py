# Like-for-like baseline for mask_rcnn_rescale50.py: the same detector, data pipeline,
# schedule (1000-iteration warm-up, gradient clipping at 35) and initialisation policy
# (backbone from its own init, nothing frozen), with mmdet's ResNet-50 + BatchNorm
# backbone instead of RescaleNet-50. BN is trained (norm_eval=False), as it must be
# for a backbone that starts from random weights.
#
# For the ImageNet-pretrained comparison use the stock settings on both sides:
#   --cfg-options model.backbone.frozen_stages=1 model.backbone.norm_eval=True
#     model.backbone.init_cfg.type=Pretrained model.backbone.init_cfg.checkpoint=torchvision://resnet50
_base_ = './mask_rcnn_rescale50.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch'))
