"""RescaleNet residual blocks, for 2D images and 3D clips alike.

A block is the official code's bottleneck (``models/rescale.py``) with the layer
classes injected (:class:`ConvLayers`: ``nn.Conv2d`` ... or ``nn.Conv3d`` ...):

* branch: ``AddBias -> conv -> [Dropout] -> ReLU`` per conv (no ReLU after the last);
* shortcut: the identity, or ``AvgPool(stride) -> AddBias -> 1x1 conv`` (gain-1 init)
  when the stride or the width changes;
* sum: ``relu(alpha_k * shortcut(x) + (m_k / sqrt(L)) * branch(x))``
  (:class:`~rescalenet.layers.RescaledResidual`);
* init: He fan-in times ``branch_init_gain(k, L, n, p)`` on each of the ``n`` branch
  convs (:func:`~rescalenet.rescale.branch_init_gain`).

``forward_reference`` is that computation module by module: the specification, and
what the tests compare the fast path with. Once every AddBias is calibrated, and when
:func:`rescalenet.fast.can_fuse_block` proves that nothing would see the difference,
``forward`` runs :func:`rescalenet.fast.fused_block_forward` instead. Both read the
block's affine pieces from :meth:`RescaleBlock.folded_branch` and
:meth:`RescaleBlock.folded_shortcut`, which :func:`rescalenet.fold_for_inference`
uses too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

from . import fast
from .layers import AddBias, ChannelMultiplier, RescaledResidual, VariancePreservingPool
from .rescale import branch_init_gain, init_branch_weight_, init_linear_preserving_, residual_scale, shortcut_scale

__all__ = ["ConvLayers", "LAYERS_2D", "LAYERS_3D", "RescaleBlock", "BasicBlock", "Bottleneck",
           "BLOCK_MULTIPLIERS", "SHORTCUT_POOLS"]

SHORTCUT_POOLS = ("avg", "avg-vp")
# 'inner_vector': the scalar m_k plus a per-channel multiplier after every inner ReLU
# (the official code's commented-out variant); the others are RescaledResidual's.
BLOCK_MULTIPLIERS = ("scalar", "vector", "inner_vector", "none")

Size = Union[int, Tuple[int, ...]]


@dataclass(frozen=True)
class ConvLayers:
    """The layer classes of a RescaleNet: what makes it 2D or 3D."""

    conv: Type[nn.Module]
    avg_pool: Type[nn.Module]
    max_pool: Type[nn.Module]
    dropout: Type[nn.Module]
    global_pool: Type[nn.Module]
    spatial_dims: int


LAYERS_2D = ConvLayers(nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.Dropout2d, nn.AdaptiveAvgPool2d, 2)
LAYERS_3D = ConvLayers(nn.Conv3d, nn.AvgPool3d, nn.MaxPool3d, nn.Dropout3d, nn.AdaptiveAvgPool3d, 3)


def conv_layer(layers: ConvLayers, cin: int, cout: int, kernel: Size, stride: Size = 1, groups: int = 1) -> nn.Module:
    """A bias-free conv with 'same' zero padding ``(k - 1) // 2`` per dim."""
    padding = tuple((k - 1) // 2 for k in kernel) if isinstance(kernel, tuple) else (kernel - 1) // 2
    return layers.conv(cin, cout, kernel, stride, padding, groups=groups, bias=False)


class RescaleBlock(nn.Module):
    """What every RescaleNet block shares: the shortcut, the rescaled sum, the init,
    the affine pieces the fast path and the folding read, and the forward dispatch.

    Subclasses build ``addbias1``, ``conv1``, ``mult1`` ... (``_build_branch``) and
    write ``forward_reference``.

    Args:
        inplanes, planes: input channels and the stage's width (the output has
            ``planes * expansion`` channels).
        index, num_blocks: the block index ``k = c + i`` and the number ``L`` of
            residual blocks in the whole network.
        stride: the block's stride (an int, or one per dim: ``(t, h, w)`` in 3D).
        groups, base_width: ResNeXt cardinality and width (bottlenecks).
        multiplier: ``m_k``: ``'scalar'``, ``'vector'``, ``'inner_vector'`` or ``'none'``.
        drop_conv: the dropout rate after every branch conv.
        kernels: the kernel of each branch conv (default: the 2D layout's).
        layers: :data:`LAYERS_2D` or :data:`LAYERS_3D`.
        calibration_steps: training passes each AddBias averages its mean over.
        depth_scaled_init: the official depth-scaled branch init (``False``: plain He
            init, an ablation).
        shortcut_pool: ``'avg'`` (official) or ``'avg-vp'``: the downsample shortcut's
            pool rescaled to keep the variance (:class:`~rescalenet.layers.VariancePreservingPool`).
    """

    expansion: int = 1
    num_branch_layers: int = 0
    default_kernels: Tuple[Size, ...] = ()
    fused: bool = True  # rescalenet.fast; RescaleNet.set_fused_forward

    def __init__(
        self,
        inplanes: int,
        planes: int,
        index: int,
        num_blocks: int,
        stride: Size = 1,
        groups: int = 1,
        base_width: int = 64,
        multiplier: str = "scalar",
        drop_conv: float = 0.0,
        kernels: Optional[Sequence[Size]] = None,
        layers: ConvLayers = LAYERS_2D,
        calibration_steps: int = 8,
        depth_scaled_init: bool = True,
        shortcut_pool: str = "avg",
    ) -> None:
        super().__init__()
        if multiplier not in BLOCK_MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {BLOCK_MULTIPLIERS}, got {multiplier!r}")
        if shortcut_pool not in SHORTCUT_POOLS:
            raise ValueError(f"shortcut_pool must be one of {SHORTCUT_POOLS}, got {shortcut_pool!r}")
        kernels = tuple(self.default_kernels if kernels is None else kernels)
        if len(kernels) != self.num_branch_layers:
            raise ValueError(f"{type(self).__name__} has {self.num_branch_layers} convs, got kernels {kernels}")
        out_planes = planes * self.expansion
        self.index = index
        self.num_blocks = num_blocks
        self.drop_conv = drop_conv
        self.spatial_dims = layers.spatial_dims
        self.calibration_steps = calibration_steps
        self.depth_scaled_init = depth_scaled_init
        self.drop = layers.dropout(drop_conv) if drop_conv > 0 else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.downsample: Optional[nn.Sequential] = None
        strided = any(s != 1 for s in (stride if isinstance(stride, tuple) else (stride,)))
        if strided or inplanes != out_planes:
            # average-pool the stride away, then AddBias and a 1x1 conv (official code)
            pool = layers.avg_pool(stride, stride, ceil_mode=True, count_include_pad=False) if strided \
                else nn.Identity()
            if strided and shortcut_pool == "avg-vp":
                pool = VariancePreservingPool(pool, calibration_steps)
            self.downsample = nn.Sequential(
                pool,
                self._addbias(inplanes),
                layers.conv(inplanes, out_planes, 1, bias=False),
            )
        self.rescale = RescaledResidual(
            shortcut_scale(index), residual_scale(num_blocks),
            "scalar" if multiplier == "inner_vector" else multiplier,
            channels=out_planes, spatial_dims=layers.spatial_dims,
        )
        width = self._build_branch(inplanes, planes, stride, groups, base_width, kernels, layers)
        # the official per-channel vectors after the inner ReLUs (identity otherwise)
        for i in range(1, self.num_branch_layers):
            self.add_module(f"mult{i}", ChannelMultiplier(width, layers.spatial_dims)
                            if multiplier == "inner_vector" else nn.Identity())

    def _addbias(self, channels: int) -> AddBias:
        return AddBias(channels, calibration_steps=self.calibration_steps)

    def _build_branch(self, inplanes: int, planes: int, stride: Size, groups: int, base_width: int,
                      kernels: Tuple[Size, ...], layers: ConvLayers) -> int:
        """Add ``addbias1``, ``conv1`` ... in forward order; return the inner width."""
        raise NotImplementedError

    def forward_reference(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    # -- parts ---------------------------------------------------------------------
    def branch_layers(self) -> List[nn.Module]:
        return [getattr(self, f"conv{i}") for i in range(1, self.num_branch_layers + 1)]

    def branch_shifts(self) -> List[AddBias]:
        """The AddBias before each branch conv."""
        return [getattr(self, f"addbias{i}") for i in range(1, self.num_branch_layers + 1)]

    def reset_parameters(self) -> None:
        if self.depth_scaled_init:
            gain = branch_init_gain(self.index, self.num_blocks, self.num_branch_layers, self.drop_conv)
        else:  # ablation: He init with the dropout compensation only
            gain = (1.0 - self.drop_conv) ** 0.5
        for conv in self.branch_layers():
            init_branch_weight_(conv, gain)
        if self.downsample is not None:
            init_linear_preserving_(self.downsample[2])
        if self.rescale._scale is not None:
            nn.init.ones_(self.rescale._scale)
        for m in self.modules():
            if isinstance(m, ChannelMultiplier):
                nn.init.ones_(m._scale)

    def residual_sum(self, x: Tensor, branch: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.rescale(shortcut, branch))

    # -- the block as affine pieces (read by rescalenet.fast and rescalenet.fold) -------
    def folded_branch(self, dtype: Optional[torch.dtype] = None) -> List[Tuple[nn.Module, Tensor, Tensor]]:
        """``(conv, weight, input shift)`` per branch conv: the branch is
        ``conv_n(relu(... relu(conv_1(x + s_1)) ...) + s_n)`` (dropout aside), with
        ``s_i = addbias_i.shift()`` and the branch factor ``m_k / sqrt(L)``
        (``rescale.branch_weight()``, per output channel for ``'vector'``) multiplied
        into the last weight. ``dtype``: compute in it (the folding uses float64)."""
        steps = []
        last = self.num_branch_layers
        for i, (conv, addbias) in enumerate(zip(self.branch_layers(), self.branch_shifts()), 1):
            weight = conv.weight if dtype is None else conv.weight.to(dtype)
            if i == last:
                factor = self.rescale.branch_weight()
                if isinstance(factor, Tensor):
                    factor = factor.to(weight.dtype).view((-1,) + (1,) * (weight.dim() - 1))
                weight = weight * factor
            steps.append((conv, weight, addbias.shift(dtype)))
        return steps

    def folded_shortcut(self, dtype: Optional[torch.dtype] = None) -> Optional[Tuple[nn.Module, nn.Module, Tensor, Tensor]]:
        """``(pool, conv, weight, input shift)`` of the downsample shortcut with
        ``alpha_k`` multiplied into the weight, or ``None`` for the identity
        shortcut (whose ``alpha_k`` stays in the sum)."""
        if self.downsample is None:
            return None
        pool, addbias, conv = self.downsample
        weight = conv.weight if dtype is None else conv.weight.to(dtype)
        return pool, conv, weight * self.rescale.shortcut_scale, addbias.shift(dtype)

    # -- forward -------------------------------------------------------------------------
    def can_fuse(self) -> bool:
        """Whether ``forward`` runs the fused path (enabled, and provably the same)."""
        return self.fused and fast.can_fuse_block(self)

    def forward(self, x: Tensor) -> Tensor:
        if self.can_fuse() and fast.fusing_pays(x):
            return fast.fused_block_forward(self, x)
        return self.forward_reference(x)


class BasicBlock(RescaleBlock):
    """Two 3x3 convs, the stride on the first; init exponent 1/(2*2) = 1/4."""

    expansion = 1
    num_branch_layers = 2
    default_kernels = (3, 3)

    def _build_branch(self, inplanes, planes, stride, groups, base_width, kernels, layers) -> int:
        if groups != 1 or base_width != 64:
            raise ValueError(f"{type(self).__name__} only supports groups=1 and base_width=64")
        self.addbias1 = self._addbias(inplanes)
        self.conv1 = conv_layer(layers, inplanes, planes, kernels[0], stride)
        self.addbias2 = self._addbias(planes)
        self.conv2 = conv_layer(layers, planes, planes, kernels[1])
        return planes

    def forward_reference(self, x: Tensor) -> Tensor:
        """Module by module, as the official code (used while calibrating)."""
        out = self.mult1(self.relu(self.drop(self.conv1(self.addbias1(x)))))
        out = self.drop(self.conv2(self.addbias2(out)))
        return self.residual_sum(x, out)


class Bottleneck(RescaleBlock):
    """1x1 -> 3x3 (stride, groups) -> 1x1 convs; init exponent 1/(2*3) = 1/6."""

    expansion = 4
    num_branch_layers = 3
    default_kernels = (1, 3, 1)

    def _build_branch(self, inplanes, planes, stride, groups, base_width, kernels, layers) -> int:
        width = int(planes * (base_width / 64.0)) * groups
        self.addbias1 = self._addbias(inplanes)
        self.conv1 = conv_layer(layers, inplanes, width, kernels[0])
        self.addbias2 = self._addbias(width)
        self.conv2 = conv_layer(layers, width, width, kernels[1], stride, groups)
        self.addbias3 = self._addbias(width)
        self.conv3 = conv_layer(layers, width, planes * self.expansion, kernels[2])
        return width

    def forward_reference(self, x: Tensor) -> Tensor:
        """Module by module, as the official code (used while calibrating)."""
        out = self.mult1(self.relu(self.drop(self.conv1(self.addbias1(x)))))
        out = self.mult2(self.relu(self.drop(self.conv2(self.addbias2(out)))))
        out = self.drop(self.conv3(self.addbias3(out)))
        return self.residual_sum(x, out)
