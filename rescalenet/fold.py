"""Inference folding: an eval-only RescaleNet with the AddBias shifts and the residual
multipliers folded into the neighbouring convolutions.

In eval mode a calibrated ``AddBias`` is a constant per-channel shift ``s``
(``AddBias.shift()``) and ``RescaledResidual`` is ``alpha * shortcut + w * branch`` with
constants ``alpha`` and ``w = m / sqrt(L)`` (``branch_weight()``). Each block gives its
branch and shortcut as affine pieces, ``(conv, weight with w folded in, input shift)``
(:meth:`~rescalenet.blocks.RescaleBlock.folded_branch`, ``folded_shortcut``: the same
pieces the training-time fast path uses), and they fold away exactly:

* a shift **before a convolution without padding** (every 1x1 conv: ``conv1``/``conv3``
  of a bottleneck, the shortcut conv) becomes that conv's bias: ``W (x + s) = W x + W s``;
* a shift **after a convolution** (the stem's ``addbias1``) is that conv's bias;
* a shift **before a zero-padded conv** cannot become its bias: at the border the conv
  sees the zero padding, not ``0 + s``. When that shift follows a ReLU (the 3x3 conv after
  the first 1x1 of a bottleneck, the second conv of a basic block) it is folded
  *backwards* instead: ``relu(z) + s = max(z + s, s)``, so ``s`` joins the previous conv's
  bias and the ReLU becomes a per-channel ``clamp_min(s)``, exactly, padding included.
  The only shift that follows no ReLU of its own branch is the input shift of a basic
  block's first 3x3 conv (the block input is also the shortcut): it stays an explicit
  per-channel add;
* ``w`` is in the last branch conv's weights; ``alpha`` scales the downsample conv, or,
  for an identity shortcut, rides in the fused ``torch.add(branch, x, alpha=alpha)``;
* the head's shift before global average pooling is added after the pooling
  (``mean(x + s) = mean(x) + s``, :class:`ShiftedGlobalPool`); without pooling
  (timm's ``global_pool=''``) it stays an explicit add.

Dropout is the identity in eval mode and is dropped. The result is the same network class
with folded blocks (so the same stage loop, the same ``forward_*`` API and ``out_indices``
tuples), eval-only (``train()`` raises): its convolutions hold products of the trained
parameters. Works for 2D and 3D RescaleNets and for modules holding them.

An uncalibrated model is refused (``ValueError``) rather than folded with a warning:
its AddBias means were never estimated, so it is untrained or was not restored from a
checkpoint, and a folded copy would silently freeze that state (the original would
still calibrate on its first training batches). ``allow_uncalibrated=True`` overrides.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from .blocks import RescaleBlock
from .layers import AddBias, ChannelMultiplier
from .resnet import RescaleNet

__all__ = ["fold_for_inference", "FoldedRescaleNet", "FoldedBlock", "ChannelShift", "ShiftedGlobalPool"]

_CONVS = (nn.Conv2d, nn.Conv3d)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _channel_view(v: Tensor, x: Tensor) -> Tensor:
    return v.view((1, -1) + (1,) * (x.dim() - 2))


class ChannelShift(nn.Module):
    """A frozen per-channel add (``channels_first``): what an ``AddBias`` is in eval mode."""

    def __init__(self, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return x + _channel_view(self.shift, x).to(x.dtype)


class ShiftedGlobalPool(nn.Module):
    """``pool(x + s)`` for a global average pool, computed as ``pool(x) + s``."""

    def __init__(self, pool: nn.Module, shift: Tensor) -> None:
        super().__init__()
        self.pool = pool
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(x)
        return out + _channel_view(self.shift, out).to(out.dtype)


class _EvalOnly:
    """Mixin: folded modules hold products of trained parameters; refuse ``train()``."""

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError(
                "this RescaleNet was folded for inference (rescalenet.fold_for_inference) and is "
                "eval-only; train the original model and fold a copy of it afterwards"
            )
        return nn.Module.train(self, False)


class FoldedBlock(_EvalOnly, nn.Module):
    """A residual block after folding (eval only).

    ``forward``: ``out = conv1(x [+ in_shift])``, then between convs either ReLU or
    ``clamp_min(floor)`` (a ReLU followed by a shift), the last conv carrying the branch
    factor, then ``relu(out + shortcut)`` with the shortcut's ``alpha`` folded in.
    """

    def __init__(
        self,
        convs: List[nn.Module],
        floors: List[Optional[Tensor]],
        in_shift: Optional[Tensor],
        downsample: Optional[nn.Sequential],
        shortcut_scale: float,
    ) -> None:
        super().__init__()
        if len(floors) != len(convs) - 1:
            raise ValueError("one activation floor per inner conv is needed")
        self.convs = nn.ModuleList(convs)
        for i, floor in enumerate(floors):
            self.register_buffer(f"floor{i + 1}", floor)
        self.register_buffer("in_shift", in_shift)
        self.downsample = downsample
        self.shortcut_scale = float(shortcut_scale)

    def extra_repr(self) -> str:
        floors = [getattr(self, f"floor{i + 1}") is not None for i in range(len(self.convs) - 1)]
        acts = ", ".join("clamp_min" if f else "relu" for f in floors)
        return (
            f"in_shift={self.in_shift is not None}, activations=[{acts}], "
            f"shortcut_scale={self.shortcut_scale:.4f}"
        )

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.in_shift is None else x + _channel_view(self.in_shift, x)
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            out = conv(out)
            if i < last:
                floor = getattr(self, f"floor{i + 1}")
                out = torch.relu_(out) if floor is None else out.clamp_(min=_channel_view(floor, out))
        if self.downsample is None:
            out = torch.add(out, x, alpha=self.shortcut_scale)
        else:
            out = out + self.downsample(x)
        return torch.relu_(out)


class FoldedRescaleNet(_EvalOnly):
    """Marker base of a folded network: ``fold_for_inference`` gives its copy the class
    ``Folded<Class>(FoldedRescaleNet, <Class>)``, so it keeps the network's forward."""


