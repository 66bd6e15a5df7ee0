"""MMAction2 plugin: RescaleNet3d backbones for video recognition.

Imported through a config's ``custom_imports = dict(imports=['projects.video'],
allow_failed_imports=False)``. On import it

1. lets ``torch.load(weights_only=True)`` read the checkpoints ``mim train`` writes
   (:func:`projects.safe_load.register_mmengine_safe_globals`), so ``mim test`` and
   ``--resume`` work with torch's safe loading kept on, and makes MMEngine's local
   checkpoint loader name a truncated or corrupted file;
2. applies the narrow fix for the mmaction2 1.2.0 wheel's missing
   ``mmaction/models/localizers/drn`` (:mod:`projects.video.mmaction_compat`), so
   ``import mmaction.models`` works;
3. registers ``RescaleResNet3d`` and ``RescaleResNet3dSlowOnly`` in
   ``mmaction.registry.MODELS``, and the hooks of :mod:`projects.mmengine_hooks` (exact
   resume after a kill, a stop with the iteration and the loss on divergence).

See ``projects/video/README.md``.
"""
from projects import mmengine_hooks  # noqa: F401  (registers the hooks)
from projects.safe_load import register_mmengine_safe_globals, register_safe_local_loader

from .mmaction_compat import patch_missing_drn

register_mmengine_safe_globals()
register_safe_local_loader()
patch_missing_drn()

from .backbone import RescaleResNet3d, RescaleResNet3dSlowOnly, extract_state_dict  # noqa: E402

__all__ = ["RescaleResNet3d", "RescaleResNet3dSlowOnly", "extract_state_dict", "patch_missing_drn"]
