"""Inference folding: an eval-only RescaleNet with the AddBias shifts and the residual
multipliers folded into the neighbouring convolutions.

In eval mode a calibrated ``AddBias`` is a constant per-channel shift
``s = _bias - init_mean`` and ``RescaledResidual`` is ``alpha * shortcut + w * branch``
with constants ``alpha`` and ``w = m / sqrt(L)``. All of them are affine, so most fold
away exactly (``README.md, section "Use RescaleNet from timm"``, "Inference folding"):

* a shift **before a convolution without padding** (every 1x1 conv: ``conv1``/``conv3``
  of a bottleneck, the shortcut conv) becomes that conv's bias: ``W (x + s) = W x + W s``;
* a shift **after a convolution** (the stem's ``addbias1``) is that conv's bias;
* a shift **before a zero-padded 3x3 conv** cannot become its bias: at the border the
  conv sees the zero padding, not ``0 + s``, so ``conv(pad(x + s)) != conv(pad(x)) + W s``
  on the outer ring of pixels. When that shift follows a ReLU (the 3x3 conv after the
  first 1x1 of a bottleneck, the second conv of a basic block) it is folded *backwards*
  instead: ``relu(z) + s = max(z + s, s)``, so ``s`` joins the previous conv's bias and
  the ReLU becomes a per-channel ``clamp_min(s)``, exactly, padding included.
  The only shift that follows no ReLU of its own branch is the input shift of a basic
  block's first 3x3 conv (the block input is also the shortcut): it stays an explicit
  per-channel add;
* the branch factor ``w`` scales the last branch conv's weights (per output channel for
  the ``'vector'`` multiplier); ``alpha`` scales the downsample conv, or, for an identity
  shortcut, rides in the fused ``torch.add(branch, x, alpha=alpha)`` of the sum;
* the head's shift before global average pooling joins the classifier's bias
  (``mean(x + s) = mean(x) + s``); without a linear classifier it stays an explicit add.

Dropout is the identity in eval mode and is dropped. The result is eval-only
(``train()`` raises): its convolutions hold products of the trained parameters.

An uncalibrated model is refused (``ValueError``) rather than folded with a warning:
its AddBias means were never estimated, so it is untrained or was not restored from a
checkpoint, and a folded copy would silently freeze that state (the original would
still calibrate on its first training batches). ``allow_uncalibrated=True`` overrides.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .layers import AddBias
from .resnet import RescaleNet

__all__ = ["fold_for_inference", "FoldedRescaleNet", "FoldedBlock", "ChannelShift", "addbias_shift"]


def addbias_shift(module: AddBias) -> Tensor:
    """The constant an ``AddBias`` adds in eval mode (float64, shape ``(C,)``)."""
    scale = 1.0 if module.calibrated else module.warmup_scale
    return module._bias.detach().double() * scale - module.init_mean.detach().double()


class ChannelShift(nn.Module):
    """A frozen per-channel add (``channels_first``): what an ``AddBias`` is in eval mode."""

    def __init__(self, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return x + self.shift.view((-1,) + (1,) * (x.dim() - 2)).to(x.dtype)


class _EvalOnly:
    """Mixin: the folded modules hold no trainable state; refuse ``train()``."""

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError(
                "this RescaleNet was folded for inference (rescalenet.fold_for_inference) and is "
                "eval-only; train the original model and fold a copy of it afterwards"
            )
        return super().train(False)


class FoldedBlock(_EvalOnly, nn.Module):
    """A residual block after folding (eval only).

    ``forward``: ``out = conv1(x [+ in_shift])``, then between convs either ReLU or
    ``clamp_min(floor)`` (a ReLU followed by a shift), the last conv carrying the branch
    factor, then ``relu(out + shortcut)`` with the shortcut's ``alpha`` folded in.
    """

    def __init__(
        self,
        convs: List[nn.Conv2d],
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
            self.register_buffer(f"floor{i + 1}", None if floor is None else floor.view(1, -1, 1, 1))
        self.register_buffer("in_shift", None if in_shift is None else in_shift.view(1, -1, 1, 1))
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
        out = x if self.in_shift is None else x + self.in_shift
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            out = conv(out)
            if i < last:
                floor = getattr(self, f"floor{i + 1}")
                out = torch.relu_(out) if floor is None else out.clamp_(min=floor)
        if self.downsample is None:
            out = torch.add(out, x, alpha=self.shortcut_scale)
        else:
            out = out + self.downsample(x)
        return torch.relu_(out)


# -- conv arithmetic (float64, cast back at the end) ---------------------------------
def _conv_params(conv: nn.Conv2d) -> Tuple[Tensor, Tensor]:
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else w.new_zeros(w.shape[0])
    return w, b


def _input_shift_to_bias(conv: nn.Conv2d, w: Tensor, shift: Tensor) -> Tensor:
    """``W s``: what a per-channel input shift adds to an unpadded conv's output."""
    if not _unpadded(conv):
        raise ValueError(f"an input shift folds into a conv's bias only without padding: {conv}")
    groups, out_ch = conv.groups, w.shape[0]
    in_per_group = w.shape[1]
    wsum = w.sum(dim=(2, 3)).view(groups, out_ch // groups, in_per_group)
    return torch.bmm(wsum, shift.view(groups, in_per_group, 1)).reshape(out_ch)


def _new_conv(conv: nn.Conv2d, weight: Tensor, bias: Tensor) -> nn.Conv2d:
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(bias)
    if not conv.weight.is_contiguous() and conv.weight.is_contiguous(memory_format=torch.channels_last):
        new = new.to(memory_format=torch.channels_last)
    return new


def _fold_block(block: nn.Module) -> FoldedBlock:
    names = ["conv1", "conv2", "conv3"] if hasattr(block, "conv3") else ["conv1", "conv2"]
    convs = [getattr(block, n) for n in names]
    shifts = [addbias_shift(getattr(block, f"addbias{i + 1}")) for i in range(len(names))]
    params = [_conv_params(c) for c in convs]  # (weight, bias) pairs, float64
    floors: List[Optional[Tensor]] = [None] * (len(convs) - 1)
    in_shift: Optional[Tensor] = None

    for i, (conv, shift) in enumerate(zip(convs, shifts)):
        w, b = params[i]
        if _unpadded(conv):
            params[i] = (w, b + _input_shift_to_bias(conv, w, shift))  # exact: no border
        elif i > 0:
            # follows ReLU(conv_{i-1}): relu(z) + s = max(z + s, s)
            pw, pb = params[i - 1]
            params[i - 1] = (pw, pb + shift)
            floors[i - 1] = shift
        else:
            in_shift = shift  # shared with the shortcut: keep the add

    # the branch factor m / sqrt(L) on the last conv (per output channel for 'vector')
    factor = block.rescale.branch_weight().detach().double().to(params[-1][0].device)
    factor = factor.reshape(-1).expand(params[-1][0].shape[0])
    w, b = params[-1]
    params[-1] = (w * factor.view(-1, 1, 1, 1), b * factor)

    alpha = block.rescale.shortcut_scale
    downsample = None
    if block.downsample is not None:
        pool, shift_mod, conv = block.downsample
        w, b = _conv_params(conv)
        b = b + _input_shift_to_bias(conv, w, addbias_shift(shift_mod))
        downsample = nn.Sequential(pool, _new_conv(conv, w * alpha, b * alpha))
        alpha = 1.0

    dtype = convs[0].weight.dtype
    new_convs = [_new_conv(c, w, b) for c, (w, b) in zip(convs, params)]
    floors = [None if f is None else f.to(dtype) for f in floors]
    in_shift = None if in_shift is None else in_shift.to(dtype)
    return FoldedBlock(new_convs, floors, in_shift, downsample, alpha)


def _unpadded(conv: nn.Conv2d) -> bool:
    padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,)
    return all(p == 0 for p in padding)


