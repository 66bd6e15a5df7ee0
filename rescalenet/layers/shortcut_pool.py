"""A variance-preserving average pool for the downsample shortcut (an ablation option;
the official ``AvgPool`` stays the default).

A ``s x s`` average pool of spatially uncorrelated activations divides their variance by
``s ** d``: at init each downsampling block of RescaleNet-18 at 32 px shrinks the
signal, although every block between them keeps it (``docs/method-in-code.md``, "Why
the per-block variance changes between stages"). :class:`VariancePreservingPool`
multiplies the pooled map by a gain ``g = sqrt(Var(x) / Var(pool(x)))`` measured on the
first ``calibration_steps`` training batches (per-channel variances averaged over
channels, all-reduced under ``torch.distributed``) and frozen afterwards, as AddBias
freezes its means.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .addbias import _checkpointing

__all__ = ["VariancePreservingPool"]


class VariancePreservingPool(nn.Module):
    """``g * pool(x)``, ``g`` calibrated so the pooled map keeps the input's variance."""

    def __init__(self, pool: nn.Module, calibration_steps: int = 8) -> None:
        super().__init__()
        self.pool = pool
        self.calibration_steps = calibration_steps
        self.register_buffer("gain", torch.ones(()))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"calibration_steps={self.calibration_steps}"

    @torch.no_grad()
    def _update_gain(self, x: Tensor, pooled: Tensor) -> None:
        dims = [0] + list(range(2, x.dim()))
        stats = torch.stack([x.float().var(dims).mean(), pooled.float().var(dims).mean()])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
        ratio = (stats[0] / stats[1].clamp_min(1e-12)).sqrt()
        self.count += 1
        self.gain += (ratio - self.gain) / self.count

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(x)
        replay = getattr(_checkpointing, "replay", None)
        if replay is not None and self in replay:  # a checkpoint recompute: the forward's gain
            return pooled * replay[self].to(pooled.dtype)
        if self.training and int(self.count) < self.calibration_steps:
            self._update_gain(x, pooled)
            record = getattr(_checkpointing, "record", None)
            if record is not None:
                record[self] = self.gain.clone()
        return pooled * self.gain.to(pooled.dtype)
