"""timm integration: ``import rescalenet.timm`` registers every 2D RescaleNet of the registry in timm.

>>> import timm, rescalenet.timm
>>> model = timm.create_model('rescalenet50', num_classes=10, drop_rate=0.3)
>>> backbone = timm.create_model('rescalenet50', features_only=True, out_indices=(1, 2, 3, 4))

timm is an optional dependency: ``import rescalenet`` never imports it, only this
module does. The registered models are :class:`TimmRescaleNet`, a thin subclass of
:class:`rescalenet.RescaleNet` with timm's conventions (same modules, same
``state_dict`` keys, so checkpoints move freely between the two):

* constructor arguments ``drop_rate`` (dropout before the classifier, the core's
  ``drop_fc``) and ``global_pool`` (``'avg'``, or ``''`` for unpooled features);
* ``feature_info`` with timm's five ResNet taps: the stem (after its ReLU, stride 2)
  and ``layer1`` .. ``layer4`` (strides 4-32); ``features_only=True`` takes them all,
  ``out_indices=(1, 2, 3, 4)`` the four stages, as for timm's ``resnet50``;
* ``forward_intermediates`` / ``prune_intermediate_layers`` (``feature_cls='getter'``);
* ``reset_classifier(num_classes, global_pool=None)`` keeping the pooling by default;
* ``pretrained_cfg`` per model (ImageNet input size, mean and std, ``first_conv='conv1'``,
  ``classifier='fc'``). No weights are published: ``pretrained=True`` needs a local
  checkpoint, ``pretrained_cfg_overlay=dict(file='rescalenet50.pth')``, holding a
  ``state_dict`` of a core or timm RescaleNet (AddBias calibration buffers included),
  read by :mod:`rescalenet.checkpoint` (official names mapped, BatchNorm ResNets refused);
* ``torch.fx``: ``AddBias`` is registered as a leaf (``register_notrace_module``), so
  timm's FX feature extraction and its FX tests trace the rest module by module.
  ``torch.jit.script`` is not supported (deprecated in torch 2.11; see
  ``RescaleNet.__prepare_scriptable__``): timm's own ``tests/test_models.py`` runs with
  ``-k "(rescalenet or rescalenext) and not torchscript"``, README section "timm".
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

import timm.models
from timm.layers import register_notrace_module
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .checkpoint import extract_state_dict
from .layers import AddBias
from .registry import list_models, model_info
from .resnet import RescaleNet

__all__ = ["TimmRescaleNet", "MODEL_NAMES"]

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
GLOBAL_POOLS = ("avg", "")

register_notrace_module(AddBias)  # its calibration is run-time state, not graph


def _take_indices(num: int, indices: Optional[Union[int, Sequence[int]]]) -> Tuple[List[int], int]:
    """timm's index convention: ``None`` all, ``int`` the last n, a sequence as given
    (negative from the end)."""
    if indices is None:
        indices = num
    if isinstance(indices, int):
        if not 0 < indices <= num:
            raise ValueError(f"take the last n features with 1 <= n <= {num}, got {indices}")
        take = list(range(num - indices, num))
    else:
        take = [i + num if i < 0 else i for i in indices]
        if not take or any(not 0 <= i < num for i in take):
            raise ValueError(f"feature indices must lie in -{num}..{num - 1}, got {list(indices)}")
    return take, max(take)


class TimmRescaleNet(RescaleNet):
    """:class:`rescalenet.RescaleNet` following timm's model conventions.

    Args (besides :class:`rescalenet.RescaleNet`'s):
        drop_rate: dropout before the classifier (timm's name for ``drop_fc``).
        global_pool: ``'avg'`` (default) or ``''``: no pooling and no classifier, the
            forward returns the centred last feature map (``final_addbias`` applied).
        drop_path_rate: accepted for timm scripts' sake, must be 0 (RescaleNet has no
            stochastic depth; its regulariser is ``drop_conv``, Dropout2d in stages 3-4).
    """

    def __init__(
        self,
        *args: Any,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if "out_indices" in kwargs:
            raise ValueError(
                "timm RescaleNets extract features with timm's wrapper: "
                "timm.create_model(name, features_only=True, out_indices=...) "
                "(index 0 is the stem, 1.. the stages)"
            )
        if "drop_fc" in kwargs:
            raise ValueError("pass the classifier dropout as drop_rate (timm's name), not drop_fc")
        if drop_path_rate:
            raise ValueError(
                "RescaleNet has no stochastic depth (drop_path_rate); use drop_conv, the "
                "Dropout2d rate in stages 3-4 of the official recipe"
            )
        _check_pool(global_pool, num_classes)
        super().__init__(*args, num_classes=num_classes, drop_fc=drop_rate, **kwargs)
        self.global_pool = global_pool
        if global_pool == "":
            self.avgpool = nn.Identity()
        self.head_hidden_size = self.num_features
        stem = self.stem_cfg
        stem_reduction = stem.stride if isinstance(stem.stride, int) else stem.stride[-1]
        # timm's taps: the stem's activation (before its max-pool), then the stages
        self.feature_info = [dict(num_chs=stem.channels, reduction=stem_reduction, module="relu")] + [
            dict(info) for info in self.feature_info
        ]

    # -- head -------------------------------------------------------------------------
    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "":
            return self.final_addbias(x)
        return super().forward_head(x, pre_logits)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        global_pool = self.global_pool if global_pool is None else global_pool
        _check_pool(global_pool, num_classes)
        super().reset_classifier(num_classes, "avg")
        self.global_pool = global_pool
        self.avgpool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.Identity()

    # -- intermediate features (timm's feature_cls='getter') -----------------------------
    def forward_intermediates(
        self,
        x: Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """The taps of ``feature_info`` (0: stem, 1..: stages) in ``indices``; with
        ``intermediates_only=False`` also the last feature map."""
        if output_fmt != "NCHW":
            raise ValueError(f"RescaleNet features are NCHW, got output_fmt={output_fmt!r}")
        taps = len(self.feature_info)
        take, max_index = _take_indices(taps, indices)
        x, intermediates = self.forward_taps(x, take, max_index if stop_early else taps - 1)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last tap in ``indices`` (and the head)."""
        taps = len(self.feature_info)
        take, max_index = _take_indices(taps, indices)
        for i in range(max_index + 1, taps):
            setattr(self, f"layer{i}", nn.Sequential())
        if max_index < taps - 1:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.final_addbias = nn.Identity()  # the head's centring belongs to the last stage's features
        if prune_head or max_index < taps - 1:
            self.reset_classifier(0, "")
        return take


def _check_pool(global_pool: str, num_classes: int) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"RescaleNet supports global_pool in {GLOBAL_POOLS}, got {global_pool!r}")
    if global_pool == "" and num_classes > 0:
        raise ValueError("global_pool='' (unpooled features) needs num_classes=0: a linear classifier needs pooling")