def _is_block(m: nn.Module) -> bool:
    return (
        isinstance(getattr(m, "rescale", None), nn.Module)
        and isinstance(getattr(m, "addbias1", None), AddBias)
        and isinstance(getattr(m, "conv1", None), nn.Conv2d)
    )


def _fold_stem(model: nn.Module) -> None:
    """``conv1 -> addbias1`` at the top level: the shift is conv1's bias."""
    conv, shift_mod = getattr(model, "conv1", None), getattr(model, "addbias1", None)
    if isinstance(conv, nn.Conv2d) and isinstance(shift_mod, AddBias):
        w, b = _conv_params(conv)
        model.conv1 = _new_conv(conv, w, b + addbias_shift(shift_mod))
        model.addbias1 = nn.Identity()


class FoldedRescaleNet(_EvalOnly, nn.Module):
    """A :class:`~rescalenet.RescaleNet` after folding (eval only): the same forward API
    (``forward``, ``forward_stages``, ``forward_features``, ``forward_head``, and a tuple
    of stage maps when built with ``out_indices``) on plain convolutions."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for attr in ("in_chans", "num_classes", "num_features", "out_indices", "layers", "block"):
            setattr(self, attr, getattr(model, attr, None))
        self.feature_info = copy.deepcopy(getattr(model, "feature_info", []))
        for attr in ("pretrained_cfg", "default_cfg"):  # timm metadata, if any
            if hasattr(model, attr):
                setattr(self, attr, copy.deepcopy(getattr(model, attr)))
        self.global_pool = getattr(model, "global_pool", "avg")
        if self.global_pool not in ("avg", ""):
            raise ValueError(f"fold_for_inference supports global_pool 'avg' or '', got {self.global_pool!r}")

        w, b = _conv_params(model.conv1)
        self.conv1 = _new_conv(model.conv1, w, b + addbias_shift(model.addbias1))  # post-conv shift
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = model.maxpool
        for i in range(1, 5):
            setattr(self, f"layer{i}", getattr(model, f"layer{i}"))

        self.fc: Optional[nn.Module] = None
        self.register_buffer("head_shift", None)
        if self.out_indices is None:
            fab = model.final_addbias  # an Identity once timm pruned the head
            shift = addbias_shift(fab) if isinstance(fab, AddBias) else torch.zeros(
                self.num_features, dtype=torch.float64, device=model.conv1.weight.device)
            self.head_shift = shift.to(model.conv1.weight.dtype)
            fc = model.fc
            if isinstance(fc, nn.Linear):
                if self.global_pool != "avg":
                    raise ValueError("a linear classifier needs global_pool='avg'")
                wf = fc.weight.detach().double()
                bf = fc.bias.detach().double() if fc.bias is not None else wf.new_zeros(wf.shape[0])
                self.fc = nn.Linear(fc.in_features, fc.out_features, device=wf.device, dtype=fc.weight.dtype)
                with torch.no_grad():  # mean(x + s) = mean(x) + s; fc(. + s) = fc(.) + W s
                    self.fc.weight.copy_(fc.weight)
                    self.fc.bias.copy_(bf + wf @ shift)
            elif not isinstance(fc, nn.Identity):
                raise ValueError(f"fold_for_inference expects a Linear or Identity classifier, got {type(fc).__name__}")

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected a (N, {self.in_chans}, H, W) input, got shape {tuple(x.shape)}"
            )

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.conv1(x)))

    def forward_stages(self, x: Tensor, out_indices: Sequence[int] = (0, 1, 2, 3)) -> List[Tensor]:
        self._check_input(x)
        x = self.stem(x)
        outs = []
        for i in range(max(out_indices) + 1):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in out_indices:
                outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_stages(x, (3,))[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.head_shift is None:
            raise RuntimeError("a feature extractor (out_indices set) has no head")
        if self.global_pool == "":
            return x + self.head_shift.view(1, -1, 1, 1)
        x = x.mean((2, 3))
        if pre_logits or self.fc is None:
            return x + self.head_shift
        return self.fc(x)

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, ...]]:
        if self.out_indices is not None:
            return tuple(self.forward_stages(x, self.out_indices))
        return self.forward_head(self.forward_features(x))


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


@torch.no_grad()
def fold_for_inference(model: nn.Module, *, allow_uncalibrated: bool = False) -> nn.Module:
    """An eval-only deep copy of ``model`` with AddBias and multipliers folded.

    Works on :class:`rescalenet.RescaleNet` (classifier or ``out_indices`` feature
    extractor, any subclass) and on timm's ``features_only`` wrappers of it. The copy
    computes what ``model.eval()`` computes, up to float rounding; the original is not
    changed. Its ``train()`` raises: fine-tune the original, then fold again.

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
            raise ValueError(f"fold_for_inference handles 2D RescaleNets; {n} has layout {m.layout!r}")
    uncalibrated = [n for n, m in shifts if not m.calibrated]
    if uncalibrated and not allow_uncalibrated:
        raise ValueError(
            f"fold_for_inference: {len(uncalibrated)} of {len(shifts)} AddBias modules are not "
            f"calibrated (first: {uncalibrated[0]!r}); their means were never estimated. Load a "
            "trained checkpoint or run rescalenet.calibrate(model, batches) first "
            "(allow_uncalibrated=True folds the current eval-mode behaviour anyway)"
        )

    folded = copy.deepcopy(model).eval()
    for name in [n for n, m in folded.named_modules() if _is_block(m)]:
        _replace(folded, name, _fold_block(folded.get_submodule(name)))
    if isinstance(folded, RescaleNet):
        folded = FoldedRescaleNet(folded)
    else:
        # a module holding RescaleNets (e.g. a detector's backbone): fold each of them
        nets = [n for n, m in folded.named_modules() if isinstance(m, RescaleNet)]
        for name in [n for n in nets if not any(n.startswith(o + ".") for o in nets)]:
            _replace(folded, name, FoldedRescaleNet(folded.get_submodule(name)))
        _fold_stem(folded)  # timm's features_only wrappers hold the stem at the top
    for name in [n for n, m in folded.named_modules() if isinstance(m, AddBias)]:
        shift_mod = folded.get_submodule(name)
        _replace(folded, name, ChannelShift(addbias_shift(shift_mod).to(shift_mod._bias.dtype)))
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded.eval()
