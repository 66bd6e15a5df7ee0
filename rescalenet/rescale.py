"""The rescaling rules of RescaleNet, in one place (``docs/method.md`` sections 1.2-1.3).

For a network of ``L`` residual blocks (or sublayers), the ``i``-th (``i = 0..L-1``)
gets the index ``k = c + i``; ``c = L - 1`` by default, as in the official code.

* ``shortcut_scale(k)  = sqrt(k / (k + 1))``  (alpha_k)
* ``residual_scale(L)  = 1 / sqrt(L)``        (the same constant on every branch)
* ``branch_init_gain(k, L, n, p) = (L / (k + 1)) ** (1 / (2 n)) * sqrt(1 - p)``: the
  extra factor on the He fan-in init of each of the ``n`` weight layers of a branch
  (``p``: the dropout rate that follows them, compensated for).

A branch of ``n`` such layers is positively homogeneous of degree ``n`` in its
weights, so at init it reaches the sum with weight
``residual_scale * gain ** n = 1 / sqrt(k + 1) = beta_k`` and
``alpha_k ** 2 + beta_k ** 2 = 1`` (variance preserved, condition 1). Unrolling the
recursion, every branch reaches the network output with the same weight
``1 / sqrt(c + L)`` (condition 2).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

from torch import nn

__all__ = [
    "block_index",
    "check_offset",
    "shortcut_scale",
    "residual_scale",
    "branch_init_gain",
    "effective_branch_scale",
    "init_branch_weight_",
    "init_linear_preserving_",
]


def block_index(i: int, num_blocks: int, c: Optional[int] = None) -> int:
    """Index ``k = c + i`` of the ``i``-th of ``num_blocks`` blocks (``c`` defaults to ``L - 1``)."""
    if num_blocks < 1:
        raise ValueError(f"the number of residual blocks must be >= 1, got {num_blocks}")
    if not 0 <= i < num_blocks:
        raise ValueError(f"block position {i} is outside 0..{num_blocks - 1}")
    c = num_blocks - 1 if c is None else check_offset(c)
    return c + i


def check_offset(c: Optional[int]) -> Optional[int]:
    """``c`` as given, refused unless ``None`` or an integer >= 0 (a float such as
    ``7.5`` would silently give non-integer block indices)."""
    if c is None:
        return None
    if isinstance(c, bool) or not isinstance(c, numbers.Integral):
        raise TypeError(f"the offset c must be an integer >= 0 (or None for L - 1), got {c!r}")
    if c < 0:
        raise ValueError(f"the offset c must be >= 0, got {c}")
    return int(c)


def shortcut_scale(k: int) -> float:
    """alpha_k = sqrt(k / (k + 1))."""
    return math.sqrt(k / (k + 1))


def residual_scale(num_blocks: int) -> float:
    """The constant factor 1 / sqrt(L) on every residual branch."""
    return 1.0 / math.sqrt(num_blocks)


def branch_init_gain(k: int, num_blocks: int, num_layers: int, dropout: float = 0.0) -> float:
    """Init multiplier of each of the ``num_layers`` weight layers in block ``k``'s branch."""
    if num_layers < 1:
        raise ValueError(f"a branch needs at least one weight layer, got {num_layers}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    # Dropout(p) scales kept activations by 1/(1-p), inflating the second moment by
    # 1/(1-p) per layer; sqrt(1-p) on the weights keeps the designed variance.
    return (num_blocks / (k + 1)) ** (1.0 / (2 * num_layers)) * math.sqrt(1.0 - dropout)


def effective_branch_scale(k: int) -> float:
    """beta_k = 1 / sqrt(k + 1): the branch's weight in the sum at init."""
    return 1.0 / math.sqrt(k + 1)


def init_branch_weight_(layer: nn.Module, gain: float) -> None:
    """He fan-in normal init times ``gain``: ``std = gain * sqrt(2 / fan_in)``.

    ``fan_in`` counts one group's input channels times the kernel size, as in
    ``nn.init.kaiming_normal_``. Biases, if any, are zeroed.
    """
    fan_in = layer.weight[0].numel()
    nn.init.normal_(layer.weight, 0.0, gain * math.sqrt(2.0 / fan_in))
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def init_linear_preserving_(layer: nn.Module) -> None:
    """Gain-1 fan-in init (``kaiming_normal_(a=1)``), for layers followed by no ReLU:
    the downsample shortcut's 1x1 conv and the classifier."""
    nn.init.kaiming_normal_(layer.weight, a=1)
