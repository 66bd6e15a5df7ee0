"""RescaleNet 2D: ResNet / ResNeXt with rescaled residuals and no normalization layer.

Structure follows torchvision's ``resnet.py`` (post-activation ResNet v1.5, stride on
the 3x3 conv) and its module names (``conv1``, ``layer1`` ... ``layer4``, ``fc``), with
the normalization layers replaced as in the official RescaleNet code:

* block:  ``AddBias -> conv -> [Dropout2d] -> ReLU`` per branch layer (no ReLU after the
  last), then ``relu(alpha_k * shortcut(x) + (m_k / sqrt(L)) * branch(x))``;
* downsample shortcut: ``AvgPool(stride) -> AddBias -> 1x1 conv`` (gain-1 init);
* stem: ``7x7/2 conv -> AddBias -> ReLU -> maxpool``;
* head: ``AddBias -> global average pool -> dropout -> linear``.

The rescaling coefficients and the depth-scaled init come from
:mod:`rescalenet.rescale`; ``AddBias`` and ``RescaledResidual`` from
:mod:`rescalenet.layers`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import MULTIPLIERS, AddBias, RescaledResidual
from .rescale import (
    block_index,
    branch_init_gain,
    init_branch_weight_,
    init_linear_preserving_,
    residual_scale,
    shortcut_scale,
)

__all__ = [
    "RescaleNet",
    "BasicBlock",
    "Bottleneck",
    "ARCH_SETTINGS",
    "rescalenet18",
    "rescalenet34",
    "rescalenet50",
    "rescalenet101",
    "rescalenet152",
    "rescalenet200",
    "rescalenext50_32x4d",
    "rescalenext101_32x8d",
]

NO_DECAY_PARAM_NAMES = ("_bias", "_scale")  # AddBias biases and residual multipliers


def _dropout(p: float) -> nn.Module:
    return nn.Dropout2d(p) if p > 0 else nn.Identity()


class _RescaleBlock(nn.Module):
    """What both block types share: the shortcut, the rescaled sum and the init."""

    expansion: int = 1
    num_branch_layers: int = 0

    def __init__(
        self,
        inplanes: int,
        planes: int,
        index: int,
        num_blocks: int,
        stride: int = 1,
        multiplier: str = "scalar",
        drop_conv: float = 0.0,
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.index = index
        self.num_blocks = num_blocks
        self.drop_conv = drop_conv
        self.drop = _dropout(drop_conv)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or inplanes != out_planes:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
                if stride != 1
                else nn.Identity(),
                AddBias(inplanes),
                nn.Conv2d(inplanes, out_planes, 1, bias=False),
            )
        self.rescale = RescaledResidual(
            shortcut_scale(index), residual_scale(num_blocks), multiplier, channels=out_planes
        )

    def branch_layers(self) -> List[nn.Conv2d]:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        gain = branch_init_gain(
            self.index, self.num_blocks, self.num_branch_layers, self.drop_conv
        )
        for conv in self.branch_layers():
            init_branch_weight_(conv, gain)
        if self.downsample is not None:
            init_linear_preserving_(self.downsample[2])
        if self.rescale._scale is not None:
            nn.init.ones_(self.rescale._scale)

    def residual_sum(self, x: Tensor, branch: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.rescale(shortcut, branch))


class BasicBlock(_RescaleBlock):
    """Two 3x3 convs; init exponent 1/(2*2) = 1/4."""

    expansion = 1
    num_branch_layers = 2

    def __init__(
        self,
        inplanes: int,
        planes: int,
        index: int,
        num_blocks: int,
        stride: int = 1,
        groups: int = 1,
        base_width: int = 64,
        multiplier: str = "scalar",
        drop_conv: float = 0.0,
    ) -> None:
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        super().__init__(inplanes, planes, index, num_blocks, stride, multiplier, drop_conv)
        self.addbias1 = AddBias(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.addbias2 = AddBias(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)

    def branch_layers(self) -> List[nn.Conv2d]:
        return [self.conv1, self.conv2]

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.drop(self.conv1(self.addbias1(x))))
        out = self.drop(self.conv2(self.addbias2(out)))
        return self.residual_sum(x, out)


class Bottleneck(_RescaleBlock):
    """1x1 -> 3x3 (stride, groups) -> 1x1 convs; init exponent 1/(2*3) = 1/6."""

    expansion = 4
    num_branch_layers = 3

    def __init__(
        self,
        inplanes: int,
        planes: int,
        index: int,
        num_blocks: int,
        stride: int = 1,
        groups: int = 1,
        base_width: int = 64,
        multiplier: str = "scalar",
        drop_conv: float = 0.0,
    ) -> None:
        super().__init__(inplanes, planes, index, num_blocks, stride, multiplier, drop_conv)
        width = int(planes * (base_width / 64.0)) * groups
        self.addbias1 = AddBias(inplanes)
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.addbias2 = AddBias(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.addbias3 = AddBias(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)

    def branch_layers(self) -> List[nn.Conv2d]:
        return [self.conv1, self.conv2, self.conv3]

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.drop(self.conv1(self.addbias1(x))))
        out = self.relu(self.drop(self.conv2(self.addbias2(out))))
        out = self.drop(self.conv3(self.addbias3(out)))
        return self.residual_sum(x, out)


# depth -> (block, blocks per stage)
ARCH_SETTINGS: Dict[int, Tuple[Type[_RescaleBlock], Tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
    200: (Bottleneck, (3, 24, 36, 3)),
}


class RescaleNet(nn.Module):
    """A normalization-free ResNet/ResNeXt with rescaled residuals.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage (4 stages).
        num_classes: classifier outputs; 0 builds no ``fc`` (``forward`` returns the
            pooled features), as in timm.
        in_chans: input channels.
        groups, width_per_group: ResNeXt cardinality and width.
        multiplier: learnable branch multiplier ``m_k``: ``'scalar'``, ``'vector'`` or ``'none'``.
        c: offset of the block index ``k = c + i``; ``None`` means ``L - 1`` (official code).
        drop_conv: ``Dropout2d`` rate after every branch conv of stages 3-4 (official: 0.03).
        drop_fc: dropout before the classifier (official: 0.3).
        out_indices: if given, the network is a feature extractor: ``forward`` returns
            the tuple of stage outputs (strides 4, 8, 16, 32 for indices 0-3) and no
            head is built, as detection backbones expect.
        frozen_stages: stages ``0..frozen_stages`` are frozen (stage 0 is the stem):
            no gradients, kept in eval mode, so their AddBias never recalibrates.
            ``-1`` freezes nothing.
        calibration_steps: training passes each ``AddBias`` averages its mean over.
    """

    def __init__(
        self,
        block: Type[_RescaleBlock],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        groups: int = 1,
        width_per_group: int = 64,
        multiplier: str = "scalar",
        c: Optional[int] = None,
        drop_conv: float = 0.0,
        drop_fc: float = 0.0,
        out_indices: Optional[Sequence[int]] = None,
        frozen_stages: int = -1,
        calibration_steps: int = 8,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must give 4 positive block counts, got {list(layers)}")
        if multiplier not in MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {MULTIPLIERS}, got {multiplier!r}")
        if out_indices is not None:
            out_indices = tuple(out_indices)
            if not out_indices or any(i not in (0, 1, 2, 3) for i in out_indices):
                raise ValueError(f"out_indices must be a non-empty subset of (0, 1, 2, 3), got {out_indices}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        self.block = block
        self.layers = tuple(layers)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.groups = groups
        self.base_width = width_per_group
        self.multiplier = multiplier
        self.drop_conv = drop_conv
        self.drop_rate = drop_fc
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.grad_checkpointing = False
        self.num_blocks = sum(layers)
        self.c = self.num_blocks - 1 if c is None else c

        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.addbias1 = AddBias(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

        self.inplanes = 64
        self._next_block = 0
        stage_drop = (0.0, 0.0, drop_conv, drop_conv)  # official: Dropout2d in stages 3-4 only
        self.layer1 = self._make_layer(64, layers[0], 1, stage_drop[0])
        self.layer2 = self._make_layer(128, layers[1], 2, stage_drop[1])
        self.layer3 = self._make_layer(256, layers[2], 2, stage_drop[2])
        self.layer4 = self._make_layer(512, layers[3], 2, stage_drop[3])
        self.num_features = 512 * block.expansion

        self.feature_info = [
            dict(num_chs=64 * block.expansion * 2**i, reduction=4 * 2**i, module=f"layer{i + 1}")
            for i in range(4)
        ]
        if out_indices is None:
            self.final_addbias = AddBias(self.num_features)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(drop_fc) if drop_fc > 0 else nn.Identity()
            self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if calibration_steps != 8:
            for m in self.modules():
                if isinstance(m, AddBias):
                    m.calibration_steps = calibration_steps
        self.reset_parameters()
        self._freeze_stages()

    def _make_layer(self, planes: int, blocks: int, stride: int, drop_conv: float) -> nn.Sequential:
        layers = []
        for j in range(blocks):
            k = block_index(self._next_block, self.num_blocks, self.c)
            layers.append(
                self.block(
                    self.inplanes,
                    planes,
                    index=k,
                    num_blocks=self.num_blocks,
                    stride=stride if j == 0 else 1,
                    groups=self.groups,
                    base_width=self.base_width,
                    multiplier=self.multiplier,
                    drop_conv=drop_conv,
                )
            )
            self.inplanes = planes * self.block.expansion
            self._next_block += 1
        return nn.Sequential(*layers)

    # -- init -------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """The official init: He fan-in (gain sqrt 2) stem, depth-scaled branches,
        gain-1 shortcut convs and classifier, zero AddBias and unit multipliers.
        Calibration state is left as it is."""
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_in", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, _RescaleBlock):
                m.reset_parameters()
            elif isinstance(m, AddBias):
                nn.init.zeros_(m._bias)
        if isinstance(getattr(self, "fc", None), nn.Linear):
            init_linear_preserving_(self.fc)
            bound = 1.0 / self.num_features**0.5  # PyTorch's default bias init, as official
            nn.init.uniform_(self.fc.bias, -bound, bound)

    # -- freezing ---------------------------------------------------------------
    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        mods: List[nn.Module] = [self.conv1, self.addbias1]
        mods += [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        return mods

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> "RescaleNet":
        super().train(mode)
        self._freeze_stages()
        return self

    # -- forward ----------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"RescaleNet expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"RescaleNet was built for {self.in_chans} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.addbias1(self.conv1(x))))

    def _run_stage(self, stage: nn.Sequential, x: Tensor) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            for blk in stage:
                x = checkpoint(blk, x, use_reentrant=False)
            return x
        return stage(x)

    def forward_stages(self, x: Tensor, out_indices: Sequence[int] = (0, 1, 2, 3)) -> List[Tensor]:
        """Outputs of the stages in ``out_indices`` (strides 4, 8, 16, 32)."""
        self._check_input(x)
        x = self.stem(x)
        outs = []
        last = max(out_indices)
        for i in range(last + 1):
            x = self._run_stage(getattr(self, f"layer{i + 1}"), x)
            if i in out_indices:
                outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map (stride 32), before the head."""
        return self.forward_stages(x, (3,))[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.avgpool(self.final_addbias(x)).flatten(1)
        x = self.dropout(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, ...]]:
        if self.out_indices is not None:
            return tuple(self.forward_stages(x, self.out_indices))
        return self.forward_head(self.forward_features(x))

    # -- timm-style model API ---------------------------------------------------
    def no_weight_decay(self) -> set:
        """Names of the AddBias biases and branch multipliers (no weight decay)."""
        return {n for n, _ in self.named_parameters() if n.rsplit(".", 1)[-1] in NO_DECAY_PARAM_NAMES}

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        if self.out_indices is not None:
            raise RuntimeError("a feature extractor (out_indices set) has no classifier")
        if global_pool != "avg":
            raise ValueError(f"RescaleNet only supports global_pool='avg', got {global_pool!r}")
        self.num_classes = num_classes
        device = self.conv1.weight.device
        if num_classes > 0:
            self.fc = nn.Linear(self.num_features, num_classes, device=device)
            init_linear_preserving_(self.fc)
        else:
            self.fc = nn.Identity()

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r"^conv1|^addbias1",
            blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)",
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable


