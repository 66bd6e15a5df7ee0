"""``rescale_transformer``: fairseq's Transformer with rescaled residuals and no LayerNorm.

Each stack (encoder, decoder) is one chain of ``L`` rescaled residual sums, one
per sublayer (encoder: self-attention, feed-forward; decoder: self-attention,
cross-attention, feed-forward); see :mod:`rescalenet.transformer` for the
derivation of the coefficients and the init. There is no LayerNorm anywhere:
not in the layers, not after the stacks (their ``layer_norm`` slot holds an
AddBias that centres the encoder output for the cross-attention and the decoder
features for the output projection, like the AddBias before the pooling of a
RescaleNet), and no ``--layernorm-embedding``.

Architectures (each fills the ``--rescale-*`` defaults, then chains to fairseq's
preset of the same dimensions)::

    rescale_transformer                        -> transformer (base)
    rescale_transformer_wmt_en_de              -> transformer_wmt_en_de
    rescale_transformer_vaswani_wmt_en_de_big  -> transformer_vaswani_wmt_en_de_big
    rescale_transformer_iwslt_de_en            -> transformer_iwslt_de_en
"""
from __future__ import annotations

from typing import Optional

from fairseq import utils
from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
)
from fairseq.models.transformer.transformer_legacy import (
    base_architecture,
    transformer_iwslt_de_en,
    transformer_vaswani_wmt_en_de_big,
    transformer_wmt_en_de,
)

from rescalenet.layers import MULTIPLIERS
from rescalenet.transformer import SUBLAYER_COUNTS, transformer_sublayer_indices

from .guards import (
    check_finite_output,
    check_restore_file,
    check_vocabulary_sizes,
    install_divergence_report,
    training_state,
)
from .layers import (
    PreSublayerSlot,
    RescaleTransformerDecoderLayer,
    RescaleTransformerEncoderLayer,
    SequenceAddBias,
    padding_for,
)

__all__ = [
    "RescaleTransformerModel",
    "RescaleTransformerEncoder",
    "RescaleTransformerDecoder",
    "check_rescale_args",
]

# options that would put a LayerNorm (or another residual rule) back into the model
_NORM_OPTIONS = {
    "encoder_normalize_before": "--encoder-normalize-before",
    "decoder_normalize_before": "--decoder-normalize-before",
    "layernorm_embedding": "--layernorm-embedding",
    "scale_attn": "--scale-attn",
    "scale_fc": "--scale-fc",
    "scale_resids": "--scale-resids",
}


def check_rescale_args(args) -> None:
    """Clear errors for options ``rescale_transformer`` cannot honour."""
    kind = utils.safe_getattr(args, "rescale_multiplier", "scalar")
    if kind not in MULTIPLIERS:
        raise ValueError(f"--rescale-multiplier must be one of {', '.join(MULTIPLIERS)}, got {kind!r}")
    for name, flag in (("encoder_layers", "--encoder-layers"), ("decoder_layers", "--decoder-layers")):
        depth = utils.safe_getattr(args, name, None)
        if depth is not None and depth < 1:
            raise ValueError(f"rescale_transformer needs {flag} >= 1, got {depth}")
    count = utils.safe_getattr(args, "rescale_count", "stack")
    if count not in SUBLAYER_COUNTS:
        raise ValueError(f"--rescale-count must be one of {', '.join(SUBLAYER_COUNTS)}, got {count!r}")
    c = utils.safe_getattr(args, "rescale_c", None)
    if c is not None and c < 0:
        raise ValueError(f"--rescale-c must be >= 0 (default: number of sublayers - 1), got {c}")
    factor = utils.safe_getattr(args, "rescale_multiplier_lr", 1.0)
    if factor is not None and not factor > 0:
        raise ValueError(f"--rescale-multiplier-lr must be > 0, got {factor}")
    steps = utils.safe_getattr(args, "rescale_calibration_steps", 8)
    if steps < 1:
        raise ValueError(f"--rescale-calibration-steps must be >= 1, got {steps}")
    for name, flag in _NORM_OPTIONS.items():
        if utils.safe_getattr(args, name, False):
            raise ValueError(f"rescale_transformer has no LayerNorm and rescales every residual; {flag} does not apply")
    if utils.safe_getattr(args, "checkpoint_activations", False) or utils.safe_getattr(args, "offload_activations", False):
        raise ValueError(
            "--checkpoint-activations re-runs each layer's forward in the backward pass, which would "
            "feed the AddBias calibration twice per step; it is not supported by rescale_transformer"
        )
    if utils.safe_getattr(args, "quant_noise_pq", 0):
        # fairseq's quant_noise hook writes ``weight.data = weight.masked_fill(mask, 0) / (1 - p)``
        # at every training forward (fairseq issue #3783): blocks are zeroed for good and the
        # surviving weights multiplied by 1 / (1 - p) again at every step. A LayerNorm after
        # them absorbs the growing scale; without normalization the outputs grow with it.
        raise ValueError(
            "--quant-noise-pq zeroes weight blocks and multiplies the remaining weights by 1/(1-p) "
            "in place at every training step (fairseq issue #3783); LayerNorm hides the growing "
            "scale, a model without normalization diverges. Not supported by rescale_transformer"
        )
    if utils.safe_getattr(args, "store_ema", False):
        # fairseq's EMA multiplies every state-dict tensor by the decay; the AddBias
        # calibration state (an integer pass count and the frozen means) must be copied,
        # not averaged, and fairseq's trainer gives no way to say so (EMA skip_keys)
        raise ValueError(
            "--store-ema multiplies every state-dict tensor by the decay, including the integer "
            "AddBias calibration counters, which must be copied instead (fairseq offers no way to "
            "say so); not supported by rescale_transformer. Average the last checkpoints instead: "
            "python -m projects.translation.rescale_fairseq.average_checkpoints --help"
        )
    if utils.safe_getattr(args, "base_layers", 0):
        raise ValueError("--base-layers inserts layers without rescaling; not supported by rescale_transformer")


