# Baseline for configs/slowonly_rescale18_fashion.py: the same recognizer, data and
# schedule with MMAction2's ResNet3dSlowOnly R-18 + BatchNorm (the SlowOnly layout of
# the recipe: 1x7x7 stem without temporal stride, stages 4-5 inflated, no lateral
# connections), from scratch (pretrained=None); BN statistics are trained
# (norm_eval=False, as in the recipe).
_base_ = './slowonly_rescale18_fashion.py'

model = dict(
    backbone=dict(
        _delete_=True,  # drop RescaleResNet3dSlowOnly's keys
        type='ResNet3dSlowOnly',
        depth=18,
        pretrained=None,
        lateral=False,
        conv1_kernel=(1, 7, 7),
        conv1_stride_t=1,
        pool1_stride_t=1,
        inflate=(0, 0, 1, 1),
        norm_eval=False))
# no weight decay on BN's scale and shift (the RescaleNet config exempts its biases and multipliers)
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.))
