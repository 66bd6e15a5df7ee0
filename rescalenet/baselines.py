"""Baselines for RescaleNet, built by name, so that every comparison (training
harness, diagnostics, benchmarks) uses the same data, schedule and seed.

=====================  ==========================================================
name                   what it is
=====================  ==========================================================
``resnet{18..152}``    torchvision ResNet with BatchNorm (the normalized reference)
``gn_resnet{..}``      the same with GroupNorm(32) (the official ``--use_gn 1``)
``plain_resnet{..}``   the same with no normalization at all: ``relu(x + F(x))``,
                       He init; the network the paper's section 3 says blows up
``fixup_resnet{..}``   Fixup (Zhang et al. 2019), as in the official RescaleNet
                       repository: scalar biases, multiplier, ``L^-1/4`` init,
                       last conv and classifier zero
``skipinit_resnet{..}`` SkipInit (De & Smith 2020): no normalization, a scalar
                       gain initialised to 0 on every branch, per-channel biases
                       where BatchNorm's shift was
``nf_resnet50``        timm's NF-ResNet-50 (scaled weight standardization);
                       needs ``timm``, imported only when asked for
``narrow_rescale_d{D}``  depth-study nets: one stage of bottlenecks of width 16
``narrow_plain_d{D}``    (64 channels), ``D = 3 * blocks + 2`` layers; RescaleNet
                       blocks from :mod:`rescalenet.resnet` or plain residual ones
=====================  ==========================================================

``create_baseline(name, num_classes=1000, drop_fc=0.)``. ``drop_fc > 0`` puts a
dropout before the classifier (``fc`` becomes ``Sequential(Dropout, Linear)``).
"""
from __future__ import annotations

import math
import re
from functools import partial
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from .layers import AddBias
from .rescale import block_index
from .resnet import Bottleneck as RescaleBottleneck

__all__ = [
    "create_baseline",
    "list_baselines",
    "is_baseline",
    "FixupResNet",
    "SkipInitBottleneck",
    "NarrowResNet",
    "baseline_param_groups",
    "fold_batchnorm",
]

_TV_DEPTHS = (18, 34, 50, 101, 152)


# -- torchvision-based: BN, GN, no normalization -----------------------------------
def _tv_resnet(depth: int, norm_layer, num_classes: int) -> nn.Module:
    import torchvision.models as tvm

    return getattr(tvm, f"resnet{depth}")(num_classes=num_classes, norm_layer=norm_layer)


def _gn(channels: int) -> nn.Module:
    return nn.GroupNorm(32, channels)


def _no_norm(channels: int) -> nn.Module:
    return nn.Identity()


class _ChannelBias(nn.Module):
    """A learnable per-channel shift (BatchNorm's beta, without the normalization)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.view(1, -1, 1, 1)


# -- SkipInit --------------------------------------------------------------------
class SkipInitBottleneck(nn.Module):
    """torchvision's bottleneck with BatchNorm replaced by a per-channel bias and the
    branch multiplied by a scalar ``skipinit_gain`` initialised to 0:
    ``relu(shortcut(x) + g * F(x))``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, *_args, **_kw) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bias1 = _ChannelBias(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bias2 = _ChannelBias(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bias3 = _ChannelBias(planes * 4)
        self.skipinit_gain = nn.Parameter(torch.zeros(1))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bias1(self.conv1(x)))
        out = self.relu(self.bias2(self.conv2(out)))
        out = self.bias3(self.conv3(out)) * self.skipinit_gain
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def _skipinit_resnet(depth: int, num_classes: int) -> nn.Module:
    import torchvision.models.resnet as tvr

    if depth not in (50, 101, 152):
        raise ValueError(f"skipinit_resnet supports depths 50, 101, 152, got {depth}")
    layers = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}[depth]
    # the stem's and the downsample's norm_layer become biases too; torchvision's
    # init gives every conv He (fan-out) weights
    return tvr.ResNet(SkipInitBottleneck, layers, num_classes=num_classes, norm_layer=_ChannelBias)


