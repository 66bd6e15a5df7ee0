# configs/mask_rcnn_r18_gn_fashion.py (Fashion-COCO baseline, from scratch) at depth 50.
_base_ = './mask_rcnn_r18_gn_fashion.py'

model = dict(
    backbone=dict(depth=50),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
