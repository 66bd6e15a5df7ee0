"""RescaleNet as an MMDetection backbone: a thin adapter over :class:`rescalenet.RescaleNet`.

The network, its rescaling rules and its init all live in :mod:`rescalenet`; this
class only translates MMDetection conventions:

* mmdet-style arguments (``depth``, ``in_channels``, ``base_width``, ``with_cp``,
  ``out_indices``, ``frozen_stages``, ``init_cfg``) onto the core's;
* mmengine's ``init_weights()`` protocol: the core's ``reset_parameters()``, or a
  ``Pretrained`` checkpoint written by this project's classification training;
* clear errors for a wrong ``depth`` and for the ResNet-only keys (``norm_cfg``,
  ``norm_eval``, ``style``, ...) that leak in when a config overrides a ResNet
  backbone without ``_delete_=True``.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import initialize
from mmengine.runner.checkpoint import CheckpointLoader

from mmdet.registry import MODELS
from rescalenet import ARCH_SETTINGS, RescaleNet
from rescalenet.checkpoint import drop_head, extract_state_dict

from ..safe_load import check_backbone_state

__all__ = ["RescaleNetBackbone", "backbone_state_dict"]

# Arguments of mmdet's ResNet that have no meaning for a network without
# normalization layers or with a fixed block style.
RESNET_ONLY_KEYS = (
    "norm_cfg",
    "norm_eval",
    "style",
    "num_stages",
    "conv_cfg",
    "deep_stem",
    "avg_down",
    "dcn",
    "stage_with_dcn",
    "plugins",
    "zero_init_residual",
    "strides",
    "dilations",
    "stem_channels",
    "base_channels",
    "pretrained",
)
def _pretrained_cfgs(init_cfg: Union[dict, List[dict], None]) -> List[dict]:
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg or [])
    return [c for c in cfgs if c.get("type") == "Pretrained"]


def backbone_state_dict(checkpoint: Any, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The backbone's weights from a loaded checkpoint: the core's checkpoint reader
    (:func:`rescalenet.checkpoint.extract_state_dict`: a bare state dict or one under
    ``state_dict`` / ``model`` / ``net``, ``module.`` prefixes, the official code's names;
    BatchNorm ResNets refused), keeping only the keys under ``prefix`` (e.g.
    ``'backbone.'`` for a detector checkpoint) and dropping the classifier head."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f"expected a checkpoint dict, got {type(checkpoint).__name__}")
    return drop_head(extract_state_dict(checkpoint, prefix=prefix))


@MODELS.register_module()
class RescaleNetBackbone(RescaleNet, BaseModule):
    """Normalization-free RescaleNet / RescaleNeXt backbone for MMDetection.

    ``forward`` returns the stage outputs listed in ``out_indices`` (channels
    ``64 * expansion * 2**i`` at strides ``4 * 2**i``), as mmdet's ``ResNet`` does,
    so the standard FPN neck and heads plug in unchanged.

    Args:
        depth: 18, 34, 50, 101, 152 or 200.
        in_channels: input image channels.
        out_indices: stages whose outputs are returned, a subset of (0, 1, 2, 3).
        frozen_stages: stem and stages ``1..frozen_stages`` get no gradient and stay
            in eval mode (their AddBias means are never recalibrated); ``-1``
            freezes nothing. Freeze only a pretrained backbone.
        groups, base_width: ResNeXt cardinality and width per group (mmdet's
            ``ResNeXt`` names); bottleneck depths only.
        multiplier: learnable branch multiplier, ``'scalar'``, ``'vector'`` or ``'none'``.
        c: offset of the block index ``k = c + i`` (``None``: ``L - 1``, the official choice).
        drop_conv: ``Dropout2d`` rate after the branch convs of stages 3-4.
        calibration_steps: training iterations over which every AddBias averages
            its input mean before freezing it.
        with_cp: gradient checkpointing of the residual blocks (saves memory).
        init_cfg: ``None`` for RescaleNet's own depth-scaled init, or
            ``dict(type='Pretrained', checkpoint=PATH[, prefix=...])`` to load a
            checkpoint (ImageNet weights from ``rescalenet`` training, including
            the calibrated AddBias means).
    """

    def __init__(
        self,
        depth: int = 50,
        in_channels: int = 3,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        groups: int = 1,
        base_width: int = 64,
        multiplier: str = "scalar",
        c: Optional[int] = None,
        drop_conv: float = 0.0,
        calibration_steps: int = 8,
        with_cp: bool = False,
        init_cfg: Union[dict, List[dict], None] = None,
        **kwargs: Any,
    ) -> None:
        leftover = sorted(k for k in kwargs if k in RESNET_ONLY_KEYS)
        if leftover:
            raise TypeError(
                f"RescaleNetBackbone got ResNet-only argument(s) {leftover}: RescaleNet has no "
                "normalization layer and a fixed block layout. A config that replaces an inherited "
                "ResNet backbone must drop its keys: "
                "model = dict(backbone=dict(_delete_=True, type='RescaleNetBackbone', depth=50, ...))"
            )
        if kwargs:
            raise TypeError(f"RescaleNetBackbone got unexpected argument(s) {sorted(kwargs)}")
        if depth not in ARCH_SETTINGS:
            raise KeyError(f"invalid depth {depth!r} for RescaleNetBackbone; choose from {sorted(ARCH_SETTINGS)}")
        if out_indices is None:
            raise ValueError("RescaleNetBackbone needs out_indices (a subset of (0, 1, 2, 3))")
        for cfg in _pretrained_cfgs(init_cfg):
            if not cfg.get("checkpoint"):
                raise ValueError(f"init_cfg {cfg} of type 'Pretrained' needs a 'checkpoint'")
        block, layers = ARCH_SETTINGS[depth]
        super().__init__(
            block,
            layers,
            num_classes=0,
            in_chans=in_channels,
            groups=groups,
            width_per_group=base_width,
            multiplier=multiplier,
            c=c,
            drop_conv=drop_conv,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            calibration_steps=calibration_steps,
        )
        self.depth = depth
        self.init_cfg = copy.deepcopy(init_cfg)
        self.set_grad_checkpointing(with_cp)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # MMEngine loads with strict=False: refuse a checkpoint of another depth / width here
        check_backbone_state(self, state_dict, prefix)

    def init_weights(self) -> None:
        """RescaleNet's init (``reset_parameters``), then any non-``Pretrained``
        ``init_cfg`` entry, then a ``Pretrained`` checkpoint, which wins."""
        cfgs = [self.init_cfg] if isinstance(self.init_cfg, dict) else list(self.init_cfg or [])
        pretrained = _pretrained_cfgs(cfgs)
        self.reset_parameters()
        others = [c for c in cfgs if c not in pretrained]
        if others:
            initialize(self, others)
        for cfg in pretrained:
            self.load_pretrained(cfg["checkpoint"], prefix=cfg.get("prefix"), map_location=cfg.get("map_location", "cpu"))
        self._is_init = True

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None, map_location: str = "cpu") -> None:
        """Load a checkpoint (any path or URL mmengine's ``CheckpointLoader`` reads).

        The classifier head of a classification checkpoint (``fc``,
        ``final_addbias``) is ignored; every other tensor must match the backbone
        key for key and shape for shape, so a checkpoint of another depth, width or
        multiplier raises instead of loading partly.
        """
        print_log(f"RescaleNetBackbone: load weights from {checkpoint}", logger="current")
        state = backbone_state_dict(CheckpointLoader.load_checkpoint(checkpoint, map_location=map_location), prefix)
        own = self.state_dict()
        if not own.keys() & state.keys():
            raise KeyError(
                f"{checkpoint} holds no RescaleNet backbone weights (first keys: {sorted(state)[:5]}); "
                "for a detector checkpoint set prefix='backbone.' in init_cfg"
            )
        wrong = [f"{k}: {tuple(v.shape)} in checkpoint, {tuple(own[k].shape)} in model"
                 for k, v in state.items() if k in own and v.shape != own[k].shape]
        missing = sorted(own.keys() - state.keys())
        unexpected = sorted(state.keys() - own.keys())
        if wrong or missing or unexpected:
            raise RuntimeError(
                f"{checkpoint} does not fit RescaleNetBackbone(depth={self.depth}, groups={self.groups}, "
                f"base_width={self.base_width}, multiplier={self.multiplier!r}): "
                f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) "
                f"{unexpected[:5]}, {len(wrong)} shape mismatch(es) {wrong[:3]}"
            )
        self.load_state_dict(state)
