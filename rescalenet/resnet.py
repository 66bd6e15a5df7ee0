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
import torch.nn.functional as F
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


# -- fused forward ---------------------------------------------------------------
# Once every AddBias is calibrated its forward is a pure shift ``x + v``, and the
# shift can be computed inside the next convolution instead of as a separate pass
# over the activations (which also has to be kept for the backward pass):
#
# * conv(x + v) = conv(x) + conv(v * 1): for a 1x1 conv without padding the second
#   term is the per-channel constant ``W v`` (the conv's bias; on channels-last input
#   the conv is one GEMM with it in the epilogue); for a padded conv it is a map that
#   is that constant inside and differs where the kernel overlaps the zero padding,
#   computed exactly as a convolution of a one-channel image of ones (a few
#   thousand multiply-adds) and added in place to the conv output. Each such conv is
#   one autograd node with a hand-written backward (``_ShiftedConv``);
# * the branch factor ``m_k / sqrt(L)`` is multiplied into the last conv's weights
#   (Dropout2d commutes with it), ``alpha_k`` into the downsample conv's weights;
# * post-conv AddBias (stem) becomes the conv's bias, the head's AddBias is added
#   after the global average pool.
#
# The folded weights are functions of the parameters and the backward is exact, so
# values and gradients equal those of the module-by-module forward up to float
# rounding; ``set_fused_forward(False)`` runs that reference forward. The fused path
# is taken only when no hook watches a bypassed submodule and no AddBias still has
# to see its input (calibration). docs/results.md, "GPU runs", has what each piece
# measured on an H200.


def channels_last(x: Tensor) -> bool:
    """True for a 4-D/5-D tensor stored channels-last (``N, H, W, C`` in memory) whose
    channels-first strides differ (so a 1-pixel map is not counted)."""
    return x.dim() >= 4 and not x.is_contiguous() and x.movedim(1, -1).is_contiguous()


class _AvgPoolUpsampleGrad(torch.autograd.Function):
    """``avg_pool(x, s)`` for sizes divisible by ``s``, whose gradient is computed as
    a nearest-neighbour upsampling (exact there): the channels-last backward kernels
    of average pooling are several times slower (CUDA and CPU, measured)."""

    @staticmethod
    def forward(ctx, x: Tensor, s: int) -> Tensor:
        ctx.s = s
        return F.avg_pool2d(x, s, s) if x.dim() == 4 else F.avg_pool3d(x, s, s)

    @staticmethod
    def backward(ctx, grad: Tensor):
        s = ctx.s
        return F.interpolate(grad * (1.0 / s ** (grad.dim() - 2)), scale_factor=s, mode="nearest"), None


def downsample_pool(pool: nn.Module, x: Tensor) -> Tensor:
    """``pool(x)`` for a shortcut's ``AvgPool`` (or ``Identity``), through
    :class:`_AvgPoolUpsampleGrad` where that is exact and faster (channels-last
    input, every pooled size divisible by the square/cubic stride)."""
    if isinstance(pool, (nn.AvgPool2d, nn.AvgPool3d)) and channels_last(x):
        k, st = pool.kernel_size, pool.stride
        s = k if isinstance(k, int) else k[0]
        uniform = all(v == s for v in ((k,) if isinstance(k, int) else k) + ((st,) if isinstance(st, int) else st))
        if uniform and pool.padding in (0, (0,) * (x.dim() - 2)) and all(d % s == 0 for d in x.shape[2:]):
            return _AvgPoolUpsampleGrad.apply(x, s)
    return pool(x)


_ONES: Dict[Tuple, Tensor] = {}


