"""Baselines for RescaleNet, built by name from the one model registry (kind
``'baseline'``), so that every comparison (training harness, diagnostics, benchmarks)
uses the same data, schedule and seed.

=========================================  =============================================
name                                       what it is
=========================================  =============================================
``resnet{18,34}``, ``resnet_{cifar*}``     BatchNorm ResNet, basic blocks, official recipe
                                           (:mod:`.basic`: dropout, zero-init last BN)
``resnet{50,101,152}``                     torchvision's BatchNorm ResNet (:mod:`.bottleneck`)
``gn_...``                                 the same with GroupNorm (32 groups, fewer when narrow)
``plain_...``                              no normalization at all: ``relu(x + F(x))``, He init
``fixup_...``                              Fixup (Zhang et al. 2019)
``skipinit_...``                           SkipInit (De & Smith 2020)
``nf_resnet26``, ``nf_resnet50``           timm's NF-ResNets (needs ``timm``)
``narrow_rescale_d{D}``, ``narrow_plain_d{D}``  depth-study nets (:mod:`.narrow`)
=========================================  =============================================

``{cifar*}`` is every CIFAR-layout depth of :data:`rescalenet.resnet.CIFAR_SETTINGS`
(``cifar20``, ``cifar32``, ``cifar56``, ``cifar110``, ``cifar1202``, ``wrn40_4``), the
layout of the ``rescalenet_cifar*`` models. ``create_baseline(name, num_classes=1000,
drop_fc=0., drop_conv=0., in_chans=3)``: ``drop_fc > 0`` puts a dropout before the
classifier; ``drop_conv`` (``Dropout2d`` in the stages from the third on) and
``in_chans`` exist for the basic-block baselines (:func:`accepts`).
"""
from __future__ import annotations

import re
from functools import partial
from typing import Any, Callable, Dict, List

from torch import nn

from ..registry import list_models, model_info, register_model
from ..resnet import CIFAR_SETTINGS
from .basic import METHODS, BasicResNet
from .bottleneck import BOTTLENECK_LAYERS, FixupResNet, fold_batchnorm, nf_resnet, skipinit_resnet, tv_resnet
from .narrow import NarrowResNet

__all__ = [
    "create_baseline",
    "list_baselines",
    "is_baseline",
    "accepts",
    "baseline_param_groups",
    "fold_batchnorm",
    "BasicResNet",
    "FixupResNet",
    "NarrowResNet",
]

_PREFIX = {"bn": "", "gn": "gn_", "plain": "plain_", "fixup": "fixup_", "skipinit": "skipinit_"}
_BASIC_IMAGENET = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
_NARROW = re.compile(r"^narrow_(rescale|plain)_d(\d+)$")
# what each baseline's builder takes besides num_classes, and those options' neutral values
_OPTIONS: Dict[str, tuple] = {}
_DEFAULTS = {"in_chans": 3, "drop_conv": 0.0}


def _register(name: str, layout: str, builder: Callable[..., nn.Module], options: tuple = ()) -> None:
    size = (3, 32, 32) if layout == "cifar" else (3, 224, 224)
    builder.__name__ = name
    register_model("baseline", layout, size, num_classes=10 if layout == "cifar" else 1000)(builder)
    _OPTIONS[name] = options


def _basic(method: str, layers, widths, strides, imagenet_stem: bool, num_classes: int = 1000,
           in_chans: int = 3, drop_conv: float = 0.0) -> nn.Module:
    return BasicResNet(method, layers, widths, strides, imagenet_stem, num_classes, in_chans, drop_conv)


def _bottleneck(kind: str, depth: int, num_classes: int = 1000) -> nn.Module:
    if kind == "fixup":
        return FixupResNet(BOTTLENECK_LAYERS[depth], num_classes=num_classes)
    if kind == "skipinit":
        return skipinit_resnet(depth, num_classes)
    return tv_resnet(depth, kind, num_classes)


