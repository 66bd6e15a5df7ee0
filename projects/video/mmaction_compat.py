"""Make ``import mmaction.models`` work with the mmaction2 1.2.0 wheel.

The wheel (and the sdist) on PyPI lack the package ``mmaction/models/localizers/drn/``:
upstream it has no ``__init__.py``, so ``find_packages()`` leaves it out, while
``mmaction/models/localizers/__init__.py`` still runs ``from .drn.drn import DRN``.
Every ``import mmaction.models`` (and so every ``Runner.from_cfg`` in the mmaction
scope) then fails with ``ModuleNotFoundError: No module named
'mmaction.models.localizers.drn'`` (open-mmlab/mmaction2 issue #2714; the fix, PR
#2721, was never released).

:func:`patch_missing_drn` is the narrow fix: only when that one directory is missing
from the installed ``mmaction`` package it registers two placeholder modules,
``mmaction.models.localizers.drn`` and ``...drn.drn``, whose ``DRN`` (the temporal
grounding localizer, which this project does not use) raises a clear error when
built. Nothing else is touched: it never catches an exception, so any other import
error in mmaction (a missing dependency, a version assert) surfaces unchanged, and on
an mmaction2 that ships ``drn`` it does nothing.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Optional

__all__ = ["patch_missing_drn", "DRN_MODULES"]

DRN_MODULES = ("mmaction.models.localizers.drn", "mmaction.models.localizers.drn.drn")


class DRN:  # noqa: D101 - placeholder, see the module docstring
    """Placeholder for mmaction2's DRN localizer, missing from the 1.2.0 wheel."""

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(
            "mmaction2's DRN localizer is missing from the installed mmaction2 package "
            "(the 1.2.0 wheel lacks mmaction/models/localizers/drn, upstream issue #2714); "
            "projects.video registered this placeholder only so that `import mmaction.models` "
            "works. Install mmaction2 from a source checkout that has the directory to use DRN."
        )


def _mmaction_dir() -> Optional[str]:
    # find_spec('mmaction') runs only mmaction/__init__ (version asserts); looking up
    # 'mmaction.models.localizers.drn' would execute the broken parent __init__.
    spec = importlib.util.find_spec("mmaction")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def patch_missing_drn() -> bool:
    """Register the placeholder ``drn`` modules if, and only if, the installed mmaction
    lacks ``models/localizers/drn/drn.py``. Returns True when it patched."""
    if all(name in sys.modules for name in DRN_MODULES):
        return False  # already importable (real package or an earlier patch)
    root = _mmaction_dir()
    if root is None:
        raise ModuleNotFoundError("projects.video needs mmaction2: pip install mmaction2==1.2.0")
    if os.path.exists(os.path.join(root, "models", "localizers", "drn", "drn.py")):
        return False
    package = types.ModuleType(DRN_MODULES[0])
    package.__path__ = []  # a package with no files
    package.__doc__ = "Placeholder registered by projects.video.mmaction_compat (mmaction2 issue #2714)."
    module = types.ModuleType(DRN_MODULES[1])
    module.__doc__ = package.__doc__
    module.DRN = DRN
    package.drn = module
    sys.modules[DRN_MODULES[0]] = package
    sys.modules[DRN_MODULES[1]] = module
    return True
