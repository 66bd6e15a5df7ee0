"""Basic-block baselines in both layouts: the CIFAR family (3x3/1 stem, 3 stages of
widths 16-32-64, He et al. 2016 section 4.2) and ImageNet-layout ResNet-18/34.

One network, :class:`BasicResNet`, with torchvision's module names (``conv1``, ``bn1``,
``layerN.M.conv1`` ... ``downsample.0/1``, ``fc``) and the block that makes the method
injected:

* :class:`NormBasicBlock` with ``norm_layer`` BatchNorm (the normalized reference, with
  the official RescaleNet repository's recipe: ``Dropout2d`` after the convs of the third
  stage on, the last BN of each branch initialised to 0), GroupNorm, or none at all
  (``plain``: ``relu(x + F(x))`` with conv biases and He init, the network the paper's
  section 3 says blows up);
* :class:`FixupBasicBlock`: Fixup (Zhang, Dauphin, Ma 2019) as in its official CIFAR code:
  scalar biases before each conv and activation, a scalar multiplier, the first conv
  drawn with std ``sqrt(2 / fan_out) * L ** -0.5`` (``L ** (-1 / (2 m - 2))`` for
  ``m = 2`` layers), the second conv and the classifier zero, the downsample's 1x1 conv
  with std ``sqrt(2 / fan_out)``;
* :class:`SkipInitBasicBlock`: SkipInit (De & Smith 2020): no normalization, a scalar gain
  initialised to 0 on every branch, a per-channel bias where BatchNorm's shift was.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, List, Optional, Sequence, Type

import torch
from torch import Tensor, nn

__all__ = ["BasicResNet", "NormBasicBlock", "FixupBasicBlock", "SkipInitBasicBlock", "ChannelBias",
           "group_norm"]


class ChannelBias(nn.Module):
    """A learnable per-channel shift (BatchNorm's beta, without the normalization)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.view(1, -1, 1, 1)


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with ``groups`` groups (fewer when the layer is narrower: 16-channel
    CIFAR layers get 8 groups of 2)."""
    return nn.GroupNorm(min(groups, channels // 2), channels)


def _fan_out_std(weight: Tensor) -> float:
    """He (ReLU) std over the fan-out, ``sqrt(2 / (out_channels * kernel area))``: Fixup's init."""
    return math.sqrt(2 / (weight.shape[0] * weight[0, 0].numel()))


def _conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)


class NormBasicBlock(nn.Module):
    """``relu(drop(norm2(conv2(relu(drop(norm1(conv1(x))))))) + shortcut(x))``; the
    shortcut is a strided 1x1 conv + norm when the shape changes. ``norm_layer=None``:
    no normalization, conv biases instead."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, norm_layer: Optional[Callable[[int], nn.Module]],
                 drop_conv: float = 0.0) -> None:
        super().__init__()
        plain = norm_layer is None
        norm = (lambda c: nn.Identity()) if plain else norm_layer
        self.conv1 = _conv3x3(inplanes, planes, stride, bias=plain)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes, bias=plain)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout2d(drop_conv) if drop_conv > 0 else nn.Identity()
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=plain), norm(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.drop(self.bn1(self.conv1(x))))
        out = self.drop(self.bn2(self.conv2(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class FixupBasicBlock(nn.Module):
    """Fixup's basic block: ``relu(scale * conv2(relu(conv1(x + a1) + b1) + a2) + b2 + shortcut(x + a1))``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, drop_conv: float = 0.0) -> None:
        super().__init__()
        self.bias1a, self.bias1b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.bias2a, self.bias2b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.scale = nn.Parameter(torch.ones(1))
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.conv2 = _conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout2d(drop_conv) if drop_conv > 0 else nn.Identity()
        self.downsample = nn.Conv2d(inplanes, planes, 1, stride, bias=False) \
            if stride != 1 or inplanes != planes else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.drop(self.conv1(x + self.bias1a)) + self.bias1b)
        out = self.drop(self.conv2(out + self.bias2a)) * self.scale + self.bias2b
        shortcut = x if self.downsample is None else self.downsample(x + self.bias1a)
        return self.relu(out + shortcut)


