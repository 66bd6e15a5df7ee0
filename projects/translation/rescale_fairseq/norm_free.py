"""The other ways to drop LayerNorm from fairseq's Transformer, for comparison.

* ``dyt_transformer``: DyT, Zhu, Chen, He, LeCun, Liu, "Transformers without
  Normalization" (CVPR 2025): every LayerNorm replaced by
  ``DyT(x) = gamma * tanh(alpha * x) + beta`` with a learnable scalar ``alpha``
  (init 0.5, their default), per-channel ``gamma`` (init 1) and ``beta`` (init 0).
  The paper replaces the norms of *pre-LN* Transformers (ViT, ConvNeXt, LLaMA,
  wav2vec, DiT), where DyT keeps the residual stream unsquashed; the architecture
  therefore sets ``--encoder-normalize-before --decoder-normalize-before`` (which
  also puts a DyT after each stack, where the pre-LN model has its final
  LayerNorm).
* ``noln_transformer``: fairseq's Transformer with every LayerNorm replaced by the
  identity and nothing else: plain ``x + F(x)`` residuals with fairseq's init.
  (Post-norm and pre-norm coincide once the norms are gone.) It shows what the
  rescaling fixes.

Both are fairseq's ``TransformerModel`` built as usual; ``build_model`` then swaps
the normalization modules (fairseq builds its LayerNorms with no hook of their own,
in the layers' and stacks' constructors), so fairseq's ``forward`` runs unchanged.
The module names (``self_attn_layer_norm``, ``final_layer_norm``, ``layer_norm``)
stay, so fairseq's checkpoint upgrade code finds what it expects; they hold a
:class:`DynamicTanh` or an ``nn.Identity``. Options that only add LayerNorms
(``--layernorm-embedding``) get swapped too.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel
from fairseq.models.transformer.transformer_legacy import (
    base_architecture,
    transformer_iwslt_de_en,
    transformer_wmt_en_de,
)

__all__ = [
    "DynamicTanh",
    "replace_layer_norms",
    "is_layer_norm",
    "DyTTransformerModel",
    "NoLayerNormTransformerModel",
]


class DynamicTanh(nn.Module):
    """``gamma * tanh(alpha * x) + beta`` over the last dimension (DyT, Zhu et al. 2025)."""

    def __init__(self, num_features: int, alpha_init: float = 0.5) -> None:
        super().__init__()
        self.num_features = num_features
        self.alpha = nn.Parameter(torch.full((1,), float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(num_features))  # gamma
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.alpha * x) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.num_features}, alpha_init={self.alpha.item() if self.alpha.numel() == 1 else '...'}"


def is_layer_norm(module: nn.Module) -> bool:
    """torch's LayerNorm, or apex's FusedLayerNorm that fairseq uses on a GPU."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__ == "FusedLayerNorm"


def replace_layer_norms(model: nn.Module, factory: Callable[[nn.Module], nn.Module]) -> int:
    """Replace every LayerNorm of ``model`` (in place) by ``factory(layer_norm)``;
    returns how many were replaced."""
    targets = [(parent, name, child)
               for parent in model.modules()
               for name, child in parent.named_children()
               if is_layer_norm(child)]
    for parent, name, child in targets:
        setattr(parent, name, factory(child))
    return len(targets)


def _features(layer_norm: nn.Module) -> int:
    shape = layer_norm.normalized_shape
    if len(shape) != 1:
        raise ValueError(f"DyT replaces LayerNorms over one dimension, got normalized_shape {tuple(shape)}")
    return shape[0]


class _SwappedNormTransformer(TransformerModel):
    """fairseq's Transformer with each LayerNorm replaced by :meth:`replacement`."""

    @classmethod
    def replacement(cls, args, layer_norm: nn.Module) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def build_model(cls, args, task):
        model = super().build_model(args, task)
        replace_layer_norms(model, lambda ln: cls.replacement(args, ln))
        return model


@register_model("dyt_transformer")
class DyTTransformerModel(_SwappedNormTransformer):
    """Pre-LN Transformer with every LayerNorm replaced by DyT (Zhu et al., CVPR 2025)."""

    @classmethod
    def hub_models(cls):
        return {}

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        parser.add_argument("--dyt-alpha-init", type=float, metavar="A",
                            help="initial alpha of every DyT (default 0.5, the paper's)")

    @classmethod
    def replacement(cls, args, layer_norm):
        return DynamicTanh(_features(layer_norm), args.dyt_alpha_init)


@register_model("noln_transformer")
class NoLayerNormTransformerModel(_SwappedNormTransformer):
    """fairseq's Transformer with every LayerNorm replaced by the identity."""

    @classmethod
    def hub_models(cls):
        return {}

    @classmethod
    def replacement(cls, args, layer_norm):
        return nn.Identity()


def _dyt_defaults(args) -> None:
    args.dyt_alpha_init = getattr(args, "dyt_alpha_init", None)
    if args.dyt_alpha_init is None:
        args.dyt_alpha_init = 0.5
    # DyT replaces the norms of pre-LN Transformers (see the module docstring)
    args.encoder_normalize_before = getattr(args, "encoder_normalize_before", True)
    args.decoder_normalize_before = getattr(args, "decoder_normalize_before", True)


# (architecture suffix, fairseq preset): each architecture fills its own defaults,
# then chains to fairseq's preset of the same dimensions
_PRESETS = (
    ("", base_architecture),
    ("_wmt_en_de", transformer_wmt_en_de),
    ("_iwslt_de_en", transformer_iwslt_de_en),
)


def _register(model_name: str, defaults: Callable = lambda args: None) -> None:
    for suffix, preset in _PRESETS:
        def arch(args, preset=preset):
            defaults(args)
            preset(args)

        arch.__name__ = model_name + suffix
        register_model_architecture(model_name, model_name + suffix)(arch)


_register("dyt_transformer", _dyt_defaults)
_register("noln_transformer")
