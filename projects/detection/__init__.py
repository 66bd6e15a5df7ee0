"""MMDetection plugin: registers :class:`RescaleNetBackbone` into ``mmdet.registry.MODELS``.

Configs load it with ``custom_imports = dict(imports=['projects.detection'],
allow_failed_imports=False)``. Importing it also allowlists the classes that
MMEngine checkpoints hold, so ``mim test`` / ``--resume`` load them with torch's
``weights_only=True`` (see :mod:`projects.safe_load`).
"""
from ..safe_load import register_mmengine_safe_globals
from .rescalenet_backbone import RescaleNetBackbone, backbone_state_dict

register_mmengine_safe_globals()

__all__ = ["RescaleNetBackbone", "backbone_state_dict", "register_mmengine_safe_globals"]
