"""Load MMEngine checkpoints with ``torch.load(weights_only=True)`` kept on.

Since torch 2.6 ``torch.load`` refuses every global that is not allowlisted, and
the checkpoints MMEngine's ``Runner`` writes (``mim train``) hold a few beyond
tensors and builtins: the ``MessageHub`` state in ``meta`` keeps its logged
scalars as ``mmengine.logging.HistoryBuffer`` objects, whose state holds numpy
arrays (and numpy scalars such as the ETA) and references to the buffer's
statistics methods (``HistoryBuffer.min`` / ``max`` / ``current`` / ``mean``,
pickled as ``getattr(HistoryBuffer, 'min')``). So ``mim test --checkpoint`` and
``--resume`` fail out of the box with ``Unsupported global: ...HistoryBuffer``.

:func:`register_mmengine_safe_globals` allowlists exactly those objects and
nothing wider. In particular ``builtins.getattr`` is *not* allowlisted: the
name is bound to :func:`history_buffer_method`, which only resolves
``HistoryBuffer``'s registered statistics methods and refuses anything else.
The plugins call it when they are imported (through ``custom_imports``), i.e.
before the Runner loads a checkpoint. Never set
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``: it turns the protection off for every file.

:func:`register_safe_local_loader` replaces MMEngine's loader of local checkpoint files
(``CheckpointLoader`` scheme ``''``: ``load_from``, ``--resume``, ``mim test --checkpoint``,
``init_cfg=dict(type='Pretrained')``), which calls ``torch.load`` without
``weights_only`` (safe only because torch >= 2.6 defaults to it) and lets a truncated or
corrupted file fail with torch's ``PytorchStreamReader failed reading zip archive``,
which names no file. Its loader passes ``weights_only=True`` and raises one error that
names the file and what to do.
"""
from __future__ import annotations

import os.path as osp
import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch

__all__ = ["register_mmengine_safe_globals", "mmengine_safe_globals", "history_buffer_method",
           "load_local_checkpoint", "register_safe_local_loader", "check_backbone_state"]

# dtypes of the numpy arrays and scalars a HistoryBuffer / MessageHub holds:
# ``np.append`` of Python floats and ints gives float64 / int64 arrays; the
# values logged by mmengine and mmdet (losses, lr, time, ETA, COCO mAPs) are
# Python or numpy floats and ints.
_NUMPY_DTYPES = ("float64", "int64")


def history_buffer_method(owner: Any, name: str) -> Callable:
    """Stands in for ``builtins.getattr`` while unpickling: resolves only
    ``getattr(HistoryBuffer, <statistics method>)``."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if owner is not HistoryBuffer or not isinstance(name, str):
        raise pickle.UnpicklingError(f"weights_only load: getattr({owner!r}, {name!r}) is not allowlisted")
    methods = dict(HistoryBuffer._statistics_methods)
    methods.update(min=HistoryBuffer.min, max=HistoryBuffer.max,
                   current=HistoryBuffer.current, mean=HistoryBuffer.mean)
    if name not in methods:
        raise pickle.UnpicklingError(
            f"weights_only load: HistoryBuffer.{name} is not a statistics method, not allowlisted")
    return methods[name]


def _numpy_core() -> Any:
    # numpy >= 2 pickles ``numpy._core.multiarray.*``, numpy 1.x ``numpy.core.multiarray.*``.
    return np._core.multiarray if hasattr(np, "_core") else np.core.multiarray


def mmengine_safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The globals a checkpoint written by MMEngine's ``Runner`` holds, each
    under the name(s) the pickle refers to it by."""
    from mmengine.logging.history_buffer import HistoryBuffer

    multiarray = _numpy_core()
    out: List[Union[Callable, Tuple[Callable, str]]] = [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        (history_buffer_method, "builtins.getattr"),
    ]
    out += [type(np.dtype(name)) for name in _NUMPY_DTYPES]
    # Under both module paths, so a checkpoint written with numpy 1.x loads with 2.x and back.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out.append((multiarray._reconstruct, f"{module}._reconstruct"))
        out.append((multiarray.scalar, f"{module}.scalar"))
    return out