class SkipInitBasicBlock(nn.Module):
    """SkipInit's basic block: ``relu(shortcut(x) + g * F(x))``, ``g`` a scalar
    initialised to 0, per-channel biases where BatchNorm's shifts were."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, drop_conv: float = 0.0) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bias1 = ChannelBias(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bias2 = ChannelBias(planes)
        self.skipinit_gain = nn.Parameter(torch.zeros(1))
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout2d(drop_conv) if drop_conv > 0 else nn.Identity()
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), ChannelBias(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.drop(self.bias1(self.conv1(x))))
        out = self.drop(self.bias2(self.conv2(out))) * self.skipinit_gain
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


METHODS = ("bn", "gn", "plain", "fixup", "skipinit")


class BasicResNet(nn.Module):
    """A basic-block ResNet baseline (see the module docstring).

    Args:
        method: ``'bn'``, ``'gn'``, ``'plain'``, ``'fixup'`` or ``'skipinit'``.
        layers: blocks per stage.
        widths: each stage's width.
        strides: each stage's stride.
        imagenet_stem: 7x7/2 conv + 3x3/2 max-pool (else a 3x3/1 conv).
        num_classes, in_chans, drop_conv (``Dropout2d`` after the convs of the stages
        from the third on, as the official recipe), drop_fc (before the classifier).
    """

    def __init__(self, method: str, layers: Sequence[int], widths: Sequence[int], strides: Sequence[int],
                 imagenet_stem: bool, num_classes: int = 10, in_chans: int = 3, drop_conv: float = 0.0,
                 drop_fc: float = 0.0) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.num_layers = sum(layers)
        stem_ch = 64 if imagenet_stem else 16
        norm = {"bn": nn.BatchNorm2d, "gn": group_norm}.get(method)
        bias_stem = method in ("plain", "skipinit")
        self.conv1 = (nn.Conv2d(in_chans, stem_ch, 7, 2, 3, bias=bias_stem) if imagenet_stem
                      else nn.Conv2d(in_chans, stem_ch, 3, 1, 1, bias=bias_stem))
        self.bn1 = norm(stem_ch) if norm else nn.Identity()
        self.bias1 = nn.Parameter(torch.zeros(1)) if method == "fixup" else None
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet_stem else nn.Identity()
        block: Callable[..., nn.Module] = {
            "fixup": FixupBasicBlock, "skipinit": SkipInitBasicBlock,
        }.get(method, partial(NormBasicBlock, norm_layer=norm))
        inplanes = stem_ch
        for i, (n, width, stride) in enumerate(zip(layers, widths, strides)):
            drop = drop_conv if i >= 2 else 0.0
            blocks: List[nn.Module] = []
            for j in range(n):
                blocks.append(block(inplanes, width, stride if j == 0 else 1, drop_conv=drop))
                inplanes = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.bias2 = nn.Parameter(torch.zeros(1)) if method == "fixup" else None
        self.dropout = nn.Dropout(drop_fc) if drop_fc > 0 else nn.Identity()
        self.fc = nn.Linear(inplanes, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He fan-in, as the official repository's BN baseline (Fixup overrides below)
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, NormBasicBlock) and isinstance(m.bn2, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.zeros_(m.bn2.weight)  # official BN baseline: every block starts as identity
            elif isinstance(m, FixupBasicBlock):
                w = m.conv1.weight
                nn.init.normal_(w, 0, _fan_out_std(w) * self.num_layers ** -0.5)
                nn.init.zeros_(m.conv2.weight)
                if m.downsample is not None:  # He fan-out, as the Fixup code (and the bottleneck version here)
                    nn.init.normal_(m.downsample.weight, 0, _fan_out_std(m.downsample.weight))
        if self.method == "fixup":
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.bn1(x) if self.bias1 is None else x + self.bias1
        x = self.maxpool(self.relu(x))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        x = self.avgpool(x).flatten(1)
        if self.bias2 is not None:
            x = x + self.bias2
        return self.fc(self.dropout(x))