# -- Fixup -----------------------------------------------------------------------
class _FixupBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None) -> None:
        super().__init__()
        self.bias1a, self.bias1b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.bias2a, self.bias2b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.bias3a, self.bias3b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.scale = nn.Parameter(torch.ones(1))
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = self.relu(self.conv2(out + self.bias2a) + self.bias2b)
        out = self.conv3(out + self.bias3a) * self.scale + self.bias3b
        shortcut = x if self.downsample is None else self.downsample(x + self.bias1a)
        return self.relu(out + shortcut)


class FixupResNet(nn.Module):
    """Fixup ResNet (bottleneck), following the Fixup ImageNet code that the official
    RescaleNet repository adapted: ``conv1``/``conv2`` of every branch drawn with
    std ``sqrt(2 / fan_out) * L**-0.25``, ``conv3`` and the classifier zero, scalar
    biases before every conv and activation, a scalar multiplier per branch."""

    def __init__(self, layers: List[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.num_layers = sum(layers)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bias1 = nn.Parameter(torch.zeros(1))
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0], 1)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.bias2 = nn.Parameter(torch.zeros(1))
        self.fc = nn.Linear(2048, num_classes)
        for m in self.modules():
            if isinstance(m, _FixupBottleneck):
                for conv in (m.conv1, m.conv2):
                    std = math.sqrt(2 / (conv.weight.shape[0] * conv.weight[0, 0].numel()))
                    nn.init.normal_(conv.weight, 0, std * self.num_layers ** (-0.25))
                nn.init.zeros_(m.conv3.weight)
                if m.downsample is not None:
                    w = m.downsample.weight
                    nn.init.normal_(w, 0, math.sqrt(2 / (w.shape[0] * w[0, 0].numel())))
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False)
        layers = [_FixupBottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [_FixupBottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.conv1(x) + self.bias1))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1) + self.bias2)


