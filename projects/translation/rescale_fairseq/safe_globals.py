"""Load fairseq checkpoints with ``torch.load(weights_only=True)`` kept on.

Since torch 2.6 ``torch.load`` refuses every global that is not allowlisted, and
``fairseq.checkpoint_utils.load_checkpoint_to_cpu`` (used by ``fairseq-generate``,
``fairseq-interactive``, ``--restore-file`` and the automatic resume from
``checkpoint_last.pt``) calls it without ``weights_only``. A checkpoint that
``fairseq-train`` writes for a legacy (argparse) model such as ours keeps the
parsed command line as an ``argparse.Namespace`` in ``cfg['model']``, so loading
fails out of the box with ``Unsupported global: argparse.Namespace``.

:func:`register_fairseq_safe_globals` allowlists exactly the globals such a
checkpoint holds (found with ``torch.serialization.get_unsafe_globals_in_checkpoint``
on checkpoints written by ``fairseq-train`` for ``rescale_transformer`` and
``transformer``, with Adam and the inverse-sqrt scheduler) and nothing wider. The
plugin calls it when fairseq imports it (``--user-dir``), and its checkpoint reader
(``guards.name_unreadable_checkpoints``) again before every load. Never set ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``: it turns the
protection off for every file.
"""
from __future__ import annotations

import argparse
from typing import List

from rescalenet.checkpoint import allow_globals

__all__ = ["fairseq_safe_globals", "fairseq_safe_globals_names", "register_fairseq_safe_globals"]


def fairseq_safe_globals() -> List[object]:
    """The globals (beyond tensors and builtin containers) in a fairseq-train checkpoint."""
    return [argparse.Namespace]


def fairseq_safe_globals_names() -> List[str]:
    return [f"{g.__module__}.{g.__qualname__}" for g in fairseq_safe_globals()]


def register_fairseq_safe_globals() -> None:
    """Allowlist :func:`fairseq_safe_globals` for ``weights_only`` loading (idempotent;
    the plugin's checkpoint reader calls it again before every load, see
    :func:`rescalenet.checkpoint.allow_globals`)."""
    allow_globals(fairseq_safe_globals())