_FOLDED_CLASSES: Dict[type, type] = {}


def _folded_class(cls: Type[nn.Module]) -> type:
    if cls not in _FOLDED_CLASSES:
        name = f"Folded{cls.__name__}"
        folded = type(name, (FoldedRescaleNet, cls), {"__module__": __name__, "__qualname__": name})
        globals()[name] = folded  # picklable by name
        _FOLDED_CLASSES[cls] = folded
    return _FOLDED_CLASSES[cls]


# -- conv arithmetic (float64, cast back at the end) ---------------------------------
def _unpadded(conv: nn.Module) -> bool:
    padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,)
    return all(p == 0 for p in padding)


def _check_plain(conv: nn.Module, name: str) -> None:
    if type(conv) not in _CONVS or conv.bias is not None or conv.padding_mode != "zeros" \
            or isinstance(conv.padding, str):
        raise ValueError(
            f"fold_for_inference: {name} is a {type(conv).__name__} (bias={conv.bias is not None}, "
            f"padding_mode={getattr(conv, 'padding_mode', None)!r}); only RescaleNet's plain bias-free, "
            "zero-padded nn.Conv2d / nn.Conv3d fold exactly"
        )


def _shift_through(conv: nn.Module, weight: Tensor, shift: Tensor) -> Tensor:
    """``W s``: what a per-channel input shift adds to an unpadded conv's output."""
    groups, out_ch, in_per_group = conv.groups, weight.shape[0], weight.shape[1]
    wsum = weight.sum(dim=tuple(range(2, weight.dim()))).view(groups, out_ch // groups, in_per_group)
    return torch.bmm(wsum, shift.view(groups, in_per_group, 1)).reshape(out_ch)


def _new_conv(conv: nn.Module, weight: Tensor, bias: Tensor) -> nn.Module:
    new = type(conv)(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
        device=conv.weight.device, dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(bias)
    for fmt in (torch.channels_last, torch.channels_last_3d):
        if not conv.weight.is_contiguous() and conv.weight.dim() == (4 if fmt is torch.channels_last else 5) \
                and conv.weight.is_contiguous(memory_format=fmt):
            new = new.to(memory_format=fmt)
    return new


def fold_block(block: RescaleBlock, name: str = "block") -> FoldedBlock:
    """One block folded (see the module docstring), from its affine pieces."""
    steps = [(conv, w.detach(), s.detach()) for conv, w, s in block.folded_branch(torch.float64)]
    for i, (conv, _, _) in enumerate(steps, 1):
        _check_plain(conv, f"{name}.conv{i}")
    biases = [w.new_zeros(w.shape[0]) for _, w, _ in steps]
    floors: List[Optional[Tensor]] = [None] * (len(steps) - 1)
    in_shift: Optional[Tensor] = None
    for i, (conv, w, s) in enumerate(steps):
        if _unpadded(conv):
            biases[i] = biases[i] + _shift_through(conv, w, s)  # exact: no border
        elif i > 0:  # follows relu(conv_{i-1}): relu(z) + s = max(z + s, s)
            biases[i - 1] = biases[i - 1] + s
            floors[i - 1] = s
        else:
            in_shift = s  # shared with the shortcut: keep the add

    alpha = block.rescale.shortcut_scale
    downsample = None
    shortcut = block.folded_shortcut(torch.float64)
    if shortcut is not None:
        pool, conv, w, s = shortcut
        _check_plain(conv, f"{name}.downsample.2")
        w, s = w.detach(), s.detach()
        downsample = nn.Sequential(pool, _new_conv(conv, w, _shift_through(conv, w, s)))
        alpha = 1.0

    dtype = steps[0][0].weight.dtype
    convs = [_new_conv(conv, w, b) for (conv, w, _), b in zip(steps, biases)]
    return FoldedBlock(convs, [None if f is None else f.to(dtype) for f in floors],
                       None if in_shift is None else in_shift.to(dtype), downsample, alpha)


def _fold_stem(holder: nn.Module) -> None:
    """``conv1 -> addbias1`` held by ``holder``: the shift becomes conv1's bias."""
    conv, shift = getattr(holder, "conv1", None), getattr(holder, "addbias1", None)
    if isinstance(shift, AddBias) and isinstance(conv, _CONVS):
        _check_plain(conv, "conv1")
        holder.conv1 = _new_conv(conv, conv.weight.detach().double(), shift.shift(torch.float64).detach())
        holder.addbias1 = nn.Identity()


def _fold_network(net: RescaleNet) -> None:
    """The stem and the head of a network whose blocks are folded; its class becomes
    ``Folded<Class>``."""
    _fold_stem(net)
    head = getattr(net, "final_addbias", None)
    if isinstance(head, AddBias):
        shift = head.shift(torch.float64).detach().to(head._bias.dtype)
        pool = getattr(net, "avgpool", None)
        if isinstance(pool, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
            net.avgpool = ShiftedGlobalPool(pool, shift)
            net.final_addbias = nn.Identity()
        else:
            net.final_addbias = ChannelShift(shift)
    net.__class__ = _folded_class(type(net))


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


@torch.no_grad()
def fold_for_inference(model: nn.Module, *, allow_uncalibrated: bool = False) -> nn.Module:
    """An eval-only deep copy of ``model`` with AddBias and multipliers folded.

    Works on :class:`rescalenet.RescaleNet` and :class:`rescalenet.RescaleNet3d`
    (classifier or ``out_indices`` feature extractor, any subclass), on modules holding
    them (a detector) and on timm's ``features_only`` wrappers. The copy computes what
    ``model.eval()`` computes, up to float rounding; the original is not changed. Its
    ``train()`` raises: fine-tune the original, then fold again.

    Raises ``ValueError`` when some ``AddBias`` is not calibrated: its mean was never
    estimated, so the model has not been trained or restored from a checkpoint yet
    (calibrate with :func:`rescalenet.calibrate`). ``allow_uncalibrated=True`` folds
    the current eval-mode behaviour anyway (warm-up biases, zero means).
    """
    shifts = [(n, m) for n, m in model.named_modules() if isinstance(m, AddBias)]
    if not shifts:
        raise ValueError("fold_for_inference: the model holds no AddBias module (not a RescaleNet?)")
    for n, m in shifts:
        if m.layout != "channels_first":
            raise ValueError(f"fold_for_inference handles convolutional RescaleNets; {n} has layout {m.layout!r}")
    if any(isinstance(m, ChannelMultiplier) for m in model.modules()):
        raise ValueError(
            "fold_for_inference: multiplier='inner_vector' (per-channel multipliers between a ReLU "
            "and the next AddBias) does not fold into the convolutions exactly; run the model in "
            "eval mode as it is")
    uncalibrated = [n for n, m in shifts if not m.calibrated]
    if uncalibrated and not allow_uncalibrated:
        raise ValueError(
            f"fold_for_inference: {len(uncalibrated)} of {len(shifts)} AddBias modules are not "
            f"calibrated (first: {uncalibrated[0]!r}); their means were never estimated. Load a "
            "trained checkpoint or run rescalenet.calibrate(model, batches) first "
            "(allow_uncalibrated=True folds the current eval-mode behaviour anyway)"
        )

    folded = copy.deepcopy(model).eval()
    for name in [n for n, m in folded.named_modules() if isinstance(m, RescaleBlock)]:
        _replace(folded, name, fold_block(folded.get_submodule(name), name))
    nets = [n for n, m in folded.named_modules() if isinstance(m, RescaleNet)]
    for name in [n for n in nets if not any(n.startswith(o + ".") for o in nets if o)]:
        _fold_network(folded.get_submodule(name))
    if not isinstance(folded, RescaleNet):
        _fold_stem(folded)  # timm's features_only wrappers hold the stem at the top
    for name, m in list(folded.named_modules()):
        if isinstance(m, AddBias):
            _replace(folded, name, ChannelShift(m.shift(torch.float64).detach().to(m._bias.dtype)))
        elif isinstance(m, _DROPOUTS):
            _replace(folded, name, nn.Identity())
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded.eval()
