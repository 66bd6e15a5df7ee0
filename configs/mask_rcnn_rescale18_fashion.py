# Mask R-CNN FPN with a RescaleNet-18 backbone, from scratch, on Fashion-COCO: real
# Fashion-MNIST items pasted onto 128x128 canvases (2-4 per canvas, 24-56 px, instance
# masks from the items' own pixels, 10 categories; projects/detection/fashion_coco.py,
# written by `make data`). This file holds the detector, data and schedule that every
# model of benchmarks/bench_detection_real.py shares; the baselines
# (mask_rcnn_r{18,50}_{bn,gn}_fashion.py) and mask_rcnn_rescale50_fashion.py replace
# only the backbone.
#
#   python -m projects.detection.fashion_coco --output data/fashion_coco
#   mim train mmdet configs/mask_rcnn_rescale18_fashion.py --work-dir work_dirs/det_rescale18
#   mim test mmdet configs/mask_rcnn_rescale18_fashion.py \
#       --checkpoint work_dirs/det_rescale18/epoch_2.pth --work-dir work_dirs/det_rescale18/test
#
# (validation while training: the val split; `mim test`: the test split.)
_base_ = './mask_rcnn_rescale50.py'

classes = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
           'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')  # label order, category ids 1-10
num_classes = len(classes)
width = 64  # FPN / RoI head channels (256 in the COCO config): 128 px canvases, CPU budget

model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width,
                  anchor_generator=dict(scales=[4])),  # 16-256 px anchors for 8-56 px items
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),  # 2-4 items per canvas: 64 RoIs (16 positives) suffice
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
data_root = 'data/fashion_coco/'


metainfo = dict(classes=classes)
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train2017.json', data_prefix=dict(img='train2017/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/'),
                 pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_test2017.json', data_prefix=dict(img='test2017/'),
                 pipeline=test_pipeline))
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = dict(ann_file=data_root + 'annotations/instances_test2017.json')

# From scratch, one schedule for every backbone, sized to a CPU: batch 4, 2 epochs of the
# 2,000 training canvases (1,000 iterations), SGD with momentum, a linear warm-up over
# the first 200 iterations (the AddBias means calibrate in the first 8), lr x 0.1 at
# iteration 750; gradients clipped at 35 (as in mask_rcnn_rescale50.py). The
# iteration counts assume the default set of projects/detection/fashion_coco.py.
max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.02))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=200),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=1000, milestones=[750], gamma=0.1),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(window_size=50)
auto_scale_lr = dict(enable=False, base_batch_size=4)