def sublayer_chains(cfg, decoder_sublayers_per_layer: int):
    """The ``k`` of every sublayer and the ``L`` of each stack, counted as
    ``--rescale-count`` says (``rescalenet.transformer.transformer_sublayer_indices``)."""
    return transformer_sublayer_indices(
        cfg.encoder.layers, cfg.decoder.layers, decoder_sublayers_per_layer,
        utils.safe_getattr(cfg, "rescale_count", None) or "stack", utils.safe_getattr(cfg, "rescale_c", None),
    )


class RescaleTransformerEncoder(TransformerEncoderBase):
    """fairseq's encoder with :class:`RescaleTransformerEncoderLayer` layers and an
    AddBias (``final_bias``) in place of the final LayerNorm."""

    layer_norm = PreSublayerSlot("final_bias")

    def __init__(self, cfg, dictionary, embed_tokens, return_fc: bool = False):
        (indices, self._num_sublayers), _ = sublayer_chains(cfg, 2 if cfg.no_cross_attention else 3)
        # consumed by build_encoder_layer, which fairseq's constructor calls per layer
        self._layer_indices = iter(indices)
        super().__init__(cfg, dictionary, embed_tokens, return_fc=return_fc)
        del self._layer_indices
        self.final_bias = SequenceAddBias(
            embed_tokens.embedding_dim, utils.safe_getattr(cfg, "rescale_calibration_steps", 8)
        )

    def build_encoder_layer(self, cfg):
        layer = RescaleTransformerEncoderLayer(
            cfg, next(self._layer_indices), self._num_sublayers, return_fc=self.return_fc
        )
        return fsdp_wrap(layer, min_num_params=cfg.min_params_to_wrap)

    def forward(self, src_tokens, src_lengths=None, return_all_hiddens: bool = False, token_embeddings=None):
        with padding_for([self.final_bias], src_tokens.eq(self.padding_idx)):
            return super().forward(src_tokens, src_lengths, return_all_hiddens, token_embeddings)


class RescaleTransformerDecoder(TransformerDecoderBase):
    """fairseq's decoder with :class:`RescaleTransformerDecoderLayer` layers and an
    AddBias (``final_bias``) in place of the final LayerNorm."""

    layer_norm = PreSublayerSlot("final_bias")

    def __init__(self, cfg, dictionary, embed_tokens, no_encoder_attn: bool = False, output_projection=None):
        _, (indices, self._num_sublayers) = sublayer_chains(cfg, 2 if no_encoder_attn else 3)
        self._layer_indices = iter(indices)
        super().__init__(
            cfg, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn, output_projection=output_projection
        )
        del self._layer_indices
        self.final_bias = SequenceAddBias(self.embed_dim, utils.safe_getattr(cfg, "rescale_calibration_steps", 8))

    def build_decoder_layer(self, cfg, no_encoder_attn: bool = False):
        layer = RescaleTransformerDecoderLayer(
            cfg, next(self._layer_indices), self._num_sublayers, no_encoder_attn=no_encoder_attn
        )
        return fsdp_wrap(layer, min_num_params=cfg.min_params_to_wrap)

    def extract_features(
        self,
        prev_output_tokens,
        encoder_out=None,
        incremental_state=None,
        full_context_alignment: bool = False,
        alignment_layer: Optional[int] = None,
        alignment_heads: Optional[int] = None,
    ):
        # (the mask is only read while calibrating, i.e. in training: no incremental state)
        mask = prev_output_tokens.eq(self.padding_idx) if incremental_state is None else None
        with padding_for([self.final_bias], mask):
            return super().extract_features(
                prev_output_tokens, encoder_out, incremental_state,
                full_context_alignment, alignment_layer, alignment_heads,
            )