def register_mmengine_safe_globals() -> None:
    """Allowlist :func:`mmengine_safe_globals` for ``torch.load(weights_only=True)``
    (idempotent; :func:`load_local_checkpoint` calls it again before every load, see
    :func:`rescalenet.checkpoint.allow_globals`)."""
    from rescalenet.checkpoint import allow_globals

    allow_globals(mmengine_safe_globals())


def load_local_checkpoint(filename: str, map_location=None) -> Any:
    """MMEngine's local checkpoint loader with ``weights_only=True`` explicit and one
    clear error for a missing, truncated, corrupted or not allowlisted file."""
    from rescalenet.checkpoint import CheckpointError

    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"checkpoint {filename!r} does not exist")
    register_mmengine_safe_globals()  # again: another library's safe_globals block may have removed them
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {filename!r} holds objects that torch.load(weights_only=True) refuses "
            f"({str(e).splitlines()[0][:300]}): load only checkpoints you trust, and never with "
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD; an MMEngine checkpoint needs its plugin imported "
            "(custom_imports) for its allowlist") from e
    except Exception as e:  # RuntimeError (zip archive), EOFError, ...
        raise CheckpointError(
            f"checkpoint {filename!r} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]}): the "
            "file is truncated or corrupted (a job killed while writing it?); use an earlier checkpoint of its "
            "work_dir (--resume with no path reads work_dir/last_checkpoint)") from e


_loader_registered = False


def register_safe_local_loader() -> None:
    """Make :func:`load_local_checkpoint` MMEngine's loader of local files (idempotent)."""
    global _loader_registered
    if not _loader_registered:
        from mmengine.runner.checkpoint import CheckpointLoader

        CheckpointLoader.register_scheme(prefixes="", loader=load_local_checkpoint, force=True)
        _loader_registered = True


def check_backbone_state(module: torch.nn.Module, state_dict, prefix: str) -> None:
    """Refuse to load into ``module`` (a RescaleNet backbone, at ``prefix`` of the model
    being loaded) a state dict that holds some of its weights but not all of them, or
    with other shapes: a checkpoint of another depth, width or multiplier. MMEngine loads
    ``load_from``, ``mim test --checkpoint`` and ``--resume`` checkpoints with
    ``strict=False``, which only logs a warning and goes on with a partly random backbone.
    Only the load of a whole model (``prefix`` such as ``'backbone.'``) is checked: a direct
    ``backbone.load_state_dict(...)`` keeps its own ``strict`` (the 2D -> 3D inflation loads
    a subset on purpose). A state dict with none of the backbone's keys is left to the
    caller (MMEngine warns about the missing keys). Normalized networks are refused, as
    by the core loader."""
    from rescalenet.checkpoint import CheckpointError, refuse_normalized_network

    theirs = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not prefix or not theirs:
        return
    name = type(module).__name__
    refuse_normalized_network(list(theirs), f"the state_dict loaded into {name}")
    own = module.state_dict()
    missing = sorted(own.keys() - theirs.keys())
    unexpected = sorted(theirs.keys() - own.keys())
    shapes = [f"{k}: {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(own.keys() & theirs.keys())
              if hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        config = ", ".join(f"{a}={getattr(module, a)!r}" for a in ("depth", "groups", "base_width", "multiplier")
                           if hasattr(module, a))
        raise CheckpointError(
            f"the checkpoint's {prefix or ''}weights do not fit {name}({config}): {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(shapes)} of another "
            f"shape (e.g. {shapes[:2]}): a checkpoint of another depth, width or multiplier. Load a checkpoint "
            "trained with this backbone configuration (MMEngine would load it partly, with a warning only)")
