"""The one checkpoint reader: files in, a RescaleNet ``state_dict`` out, or one clear error.

Used by torch.hub (``hubconf.py``), timm (``pretrained_cfg_overlay=dict(file=...)``),
``python -m rescalenet.train --weights``, the MMDetection and MMAction2 adapters and the
2D -> 3D inflation. What it accepts:

* a bare ``state_dict`` or one under ``state_dict`` (MMEngine), ``model`` (this
  project's trainer, timm) or ``net`` (the official code's ``ckpt.t7``);
* keys with ``module.`` (DataParallel / DDP) and ``_orig_mod.`` (``torch.compile``)
  prefixes, stripped; with ``prefix='backbone.'`` only the keys of a whole detector's /
  recognizer's backbone, prefix removed;
* the official RescaleNet code's names (github.com/hukkai/rescaling), mapped by
  :data:`OFFICIAL_KEY_MAP`; its ``(1, C, 1, 1)`` AddBias tensors are reshaped by
  ``AddBias`` itself.

What it refuses, naming what the file is: a BatchNorm network's weights (torchvision,
timm or MMDetection ResNets: ``bn*`` modules, ``running_mean``), which share many names
and shapes with a RescaleNet and would otherwise load partly and silently under
``strict=False``, with nothing calibrated. :class:`~rescalenet.RescaleNet` applies the
same two rules in its own ``load_state_dict``, so they hold for every loader, MMEngine's
included. Files are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Mapping, MutableMapping, Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "CheckpointError",
    "read_checkpoint",
    "extract_state_dict",
    "drop_head",
    "refuse_normalized_network",
    "map_official_keys",
    "OFFICIAL_KEY_MAP",
    "WRAPPER_KEYS",
    "HEAD_PREFIXES",
    "allow_globals",
]

WRAPPER_KEYS = ("state_dict", "model", "net")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
HEAD_PREFIXES = ("fc.", "final_addbias.")

# official name (regular expression over the key) -> this project's name
OFFICIAL_KEY_MAP = {
    r"^(layer\d+\.\d+)\._scale$": r"\1.rescale._scale",   # the scalar m_k of each block
    r"^(layer\d+\.\d+)\._scale(\d)$": r"\1.mult\2._scale",  # the commented-out per-channel vectors
    r"^addbias2\.": "final_addbias.",                     # the head's AddBias before pooling
}
_NORM_KEY = re.compile(r"(^|\.)(bn\d*|downsample\.1|norm\d*|gn\d*)\.(weight|bias|running_mean|running_var)$"
                       r"|(running_mean|running_var|num_batches_tracked)$")


def allow_globals(safe_globals: Sequence[Any]) -> None:
    """Allowlist ``safe_globals`` for ``torch.load(weights_only=True)``, adding only what
    is missing. Call it right before a load, not once per process: a
    ``torch.serialization.safe_globals([...])`` block (timm's ``load_checkpoint`` opens one
    for ``argparse.Namespace``) removes its globals from the allowlist when it exits, even
    the ones that were allowlisted before it."""
    allowed = torch.serialization.get_safe_globals()
    missing = [g for g in safe_globals if g not in allowed]
    if missing:
        torch.serialization.add_safe_globals(missing)


class CheckpointError(ValueError):
    """A checkpoint that is not (or not only) a RescaleNet's weights."""


def read_checkpoint(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one clear error for a
    missing, truncated or corrupted file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError ...
        raise CheckpointError(
            f"checkpoint {path!r} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]}): "
            "the file is truncated or corrupted, or holds objects other than tensors and plain "
            "containers (torch.load(weights_only=True) refuses them)"
        ) from e


def extract_state_dict(checkpoint: Any, prefix: Optional[str] = None, source: str = "the checkpoint") -> Dict[str, Tensor]:
    """The model weights in a loaded checkpoint (see the module docstring): unwrapped,
    prefixes stripped, official names mapped, BatchNorm networks refused."""
    state = checkpoint
    for key in WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{source} holds no state_dict (got {type(state).__name__}); expected a dict of "
                              f"tensors, possibly under one of {WRAPPER_KEYS}")
    out: Dict[str, Tensor] = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for p in WRAPPER_PREFIXES:
                if key.startswith(p):
                    key, stripped = key[len(p):], True
        out[key] = value
    if prefix:
        out = {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}
    refuse_normalized_network(out, source)
    return map_official_keys(out)


def drop_head(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """``state`` without the classifier head (``fc``, ``final_addbias``), for a backbone."""
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}


def refuse_normalized_network(keys: Sequence[str], source: str = "the checkpoint", prefix: str = "") -> None:
    """Raise :class:`CheckpointError` when ``keys`` (under ``prefix``) are those of a
    network with normalization layers."""
    norm = [k for k in keys if k.startswith(prefix) and _NORM_KEY.search(k[len(prefix):])]
    if norm:
        raise CheckpointError(
            f"{source} holds a network with normalization layers ({len(norm)} such entries, e.g. "
            f"{norm[0]!r}): a BatchNorm/GroupNorm ResNet such as torchvision's, timm's or MMDetection's. "
            "RescaleNet has no normalization layer, so these weights do not transfer (names and shapes "
            "that happen to match would load without their normalization and uncalibrated). Train a "
            "RescaleNet (python -m rescalenet.train) or load a RescaleNet checkpoint"
        )


def map_official_keys(state: MutableMapping[str, Tensor], prefix: str = "") -> MutableMapping[str, Tensor]:
    """Rename the official RescaleNet code's keys (under ``prefix``) to this project's,
    in place (:data:`OFFICIAL_KEY_MAP`); other keys are left alone."""
    renames = {}
    for key in list(state):
        if not key.startswith(prefix):
            continue
        local = key[len(prefix):]
        for pattern, repl in OFFICIAL_KEY_MAP.items():
            new, n = re.subn(pattern, repl, local)
            if n:
                renames[key] = prefix + new
                break
    for old, new in renames.items():
        if new in state:
            raise CheckpointError(f"the checkpoint holds both the official key {old!r} and {new!r}")
        value = state.pop(old)
        state[new] = value.reshape(-1) if value.dim() > 1 else value
    return state
