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
"""
from __future__ import annotations

import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch

__all__ = ["register_mmengine_safe_globals", "mmengine_safe_globals", "history_buffer_method"]

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


_registered = False


def register_mmengine_safe_globals() -> None:
    """Allowlist :func:`mmengine_safe_globals` for ``torch.load(weights_only=True)``
    (idempotent)."""
    global _registered
    if not _registered:
        torch.serialization.add_safe_globals(mmengine_safe_globals())
        _registered = True
