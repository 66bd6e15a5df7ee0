# I3D R-50 32x2x1, Kinetics-400 (MMAction2's
# i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb recipe: 8 GPUs x 8 clips,
# SGD lr 0.01, steps at 40/80 of 100 epochs) with the BN ResNet3d replaced by the
# normalization-free RescaleNet-50 3D backbone in the I3D layout (5x7x7 stem with
# temporal stride 2, temporal pools, alternating 3x1x1 inflation).
#
# The recipe starts from ImageNet weights: set model.backbone.pretrained to a 2D
# RescaleNet-50 checkpoint (rescalenet.rescalenet50 state_dict; AddBias means are
# carried over), e.g.
#   mim train mmaction2 configs/i3d_rescale50_32x2_k400.py --gpus 8 --launcher pytorch \
#       --cfg-options model.backbone.pretrained=checkpoints/rescalenet50_in1k.pth
# Without it the backbone starts from the RescaleNet init (no 2D weights are published).
_base_ = 'mmaction::recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py'

custom_imports = dict(imports=['projects.video'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='RescaleResNet3d',
        depth=50,
        pretrained=None,
        pretrained2d=True,
        conv1_kernel=(5, 7, 7),
        conv1_stride_t=2,
        pool1_stride_t=2,
        with_pool2=True,
        inflate=((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)),
        inflate_style='3x1x1',
        with_final_addbias=True))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        '._bias': dict(decay_mult=0.),
        '._scale': dict(decay_mult=0.),
    }))

# A run killed at any moment resumes with `--resume` as if nothing happened (the AddBias
# calibration goes on where it stopped), checkpoints are written atomically, a diverging
# loss stops the run with the iteration and the loss, and an annotation file pointing at
# missing images is refused before training: projects/mmengine_hooks.py,
# docs/reliability.md (the plugin in custom_imports registers the hooks).
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [dict(type='ExactResumeHook'), dict(type='DivergenceCheckHook'),
                dict(type='DataFilesCheckHook')]
