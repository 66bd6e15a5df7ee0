"""MMDetection plugin: registers :class:`RescaleNetBackbone` into ``mmdet.registry.MODELS``.

Configs load it with ``custom_imports = dict(imports=['projects.detection'],
allow_failed_imports=False)``. Importing it also

* allowlists the classes that MMEngine checkpoints hold, so ``mim test`` / ``--resume``
  load them with torch's ``weights_only=True``, and makes MMEngine's local checkpoint
  loader name a truncated or corrupted file (see :mod:`projects.safe_load`);
* registers the hooks of :mod:`projects.mmengine_hooks` (``SafeCheckpointHook``,
  ``ExactResumeHook``, ``DivergenceCheckHook``, ``DataFilesCheckHook``): exact resume
  after a kill, a stop with the iteration and the loss on divergence.
"""
from .. import mmengine_hooks  # noqa: F401  (registers the hooks)
from ..safe_load import register_mmengine_safe_globals, register_safe_local_loader
from .rescalenet_backbone import RescaleNetBackbone, backbone_state_dict

register_mmengine_safe_globals()
register_safe_local_loader()

__all__ = ["RescaleNetBackbone", "backbone_state_dict", "register_mmengine_safe_globals"]
