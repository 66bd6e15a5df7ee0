"""RescaleNet: deep residual networks trained with no normalization layer.

Shao, Hu, Wang, Xue, Raj, "Is normalization indispensable for training deep neural
network?", NeurIPS 2020. Pure PyTorch; no framework import.

>>> import rescalenet
>>> model = rescalenet.rescalenet50(num_classes=1000)
>>> rescalenet.list_models(kind="2d", layout="cifar")[:2]
['rescalenet_cifar110', 'rescalenet_cifar1202']
"""
from .layers import AddBias, ChannelMultiplier, RescaledResidual, calibrate, is_calibrated, reset_calibration
from .optim import NO_DECAY_PARAM_NAMES, no_weight_decay_names, param_groups
from .rescale import (
    block_index,
    branch_init_gain,
    effective_branch_scale,
    residual_scale,
    shortcut_scale,
)
from .blocks import BasicBlock, Bottleneck, RescaleBlock
from .resnet import (
    ARCH_SETTINGS,
    CIFAR_SETTINGS,
    MODEL_CFGS,
    RescaleNet,
    RescaleNetCfg,
    StemCfg,
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
from . import baselines  # noqa: F401  (registers the baselines)
from .registry import create_model, list_models, model_info
from .checkpoint import CheckpointError, extract_state_dict, read_checkpoint

__version__ = "0.1.0"

# name -> builder of every 2D RescaleNet (the registry's kind '2d'), for torchvision-style use
MODEL_BUILDERS = {name: model_info(name).builder for name in list_models(kind="2d")}
