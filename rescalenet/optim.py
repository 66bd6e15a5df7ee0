"""Parameter groups: no weight decay on AddBias biases and branch multipliers.

The official code exempts every parameter whose name contains ``'_'``, which
silently catches any underscore in a module name. The rule here is explicit: a
parameter is exempt when its own (last) name is ``_bias`` (an ``AddBias``) or
``_scale`` (a ``RescaledResidual`` multiplier). Conv, linear and classifier
weights and the classifier bias are decayed, as in the official recipe.
Framework configs match the same two names (MMEngine ``custom_keys``).
"""
from __future__ import annotations

from typing import Dict, List

from torch import nn


__all__ = ["param_groups", "no_weight_decay_names", "NO_DECAY_PARAM_NAMES"]

# the own names of AddBias biases and of the branch multipliers (RescaledResidual,
# ChannelMultiplier)
NO_DECAY_PARAM_NAMES = ("_bias", "_scale")


def no_weight_decay_names(model: nn.Module) -> List[str]:
    """Full names of the parameters that get no weight decay."""
    return [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] in NO_DECAY_PARAM_NAMES]


def param_groups(model: nn.Module, weight_decay: float, **group_options) -> List[Dict]:
    """Two optimizer groups: ``weight_decay`` for weights, 0 for AddBias biases and
    multipliers. Frozen parameters (``requires_grad=False``) are left out.
    Extra keyword arguments (``lr=...``) are copied into both groups."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    exempt = set(no_weight_decay_names(model))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name in exempt else decay).append(p)
    return [
        dict(params=decay, weight_decay=weight_decay, **group_options),
        dict(params=no_decay, weight_decay=0.0, **group_options),
    ]
