# configs/mask_rcnn_rescale18_fashion.py (Fashion-COCO, from scratch, same detector
# and schedule) with a RescaleNet-50 backbone.
_base_ = './mask_rcnn_rescale18_fashion.py'

model = dict(
    backbone=dict(depth=50),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
