# A small Mask R-CNN with a RescaleNet-18 backbone for the generated shapes set of
# `make demo` (projects/detection/synthetic_coco.py: 128x128 images, 3 classes) and
# the end-to-end tests; trains in minutes on a CPU. The data root is passed on the
# command line, e.g. (see projects/detection/demo.py):
#   mim train mmdet configs/mask_rcnn_rescale18_synthetic_demo.py --cfg-options
#     train_dataloader.dataset.data_root=DIR/ val_dataloader.dataset.data_root=DIR/
#     test_dataloader.dataset.data_root=DIR/
#     val_evaluator.ann_file=DIR/annotations/instances_val2017.json
#     test_evaluator.ann_file=DIR/annotations/instances_val2017.json
_base_ = './mask_rcnn_rescale50.py'

classes = ('square', 'disk', 'triangle')
num_classes = len(classes)
width = 64  # FPN / RoI head channels (256 in the COCO config)

model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width,
                  anchor_generator=dict(scales=[4])),  # 16-256 px anchors for 24-56 px shapes
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

image_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
data_root = 'data/synthetic_coco/'
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes),
                 filter_cfg=dict(filter_empty_gt=True, min_size=8), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# Short run from scratch: many small steps (batch 2, 32 iterations per epoch of the
# 64-image set), a short warm-up (the AddBias means calibrate in the first 8
# iterations at a tiny lr) and one step decay; gradients stay clipped at 35.
max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[int(max_epochs * 0.75)], gamma=0.1),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=8),
    checkpoint=dict(type='SafeCheckpointHook', interval=max_epochs, max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(window_size=8)
auto_scale_lr = dict(enable=False, base_batch_size=2)
