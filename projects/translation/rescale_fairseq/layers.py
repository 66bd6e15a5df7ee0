"""Fairseq encoder/decoder layers with rescaled residuals and no LayerNorm.

Only fairseq's hooks are overridden; its ``forward`` code runs unchanged:

* ``normalize_before`` is set, so fairseq's forward calls ``self.<slot>(x)`` on the
  input of every sublayer (the Pre-LN position, i.e. *before the sublayer's first
  weight layer*) and applies no norm after the sum. Those slots
  (``self_attn_layer_norm``, ``encoder_attn_layer_norm``, ``final_layer_norm``)
  are aliases (:class:`PreSublayerSlot`) of AddBias modules with names of their
  own, so the model holds no LayerNorm and its checkpoint says what it holds;
* ``residual_connection(x, residual)`` returns
  ``alpha_k * residual + (m_k / sqrt(L)) * x`` (core ``RescaledResidual``), one
  module per sublayer;
* ``build_fc1`` drops fc1's bias: the AddBias before it is that bias,
  ``y = W (x + b)`` (paper section 4.4);
* the value/output projections and fc1/fc2 get the depth-scaled init of
  :mod:`rescalenet.transformer`.

AddBias calibration means leave padded positions out: the layers hand their
padding mask to the AddBias modules for the duration of their forward.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterable, List, Optional, Sequence

import torch.nn as nn
from torch import Tensor

from fairseq import utils
from fairseq.modules.quant_noise import quant_noise
from fairseq.modules.transformer_layer import (
    TransformerDecoderLayerBase,
    TransformerEncoderLayerBase,
)

from rescalenet.layers import AddBias, RescaledResidual
from rescalenet.rescale import residual_scale, shortcut_scale
from rescalenet.transformer import init_attention_branch_, init_feedforward_branch_

__all__ = [
    "SequenceAddBias",
    "PreSublayerSlot",
    "RescaleTransformerEncoderLayer",
    "RescaleTransformerDecoderLayer",
    "padding_for",
]


class SequenceAddBias(AddBias):
    """The core ``AddBias`` in fairseq's ``(T, B, C)`` layout.

    fairseq calls its norm slots as ``slot(x)``; the owning layer sets
    :attr:`padding_mask` (``(B, T)``, ``True`` at padding) around its forward with
    :func:`padding_for`, so the calibration means count real tokens only. The
    mask matters only while calibrating, and is ignored otherwise (incremental
    decoding feeds one position at a time).
    """

    def __init__(self, num_features: int, calibration_steps: int = 8) -> None:
        super().__init__(num_features, layout="TBC", calibration_steps=calibration_steps)
        self.padding_mask: Optional[Tensor] = None

    def forward(self, x: Tensor) -> Tensor:
        calibrating = self.training and not self.calibrated
        return super().forward(x, self.padding_mask if calibrating else None)


@contextmanager
def padding_for(biases: Iterable[Optional[SequenceAddBias]], padding_mask: Optional[Tensor]):
    """Hand ``padding_mask`` to ``biases`` for the duration of a forward."""
    biases = [b for b in biases if b is not None]
    for b in biases:
        b.padding_mask = padding_mask
    try:
        yield
    finally:
        for b in biases:
            b.padding_mask = None


class PreSublayerSlot:
    """Lets fairseq's own ``forward`` find a module under its LayerNorm name.

    Reading ``layer.<slot>`` returns ``layer.<target>``. fairseq's constructors
    assign a LayerNorm to the slot (registered as a submodule, which the subclass
    deletes) or ``None`` (ignored here); anything else is refused.
    """

    def __init__(self, target: str) -> None:
        self.target = target

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj, self.target)

    def __set__(self, obj, value) -> None:
        if value is not None:
            raise AttributeError(f"{self.name} is an alias of {self.target}; set {self.target} instead")


def _residual(cfg, k: int, num_sublayers: int, channels: int) -> RescaledResidual:
    # --rescale-multiplier-lr F reparameterizes m_k = F * p_k (p_k init 1 / F): the sum
    # is the same function at init, and an Adam step on p_k (about lr, whatever the
    # gradient's scale) moves m_k F times as far. The stored parameter is p_k.
    factor = float(utils.safe_getattr(cfg, "rescale_multiplier_lr", None) or 1.0)
    residual = RescaledResidual(
        shortcut_scale(k),
        residual_scale(num_sublayers) * factor,
        multiplier=utils.safe_getattr(cfg, "rescale_multiplier", "scalar"),
        channels=channels,
        channel_dim=-1,
    )
    if residual._scale is None:
        residual.residual_scale /= factor  # a fixed multiplier has nothing to learn
    elif factor != 1.0:
        nn.init.constant_(residual._scale, 1.0 / factor)
    return residual


def _activation_dropout(cfg) -> float:
    # as in fairseq's layers: relu_dropout is the legacy name
    p = cfg.activation_dropout
    return float(p if p != 0 else (cfg.relu_dropout or 0))


class _RescaleLayerMixin:
    """What encoder and decoder layers share: bias-free fc1, the per-sublayer sums."""

    _LAYER_NORM_SLOTS: Sequence[str] = ()

    def _setup_rescale(self, cfg) -> None:
        for slot in self._LAYER_NORM_SLOTS:
            if slot in self._modules:  # the LayerNorm fairseq's constructor built
                delattr(self, slot)
        # run the pre-sublayer slots; apply no norm after the sums
        self.normalize_before = True
        self._pending_sums = None

    def _new_bias(self, cfg) -> SequenceAddBias:
        return SequenceAddBias(self.embed_dim, utils.safe_getattr(cfg, "rescale_calibration_steps", 8))

    def build_fc1(self, input_dim, output_dim, q_noise, qn_block_size):
        # the AddBias in front of fc1 takes the place of its bias: y = W (x + b)
        return quant_noise(nn.Linear(input_dim, output_dim, bias=False), q_noise, qn_block_size)

    def residual_connection(self, x, residual):
        if self._pending_sums is None:
            raise RuntimeError("residual_connection is called by the layer's forward only")
        return next(self._pending_sums)(residual, x)

    @contextmanager
    def _sublayers(self, sums: List[RescaledResidual], biases, padding_mask: Optional[Tensor]):
        self._pending_sums = iter(sums)
        try:
            with padding_for(biases, padding_mask):
                yield
        finally:
            self._pending_sums = None


class RescaleTransformerEncoderLayer(_RescaleLayerMixin, TransformerEncoderLayerBase):
    """Encoder layer: ``x = alpha x + (m / sqrt(L)) F(AddBias(x))`` for self-attention
    and feed-forward. ``sublayer_indices`` are the two sublayers' ``k`` in a stack
    of ``num_sublayers`` sums."""

    _LAYER_NORM_SLOTS = ("self_attn_layer_norm", "final_layer_norm")
    self_attn_layer_norm = PreSublayerSlot("self_attn_bias")
    final_layer_norm = PreSublayerSlot("ffn_bias")

    def __init__(self, cfg, sublayer_indices: Sequence[int], num_sublayers: int, return_fc: bool = False):
        super().__init__(cfg, return_fc=return_fc)
        self._setup_rescale(cfg)
        k_attn, k_ffn = sublayer_indices
        self.sublayer_indices = tuple(sublayer_indices)
        self.num_sublayers = num_sublayers
        self.self_attn_bias = self._new_bias(cfg)
        self.ffn_bias = self._new_bias(cfg)
        self.self_attn_residual = _residual(cfg, k_attn, num_sublayers, self.embed_dim)
        self.ffn_residual = _residual(cfg, k_ffn, num_sublayers, self.embed_dim)
        init_attention_branch_(
            self.self_attn.v_proj, self.self_attn.out_proj, k_attn, num_sublayers,
            cfg.attention_dropout, cfg.dropout,
        )
        init_feedforward_branch_(
            self.fc1, self.fc2, k_ffn, num_sublayers, _activation_dropout(cfg), cfg.dropout
        )

    def forward(self, x, encoder_padding_mask: Optional[Tensor], attn_mask: Optional[Tensor] = None):
        with self._sublayers(
            [self.self_attn_residual, self.ffn_residual],
            (self.self_attn_bias, self.ffn_bias),
            encoder_padding_mask,
        ):
            return super().forward(x, encoder_padding_mask, attn_mask)


class RescaleTransformerDecoderLayer(_RescaleLayerMixin, TransformerDecoderLayerBase):
    """Decoder layer: rescaled self-attention, cross-attention (the AddBias is on the
    decoder-side query input; keys/values are the encoder output, centred by the
    encoder's final AddBias) and feed-forward."""

    _LAYER_NORM_SLOTS = ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")
    self_attn_layer_norm = PreSublayerSlot("self_attn_bias")
    encoder_attn_layer_norm = PreSublayerSlot("encoder_attn_bias")
    final_layer_norm = PreSublayerSlot("ffn_bias")

    def __init__(
        self,
        cfg,
        sublayer_indices: Sequence[int],
        num_sublayers: int,
        no_encoder_attn: bool = False,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
    ):
        super().__init__(cfg, no_encoder_attn=no_encoder_attn, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn)
        self._setup_rescale(cfg)
        self.sublayer_indices = tuple(sublayer_indices)
        self.num_sublayers = num_sublayers
        self.self_attn_bias = self._new_bias(cfg)
        self.ffn_bias = self._new_bias(cfg)
        self.self_attn_residual = _residual(cfg, sublayer_indices[0], num_sublayers, self.embed_dim)
        init_attention_branch_(
            self.self_attn.v_proj, self.self_attn.out_proj, sublayer_indices[0], num_sublayers,
            cfg.attention_dropout, cfg.dropout,
        )
        if self.encoder_attn is None:
            self.encoder_attn_bias = None
            self.encoder_attn_residual = None
            k_ffn = sublayer_indices[1]
        else:
            k_cross, k_ffn = sublayer_indices[1], sublayer_indices[2]
            self.encoder_attn_bias = self._new_bias(cfg)
            self.encoder_attn_residual = _residual(cfg, k_cross, num_sublayers, self.embed_dim)
            init_attention_branch_(
                self.encoder_attn.v_proj, self.encoder_attn.out_proj, k_cross, num_sublayers,
                cfg.attention_dropout, cfg.dropout,
            )
        self.ffn_residual = _residual(cfg, k_ffn, num_sublayers, self.embed_dim)
        init_feedforward_branch_(
            self.fc1, self.fc2, k_ffn, num_sublayers, _activation_dropout(cfg), cfg.dropout
        )

    def forward(
        self,
        x,
        encoder_out: Optional[Tensor] = None,
        encoder_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        prev_self_attn_state: Optional[List[Tensor]] = None,
        prev_attn_state: Optional[List[Tensor]] = None,
        self_attn_mask: Optional[Tensor] = None,
        self_attn_padding_mask: Optional[Tensor] = None,
        need_attn: bool = False,
        need_head_weights: bool = False,
    ):
        sums = [self.self_attn_residual]
        if self.encoder_attn is not None and encoder_out is not None:  # as fairseq's forward
            sums.append(self.encoder_attn_residual)
        sums.append(self.ffn_residual)
        with self._sublayers(
            sums, (self.self_attn_bias, self.encoder_attn_bias, self.ffn_bias), self_attn_padding_mask
        ):
            return super().forward(
                x, encoder_out, encoder_padding_mask, incremental_state,
                prev_self_attn_state, prev_attn_state, self_attn_mask,
                self_attn_padding_mask, need_attn, need_head_weights,
            )
