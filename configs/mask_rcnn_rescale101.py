# Mask R-CNN FPN 1x on COCO with a normalization-free RescaleNet-101 backbone: the
# RescaleNet-50 config (same schedule, no weight decay on `._bias`/`._scale`) with
# depth 101 (33 residual blocks, so every block's branch starts at 1/sqrt(33)).
_base_ = './mask_rcnn_rescale50.py'

model = dict(backbone=dict(depth=101))