def _rescalenet(depth: int, **kwargs: Any) -> RescaleNet:
    if depth not in ARCH_SETTINGS:
        raise ValueError(f"unknown RescaleNet depth {depth!r}; choose from {sorted(ARCH_SETTINGS)}")
    block, layers = ARCH_SETTINGS[depth]
    return RescaleNet(block, layers, **kwargs)


def rescalenet18(**kwargs: Any) -> RescaleNet:
    """RescaleNet-18: basic blocks (2, 2, 2, 2), L = 8. 11.7 M parameters at 1000 classes."""
    return _rescalenet(18, **kwargs)


def rescalenet34(**kwargs: Any) -> RescaleNet:
    """RescaleNet-34: basic blocks (3, 4, 6, 3), L = 16. 21.8 M parameters at 1000 classes."""
    return _rescalenet(34, **kwargs)


def rescalenet50(**kwargs: Any) -> RescaleNet:
    """RescaleNet-50: bottlenecks (3, 4, 6, 3), L = 16. 25.5 M parameters at 1000 classes."""
    return _rescalenet(50, **kwargs)


def rescalenet101(**kwargs: Any) -> RescaleNet:
    """RescaleNet-101: bottlenecks (3, 4, 23, 3), L = 33. 44.5 M parameters at 1000 classes."""
    return _rescalenet(101, **kwargs)


def rescalenet152(**kwargs: Any) -> RescaleNet:
    """RescaleNet-152: bottlenecks (3, 8, 36, 3), L = 50. 60.1 M parameters at 1000 classes."""
    return _rescalenet(152, **kwargs)


def rescalenet200(**kwargs: Any) -> RescaleNet:
    """RescaleNet-200: bottlenecks (3, 24, 36, 3), L = 66 (the official ``rescale200``).
    64.6 M parameters at 1000 classes."""
    return _rescalenet(200, **kwargs)


def rescalenext50_32x4d(**kwargs: Any) -> RescaleNet:
    """RescaleNeXt-50 32x4d: bottlenecks (3, 4, 6, 3), 32 groups of width 4. 25.0 M parameters."""
    return RescaleNet(Bottleneck, (3, 4, 6, 3), groups=32, width_per_group=4, **kwargs)


def rescalenext101_32x8d(**kwargs: Any) -> RescaleNet:
    """RescaleNeXt-101 32x8d: bottlenecks (3, 4, 23, 3), 32 groups of width 8. 88.7 M parameters."""
    return RescaleNet(Bottleneck, (3, 4, 23, 3), groups=32, width_per_group=8, **kwargs)
