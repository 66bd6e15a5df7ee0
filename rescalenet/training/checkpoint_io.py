"""The training harness's checkpoints: written atomically, read with ``weights_only``.

A checkpoint is a dict::

    {'state_dict': model.state_dict(),     # no 'module.' prefix; AddBias buffers included
     'arch': 'rescalenet50', 'model_kwargs': {...}, 'epoch': epochs done (warm-up included),
     'optimizer': ..., 'scheduler': {'step': n}, 'scaler': ... or None,
     'best_acc1': float, 'classes': [...], 'args': {...}}
"""
from __future__ import annotations

import os
from typing import Dict

import torch

from ..checkpoint import CheckpointError, read_checkpoint

__all__ = ["save_checkpoint", "load_training_checkpoint"]


def save_checkpoint(path: str, state: Dict) -> None:
    """Write ``state`` to ``path`` through a temporary file and an atomic rename, so a
    process killed while writing never leaves a truncated checkpoint behind."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_training_checkpoint(path: str) -> Dict:
    """A checkpoint written by :func:`save_checkpoint` (``rescalenet.train``), or one clear error."""
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as e:
        raise SystemExit(f"rescalenet.train: error: {e}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise SystemExit(f"rescalenet.train: error: {path!r} is not a checkpoint written by rescalenet.train")
    return ckpt
