"""The learning-rate schedule of the official RescaleNet code (``docs/method.md`` 1.8)."""
from __future__ import annotations

import math
from typing import Dict, Sequence

__all__ = ["WarmupSchedule"]


class WarmupSchedule:
    """Per-iteration lr ratio of the official code: linear warm-up ``it / warmup``,
    then step decay at ``milestones`` or cosine (floor 1e-5) over ``epochs`` epochs
    counted after the warm-up. ``step()`` sets every group's lr to ratio x its
    initial lr; call it before ``optimizer.step()``.

    ``warmup_steps`` instead puts a warm-up of that many iterations *inside* the
    ``epochs`` (for short runs, where a whole warm-up epoch is too long): the decay then
    spans the remaining ``epochs * iters_per_epoch - warmup_steps`` iterations."""

    def __init__(self, optimizer, iters_per_epoch: int, epochs: int, warmup_epochs: int,
                 schedule: str = "step", milestones: Sequence[int] = (30, 60, 90), gamma: float = 0.1,
                 warmup_steps: int = 0):
        if warmup_steps and warmup_epochs:
            raise ValueError("give warm-up epochs or warm-up steps, not both")
        self.optimizer = optimizer
        self.iters = iters_per_epoch
        self.epochs = epochs
        self.warmup = warmup_steps or warmup_epochs * iters_per_epoch
        # the decay runs over `epochs` epochs after an epoch-long warm-up, over what is left of
        # them after a step warm-up
        self.decay_epochs = epochs - warmup_steps / iters_per_epoch
        self.schedule = schedule
        self.milestones = list(milestones)
        self.gamma = gamma
        self.last_step = 0
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])

    def ratio(self, it: int) -> float:
        if it < self.warmup:
            return it / self.warmup
        e = (it - self.warmup) / self.iters
        if self.schedule == "cosine":
            return max(0.5 * (1 + math.cos(math.pi * min(e, self.decay_epochs) / self.decay_epochs)), 1e-5)
        return self.gamma ** sum(1 for m in self.milestones if e >= m)

    def step(self) -> float:
        r = self.ratio(self.last_step)
        for g in self.optimizer.param_groups:
            g["lr"] = r * g["initial_lr"]
        self.last_step += 1
        return r

    def state_dict(self) -> Dict:
        return {"step": self.last_step}

    def load_state_dict(self, state: Dict) -> None:
        self.last_step = int(state["step"])
