"""Building blocks of RescaleNet: the bias reparameterization (``AddBias``) and the
rescaled residual sum (``RescaledResidual``).

Paper: Shao et al., "Is normalization indispensable for training deep neural
network?", NeurIPS 2020, sections 4.2-4.4. Equation numbers below refer to
``docs/method.md``.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "AddBias",
    "RescaledResidual",
    "calibrate",
    "is_calibrated",
    "reset_calibration",
    "MULTIPLIERS",
    "LAYOUTS",
]

LAYOUTS = ("channels_first", "TBC", "BTC")
MULTIPLIERS = ("scalar", "vector", "none")


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
      ``torchinfo.summary`` before training cannot consume the calibration;
    * under ``torch.distributed`` the batch sums and counts are all-reduced, so
      ``mu`` is the mean over the global batch and identical on every rank (DDP
      wrappers such as MMEngine's do not broadcast buffers);
    * ``count`` and ``init_mean`` are buffers, so a model restored from a
      checkpoint is calibrated and never recalibrates.

    Args:
        num_features: number of channels ``C``.
        layout: ``'channels_first'`` for ``(N, C)``, ``(N, C, H, W)`` and
            ``(N, C, T, H, W)`` tensors; ``'TBC'`` or ``'BTC'`` for sequences with
            channels last (fairseq uses ``TBC``).
        calibration_steps: number of training-mode passes averaged into ``mu``.
        warmup_scale: factor on ``b`` while calibrating.
        sync: all-reduce the batch statistics when ``torch.distributed`` is
            initialised with more than one process.

    ``forward(x, padding_mask=None)``: for sequence layouts ``padding_mask`` is a
    ``(B, T)`` bool tensor, ``True`` at padded positions (the PyTorch and fairseq
    convention); padded positions are left out of the means.
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
        if calibration_steps < 1:
            raise ValueError(f"calibration_steps must be >= 1, got {calibration_steps}")
        self.num_features = num_features
        self.layout = layout
        self.calibration_steps = calibration_steps
        self.warmup_scale = warmup_scale
        self.sync = sync
        self._bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("init_mean", torch.zeros(num_features))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        # Python-side copy of ``count >= calibration_steps``: reading the tensor on
        # every step would force a device synchronisation.
        self._calibrated = False

    @property
    def calibrated(self) -> bool:
        return self._calibrated

    def reset_calibration(self) -> None:
        """Forget ``mu``: the next ``calibration_steps`` training passes estimate it anew."""
        with torch.no_grad():
            self.init_mean.zero_()
            self.count.zero_()
        self._calibrated = False

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, layout={self.layout}, "
            f"calibration_steps={self.calibration_steps}, calibrated={self._calibrated}"
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Legacy checkpoints of the official code store (1, C, 1, 1) tensors.
        for name in ("_bias", "init_mean"):
            key = prefix + name
            if key in state_dict and state_dict[key].dim() > 1:
                state_dict[key] = state_dict[key].reshape(-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._calibrated = int(self.count) >= self.calibration_steps

    # -- shapes ---------------------------------------------------------------
    def _channel_dim(self, x: Tensor) -> int:
        return 1 if self.layout == "channels_first" else x.dim() - 1

    def _check(self, x: Tensor, padding_mask: Optional[Tensor]) -> None:
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
        self._calibrated = int(self.count) >= self.calibration_steps

    # -- folding into the next layer (used by the fused RescaleNet blocks) ---------
    def foldable(self) -> bool:
        """True when ``forward`` is a pure shift ``x + shift()``: no calibration update
        would happen (calibrated, or eval mode) and no hook watches this module. A
        caller may then add ``shift()`` inside the next layer instead of calling it."""
        return (self._calibrated or not self.training) and not (
            self._forward_hooks or self._forward_pre_hooks
        )

    def shift(self) -> Tensor:
        """The vector ``forward`` adds to its input right now: ``b - mu`` once calibrated,
        ``warmup_scale * b - mu`` before (differentiable in ``b``)."""
        if self._calibrated:
            return self._bias - self.init_mean
        return self._bias * self.warmup_scale - self.init_mean

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        self._check(x, padding_mask)
        if not self._calibrated:
            if self.training:
                self._update_mean(x, padding_mask)
            bias = self._bias * self.warmup_scale - self.init_mean
        else:
            bias = self._bias - self.init_mean
        return x + self._broadcast(bias.to(x.dtype), x)


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


class RescaledResidual(nn.Module):
    """``out = alpha_k * shortcut + (m_k / sqrt(L)) * branch`` (sections 4.2-4.3).

    ``alpha_k = sqrt(k / (k + 1))`` (``shortcut_scale``) and the constant
    ``1 / sqrt(L)`` (``residual_scale``) come from :mod:`rescalenet.rescale`; the
    block-dependent rest of ``beta_k`` lives in the branch's initial weights, so at
    init the branch reaches the sum with weight ``1 / sqrt(k + 1)`` and
    ``alpha_k ** 2 + beta_k ** 2 = 1``. ``m_k`` is the learnable multiplier:

    * ``'scalar'`` (default): one parameter ``_scale``, init 1;
    * ``'vector'``: one per channel (``channels`` required);
    * ``'none'``: fixed at 1.

    ``channel_dim`` is where the channels are in the branch tensor (1 for
    convolutional maps, -1 for sequences).
    """

    def __init__(
        self,
        shortcut_scale: float,
        residual_scale: float,
        multiplier: str = "scalar",
        channels: Optional[int] = None,
        channel_dim: int = 1,
    ) -> None:
        super().__init__()
        if multiplier not in MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {MULTIPLIERS}, got {multiplier!r}")
        if multiplier == "vector" and not channels:
            raise ValueError("multiplier='vector' needs the number of channels")
        self.shortcut_scale = float(shortcut_scale)
        self.residual_scale = float(residual_scale)
        self.multiplier = multiplier
        self.channel_dim = channel_dim
        if multiplier == "none":
            self.register_parameter("_scale", None)
        else:
            self._scale = nn.Parameter(torch.ones(channels if multiplier == "vector" else 1))

    def extra_repr(self) -> str:
        return (
            f"shortcut_scale={self.shortcut_scale:.4f}, residual_scale={self.residual_scale:.4f}, "
            f"multiplier={self.multiplier}"
        )

    def branch_weight(self) -> Tensor:
        """The current factor on the branch, ``m_k / sqrt(L)`` (broadcastable)."""
        if self._scale is None:
            return torch.tensor(self.residual_scale)
        return self._scale * self.residual_scale

    def forward(self, shortcut: Tensor, branch: Tensor) -> Tensor:
        if self._scale is None:
            weighted = branch * self.residual_scale
        else:
            scale = self._scale * self.residual_scale
            if self.multiplier == "vector" and self.channel_dim != -1 and branch.dim() > 2:
                scale = scale.view((1, -1) + (1,) * (branch.dim() - 2))
            weighted = branch * scale.to(branch.dtype)
        # One fused kernel for the shortcut's scale and the sum.
        return torch.add(weighted, shortcut, alpha=self.shortcut_scale)

