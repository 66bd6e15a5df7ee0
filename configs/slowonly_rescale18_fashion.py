# SlowOnly with a normalization-free RescaleNet-18 3D backbone, from scratch, on
# Fashion-Clips: 8-frame 40x40 clips of one real Fashion-MNIST item moving across the
# frame, labelled with its class (10 classes; projects/video/fashion_clips.py, written
# by `make data`). Everything here (head, data, schedule) is shared with the BN
# baseline configs/slowonly_r18_bn_fashion.py, which replaces only the backbone.
#
#   python -m projects.video.fashion_clips --output data/fashion_clips
#   mim train mmaction2 configs/slowonly_rescale18_fashion.py --work-dir work_dirs/video_rescale18
#   mim test mmaction2 configs/slowonly_rescale18_fashion.py \
#       --checkpoint work_dirs/video_rescale18/epoch_3.pth --work-dir work_dirs/video_rescale18/test
#
# (validation while training: the val split; `mim test`: the test split.)
_base_ = './slowonly_rescale50_8x8_k400.py'

num_classes = 10
model = dict(
    backbone=dict(depth=18),
    cls_head=dict(in_channels=512, num_classes=num_classes))  # dropout 0.5 as in the recipe

data_root = 'data/fashion_clips'
train_pipeline = [
    dict(type='SampleFrames', clip_len=8, frame_interval=1, num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='Flip', flip_ratio=0.5),  # the label is the item's class: a mirrored item keeps it
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
test_pipeline = [
    dict(type='SampleFrames', clip_len=8, frame_interval=1, num_clips=1, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
train_dataloader = dict(
    _delete_=True,
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='RawframeDataset',
        ann_file=f'{data_root}/train_list.txt',
        data_prefix=dict(img=f'{data_root}/train'),
        filename_tmpl='img_{:05}.jpg',
        pipeline=train_pipeline))
val_dataloader = dict(
    _delete_=True,
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='RawframeDataset',
        ann_file=f'{data_root}/val_list.txt',
        data_prefix=dict(img=f'{data_root}/val'),
        filename_tmpl='img_{:05}.jpg',
        pipeline=test_pipeline,
        test_mode=True))
test_dataloader = dict(
    _delete_=True,
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='RawframeDataset',
        ann_file=f'{data_root}/test_list.txt',
        data_prefix=dict(img=f'{data_root}/test'),
        filename_tmpl='img_{:05}.jpg',
        pipeline=test_pipeline,
        test_mode=True))

# The recipe's optimizer (SGD, momentum 0.9, weight decay 1e-4, gradient clipping at
# 40) and shape of schedule (linear warm-up, then cosine to zero), sized to a CPU run:
# batch 16, 3 epochs of the 4,000 training clips (750 iterations), 100 warm-up
# iterations (the AddBias means calibrate in the first 8).
max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_begin=1, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=0, by_epoch=True, begin=0, end=max_epochs),
]
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=1, max_keep_ckpts=1, save_best=None))
log_processor = dict(window_size=50)
auto_scale_lr = dict(enable=False, base_batch_size=16)
