# Baseline for configs/mask_rcnn_rescale18_fashion.py: the same detector, data and
# schedule with mmdet's ResNet-18 + BatchNorm, from scratch as in mmdet's
# configs/scratch recipes (nothing frozen, init_cfg=None, zero_init_residual=False, no
# weight decay on the norm layers). BN is trained and its batch statistics used in
# training (norm_eval=False), as it must be for a backbone that starts from random weights.
_base_ = './mask_rcnn_rescale18_fashion.py'

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,  # drop RescaleNetBackbone's keys
        type='ResNet',
        depth=18,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=norm_cfg,
        norm_eval=False,
        zero_init_residual=False,
        style='pytorch',
        init_cfg=None))
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.))