@register_model("rescale_transformer")
class RescaleTransformerModel(TransformerModel):
    """Transformer without normalization: rescaled residuals, AddBias, depth-scaled init
    (Shao et al., "Is normalization indispensable for training deep neural network?",
    NeurIPS 2020). Load with ``--user-dir projects/translation/rescale_fairseq``."""

    @classmethod
    def hub_models(cls):
        return {}

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        parser.add_argument(
            "--rescale-multiplier", choices=MULTIPLIERS, metavar="KIND",
            help="learnable multiplier m_k on every residual branch: scalar (default), "
                 "vector (one per channel) or none (fixed at 1)",
        )
        parser.add_argument(
            "--rescale-c", type=int, metavar="C",
            help="offset c of the sublayer index k = c + i (default: sublayers per stack - 1)",
        )
        parser.add_argument(
            "--rescale-count", choices=SUBLAYER_COUNTS, metavar="CHAINS",
            help="what one chain of L residual sums is: stack (each stack, the default), model "
                 "(both stacks, the decoder's indices after the encoder's) or type (each sublayer "
                 "type of a stack: L = its layers); an ablation of the derivation",
        )
        parser.add_argument(
            "--rescale-multiplier-lr", type=float, metavar="F",
            help="move every multiplier m_k F times as fast under Adam, through m_k = F * p_k "
                 "(p_k init 1/F; same model at init; default 1)",
        )
        parser.add_argument(
            "--rescale-calibration-steps", type=int, metavar="N",
            help="training batches averaged into each AddBias mean (default 8)",
        )

    @classmethod
    def build_model(cls, args, task):
        _rescale_defaults(args)
        check_rescale_args(args)
        check_restore_file(args, task)  # fairseq-train: a truncated or mismatched checkpoint_last.pt
        install_divergence_report(args)
        return super().build_model(args, task)

    def set_num_updates(self, num_updates):
        training_state["num_updates"] = num_updates  # for the divergence report
        super().set_num_updates(num_updates)

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        probs = super().get_normalized_probs(net_output, log_probs, sample)
        check_finite_output(self, probs)  # fairseq-train: stop at the first NaN output
        return probs

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        check_vocabulary_sizes(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return RescaleTransformerEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return RescaleTransformerDecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)


def _rescale_defaults(args) -> None:
    args.rescale_multiplier = getattr(args, "rescale_multiplier", "scalar")
    args.rescale_c = getattr(args, "rescale_c", None)
    args.rescale_count = getattr(args, "rescale_count", None) or "stack"
    args.rescale_calibration_steps = getattr(args, "rescale_calibration_steps", 8)
    if getattr(args, "rescale_multiplier_lr", None) is None:
        args.rescale_multiplier_lr = 1.0


@register_model_architecture("rescale_transformer", "rescale_transformer")
def rescale_transformer(args):
    _rescale_defaults(args)
    base_architecture(args)


@register_model_architecture("rescale_transformer", "rescale_transformer_wmt_en_de")
def rescale_transformer_wmt_en_de(args):
    _rescale_defaults(args)
    transformer_wmt_en_de(args)


@register_model_architecture("rescale_transformer", "rescale_transformer_vaswani_wmt_en_de_big")
def rescale_transformer_vaswani_wmt_en_de_big(args):
    _rescale_defaults(args)
    transformer_vaswani_wmt_en_de_big(args)


@register_model_architecture("rescale_transformer", "rescale_transformer_iwslt_de_en")
def rescale_transformer_iwslt_de_en(args):
    _rescale_defaults(args)
    transformer_iwslt_de_en(args)
