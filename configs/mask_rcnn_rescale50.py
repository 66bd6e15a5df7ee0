# Mask R-CNN FPN 1x on COCO with a normalization-free RescaleNet-50 backbone.
#
#   mim train mmdet configs/mask_rcnn_rescale50.py                       # 1 GPU (or CPU)
#   mim train mmdet configs/mask_rcnn_rescale50.py --gpus 8 --launcher pytorch
#   mim test  mmdet configs/mask_rcnn_rescale50.py --checkpoint work_dirs/mask_rcnn_rescale50/epoch_12.pth
#
# Everything but the backbone, its initialisation and the optimizer settings is the
# stock mmdet 3.3.0 `mask-rcnn_r50_fpn_1x_coco.py` (data under data/coco/, see
# README.md, section "Detection" to point elsewhere). Its FPN, RPN and RoI heads have no
# normalization layer, so with this backbone the whole detector is norm-free.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

# Registers RescaleNetBackbone (and the weights_only allowlist for checkpoints).
custom_imports = dict(imports=['projects.detection'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        # _delete_: drop the inherited ResNet's keys (norm_cfg, norm_eval, style,
        # num_stages, its torchvision init_cfg); RescaleNetBackbone refuses them.
        _delete_=True,
        type='RescaleNetBackbone',
        depth=50,
        out_indices=(0, 1, 2, 3),
        # Nothing frozen: with no init_cfg the backbone starts from RescaleNet's
        # own depth-scaled init. With ImageNet weights from `python -m rescalenet.train`
        # freeze the stem and stage 1 as the BN config does:
        #   --cfg-options model.backbone.frozen_stages=1
        #     model.backbone.init_cfg.type=Pretrained
        #     model.backbone.init_cfg.checkpoint=PATH/TO/checkpoint.pth
        # The checkpoint's calibrated AddBias means are loaded with the weights.
        frozen_stages=-1,
        multiplier='scalar'),
    neck=dict(in_channels=[256, 512, 1024, 2048]))

# Schedule for a normalization-free backbone. Without BatchNorm nothing rescales the
# activations after an over-large step, so:
# * the warm-up is twice the stock one (1000 iterations from lr x 0.001): the first
#   8 iterations calibrate every AddBias mean on training images, and the branch
#   multipliers and biases must not move much before those means are frozen;
# * gradients are clipped to a global norm of 35 (as in mmdet's from-scratch GN
#   recipes), which stops a rare large-loss batch from blowing the weights up;
# * no weight decay on the AddBias biases (`._bias`) and the residual multipliers
#   (`._scale`): decaying them pulls each block's output scale towards zero, the
#   role BN's gamma/beta play and which mmdet also exempts for norm layers. The keys
#   match the full parameter names, e.g. backbone.layer1.0.addbias1._bias.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2),
    paramwise_cfg=dict(custom_keys={
        '._bias': dict(decay_mult=0.),
        '._scale': dict(decay_mult=0.),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

# A run killed at any moment resumes with `--resume` as if nothing happened (the AddBias
# calibration goes on where it stopped), checkpoints are written atomically, a diverging
# loss stops the run with the iteration and the loss, and an annotation file pointing at
# missing images is refused before training: projects/mmengine_hooks.py,
# docs/reliability.md (the plugin in custom_imports registers the hooks).
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [dict(type='ExactResumeHook'), dict(type='DivergenceCheckHook'),
                dict(type='DataFilesCheckHook')]