# -- registry: every 2D model of rescalenet.registry ---------------------------------
def _cfg(name: str) -> Dict[str, Any]:
    info = model_info(name)
    size, arch = info.input_size, info.cfg
    stride = arch.stem.stride * (arch.stem.pool_stride if arch.stem.pool_kernel else 1)
    for s in arch.strides or (1, 2, 2, 2):
        stride *= s
    return {
        "url": "",
        "num_classes": info.num_classes,
        "input_size": size,
        "pool_size": (size[1] // stride, size[2] // stride),
        "crop_pct": 0.875 if info.layout == "imagenet" else 1.0,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "origin_url": "https://github.com/hukkai/rescaling",
        "paper_name": "Is normalization indispensable for training deep neural network?",
    }


MODEL_NAMES = tuple(list_models(kind="2d"))


def _filter_checkpoint(state_dict: Dict[str, Tensor], model: nn.Module) -> Dict[str, Tensor]:
    """timm's pretrained_filter_fn: the project's checkpoint reader (wrappers, prefixes,
    official names; BatchNorm ResNets refused)."""
    return extract_state_dict(state_dict, source="the pretrained file")


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> TimmRescaleNet:
    if kwargs.get("features_only") and kwargs.get("frozen_stages", -1) >= 0:
        raise ValueError(
            "frozen_stages is not kept by timm's features_only wrapper (its train() does not "
            "re-freeze); freeze in your framework, or use rescalenet.RescaleNet(out_indices=..., "
            "frozen_stages=...)"
        )
    arch = model_info(variant).cfg
    if kwargs.get("features_only") and "out_indices" not in kwargs:
        kwargs["out_indices"] = tuple(range(len(arch.layers) + 1))  # the stem and every stage
    return build_model_with_cfg(TimmRescaleNet, variant, pretrained, pretrained_filter_fn=_filter_checkpoint,
                                **{**arch.kwargs(), **kwargs})


def _register(name: str) -> None:
    if timm.models.is_model(name) and timm.models.model_entrypoint(name).__module__ == __name__:
        return  # already registered by this module (e.g. importlib.reload): stay silent

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> TimmRescaleNet:
        return _create(name, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = model_info(name).builder.__doc__
    globals()[name] = register_model(entrypoint)


default_cfgs = generate_default_cfgs({name: _cfg(name) for name in MODEL_NAMES})

for _name in MODEL_NAMES:
    _register(_name)