for _method, _prefix in _PREFIX.items():
    for _depth, _layers in _BASIC_IMAGENET.items():
        _register(f"{_prefix}resnet{_depth}", "imagenet",
                  partial(_basic, _method, _layers, (64, 128, 256, 512), (1, 2, 2, 2), True),
                  ("in_chans", "drop_conv"))
    for _depth in BOTTLENECK_LAYERS:
        _register(f"{_prefix}resnet{_depth}", "imagenet", partial(_bottleneck, _method, _depth))
    for _suffix, (_n, _k) in CIFAR_SETTINGS.items():
        _register(f"{_prefix}resnet_{_suffix}", "cifar",
                  partial(_basic, _method, (_n,) * 3, (16 * _k, 32 * _k, 64 * _k), (1, 2, 2), False),
                  ("in_chans", "drop_conv"))
for _depth in (26, 50):
    _register(f"nf_resnet{_depth}", "imagenet", partial(nf_resnet, _depth), ("in_chans",))


def list_baselines() -> List[str]:
    return list_models(kind="baseline") + ["narrow_rescale_d{D}", "narrow_plain_d{D}"]


def is_baseline(name: str) -> bool:
    return name in _OPTIONS or bool(_NARROW.match(name))


def accepts(name: str, option: str) -> bool:
    """Whether baseline ``name`` takes ``option`` (``'in_chans'``, ``'drop_conv'``)."""
    return option in _OPTIONS.get(name, ())


def create_baseline(name: str, num_classes: int = 1000, drop_fc: float = 0.0, **options: Any) -> nn.Module:
    """Build a baseline by name (see the module docstring)."""
    m = _NARROW.match(name)
    if m:
        depth = int(m.group(2))
        if depth < 5 or (depth - 2) % 3:
            raise ValueError(f"{name}: depth must be 3 * blocks + 2 (e.g. 50, 200, 1001), got {depth}")
        model = NarrowResNet(m.group(1), (depth - 2) // 3, num_classes=num_classes)
    elif name in _OPTIONS:
        unknown = [k for k, v in options.items() if k not in _OPTIONS[name] and v != _DEFAULTS.get(k)]
        if unknown:
            raise ValueError(f"baseline {name!r} does not take {unknown} (it takes {list(_OPTIONS[name]) or 'none'})")
        kept = {k: v for k, v in options.items() if k in _OPTIONS[name]}
        model = model_info(name).builder(num_classes=num_classes, **kept)
    else:
        raise ValueError(f"unknown baseline {name!r}; choose from {list_baselines()}")
    if drop_fc > 0:
        if isinstance(getattr(model, "dropout", None), nn.Identity):
            model.dropout = nn.Dropout(drop_fc)
        elif isinstance(getattr(model, "fc", None), nn.Linear):
            model.fc = nn.Sequential(nn.Dropout(drop_fc), model.fc)
        elif hasattr(model, "head") and hasattr(model.head, "fc"):
            model.head.fc = nn.Sequential(nn.Dropout(drop_fc), model.head.fc)
        else:
            raise ValueError(f"{name}: cannot place dropout before the classifier")
    return model


def baseline_param_groups(model: nn.Module, name: str, lr: float, weight_decay: float) -> List[dict]:
    """Optimizer groups of the official harness for the baselines: Fixup's scalar
    biases and multipliers at ``lr / 10``, everything decayed; every other baseline:
    one group, everything decayed (as the official split, where no BN/GN name
    contains ``'_'``)."""
    if name.startswith("fixup_"):
        scalars = [p for n, p in model.named_parameters() if p.ndim <= 1 and p.numel() == 1]
        ids = {id(p) for p in scalars}
        rest = [p for p in model.parameters() if id(p) not in ids]
        return [
            dict(params=rest, lr=lr, weight_decay=weight_decay),
            dict(params=scalars, lr=lr / 10, weight_decay=weight_decay),
        ]
    return [dict(params=[p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)]