def _ones(size: Tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A one-channel map of ones, ``(1, 1, *size)``, kept per size/dtype/device: every
    step of a fixed-size training run needs the same few (read-only) maps."""
    key = (size, dtype, device)
    if key not in _ONES:
        if len(_ONES) > 64:
            _ONES.clear()
        with torch.inference_mode(False):  # usable by autograd even if first made under inference
            _ONES[key] = torch.ones((1, 1) + size, dtype=dtype, device=device)
    return _ONES[key]


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype autocast would run a convolution of ``x`` in."""
    dev = x.device.type
    if x.dtype != torch.float64 and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _memory_format(x: Tensor) -> torch.memory_format:
    if not channels_last(x):
        return torch.contiguous_format
    return torch.channels_last if x.dim() == 4 else torch.channels_last_3d


class _ShiftedConv(torch.autograd.Function):
    """``conv(x + shift, weight)`` for a zero-padded, bias-free conv (2D or 3D) as one
    autograd node with a hand-written backward.

    Forward: ``conv(x, W)`` plus the shift's contribution, ``taps[o, t] = sum_i W[o, i, t]
    shift[i]`` (per group) pushed through the conv geometry: a per-channel constant
    when there is no padding (the conv's bias; for a channels-last 1x1 conv, stride 1,
    one group, a GEMM over the ``(N*H*W, C)`` view with that bias in its epilogue),
    else the conv of a one-channel map of ones with ``taps`` (exact at the borders),
    added in place in the output's memory format.

    Backward: ``convolution_backward`` (or the GEMM's two products) for ``x`` and
    ``W``; the shift's part from the output gradient summed over the batch (and
    space, without padding): ``dW += dtaps * shift``, ``dshift = sum dtaps * W``.

    One node instead of the ~30 small autograd nodes the same maths costs written
    with tensor ops: on a GPU the fused forward was bound by their launch overhead
    (measured on an H200, bf16, batch 128). Runs in autocast's dtype when autocast is
    on (the shift's per-tap contribution too, as autocast computes ``x + shift`` in
    the reference forward); not twice differentiable (``set_fused_forward(False)`` is).
    """

    @staticmethod
    def forward(ctx, x, weight, shift, stride, padding, dilation, groups):
        dt = _compute_dtype(x)
        nd = x.dim() - 2
        out_ch, in_per_group = weight.shape[:2]
        kernel = tuple(weight.shape[2:])
        g = groups
        xc, wc = x.to(dt), weight.to(dt)
        # contribution of the shift through each kernel tap, in the weight's dtype: (out, taps)
        shift = shift.to(weight.dtype)
        if g == 1 and all(k == 1 for k in kernel):
            taps = torch.mv(weight.view(out_ch, in_per_group), shift).unsqueeze(1)
        elif g == 1:
            taps = (weight * shift.view((1, -1) + (1,) * nd)).sum(1).view(out_ch, -1)
        else:
            taps = torch.einsum("goit,gi->got", weight.reshape(g, out_ch // g, in_per_group, -1),
                                shift.reshape(g, in_per_group)).reshape(out_ch, -1)
        geometry = (stride, padding, dilation, False, (0,) * nd)
        fmt = _memory_format(xc)
        # every operand is already in ``dt``: autocast, if on, has nothing left to cast
        if not any(padding):
            const = (taps.view(out_ch) if taps.shape[1] == 1 else taps.sum(1)).to(dt)
            if g == 1 and all(k == 1 for k in kernel) and all(v == 1 for v in stride) \
                    and fmt is not torch.contiguous_format:
                # written through a view of a channels-last output (autograd refuses
                # in-place ops, such as the next ReLU, on views made in a Function)
                out = torch.empty((x.shape[0], out_ch) + x.shape[2:], dtype=dt, device=x.device,
                                  memory_format=fmt)
                torch.addmm(const, xc.movedim(1, -1).reshape(-1, in_per_group), wc.view(out_ch, -1).t(),
                            out=out.movedim(1, -1).view(-1, out_ch))
                mode = "gemm"
            else:
                out = torch.ops.aten.convolution(xc, wc, const, *geometry, g)
                mode = "const"
        else:
            out = torch.ops.aten.convolution(xc, wc, None, *geometry, g)
            ones = _ones(tuple(x.shape[2:]), dt, x.device)
            edge = torch.ops.aten.convolution(ones, taps.to(dt).view((out_ch, 1) + kernel), None, *geometry, 1)
            out.add_(edge if fmt is torch.contiguous_format else edge.contiguous(memory_format=fmt))
            mode = "edge"
        ctx.mode, ctx.geometry, ctx.groups, ctx.x_dtype = mode, geometry, g, x.dtype
        ctx.save_for_backward(xc, wc, weight, shift, taps)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        xc, wc, weight, shift, taps = ctx.saved_tensors
        need_x, need_w, need_s = ctx.needs_input_grad[:3]
        g, mode = ctx.groups, ctx.mode
        out_ch, in_per_group = weight.shape[:2]
        gx = gw = gs = None
        acc = torch.promote_types(grad.dtype, torch.float32)  # sums of bf16 gradients in float32
        if mode == "gemm":
            g_rows = grad.movedim(1, -1).reshape(-1, out_ch)
            if need_x:
                gx = (g_rows @ wc.flatten(1)).view(xc.movedim(1, -1).shape).movedim(-1, 1)
            if need_w:
                gw = (g_rows.t() @ xc.movedim(1, -1).reshape(-1, in_per_group)).view(weight.shape)
            g_taps = g_rows.sum(0, dtype=acc).unsqueeze(1)
        else:
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad, xc, wc, None, *ctx.geometry, g, [need_x, need_w, False])
            if mode == "const":
                dims = [0] + list(range(2, grad.dim()))
                g_taps = grad.sum(dims, dtype=acc).unsqueeze(1)
            else:
                g_edge = grad.sum(0, keepdim=True)
                ones = _ones(tuple(xc.shape[2:]), xc.dtype, xc.device)
                g_taps = torch.ops.aten.convolution_backward(
                    g_edge, ones, taps.to(xc.dtype).view((out_ch, 1) + tuple(weight.shape[2:])), None,
                    *ctx.geometry, 1, [False, True, False])[1].reshape(out_ch, -1)
        # (a constant contribution reaches every tap alike)
        g_taps = g_taps.to(weight.dtype).expand(taps.shape).reshape(g, out_ch // g, 1, -1)
        if need_w:
            gw = gw.to(weight.dtype) + (g_taps * shift.to(weight.dtype).reshape(g, 1, in_per_group, 1)).reshape(weight.shape)
        if need_s:
            if g == 1 and taps.shape[1] == 1:
                gs = torch.mv(weight.view(out_ch, in_per_group).t(), g_taps.view(out_ch))
            elif g == 1:
                gs = (weight * g_taps.view((out_ch, 1) + tuple(weight.shape[2:]))).sum([0] + list(range(2, weight.dim())))
            else:
                gs = torch.einsum("got,goit->gi", g_taps.squeeze(2),
                                  weight.reshape(g, out_ch // g, in_per_group, -1)).reshape(-1)
            gs = gs.to(shift.dtype)
        if gx is not None:
            gx = gx.to(ctx.x_dtype)
        return gx, gw, gs, None, None, None, None


def shifted_conv(x: Tensor, weight: Tensor, shift: Tensor, conv: Union[nn.Conv2d, nn.Conv3d]) -> Tensor:
    """``conv(x + shift, weight)`` with ``conv``'s geometry (2D or 3D), computed without
    materialising ``x + shift`` (exact: the zero padding stays zero). See
    :class:`_ShiftedConv`."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or conv.bias is not None:
        view = (1, -1) + (1,) * (x.dim() - 2)
        return conv._conv_forward(x + shift.view(view).to(x.dtype), weight, conv.bias)
    return _ShiftedConv.apply(x, weight, shift, tuple(conv.stride), tuple(conv.padding),
                              tuple(conv.dilation), conv.groups)


def _global_hooks() -> bool:
    mod = nn.modules.module
    return bool(getattr(mod, "_global_forward_hooks", None) or getattr(mod, "_global_forward_pre_hooks", None))


def _submodules_unhooked(module: nn.Module) -> bool:
    for m in module.modules():
        if m is not module and (m._forward_hooks or m._forward_pre_hooks):
            return False
        if isinstance(m, AddBias) and not m.foldable():
            return False
    return True


class _RescaleBlock(nn.Module):
    """What every RescaleNet block shares, 2D and 3D: the shortcut, the rescaled sum,
    the init and the fused forward. Subclasses build ``addbias1``/``conv1`` ... (one
    AddBias before each branch conv), list the convs in ``branch_layers`` and write
    ``forward_reference``; the 3D blocks (:mod:`rescalenet.resnet3d`) change only the
    layer classes below and pass a ``(t, h, w)`` stride."""

    expansion: int = 1
    num_branch_layers: int = 0
    fused: bool = True  # see "fused forward" above; ``RescaleNet.set_fused_forward``
    pool_layer: Type[nn.Module] = nn.AvgPool2d
    conv_layer: Type[nn.Module] = nn.Conv2d
    dropout_layer: Type[nn.Module] = nn.Dropout2d

    def __init__(
        self,
        inplanes: int,
        planes: int,
        index: int,
        num_blocks: int,
        stride: Union[int, Tuple[int, ...]] = 1,
        multiplier: str = "scalar",
        drop_conv: float = 0.0,
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.index = index
        self.num_blocks = num_blocks
        self.drop_conv = drop_conv
        self.drop = self.dropout_layer(drop_conv) if drop_conv > 0 else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.downsample: Optional[nn.Sequential] = None
        strided = any(s != 1 for s in (stride if isinstance(stride, tuple) else (stride,)))
        if strided or inplanes != out_planes:
            self.downsample = nn.Sequential(
                # average-pool the stride away, then AddBias and a 1x1 conv (official code)
                self.pool_layer(stride, stride, ceil_mode=True, count_include_pad=False)
                if strided
                else nn.Identity(),
                AddBias(inplanes),
                self.conv_layer(inplanes, out_planes, 1, bias=False),
            )
        self.rescale = RescaledResidual(
            shortcut_scale(index), residual_scale(num_blocks), multiplier, channels=out_planes
        )

    def branch_layers(self) -> List[nn.Module]:
        raise NotImplementedError

    def forward_reference(self, x: Tensor) -> Tensor:
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

    def forward(self, x: Tensor) -> Tensor:
        if self.can_fuse():
            return self.forward_fused(x)
        return self.forward_reference(x)

    # -- fused forward ------------------------------------------------------------
    def can_fuse(self) -> bool:
        return self.fused and not _global_hooks() and _submodules_unhooked(self)

    def forward_fused(self, x: Tensor) -> Tensor:
        """The block with its AddBias shifts and residual factors folded into the convs."""
        convs = self.branch_layers()
        out = x
        for i, conv in enumerate(convs, 1):
            last = i == len(convs)
            weight = self._branch_factor(conv.weight) if last else conv.weight
            out = self.drop(shifted_conv(out, weight, getattr(self, f"addbias{i}").shift(), conv))
            if not last:
                out = self.relu(out)
        return self._fused_sum(x, out)

    def _branch_factor(self, weight: Tensor) -> Tensor:
        """The last branch conv's weight times ``m_k / sqrt(L)`` (Dropout commutes with it)."""
        scale = self.rescale._scale
        if scale is None:
            return weight * self.rescale.residual_scale
        factor = (scale * self.rescale.residual_scale).to(weight.dtype)
        return weight * factor.view((-1,) + (1,) * (weight.dim() - 1))

    def _fused_sum(self, x: Tensor, branch: Tensor) -> Tensor:
        """relu(alpha_k * shortcut(x) + branch), ``branch`` already scaled, written in place."""
        alpha = self.rescale.shortcut_scale
        if self.downsample is None:
            return self.relu(branch.add_(x, alpha=alpha))
        pool, addbias, conv = self.downsample
        shortcut = shifted_conv(downsample_pool(pool, x), conv.weight * alpha, addbias.shift(), conv)
        return self.relu(branch.add_(shortcut))


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

    def forward_reference(self, x: Tensor) -> Tensor:
        """Module by module, as the official code (used while calibrating)."""
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

    def forward_reference(self, x: Tensor) -> Tensor:
        """Module by module, as the official code (used while calibrating)."""
        out = self.relu(self.drop(self.conv1(self.addbias1(x))))
        out = self.relu(self.drop(self.conv2(self.addbias2(out))))
        out = self.drop(self.conv3(self.addbias3(out)))
        return self.residual_sum(x, out)


class StagedNetworkAPI:
    """What the 2D and 3D RescaleNets share beyond their layers: the init, freezing,
    the stage loop's gradient checkpointing, and timm's model API. Expects ``conv1``,
    ``addbias1``, ``layer1`` ... ``layerN``, ``num_features``, an optional ``fc``,
    ``frozen_stages``, ``grad_checkpointing`` and ``fused`` on the network (a mixin
    placed before ``nn.Module``)."""

    # -- init -------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """The official init: He fan-in (gain sqrt 2) stem (3D: the fan-in counts the
        temporal taps), depth-scaled branches, gain-1 shortcut convs and classifier,
        zero AddBias and unit multipliers. Calibration state is left as it is."""
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

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    def _run_stage(self, stage: nn.Sequential, x: Tensor) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            for blk in stage:
                x = checkpoint(blk, x, use_reentrant=False)
            return x
        return stage(x)

    # -- timm-style model API ---------------------------------------------------
    def no_weight_decay(self) -> set:
        """Names of the AddBias biases and branch multipliers (no weight decay)."""
        return {n for n, _ in self.named_parameters() if n.rsplit(".", 1)[-1] in NO_DECAY_PARAM_NAMES}

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r"^conv1|^addbias1",
            blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)",
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def set_fused_forward(self, enable: bool = True) -> None:
        """Fold the calibrated AddBias shifts and the residual factors into the
        convolutions (default; exact, faster, less memory), or run every module
        separately (``False``: the reference forward, which calibration always uses)."""
        self.fused = enable
        for m in self.modules():
            if m is not self and hasattr(m, "can_fuse"):
                m.fused = enable


# depth -> (block, blocks per stage)
ARCH_SETTINGS: Dict[int, Tuple[Type[_RescaleBlock], Tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
    200: (Bottleneck, (3, 24, 36, 3)),
}


class RescaleNet(StagedNetworkAPI, nn.Module):
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
        self.fused = True
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
        if self.fused and self.addbias1.foldable() and not (_global_hooks() or self.conv1._forward_hooks
                                                             or self.conv1._forward_pre_hooks):
            # post-conv AddBias = the conv's bias
            c = self.conv1
            x = F.conv2d(x, c.weight, self.addbias1.shift().to(c.weight.dtype), c.stride, c.padding)
            return self.maxpool(self.relu(x))
        return self.maxpool(self.relu(self.addbias1(self.conv1(x))))

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
        ab = self.final_addbias
        if self.fused and ab.foldable() and not (_global_hooks() or self.avgpool._forward_hooks
                                                  or self.avgpool._forward_pre_hooks):
            x = self.avgpool(x).flatten(1) + ab.shift().to(x.dtype)  # mean(x + v) = mean(x) + v
        else:
            x = self.avgpool(ab(x)).flatten(1)
        x = self.dropout(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, ...]]:
        if self.out_indices is not None:
            return tuple(self.forward_stages(x, self.out_indices))
        return self.forward_head(self.forward_features(x))

    # -- timm-style model API (the rest is in StagedNetworkAPI) ------------------
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
