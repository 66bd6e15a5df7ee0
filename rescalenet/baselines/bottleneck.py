"""Bottleneck baselines in the ImageNet layout (ResNet-50/101/152), for the comparisons
of the official RescaleNet repository:

* torchvision's ResNet with BatchNorm, GroupNorm(32) (the official ``--use_gn 1``) or no
  normalization at all;
* Fixup (Zhang et al. 2019) as the official RescaleNet repository adapted it: scalar
  biases, multiplier, ``L^-1/4`` init, last conv and classifier zero;
* SkipInit (De & Smith 2020): a scalar gain initialised to 0 on every branch,
  per-channel biases where BatchNorm's shift was;
* timm's NF-ResNets (scaled weight standardization), imported only when asked for.
"""
from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor, nn

from .basic import ChannelBias, group_norm

__all__ = ["tv_resnet", "FixupResNet", "SkipInitBottleneck", "skipinit_resnet", "nf_resnet", "fold_batchnorm"]

BOTTLENECK_LAYERS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def tv_resnet(depth: int, norm: str, num_classes: int) -> nn.Module:
    """torchvision's ResNet-``depth`` with ``norm`` in ``'bn'``, ``'gn'``, ``'plain'``."""
    import torchvision.models as tvm

    norm_layer = {"bn": None, "gn": group_norm, "plain": lambda c: nn.Identity()}[norm]
    return getattr(tvm, f"resnet{depth}")(num_classes=num_classes, norm_layer=norm_layer)


# -- SkipInit --------------------------------------------------------------------
class SkipInitBottleneck(nn.Module):
    """torchvision's bottleneck with BatchNorm replaced by a per-channel bias and the
    branch multiplied by a scalar ``skipinit_gain`` initialised to 0:
    ``relu(shortcut(x) + g * F(x))``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, *_args, **_kw) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bias1 = ChannelBias(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bias2 = ChannelBias(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bias3 = ChannelBias(planes * 4)
        self.skipinit_gain = nn.Parameter(torch.zeros(1))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bias1(self.conv1(x)))
        out = self.relu(self.bias2(self.conv2(out)))
        out = self.bias3(self.conv3(out)) * self.skipinit_gain
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def skipinit_resnet(depth: int, num_classes: int) -> nn.Module:
    import torchvision.models.resnet as tvr

    layers = BOTTLENECK_LAYERS[depth]
    # the stem's and the downsample's norm_layer become biases too; torchvision's
    # init gives every conv He (fan-out) weights
    return tvr.ResNet(SkipInitBottleneck, layers, num_classes=num_classes, norm_layer=ChannelBias)


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


def nf_resnet(depth: int, num_classes: int, in_chans: int = 3) -> nn.Module:
    try:
        import timm
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"the nf_resnet{depth} baseline needs timm: pip install timm") from e
    return timm.create_model(f"nf_resnet{depth}", num_classes=num_classes, in_chans=in_chans)




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
