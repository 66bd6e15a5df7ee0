# SlowOnly R-50 8x8x1, Kinetics-400, trained from scratch (MMAction2's
# slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb recipe: 8 GPUs x 16 clips, SGD lr 0.2,
# 34-epoch linear warm-up then cosine to epoch 256), with the BN ResNet3dSlowOnly
# replaced by the normalization-free RescaleNet-50 3D backbone.
#
#   mim train mmaction2 configs/slowonly_rescale50_8x8_k400.py                       # 1 GPU
#   mim train mmaction2 configs/slowonly_rescale50_8x8_k400.py --gpus 8 --launcher pytorch
#   mim test mmaction2 configs/slowonly_rescale50_8x8_k400.py --checkpoint work_dirs/.../best_*.pth
#
# Data: data/kinetics400/{videos_train,videos_val,kinetics400_{train,val}_list_videos.txt}
# relative to the directory you run from (see README.md, section "Video recognition" to point elsewhere).
_base_ = 'mmaction::recognition/slowonly/slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb.py'

custom_imports = dict(imports=['projects.video'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,  # drop ResNet3dSlowOnly's norm_cfg / norm_eval / lateral / ...
        type='RescaleResNet3dSlowOnly',
        depth=50,
        # a 2D RescaleNet-50 checkpoint to inflate (ImageNet init), or None (scratch)
        pretrained=None,
        pretrained2d=True,
        # centre the features I3DHead pools, as the 2D RescaleNet classifier does
        with_final_addbias=True))

# No weight decay on the AddBias biases and the residual multipliers (official code:
# every parameter whose name contains '_'); everything else keeps the recipe's 1e-4.
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
