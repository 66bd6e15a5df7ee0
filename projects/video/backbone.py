"""MMAction2 backbones: :class:`rescalenet.resnet3d.RescaleNet3d` in the ``mmaction`` registry.

A thin adapter: the network, its init and the 2D -> 3D inflation live in
``rescalenet/resnet3d.py``; this file only translates MMAction2's conventions:

* ``pretrained`` / ``pretrained2d`` as in ``ResNet3d``: with ``pretrained2d=True`` (the
  default) ``pretrained`` names a *2D* RescaleNet checkpoint that
  :func:`~rescalenet.resnet3d.inflate_from_2d` inflates (AddBias means included);
  with ``pretrained2d=False`` a 3D checkpoint loaded as it is;
* ``init_weights()`` (called once by the Runner) loads it, then applies ``init_cfg``;
  the depth-scaled random init already happened in ``__init__``;
* ``forward`` returns a tensor for a single ``out_indices`` entry, as ``ResNet3d`` does,
  so ``I3DHead`` takes it directly;
* ``with_cp`` maps to gradient checkpointing.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import _load_checkpoint
from torch import Tensor

from mmaction.registry import MODELS
from projects.safe_load import check_backbone_state
from rescalenet.checkpoint import extract_state_dict as read_state_dict
from rescalenet.resnet3d import RescaleNet3d

__all__ = ["RescaleResNet3d", "RescaleResNet3dSlowOnly", "extract_state_dict"]


def extract_state_dict(checkpoint: Dict) -> Dict[str, Tensor]:
    """The backbone weights inside a checkpoint file, read by the core's checkpoint
    reader (:func:`rescalenet.checkpoint.extract_state_dict`: a plain state_dict, an
    MMEngine checkpoint (``state_dict``), a timm-style one (``model``) or the official
    RescaleNet code's ``{'net': ...}``). When keys carry a ``backbone.`` prefix (a
    checkpoint of a whole MMEngine model, e.g. a recognizer) only those are kept,
    prefix removed: MMAction2's convention for ``pretrained``."""
    state = read_state_dict(checkpoint)
    return read_state_dict(state, prefix="backbone.") if any(k.startswith("backbone.") for k in state) else state


@MODELS.register_module()
class RescaleResNet3d(RescaleNet3d, BaseModule):
    """Normalization-free 3D ResNet (RescaleNet) for MMAction2 recognizers.

    Takes :class:`~rescalenet.resnet3d.RescaleNet3d`'s arguments (the names of
    MMAction2's ``ResNet3d``: ``depth``, ``out_indices``, ``conv1_kernel``,
    ``conv1_stride_t``, ``pool1_stride_t``, ``with_pool2``, ``inflate``,
    ``inflate_style``, ``spatial_strides``, ``temporal_strides``, ``frozen_stages`` ...)
    and ``multiplier``, ``c``, ``drop_conv``, ``with_final_addbias``. Defaults are
    ``ResNet3d``'s (I3D-like).

    Args:
        pretrained: checkpoint path or URL, or None.
        pretrained2d: ``pretrained`` is a 2D RescaleNet to inflate (default) rather
            than a 3D checkpoint.
        with_cp: gradient checkpointing per block.
        init_cfg: MMEngine ``init_cfg``, applied after ``pretrained``.
    """

    def __init__(self, depth: int = 50, pretrained: Optional[str] = None, pretrained2d: bool = True,
                 with_cp: bool = False, init_cfg: Optional[Union[Dict, List[Dict]]] = None,
                 **kwargs) -> None:
        super().__init__(depth=depth, **kwargs)  # RescaleNet3d, then BaseModule(init_cfg=None)
        self.init_cfg = copy.deepcopy(init_cfg)
        if pretrained is not None and not isinstance(pretrained, str):
            raise TypeError(f"pretrained must be a path/URL string or None, got {type(pretrained).__name__}")
        self.pretrained = pretrained
        self.pretrained2d = pretrained2d
        self.set_grad_checkpointing(with_cp)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # MMEngine loads with strict=False: refuse a checkpoint of another depth / width here
        check_backbone_state(self, state_dict, prefix)

    def init_weights(self) -> None:
        if self.pretrained:
            logger = MMLogger.get_current_instance()
            if self.pretrained2d:
                state_dict = extract_state_dict(_load_checkpoint(self.pretrained, map_location="cpu"))
                report = self.inflate_2d_(state_dict)
                logger.info(
                    f"RescaleResNet3d: inflated {len(report.inflated)} conv kernels and copied "
                    f"{len(report.copied)} AddBias/multiplier entries from the 2D checkpoint "
                    f"{self.pretrained}; unused 2D entries: {report.unused}"
                )
            else:
                state_dict = extract_state_dict(_load_checkpoint(self.pretrained, map_location="cpu"))
                self.load_state_dict(state_dict, strict=True)
                logger.info(f"RescaleResNet3d: loaded the 3D checkpoint {self.pretrained}")
        BaseModule.init_weights(self)

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, ...]]:
        outs = super().forward(x)
        if isinstance(outs, tuple) and len(outs) == 1:
            return outs[0]
        return outs


@MODELS.register_module()
class RescaleResNet3dSlowOnly(RescaleResNet3d):
    """The SlowOnly layout of ``ResNet3dSlowOnly``: a 1x7x7 stem without temporal
    stride, stages 4-5 (``layer3``, ``layer4``) inflated, no ``pool2``."""

    def __init__(self, conv1_kernel: Sequence[int] = (1, 7, 7), conv1_stride_t: int = 1,
                 pool1_stride_t: int = 1, inflate: Sequence[int] = (0, 0, 1, 1),
                 with_pool2: bool = False, **kwargs) -> None:
        super().__init__(conv1_kernel=conv1_kernel, conv1_stride_t=conv1_stride_t,
                         pool1_stride_t=pool1_stride_t, inflate=inflate, with_pool2=with_pool2,
                         **kwargs)
