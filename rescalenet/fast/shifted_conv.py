"""The autograd pieces of the fused forward (:mod:`rescalenet.fast`): a convolution of
a shifted input as one node with a hand-written backward, and an average pooling whose
gradient is an upsampling. Each computes exactly the function of the module-by-module
forward it replaces; ``tests/test_train_fused.py`` checks values and gradients in float64.
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["shifted_conv", "downsample_pool", "channels_last"]


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


def _per_group(weight: Tensor, groups: int) -> Tensor:
    """A conv weight ``(O, I, *k)`` as ``(groups, O / groups, I, taps)``."""
    out_ch, in_per_group = weight.shape[:2]
    return weight.reshape(groups, out_ch // groups, in_per_group, -1)


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
        else:  # a batched GEMM, not a weight-sized product (which dominated at small sizes)
            taps = torch.matmul(shift.reshape(g, 1, 1, in_per_group), _per_group(weight, g)).reshape(out_ch, -1)
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
            # dW[o, i, t] += g_taps[o, t] * shift[i]: one batched outer product, added in place
            gw = gw.to(weight.dtype)
            sh = shift.to(weight.dtype).reshape(g, 1, in_per_group, 1)
            if gw.is_contiguous():
                rows = sh.expand(g, out_ch // g, in_per_group, 1).reshape(out_ch, in_per_group, 1)
                gw.view(out_ch, in_per_group, -1).baddbmm_(rows, g_taps.reshape(out_ch, 1, -1))
            else:  # channels-last weights
                gw = gw + (g_taps * sh).reshape(weight.shape)
        if need_s:
            if g == 1 and taps.shape[1] == 1:
                gs = torch.mv(weight.view(out_ch, in_per_group).t(), g_taps.view(out_ch))
            else:  # dshift[i] = sum_{o, t} W[o, i, t] g_taps[o, t], as a batched GEMM
                gs = torch.matmul(_per_group(weight, g), g_taps.transpose(-1, -2)).sum(1).reshape(-1)
            gs = gs.to(shift.dtype)
        if gx is not None:
            gx = gx.to(ctx.x_dtype)
        return gx, gw, gs, None, None, None, None


def shifted_conv(x: Tensor, weight: Tensor, shift: Tensor, conv: Union[nn.Conv2d, nn.Conv3d]) -> Tensor:
    """``conv(x + shift, weight)`` with ``conv``'s geometry (2D or 3D), computed without
    materialising ``x + shift`` (exact: the zero padding stays zero). ``conv`` must be
    a plain bias-free, zero-padded convolution (:func:`rescalenet.fast.can_fuse_block`
    checks it). See :class:`_ShiftedConv`."""
    return _ShiftedConv.apply(x, weight, shift, tuple(conv.stride), tuple(conv.padding),
                              tuple(conv.dilation), conv.groups)
