"""RescaleNet for fairseq: ``--user-dir projects/translation/rescale_fairseq``.

Registers the model ``rescale_transformer`` and the architectures
``rescale_transformer``, ``rescale_transformer_wmt_en_de``,
``rescale_transformer_vaswani_wmt_en_de_big`` and
``rescale_transformer_iwslt_de_en``; the normalization-free peers it is compared with,
``dyt_transformer`` (DyT, Zhu et al. 2025) and ``noln_transformer`` (LayerNorm
replaced by the identity), each with ``_wmt_en_de`` and ``_iwslt_de_en`` variants
(``norm_free.py``); and allowlists what fairseq checkpoints hold
for torch's ``weights_only`` loading, so ``fairseq-generate --path ...`` works with
it kept on. ``python -m projects.translation.rescale_fairseq.average_checkpoints``
averages the last checkpoints the same way (fairseq's script cannot read them under
torch >= 2.6). See ``projects/translation/README.md``.
"""
from .guards import name_unreadable_checkpoints
from .safe_globals import register_fairseq_safe_globals

register_fairseq_safe_globals()
name_unreadable_checkpoints()  # a truncated --path / --restore-file gets an error naming it

from .model import (  # noqa: E402  (registers the model and its architectures)
    RescaleTransformerDecoder,
    RescaleTransformerEncoder,
    RescaleTransformerModel,
    check_rescale_args,
)
from .norm_free import DyTTransformerModel, DynamicTanh, NoLayerNormTransformerModel  # noqa: E402
