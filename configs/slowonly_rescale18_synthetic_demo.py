# A CPU-sized run of configs/slowonly_rescale50_8x8_k400.py: the same recipe and plugin
# with a SlowOnly RescaleNet-18 on generated clips (a square moving in one of 8
# directions, projects/video/synthetic_clips.py), so the whole mim train / mim test
# path runs in minutes on a CPU without Kinetics:
#
#   python -m projects.video.synthetic_clips data/synthetic_clips
#   mim train mmaction2 configs/slowonly_rescale18_synthetic_demo.py --work-dir work_dirs/video_demo
#   mim test mmaction2 configs/slowonly_rescale18_synthetic_demo.py \
#       --checkpoint work_dirs/video_demo/epoch_4.pth --work-dir work_dirs/video_demo
_base_ = './slowonly_rescale50_8x8_k400.py'

model = dict(
    backbone=dict(depth=18),
    cls_head=dict(in_channels=512, num_classes=8, dropout_ratio=0.0))

data_root = 'data/synthetic_clips'
train_pipeline = [
    dict(type='SampleFrames', clip_len=8, frame_interval=1, num_clips=1),
    dict(type='RawFrameDecode'),
    # no Flip: it would turn a square moving left into one moving right
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
val_pipeline = [
    dict(type='SampleFrames', clip_len=8, frame_interval=1, num_clips=1, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
train_dataloader = dict(
    _delete_=True,
    batch_size=8,
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
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='RawframeDataset',
        ann_file=f'{data_root}/val_list.txt',
        data_prefix=dict(img=f'{data_root}/val'),
        filename_tmpl='img_{:05}.jpg',
        pipeline=val_pipeline,
        test_mode=True))
test_dataloader = val_dataloader

train_cfg = dict(max_epochs=4, val_begin=1, val_interval=2)
# 8 warm-up iterations (the AddBias calibration passes), then constant
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=8)]
optim_wrapper = dict(optimizer=dict(lr=0.05))
default_hooks = dict(
    logger=dict(interval=4),
    checkpoint=dict(interval=1, max_keep_ckpts=2, save_best='auto'))
auto_scale_lr = dict(enable=False)
