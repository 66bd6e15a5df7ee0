"""The fused forward of RescaleNet: the function of the module-by-module reference
(:mod:`rescalenet.blocks`, :class:`rescalenet.RescaleNet`) with fewer passes over the
activations. One call each for a block, the stem and the head; each runs only when its
``can_fuse_*`` proves that it computes exactly what the modules would, else the caller
runs the reference.

The identities it relies on (all exact; ``tests/test_train_fused.py`` checks values and
gradients in float64):

1. A calibrated ``AddBias`` is a constant shift ``s = b - mu`` (``AddBias.shift()``), so
   ``conv(x + s) = conv(x) + conv(1 * s)``. Without padding the second term is the
   per-channel constant ``W s`` (the conv's bias; a channels-last 1x1 conv is one GEMM
   with it in the epilogue); with zero padding it is a map that equals ``W s`` inside
   and differs where the kernel overlaps the padding, computed exactly as a conv of a
   one-channel image of ones. :func:`~.shifted_conv.shifted_conv` does both as one
   autograd node.
2. ``(m_k / sqrt(L)) * conv_n(y) = conv_n(y)`` with weight ``W_n * m_k / sqrt(L)``
   (``RescaledResidual.branch_weight()``, per output channel for ``'vector'``), and
   ``alpha_k * conv_sc(y)`` is ``conv_sc`` with ``alpha_k W``; dropout commutes with
   both. :meth:`RescaleBlock.folded_branch` / :meth:`~RescaleBlock.folded_shortcut`
   give these weights and shifts (the inference folding reads the same).
3. A shift after the stem conv is that conv's bias.
4. ``mean(x + s) = mean(x) + s`` for the head's shift before global average pooling.
5. The gradient of a ``k x k`` average pool of stride ``k`` on divisible sizes is the
   nearest-neighbour upsampling of the output gradient divided by ``k ** d``.

"Provably the same computation" means: every module the fused code bypasses has
exactly the type the reference expects (a subclass or wrapper, e.g. a fake-quantized
or LoRA conv, a parametrization, may compute something else), holds no hook of any
kind (forward, forward-pre, backward, backward-pre; nor are global hooks installed),
every AddBias is calibrated (nothing is left to update), the convs are bias-free and
zero-padded, and no ``torch.fx`` trace is being recorded (a trace must record the
modules, whose behaviour depends on their state).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch.fx
from torch import Tensor, nn

from ..layers import AddBias, RescaledResidual
from .shifted_conv import channels_last, downsample_pool, shifted_conv

if TYPE_CHECKING:  # pragma: no cover
    from ..blocks import RescaleBlock

__all__ = [
    "symbolic_tracing",
    "fusing_pays",
    "MIN_FUSED_POSITIONS",
    "can_fuse_block",
    "fused_block_forward",
    "can_fuse_stem",
    "fused_stem_forward",
    "can_fuse_head",
    "fused_head_pool",
    "channels_last",
    "shifted_conv",
]

_CONVS = (nn.Conv2d, nn.Conv3d)
_DROPOUTS = (nn.Identity, nn.Dropout2d, nn.Dropout3d)
_POOLS = (nn.Identity, nn.AvgPool2d, nn.AvgPool3d)
_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks",
                 "_global_backward_hooks", "_global_backward_pre_hooks")


def _unhooked(m: nn.Module) -> bool:
    return not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _plain_conv(m: nn.Module) -> bool:
    return (type(m) in _CONVS and m.bias is None and m.padding_mode == "zeros"
            and not isinstance(m.padding, str) and _unhooked(m))


def _calibrated_shift(m: nn.Module) -> bool:
    return type(m) is AddBias and m.is_constant_shift() and _unhooked(m)


def symbolic_tracing() -> bool:
    """True while ``torch.fx.symbolic_trace`` records a graph (not under torch.export /
    torch.compile, which trace the fused path's autograd functions fine)."""
    return torch.fx._symbolic_trace.is_fx_symbolic_tracing()


def _fusing_allowed() -> bool:
    mod = nn.modules.module
    return not symbolic_tracing() and not any(getattr(mod, n, None) for n in _GLOBAL_HOOKS)


# Below this many positions per channel (spatial, or temporal x spatial, size of the
# block's input) the shifted convs' border and weight-side terms cost more than the
# activation passes they save: RescaleNet-18 at 32 px (stages at 8x8 down to 1x1) trained
# at 0.88x the images/s of BN ResNet-18 fused, 0.99x module by module (benchmarks/
# bench_speed.py --family imagenet18, docs/results.md). A speed choice only: both paths
# compute the same function.
MIN_FUSED_POSITIONS = 32


def fusing_pays(x: Tensor) -> bool:
    """Whether the fused path is the faster one for the block input ``x`` (N, C, ...)."""
    return x[0, 0].numel() >= MIN_FUSED_POSITIONS


# -- blocks ----------------------------------------------------------------------
def can_fuse_block(block: "RescaleBlock") -> bool:
    """True when :func:`fused_block_forward` computes what ``block.forward_reference``
    would: see the module docstring."""
    if not _fusing_allowed():
        return False
    if type(block.relu) is not nn.ReLU or type(block.drop) not in _DROPOUTS \
            or type(block.rescale) is not RescaledResidual:
        return False
    for i in range(1, block.num_branch_layers):  # the 'inner_vector' multipliers: not fused
        if type(getattr(block, f"mult{i}")) is not nn.Identity:
            return False
    if not all(_plain_conv(c) for c in block.branch_layers()) or \
            not all(_calibrated_shift(a) for a in block.branch_shifts()):
        return False
    if block.downsample is not None:
        ds = block.downsample
        if type(ds) is not nn.Sequential or len(ds) != 3 or type(ds[0]) not in _POOLS \
                or not _calibrated_shift(ds[1]) or not _plain_conv(ds[2]):
            return False
    return all(_unhooked(m) for m in block.modules() if m is not block)


def fused_block_forward(block: "RescaleBlock", x: Tensor) -> Tensor:
    """The block with its AddBias shifts and residual factors folded into the convs
    (identities 1, 2, 5), summed and activated in place."""
    steps = block.folded_branch()
    out = x
    for i, (conv, weight, shift) in enumerate(steps, 1):
        out = block.drop(shifted_conv(out, weight, shift, conv))
        if i < len(steps):
            out = block.relu(out)
    shortcut = block.folded_shortcut()
    if shortcut is None:
        return block.relu(out.add_(x, alpha=block.rescale.shortcut_scale))
    pool, conv, weight, shift = shortcut
    return block.relu(out.add_(shifted_conv(downsample_pool(pool, x), weight, shift, conv)))


# -- stem and head --------------------------------------------------------------
def can_fuse_stem(net: nn.Module) -> bool:
    """``conv1 -> addbias1`` can run as one conv with the shift as its bias."""
    return _fusing_allowed() and _plain_conv(net.conv1) and _calibrated_shift(net.addbias1)


def fused_stem_forward(net: nn.Module, x: Tensor) -> Tensor:
    """``addbias1(conv1(x))`` as one conv (identity 3)."""
    conv = net.conv1
    return conv._conv_forward(x, conv.weight, net.addbias1.shift().to(conv.weight.dtype))


def can_fuse_head(net: nn.Module) -> bool:
    """``avgpool(final_addbias(x))`` can add the shift after pooling."""
    pool = net.avgpool
    return (_fusing_allowed() and _calibrated_shift(net.final_addbias) and type(pool) in _GLOBAL_POOLS
            and pool.output_size in (1, (1,) * (2 if type(pool) is nn.AdaptiveAvgPool2d else 3))
            and _unhooked(pool))


def fused_head_pool(net: nn.Module, x: Tensor) -> Tensor:
    """``avgpool(final_addbias(x)).flatten(1)`` as ``mean(x) + s`` (identity 4)."""
    return net.avgpool(x).flatten(1) + net.final_addbias.shift().to(x.dtype)
