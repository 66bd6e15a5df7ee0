# configs/mask_rcnn_r18_bn_fashion.py with GroupNorm (32 groups) instead of BatchNorm
# in the backbone, the norm of mmdet's from-scratch recipe
# (configs/scratch/mask-rcnn_r50-scratch_fpn_gn-all_6x_coco.py). That recipe also puts
# GN into the FPN and the heads; here they stay norm-free as in every other model of
# the comparison, so the backbone is the only difference.
_base_ = './mask_rcnn_r18_bn_fashion.py'

model = dict(backbone=dict(norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))