# -- depth study -----------------------------------------------------------------
class _PlainBottleneck(nn.Module):
    """``relu(x + conv3(relu(conv2(relu(conv1(x))))))`` with He fan-in init and conv
    biases: a residual network with neither normalization nor rescaling."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 1)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1)
        self.conv3 = nn.Conv2d(width, channels, 1)
        self.relu = nn.ReLU(inplace=True)
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.conv1(x))
        out = self.relu(self.conv2(out))
        return self.relu(x + self.conv3(out))


class NarrowResNet(nn.Module):
    """A single stage of ``blocks`` bottlenecks of width ``width`` (``4 * width``
    channels) behind a 3x3 stem, for studying trainability against depth at tiny
    cost. ``kind='rescale'`` uses :class:`rescalenet.resnet.Bottleneck` with the
    method's indices and init (AddBias in the stem and the head, as RescaleNet);
    ``kind='plain'`` uses plain residual blocks without normalization."""

    def __init__(self, kind: str, blocks: int, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        if kind not in ("rescale", "plain"):
            raise ValueError(f"kind must be 'rescale' or 'plain', got {kind!r}")
        channels = 4 * width
        self.kind = kind
        self.conv1 = nn.Conv2d(3, channels, 3, 1, 1, bias=kind == "plain")
        nn.init.kaiming_normal_(self.conv1.weight, nonlinearity="relu")
        if kind == "rescale":
            self.addbias1 = AddBias(channels)
            blks = []
            for i in range(blocks):
                blk = RescaleBottleneck(channels, width, block_index(i, blocks), blocks)
                blk.reset_parameters()
                blks.append(blk)
            self.blocks = nn.Sequential(*blks)
            self.final_addbias = AddBias(channels)
        else:
            nn.init.zeros_(self.conv1.bias)
            self.addbias1 = nn.Identity()
            self.blocks = nn.Sequential(*[_PlainBottleneck(channels, width) for _ in range(blocks)])
            self.final_addbias = nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels, num_classes)
        nn.init.kaiming_normal_(self.fc.weight, a=1)

    @property
    def depth(self) -> int:
        return 3 * len(self.blocks) + 2

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.relu(self.addbias1(self.conv1(x))))
        return self.fc(self.final_addbias(x).mean((2, 3)))


# -- registry ---------------------------------------------------------------------
def _nf_resnet50(num_classes: int) -> nn.Module:
    try:
        import timm
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the nf_resnet50 baseline needs timm: pip install timm") from e
    return timm.create_model("nf_resnet50", num_classes=num_classes)


def _builders() -> Dict[str, Callable[[int], nn.Module]]:
    b: Dict[str, Callable[[int], nn.Module]] = {}
    for d in _TV_DEPTHS:
        b[f"resnet{d}"] = partial(_tv_resnet, d, None)
        b[f"gn_resnet{d}"] = partial(_tv_resnet, d, _gn)
        b[f"plain_resnet{d}"] = partial(_tv_resnet, d, _no_norm)
    for d, layers in {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}.items():
        b[f"fixup_resnet{d}"] = partial(FixupResNet, layers)
        b[f"skipinit_resnet{d}"] = partial(_skipinit_resnet, d)
    b["nf_resnet50"] = _nf_resnet50
    return b


BASELINES = _builders()
_NARROW = re.compile(r"^narrow_(rescale|plain)_d(\d+)$")


def list_baselines() -> List[str]:
    return sorted(BASELINES) + ["narrow_rescale_d{D}", "narrow_plain_d{D}"]


def is_baseline(name: str) -> bool:
    return name in BASELINES or bool(_NARROW.match(name))


def create_baseline(name: str, num_classes: int = 1000, drop_fc: float = 0.0) -> nn.Module:
    """Build a baseline by name (see the module docstring)."""
    m = _NARROW.match(name)
    if m:
        depth = int(m.group(2))
        if depth < 5 or (depth - 2) % 3:
            raise ValueError(f"{name}: depth must be 3 * blocks + 2 (e.g. 50, 200, 1001), got {depth}")
        model = NarrowResNet(m.group(1), (depth - 2) // 3, num_classes=num_classes)
    elif name in BASELINES:
        model = BASELINES[name](num_classes=num_classes) if name != "nf_resnet50" else _nf_resnet50(num_classes)
    else:
        raise ValueError(f"unknown baseline {name!r}; choose from {list_baselines()}")
    if drop_fc > 0:
        head = "fc" if hasattr(model, "fc") and isinstance(model.fc, nn.Linear) else None
        if head is None and hasattr(model, "head") and hasattr(model.head, "fc"):
            model.head.fc = nn.Sequential(nn.Dropout(drop_fc), model.head.fc)
        elif head is not None:
            model.fc = nn.Sequential(nn.Dropout(drop_fc), model.fc)
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


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a torchvision ResNet with every BatchNorm folded into the
    conv before it (the fair inference baseline)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()

    def fold(parent: nn.Module) -> None:
        names = list(parent._modules)
        for i, n in enumerate(names):
            child = parent._modules[n]
            if isinstance(child, nn.BatchNorm2d) and i > 0 and isinstance(parent._modules[names[i - 1]], nn.Conv2d):
                parent._modules[names[i - 1]] = fuse_conv_bn_eval(parent._modules[names[i - 1]], child)
                parent._modules[n] = nn.Identity()
            elif isinstance(child, nn.BatchNorm2d) and n.startswith("bn"):
                conv_name = "conv" + n[2:]
                if isinstance(parent._modules.get(conv_name), nn.Conv2d):
                    parent._modules[conv_name] = fuse_conv_bn_eval(parent._modules[conv_name], child)
                    parent._modules[n] = nn.Identity()
            else:
                fold(child)

    fold(model)
    left = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise RuntimeError(f"fold_batchnorm: could not fold {left}")
    return model
