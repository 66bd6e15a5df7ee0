"""The rescaling rules applied to a Transformer stack (pure PyTorch).

The paper's Transformer recipe was never published (``docs/method.md``, section 2),
so it is derived here from the same two rules as the ResNet one:

1. every residual sublayer keeps the variance of the signal,
   ``alpha_k ** 2 + beta_k ** 2 = 1``;
2. every sublayer reaches the stack's output with the same weight.

A *sublayer* is one residual branch: self-attention and feed-forward in an
encoder layer (2 per layer), self-attention, cross-attention and feed-forward in
a decoder layer (3 per layer). Each stack is one chain of ``L`` residual sums
(``L = 2 * encoder_layers`` or ``3 * decoder_layers``); the ``j``-th sublayer of
layer ``l`` is the ``i = l * s + j``-th (``s`` sublayers per layer) and gets the
index ``k = c + i`` of :func:`rescalenet.block_index` (``c = L - 1`` by default).
Its sum is ``alpha_k * x + (m / sqrt(L)) * F(x)`` with ``alpha_k = sqrt(k / (k + 1))``;
the rest of ``beta_k = 1 / sqrt(k + 1)`` lives in the initial weights of the
branch's *homogeneous* layers, each scaled by ``branch_init_gain(k, L, n=2)``:

* feed-forward ``fc2(relu(fc1(x)))``: homogeneous of degree 1 in ``fc1`` and in
  ``fc2`` (biases zero at init), so ``n = 2``; ``fc1`` gets He fan-in init (its
  output goes through the ReLU, which halves the second moment) and ``fc2``
  gain-1 fan-in init (nothing follows it), so ``Var[F(x)] = gain**4 Var[x]``;
* attention ``out_proj(softmax(q k^T) v_proj(x))``: homogeneous of degree 1 in
  ``v_proj`` and in ``out_proj`` (``q``/``k`` only move the softmax, which is not
  homogeneous, and keep their default init), so ``n = 2``, both gain-1 fan-in.
  The softmax averages values over positions, so at init an attention branch
  has *at most* the designed variance; the sum of ``beta_k ** 2`` over a stack is
  about ``ln 2`` whatever its depth, so the shortfall stays bounded too.

Each layer's gain also carries ``sqrt(1 - p)`` for the dropout ``p`` that follows
it (activation dropout after ``fc1``, attention dropout on the values, the
residual dropout after ``fc2`` / ``out_proj``), as the official code does for its
``Dropout2d``. The product of the two gains is ``sqrt(L / (k + 1))``, so the
branch reaches the sum with weight ``(1 / sqrt(L)) * sqrt(L / (k + 1)) = beta_k``
(condition 1), and unrolling the chain every branch reaches the output with
``1 / sqrt(c + L)`` (condition 2).

What counts as one chain is a choice the paper does not make for a Transformer;
:func:`transformer_sublayer_indices` offers three (``SUBLAYER_COUNTS``), the first
the default and the other two for the ablation:

* ``stack``: each stack is one chain, as above;
* ``model``: one chain over both stacks, the decoder's indices continuing after the
  encoder's (``L`` = all sublayers of the model; the decoder then starts at a larger
  ``k``, so its input keeps a larger share, as a larger ``c`` would give);
* ``type``: each sublayer type of a stack (self-attention, cross-attention,
  feed-forward) is its own chain of ``L`` = the stack's layers, so the sublayers of
  layer ``l`` all get ``k = c + l``. Each sum still keeps the variance (condition 1);
  the equal contribution (condition 2) then holds per type, not over the stack.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

from torch import nn

from .rescale import block_index, branch_init_gain, init_branch_weight_

__all__ = [
    "SUBLAYER_COUNTS",
    "stack_sublayer_indices",
    "transformer_sublayer_indices",
    "init_linear_branch_weight_",
    "init_feedforward_branch_",
    "init_attention_branch_",
]


def stack_sublayer_indices(
    num_layers: int, sublayers_per_layer: int, c: Optional[int] = None
) -> List[List[int]]:
    """``[[k of each sublayer] for each layer]`` for a stack of ``num_layers`` layers
    with ``sublayers_per_layer`` residual sublayers each (one chain of
    ``L = num_layers * sublayers_per_layer`` sums)."""
    if num_layers < 1:
        raise ValueError(f"a rescaled stack needs at least one layer, got {num_layers}")
    if sublayers_per_layer < 1:
        raise ValueError(f"a layer needs at least one residual sublayer, got {sublayers_per_layer}")
    total = num_layers * sublayers_per_layer
    return [
        [block_index(layer * sublayers_per_layer + j, total, c) for j in range(sublayers_per_layer)]
        for layer in range(num_layers)
    ]


SUBLAYER_COUNTS = ("stack", "model", "type")


def transformer_sublayer_indices(
    encoder_layers: int,
    decoder_layers: int,
    decoder_sublayers_per_layer: int = 3,
    count: str = "stack",
    c: Optional[int] = None,
) -> Tuple[Tuple[List[List[int]], int], Tuple[List[List[int]], int]]:
    """``((encoder k per layer, encoder L), (decoder k per layer, decoder L))`` of an
    encoder-decoder Transformer (2 sublayers per encoder layer), its sublayers counted
    into chains as ``count`` says (``SUBLAYER_COUNTS``, module docstring)."""
    if count not in SUBLAYER_COUNTS:
        raise ValueError(f"the sublayer count must be one of {', '.join(SUBLAYER_COUNTS)}, got {count!r}")
    if count == "stack":
        return ((stack_sublayer_indices(encoder_layers, 2, c), 2 * encoder_layers),
                (stack_sublayer_indices(decoder_layers, decoder_sublayers_per_layer, c),
                 decoder_sublayers_per_layer * decoder_layers))
    if count == "type":
        return tuple(([[block_index(layer, layers, c)] * per_layer for layer in range(layers)], layers)
                     for layers, per_layer in ((encoder_layers, 2), (decoder_layers, decoder_sublayers_per_layer)))
    total = 2 * encoder_layers + decoder_sublayers_per_layer * decoder_layers

    def chain(layers: int, per_layer: int, start: int) -> List[List[int]]:
        return [[block_index(start + layer * per_layer + j, total, c) for j in range(per_layer)]
                for layer in range(layers)]

    return ((chain(encoder_layers, 2, 0), total),
            (chain(decoder_layers, decoder_sublayers_per_layer, 2 * encoder_layers), total))


def init_linear_branch_weight_(layer: nn.Module, gain: float) -> None:
    """Gain-1 fan-in normal init times ``gain`` (``std = gain / sqrt(fan_in)``), for
    a branch layer whose output goes through no ReLU. Biases, if any, are zeroed."""
    fan_in = layer.weight[0].numel()
    nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def init_feedforward_branch_(
    fc1: nn.Module,
    fc2: nn.Module,
    k: int,
    num_sublayers: int,
    activation_dropout: float = 0.0,
    dropout: float = 0.0,
) -> None:
    """Init ``fc2(dropout_a(relu(fc1(x))))`` followed by ``dropout`` as sublayer ``k``
    of ``num_sublayers``: ``fc1`` He fan-in, ``fc2`` gain-1 fan-in, each times
    ``branch_init_gain(k, L, 2, p)`` with the dropout ``p`` that follows it."""
    init_branch_weight_(fc1, branch_init_gain(k, num_sublayers, 2, activation_dropout))
    init_linear_branch_weight_(fc2, branch_init_gain(k, num_sublayers, 2, dropout))


def init_attention_branch_(
    v_proj: nn.Module,
    out_proj: nn.Module,
    k: int,
    num_sublayers: int,
    attention_dropout: float = 0.0,
    dropout: float = 0.0,
) -> None:
    """Init the value and output projections of an attention sublayer ``k`` of
    ``num_sublayers`` (gain-1 fan-in times ``branch_init_gain(k, L, 2, p)``; the
    attention-probability dropout acts on the values, ``dropout`` on the output).
    The query and key projections are not touched."""
    init_linear_branch_weight_(v_proj, branch_init_gain(k, num_sublayers, 2, attention_dropout))
    init_linear_branch_weight_(out_proj, branch_init_gain(k, num_sublayers, 2, dropout))
