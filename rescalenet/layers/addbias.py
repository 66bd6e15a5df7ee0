"""The bias reparameterization of RescaleNet: ``AddBias`` and its calibration.

Paper: Shao et al., "Is normalization indispensable for training deep neural
network?", NeurIPS 2020, section 4.4 (``docs/method.md`` section 1.5).
"""
from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "AddBias",
    "calibrate",
    "is_calibrated",
    "reset_calibration",
    "checkpoint_without_recalibration",
    "LAYOUTS",
]

LAYOUTS = ("channels_first", "TBC", "BTC")

# What each AddBias that calibrated inside a checkpointed forward used, for the
# recompute of that forward in the backward pass (see checkpoint_without_recalibration).
_checkpointing = threading.local()


class AddBias(nn.Module):
    """``y = x + b - mu``: a bias placed *before* the next weight layer (section 4.4).

    ``mu`` is estimated from the data: it is the arithmetic mean of the per-channel
    batch means of the first ``calibration_steps`` training-mode forward passes, and
    is frozen afterwards, so every following conv first sees roughly centred inputs,
    as it would behind BatchNorm at init; this is what keeps ReLUs alive. During
    those passes the learnable ``b`` enters scaled by ``warmup_scale`` (0.01 in the
    official code), so it cannot undo the centring before ``mu`` is known.

    Where this differs from the official code, and why:

    * nothing is updated in eval mode: like BatchNorm's running statistics the
      module's train/eval mode decides, so a sanity check, a validation pass or a
      ``torchinfo.summary`` before training cannot consume the calibration (an eval
      pass before calibration warns once: it runs with ``mu = 0``);
    * under ``torch.distributed`` the batch sums and counts are all-reduced, so
      ``mu`` is the mean over the global batch and identical on every rank (DDP
      wrappers such as MMEngine's do not broadcast buffers);
    * ``count`` and ``init_mean`` are buffers, so a model restored from a
      checkpoint is calibrated and never recalibrates, however its buffers were
      written (``load_state_dict``, an EMA or SWA copy, ``copy_``);
    * the recompute of a gradient-checkpointed forward never updates ``mu`` and
      uses exactly what the forward used (:func:`checkpoint_without_recalibration`).

    Args:
        num_features: number of channels ``C``.
        layout: ``'channels_first'`` for ``(N, C)``, ``(N, C, H, W)`` and
            ``(N, C, T, H, W)`` tensors; ``'TBC'`` or ``'BTC'`` for sequences with
            channels last (fairseq uses ``TBC``).
        calibration_steps: number of training-mode passes averaged into ``mu`` (0: ``mu``
            stays 0 and ``b`` enters undamped from the start, the ablation without the
            reparameterization's mean subtraction).
        warmup_scale: factor on ``b`` while calibrating.
        sync: all-reduce the batch statistics when ``torch.distributed`` is
            initialised with more than one process.

    ``forward(x, padding_mask=None)``: for sequence layouts ``padding_mask`` is a
    ``(B, T)`` bool tensor, ``True`` at padded positions (the PyTorch and fairseq
    convention); padded positions are left out of the means.

    For ``torch.fx`` tracing AddBias is a leaf module (its calibration is state, not
    graph): timm's tracer knows it once :mod:`rescalenet.timm` is imported; pass
    ``tracer_kwargs={'leaf_modules': [rescalenet.AddBias]}`` to torchvision's
    ``create_feature_extractor``.
    """

    def __init__(
        self,
        num_features: int,
        *,
        layout: str = "channels_first",
        calibration_steps: int = 8,
        warmup_scale: float = 0.01,
        sync: bool = True,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"AddBias layout must be one of {LAYOUTS}, got {layout!r}")
        if num_features < 1:
            raise ValueError(f"AddBias needs num_features >= 1, got {num_features}")
        if isinstance(calibration_steps, bool) or not isinstance(calibration_steps, int) or calibration_steps < 0:
            raise ValueError(f"calibration_steps must be an integer >= 0 (0: no mean subtraction, an "
                             f"ablation), got {calibration_steps!r}")
        self.num_features = num_features
        self.layout = layout
        self.calibration_steps = calibration_steps
        self.warmup_scale = warmup_scale
        self.sync = sync
        self._bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("init_mean", torch.zeros(num_features))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._calibrated_cache: Tuple[Optional[Tensor], int, int, bool] = (None, -1, -1, False)
        self._warned_uncalibrated_eval = False

    @property
    def calibrated(self) -> bool:
        """``count >= calibration_steps``, read from the buffer whenever it may have
        changed: the answer is cached against the buffer's identity and its version
        counter (bumped by every in-place write: ``load_state_dict``, ``copy_``, EMA /
        SWA updates), so the hot path does not read a device tensor at every step.
        While ``torch.compile`` / ``torch.export`` trace (the buffer is symbolic then)
        the answer of the last eager read is used; ``train()`` / ``eval()`` refresh it."""
        if torch.compiler.is_compiling():
            return self._calibrated_cache[3]
        count = self.count
        if count.is_inference():  # inference tensors keep no version counter
            return int(count) >= self.calibration_steps
        tensor, version, steps, value = self._calibrated_cache
        if tensor is not count or version != count._version or steps != self.calibration_steps:
            value = int(count) >= self.calibration_steps
            self._calibrated_cache = (count, count._version, self.calibration_steps, value)
        return value

    def train(self, mode: bool = True) -> "AddBias":
        super().train(mode)
        self.calibrated  # refresh the cached answer for traced (compiled, exported) forwards
        return self

    def is_constant_shift(self) -> bool:
        """True when ``forward`` adds exactly :meth:`shift` and updates nothing: calibrated,
        and not the recompute of a forward that still calibrated (which must replay that
        forward, not the calibrated shift). The fast path folds only such modules."""
        replay = getattr(_checkpointing, "replay", None)
        return self.calibrated and (replay is None or self not in replay)

    def reset_calibration(self) -> None:
        """Forget ``mu``: the next ``calibration_steps`` training passes estimate it anew."""
        with torch.no_grad():
            self.init_mean.zero_()
            self.count.zero_()

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, layout={self.layout}, "
            f"calibration_steps={self.calibration_steps}, calibrated={self.calibrated}"
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Legacy checkpoints of the official code store (1, C, 1, 1) tensors.
        for name in ("_bias", "init_mean"):
            key = prefix + name
            if key in state_dict and state_dict[key].dim() > 1:
                state_dict[key] = state_dict[key].reshape(-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- shapes ---------------------------------------------------------------
    def _channel_dim(self, x: Tensor) -> int:
        return 1 if self.layout == "channels_first" else x.dim() - 1

    def _check(self, x: Tensor, padding_mask: Optional[Tensor]) -> None:
        if isinstance(x, torch.fx.Proxy):
            raise TypeError(
                "AddBias must be a leaf module for torch.fx tracing (its mean is calibrated "
                "at run time): import rescalenet.timm before timm's FX feature extraction, or "
                "pass tracer_kwargs={'leaf_modules': [rescalenet.AddBias]} to torchvision's "
                "create_feature_extractor"
            )
        if self.layout == "channels_first":
            if x.dim() < 2:
                raise ValueError(
                    f"AddBias({self.num_features}) expects (N, C, ...) input, got shape {tuple(x.shape)}"
                )
            if padding_mask is not None:
                raise ValueError("padding_mask is only supported for the 'TBC' and 'BTC' layouts")
        elif x.dim() != 3:
            raise ValueError(
                f"AddBias({self.num_features}, layout={self.layout!r}) expects a 3-D "
                f"{self.layout} tensor, got shape {tuple(x.shape)}"
            )
        channels = x.shape[self._channel_dim(x)]
        if channels != self.num_features:
            raise ValueError(
                f"AddBias expects {self.num_features} channels, got {channels} "
                f"(input shape {tuple(x.shape)}, layout {self.layout})"
            )
        if padding_mask is not None:
            b, t = (x.shape[1], x.shape[0]) if self.layout == "TBC" else (x.shape[0], x.shape[1])
            if tuple(padding_mask.shape) != (b, t):
                raise ValueError(
                    f"padding_mask must have shape (B, T) = {(b, t)}, got {tuple(padding_mask.shape)}"
                )

    def _broadcast(self, v: Tensor, x: Tensor) -> Tensor:
        if self.layout == "channels_first" and x.dim() > 2:
            return v.view((1, -1) + (1,) * (x.dim() - 2))
        return v

    # -- calibration ----------------------------------------------------------
    @torch.no_grad()
    def _update_mean(self, x: Tensor, padding_mask: Optional[Tensor]) -> None:
        x = x.detach().float()
        if padding_mask is None:
            dims = [d for d in range(x.dim()) if d != self._channel_dim(x)]
            total = x.sum(dim=dims)
            n = torch.tensor(float(x.numel() // self.num_features), device=x.device)
        else:
            keep = ~padding_mask.to(torch.bool)
            if self.layout == "TBC":
                keep = keep.t()
            keep = keep.unsqueeze(-1).to(x.dtype)
            total = (x * keep).sum(dim=(0, 1))
            n = keep.sum()
        stats = torch.cat([total, n.reshape(1)])
        if self.sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
        if stats[-1] <= 0:
            raise ValueError("AddBias calibration got a batch with no unpadded position")
        batch_mean = stats[:-1] / stats[-1]
        self.count += 1
        self.init_mean += (batch_mean - self.init_mean) / self.count

    # -- the shift --------------------------------------------------------------
    def _shift_from(self, warming: bool, mean: Tensor, dtype: Optional[torch.dtype]) -> Tensor:
        bias = self._bias if dtype is None else self._bias.to(dtype)
        mean = mean if dtype is None else mean.to(dtype)
        return (bias * self.warmup_scale if warming else bias) - mean

    def shift(self, dtype: Optional[torch.dtype] = None) -> Tensor:
        """The vector ``forward`` adds to its input when it updates nothing: ``b - mu``
        once calibrated, ``warmup_scale * b - mu`` before (differentiable in ``b``;
        computed in ``dtype`` when given). The one definition that the fused forward
        and :func:`rescalenet.fold_for_inference` use."""
        return self._shift_from(not self.calibrated, self.init_mean, dtype)

    def _forward_shift(self, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        replay = getattr(_checkpointing, "replay", None)
        if replay is not None and self in replay:  # a checkpoint recompute: what the forward used
            return self._shift_from(True, replay[self], None)
        if self.calibrated:
            return self._shift_from(False, self.init_mean, None)
        if self.training:
            self._update_mean(x, padding_mask)
            record = getattr(_checkpointing, "record", None)
            if record is not None:
                record[self] = self.init_mean.clone()
        elif not self._warned_uncalibrated_eval:
            self._warned_uncalibrated_eval = True
            warnings.warn(
                "AddBias: an eval-mode forward before calibration adds 0.01 * b - mu with mu = 0 "
                "(the means are estimated by the first training-mode passes): train, load a "
                "checkpoint, or call rescalenet.calibrate(model, batches) first",
                UserWarning, stacklevel=3,
            )
        return self._shift_from(True, self.init_mean, None)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        self._check(x, padding_mask)
        return x + self._broadcast(self._forward_shift(x, padding_mask).to(x.dtype), x)


@contextmanager
def _set_checkpoint_state(name: str, value: Optional[Dict["AddBias", Tensor]]) -> Iterator[None]:
    previous = getattr(_checkpointing, name, None)
    setattr(_checkpointing, name, value)
    try:
        yield
    finally:
        setattr(_checkpointing, name, previous)


def checkpoint_without_recalibration(module: nn.Module, x: Tensor) -> Tensor:
    """``torch.utils.checkpoint`` of ``module(x)`` (non-reentrant) that keeps AddBias
    calibration exact: the backward's recompute of the forward never updates a mean
    and uses exactly the mean and the warm-up scale that the forward used (recorded
    per call). A plain checkpoint would feed every batch twice into the means and
    recompute the step that ends calibration with a different shift."""
    used: Dict[AddBias, Tensor] = {}

    def contexts():
        return _set_checkpoint_state("record", used), _set_checkpoint_state("replay", used)

    return checkpoint(module, x, use_reentrant=False, context_fn=contexts)


def is_calibrated(model: nn.Module) -> bool:
    """True when every ``AddBias`` in ``model`` has finished its calibration."""
    return all(m.calibrated for m in model.modules() if isinstance(m, AddBias))


def reset_calibration(model: nn.Module) -> None:
    """Make every ``AddBias`` in ``model`` estimate its mean again."""
    for m in model.modules():
        if isinstance(m, AddBias):
            m.reset_calibration()


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable, forward=None) -> int:
    """Run training-mode forward passes over ``batches`` until ``model`` is calibrated.

    The official code silently calibrates on whatever the first 8 forward calls see;
    this makes the step explicit (for example on real training images before a
    benchmark or a diagnostic). ``forward(model, batch)`` defaults to ``model(batch)``.
    No parameter is changed; dropout is active as in training. The model's
    train/eval mode is restored. Returns the number of passes used; raises
    ``RuntimeError`` if ``batches`` ran out first.
    """
    if not any(isinstance(m, AddBias) for m in model.modules()):
        raise ValueError("calibrate: the model holds no AddBias module")
    was_training = model.training
    model.train()
    steps = 0
    try:
        for batch in batches:
            if is_calibrated(model):
                break
            (forward or (lambda m, b: m(b)))(model, batch)
            steps += 1
    finally:
        model.train(was_training)
    if not is_calibrated(model):
        needed = max(m.calibration_steps for m in model.modules() if isinstance(m, AddBias))
        raise RuntimeError(
            f"calibrate: {steps} batches were not enough; the AddBias modules need {needed} "
            "training-mode passes (modules kept in eval mode, e.g. frozen stages, never calibrate)"
        )
    return steps
