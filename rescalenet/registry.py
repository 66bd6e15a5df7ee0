"""The one model registry: name -> builder, with what kind of model it is.

Every entry point reads it: :func:`rescalenet.create_model`, ``hubconf.py``, the timm
registration (:mod:`rescalenet.timm`), ``python -m rescalenet.train --arch``, the
benchmarks and ``tests/test_models.py``. Builders register themselves with
:func:`register_model` where they are defined.

* ``kind``: ``'2d'`` (a 2D RescaleNet, also registered in timm and torch.hub),
  ``'3d'`` (a RescaleNet3d for clips) or ``'baseline'`` (a network compared against);
* ``layout``: ``'imagenet'`` (7x7/2 stem, 4 stages, stride 32), ``'cifar'`` (3x3/1
  stem, 3 stages of widths 16-32-64 times a widening factor, stride 4), ``'video'``;
* ``input_size``: a default input, ``(C, H, W)`` or ``(C, T, H, W)``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import nn

__all__ = ["ModelInfo", "register_model", "list_models", "model_info", "create_model", "KINDS", "LAYOUTS"]

KINDS = ("2d", "3d", "baseline")
LAYOUTS = ("imagenet", "cifar", "video", "narrow")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    kind: str
    layout: str
    input_size: Tuple[int, ...]
    num_classes: int  # the builder's default
    cfg: Any = None   # the architecture as data (a RescaleNetCfg for the 2D RescaleNets)


_MODELS: Dict[str, ModelInfo] = {}


def register_model(kind: str, layout: str, input_size: Tuple[int, ...], num_classes: int = 1000,
                   name: Optional[str] = None, cfg: Any = None):
    """Decorator: ``@register_model('2d', 'imagenet', (3, 224, 224))`` on a builder
    registers it under its function name (or ``name``)."""
    if kind not in KINDS or layout not in LAYOUTS:
        raise ValueError(f"kind must be in {KINDS} and layout in {LAYOUTS}, got {kind!r}, {layout!r}")

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        if key in _MODELS and _MODELS[key].builder is not builder:
            raise ValueError(f"model {key!r} is registered twice")
        _MODELS[key] = ModelInfo(key, builder, kind, layout, tuple(input_size), num_classes, cfg)
        return builder

    return wrap


def list_models(pattern: str = "*", kind: Optional[str] = None, layout: Optional[str] = None) -> List[str]:
    """Sorted names matching the shell-style ``pattern``, of one ``kind`` / ``layout``."""
    return sorted(n for n, m in _MODELS.items() if fnmatch.fnmatch(n, pattern)
                  and (kind is None or m.kind == kind) and (layout is None or m.layout == layout))


def model_info(name: str) -> ModelInfo:
    if name not in _MODELS:
        close = [n for n in _MODELS if n.split("_")[0] == name.split("_")[0]][:8]
        hint = f" (similar: {close})" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; rescalenet.list_models() lists the {len(_MODELS)} "
                         "registered ones")
    return _MODELS[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name, e.g. ``create_model('rescalenet50', num_classes=10)``."""
    return model_info(name).builder(**kwargs)
