"""The training harness's checkpoints: written atomically, read with ``weights_only``.

A checkpoint is a dict::

    {'state_dict': model.state_dict(),     # no 'module.' prefix; AddBias buffers included
     'arch': 'rescalenet50', 'model_kwargs': {...},
     'epoch': epochs completed (warm-up included),
     'step_in_epoch': optimizer steps done in epoch 'epoch' + 1 (0: saved at an epoch end;
                      > 0: a --save-every-steps checkpoint from the middle of an epoch),
     'optimizer': ..., 'scheduler': {'step': n}, 'scaler': ... or None,
     'best_acc1': float, 'classes': [...], 'num_train_images': int, 'args': {...},
     'sampler': {...},                     # what the current epoch's order depends on
     'ranks': [{'rng': {...}, 'progress': {...}}, ...]}   # per process: random states, epoch sums

``ranks`` and ``sampler`` make a resumed run draw the batches and random numbers the
uninterrupted one would have drawn (see :func:`rng_state`).
"""
from __future__ import annotations

import glob
import os
import random
from typing import Dict, List

import torch

from ..checkpoint import CheckpointError, read_checkpoint

__all__ = ["save_checkpoint", "load_training_checkpoint", "remove_partial_writes", "rng_state", "set_rng_state"]


def save_checkpoint(path: str, state: Dict) -> None:
    """Write ``state`` to ``path`` through a temporary file, flushed to disk, and an
    atomic rename, so a process killed while writing never leaves a truncated
    checkpoint behind (at worst a ``PATH.tmp`` that :func:`remove_partial_writes` deletes)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_partial_writes(folder: str) -> List[str]:
    """Delete the ``*.pth.tmp`` files a process killed in :func:`save_checkpoint` left."""
    stale = sorted(glob.glob(os.path.join(folder, "*.pth.tmp")))
    for path in stale:
        os.remove(path)
    return stale


def load_training_checkpoint(path: str) -> Dict:
    """A checkpoint written by :func:`save_checkpoint` (``rescalenet.train``), or one clear error."""
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as e:
        raise SystemExit(f"rescalenet.train: error: {e}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise SystemExit(f"rescalenet.train: error: {path!r} is not a checkpoint written by rescalenet.train")
    return ckpt


def rng_state() -> Dict:
    """The random states this process draws from (torch CPU and CUDA, Python):
    dropout, mixup and, with ``--workers 0``, the data augmentation."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate()}


def set_rng_state(state: Dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
