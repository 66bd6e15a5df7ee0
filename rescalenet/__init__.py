"""RescaleNet: deep residual networks trained with no normalization layer.

Shao, Hu, Wang, Xue, Raj, "Is normalization indispensable for training deep neural
network?", NeurIPS 2020. Pure PyTorch; no framework import.

>>> import rescalenet
>>> model = rescalenet.rescalenet50(num_classes=1000)
"""
from .layers import AddBias, RescaledResidual, calibrate, is_calibrated, reset_calibration
from .optim import NO_DECAY_PARAM_NAMES, no_weight_decay_names, param_groups
from .rescale import (
    block_index,
    branch_init_gain,
    effective_branch_scale,
    residual_scale,
    shortcut_scale,
)
from .resnet import (
    ARCH_SETTINGS,
    BasicBlock,
    Bottleneck,
    RescaleNet,
    rescalenet18,
    rescalenet34,
    rescalenet50,
    rescalenet101,
    rescalenet152,
    rescalenet200,
    rescalenext50_32x4d,
    rescalenext101_32x8d,
)
from .resnet3d import RescaleNet3d, i3d_rescalenet50, inflate_from_2d, slowonly_rescalenet50
from .fold import fold_for_inference

__version__ = "0.1.0"

MODEL_BUILDERS = {
    "rescalenet18": rescalenet18,
    "rescalenet34": rescalenet34,
    "rescalenet50": rescalenet50,
    "rescalenet101": rescalenet101,
    "rescalenet152": rescalenet152,
    "rescalenet200": rescalenet200,
    "rescalenext50_32x4d": rescalenext50_32x4d,
    "rescalenext101_32x8d": rescalenext101_32x8d,
}


def create_model(name: str, **kwargs):
    """Build a 2D RescaleNet by name, e.g. ``create_model('rescalenet50', num_classes=10)``."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name](**kwargs)
