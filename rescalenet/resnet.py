"""RescaleNet: ResNet / ResNeXt with rescaled residuals and no normalization layer.

Structure and module names follow torchvision's ``resnet.py`` (post-activation ResNet
v1.5, stride on the 3x3 conv; ``conv1``, ``layer1`` ... ``layerN``, ``fc``), with the
normalization layers replaced as in the official RescaleNet code:

* stem: ``conv -> AddBias -> ReLU -> [max-pool]``;
* stages of :mod:`rescalenet.blocks` blocks, indexed ``k = c + i`` over all ``L``
  blocks of the network (:func:`~rescalenet.rescale.block_index`);
* head: ``AddBias -> global average pool -> dropout -> linear``.

One network class serves every layout: the ImageNet family (7x7/2 stem, 4 stages,
:data:`ARCH_SETTINGS`), the CIFAR family of He et al. 2016 section 4.2 / Fixup / SkipInit
(3x3/1 stem, 3 stages of widths 16-32-64, :data:`CIFAR_SETTINGS`) and the 3D networks of
:mod:`rescalenet.resnet3d`; what differs is data (:class:`StemCfg`, widths, strides) and
the layer classes (:data:`~rescalenet.blocks.LAYERS_2D` / ``LAYERS_3D``).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

from . import fast
from .blocks import BLOCK_MULTIPLIERS, LAYERS_2D, SHORTCUT_POOLS, BasicBlock, Bottleneck, ConvLayers, RescaleBlock, conv_layer
from .checkpoint import map_official_keys, refuse_normalized_network
from .layers import AddBias, checkpoint_without_recalibration
from .optim import no_weight_decay_names
from .registry import register_model
from .rescale import block_index, check_offset, init_linear_preserving_

__all__ = [
    "RescaleNet",
    "SHORTCUT_POOLS",
    "StemCfg",
    "IMAGENET_STEM",
    "CIFAR_STEM",
    "BasicBlock",
    "Bottleneck",
    "ARCH_SETTINGS",
    "CIFAR_SETTINGS",
    "rescalenet18",
    "rescalenet34",
    "rescalenet50",
    "rescalenet101",
    "rescalenet152",
    "rescalenet200",
    "rescalenext50_32x4d",
    "rescalenext101_32x8d",
    "RescaleNetCfg",
    "MODEL_CFGS",
    "build_rescalenet",
    "cifar_cfg",
]

Size = Union[int, Tuple[int, ...]]


@dataclass(frozen=True)
class StemCfg:
    """The stem ``conv (no bias) -> AddBias -> ReLU -> [max-pool]``."""

    channels: int = 64
    kernel: Size = 7
    stride: Size = 2
    pool_kernel: Optional[Size] = 3  # None: no max-pool
    pool_stride: Size = 2
    pool_padding: Size = 1


IMAGENET_STEM = StemCfg()
CIFAR_STEM = StemCfg(channels=16, kernel=3, stride=1, pool_kernel=None)


def _spatial(v: Size) -> int:
    """The spatial (last) entry of an int or per-dim size."""
    return v[-1] if isinstance(v, tuple) else v


class RescaleNet(nn.Module):
    """A normalization-free ResNet/ResNeXt with rescaled residuals.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage.
        num_classes: classifier outputs; 0 builds no ``fc`` (``forward`` returns the
            pooled features), as in timm.
        in_chans: input channels.
        groups, width_per_group: ResNeXt cardinality and width.
        multiplier: the branch multiplier ``m_k``: ``'scalar'`` (official),
            ``'vector'`` (one per output channel), ``'inner_vector'`` (the scalar plus a
            per-channel vector after every inner ReLU: the official code's
            commented-out variant) or ``'none'``.
        c: offset of the block index ``k = c + i``; ``None`` means ``L - 1`` (official code).
        drop_conv: dropout rate after every branch conv of the stages from the third
            on (official: ``Dropout2d(0.03)`` in stages 3-4).
        drop_fc: dropout before the classifier (official: 0.3).
        out_indices: if given, the network is a feature extractor: ``forward`` returns
            the tuple of these stages' outputs (0-based; for the ImageNet layout strides
            4, 8, 16, 32), no head is built, and neither are the stages after the last
            one asked for (the block indices still count all ``L`` blocks, so the
            built blocks are those of the whole network).
        frozen_stages: stages ``0..frozen_stages`` are frozen (stage 0 is the stem):
            no gradients, kept in eval mode, so their AddBias never recalibrates.
            ``-1`` freezes nothing.
        calibration_steps: training passes each ``AddBias`` averages its mean over.
        stem: the stem (:data:`IMAGENET_STEM`, :data:`CIFAR_STEM`).
        widths: each stage's ``planes`` (default ``64 * 2 ** i``).
        strides: each stage's stride (default 1, then 2); per dim in 3D.
        conv_layers: the layer classes, :data:`~rescalenet.blocks.LAYERS_2D` or ``LAYERS_3D``.
        with_final_addbias: for a feature extractor, centre the last stage's output with
            the head's AddBias (for an external pooling head).
        depth_scaled_init, shortcut_pool: ablations of :class:`~rescalenet.blocks.RescaleBlock`
            (the defaults are the official code's).
    """

    def __init__(
        self,
        block: Type[RescaleBlock],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        groups: int = 1,
        width_per_group: int = 64,
        multiplier: str = "scalar",
        c: Optional[int] = None,
        drop_conv: float = 0.0,
        drop_fc: float = 0.0,
        out_indices: Optional[Sequence[int]] = None,
        frozen_stages: int = -1,
        calibration_steps: int = 8,
        *,
        stem: StemCfg = IMAGENET_STEM,
        widths: Optional[Sequence[int]] = None,
        strides: Optional[Sequence[Size]] = None,
        conv_layers: ConvLayers = LAYERS_2D,
        with_final_addbias: bool = False,
        depth_scaled_init: bool = True,
        shortcut_pool: str = "avg",
    ) -> None:
        super().__init__()
        layers = tuple(layers)
        num_stages = len(layers)
        widths = tuple(64 * 2**i for i in range(num_stages)) if widths is None else tuple(widths)
        strides = tuple([1] + [2] * (num_stages - 1)) if strides is None else tuple(strides)
        if not layers or any(not isinstance(n, numbers.Integral) or n < 1 for n in layers):
            raise ValueError(f"layers must give a positive block count per stage, got {list(layers)}")
        if len(widths) != num_stages or len(strides) != num_stages:
            raise ValueError(f"widths {widths} and strides {strides} need one entry per stage ({num_stages})")
        if multiplier not in BLOCK_MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {BLOCK_MULTIPLIERS}, got {multiplier!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0: no classifier), got {num_classes!r}")
        for name, rate in (("drop_conv", drop_conv), ("drop_fc", drop_fc)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        if out_indices is not None:
            out_indices = tuple(out_indices)
            if not out_indices or any(i not in range(num_stages) for i in out_indices) \
                    or list(out_indices) != sorted(set(out_indices)):
                raise ValueError(f"out_indices must be a non-empty increasing subset of "
                                 f"{tuple(range(num_stages))}, got {out_indices}")
        built = num_stages if out_indices is None else max(out_indices) + 1
        if not -1 <= frozen_stages <= built:
            raise ValueError(f"frozen_stages must be in -1..{built} (the stages built), got {frozen_stages}")
        self.block = block
        self.layers = layers
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.groups = groups
        self.base_width = width_per_group
        self.multiplier = multiplier
        self.drop_conv = drop_conv
        self.drop_rate = drop_fc
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.calibration_steps = calibration_steps
        self.depth_scaled_init = depth_scaled_init
        self.shortcut_pool = shortcut_pool
        self.stem_cfg = stem
        self.widths = widths
        self.conv_layers = conv_layers
        self.grad_checkpointing = False
        self.fused = True
        self.num_blocks = sum(layers)  # L: all blocks of the network, built or not
        self.c = self.num_blocks - 1 if c is None else check_offset(c)
        self.num_stages = built

        self.conv1 = conv_layer(conv_layers, in_chans, stem.channels, stem.kernel, stem.stride)
        self.addbias1 = AddBias(stem.channels, calibration_steps=calibration_steps)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (conv_layers.max_pool(stem.pool_kernel, stem.pool_stride, stem.pool_padding)
                        if stem.pool_kernel else nn.Identity())

        self.inplanes = stem.channels
        reduction = _spatial(stem.stride) * (_spatial(stem.pool_stride) if stem.pool_kernel else 1)
        self.feature_info: List[Dict[str, Any]] = []
        first = 0
        for i in range(built):
            layer = self._make_layer(i, widths[i], layers[i], strides[i], first,
                                     drop_conv if i >= 2 else 0.0)  # official: stages 3-4 only
            self.add_module(f"layer{i + 1}", layer)
            first += layers[i]
            reduction *= _spatial(strides[i])
            self.feature_info.append(dict(num_chs=self.inplanes, reduction=reduction, module=f"layer{i + 1}"))
        self.num_features = self.inplanes

        self.with_final_addbias = with_final_addbias or out_indices is None
        if self.with_final_addbias:
            self.final_addbias = AddBias(self.num_features, calibration_steps=calibration_steps)
        if out_indices is None:
            self.avgpool = conv_layers.global_pool(1)
            self.dropout = nn.Dropout(drop_fc) if drop_fc > 0 else nn.Identity()
            self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.reset_parameters()
        self._freeze_stages()

    def _block_kernels(self, stage: int, j: int) -> Optional[Tuple[Size, ...]]:
        """The branch kernels of block ``j`` of ``stage`` (``None``: the block's 2D ones)."""
        return None

    def _make_layer(self, stage: int, planes: int, blocks: int, stride: Size, first: int,
                    drop_conv: float) -> nn.Sequential:
        layers = []
        for j in range(blocks):
            layers.append(
                self.block(
                    self.inplanes,
                    planes,
                    index=block_index(first + j, self.num_blocks, self.c),
                    num_blocks=self.num_blocks,
                    stride=stride if j == 0 else 1,
                    groups=self.groups,
                    base_width=self.base_width,
                    multiplier=self.multiplier,
                    drop_conv=drop_conv,
                    kernels=self._block_kernels(stage, j),
                    layers=self.conv_layers,
                    calibration_steps=self.calibration_steps,
                    depth_scaled_init=self.depth_scaled_init,
                    shortcut_pool=self.shortcut_pool,
                )
            )
            self.inplanes = planes * self.block.expansion
        return nn.Sequential(*layers)

    # -- init -------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """The official init: He fan-in (gain sqrt 2) stem (3D: the fan-in counts the
        temporal taps), depth-scaled branches, gain-1 shortcut convs and classifier,
        zero AddBias and unit multipliers. Calibration state is left as it is."""
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_in", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, RescaleBlock):
                m.reset_parameters()
            elif isinstance(m, AddBias):
                nn.init.zeros_(m._bias)
        if isinstance(getattr(self, "fc", None), nn.Linear):
            init_linear_preserving_(self.fc)
            bound = 1.0 / self.num_features**0.5  # PyTorch's default bias init, as official
            nn.init.uniform_(self.fc.bias, -bound, bound)

    # -- freezing ---------------------------------------------------------------
    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        mods: List[nn.Module] = [self.conv1, self.addbias1]
        mods += [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        return mods

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    # -- forward ----------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if fast.symbolic_tracing():
            return  # shapes are not known while tracing
        dims = 2 + self.conv_layers.spatial_dims
        layout = "(N, C, H, W)" if dims == 4 else "(N, C, T, H, W)"
        if x.dim() != dims:
            raise ValueError(f"{type(self).__name__} expects a {dims}-D {layout} input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_chans} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}; expected {layout})"
            )

    def stem_activation(self, x: Tensor) -> Tensor:
        """``relu(addbias1(conv1(x)))``: the stem before its max-pool."""
        if self.fused and fast.can_fuse_stem(self):
            return self.relu(fast.fused_stem_forward(self, x))
        return self.relu(self.addbias1(self.conv1(x)))

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.stem_activation(x))

    def _after_stage(self, stage: int, x: Tensor) -> Tensor:
        """What follows stage ``stage`` (1-based) besides the next stage: nothing in 2D."""
        return x

    def _run_stage(self, stage: nn.Sequential, x: Tensor) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not fast.symbolic_tracing():
            for blk in stage:
                x = checkpoint_without_recalibration(blk, x)
            return x
        return stage(x)

    def forward_taps(self, x: Tensor, taps: Sequence[int], last: int) -> Tuple[Tensor, List[Tensor]]:
        """The stage loop. Runs the stem and stages ``1..last``; returns the last
        output and the outputs at ``taps``: tap 0 is the stem's activation (before its
        max-pool), tap ``i`` the output of stage ``i``."""
        self._check_input(x)
        x = self.stem_activation(x)
        outs = [x] if 0 in taps else []
        x = self.maxpool(x)
        for i in range(1, last + 1):
            x = self._after_stage(i, self._run_stage(getattr(self, f"layer{i}"), x))
            if i in taps:
                outs.append(x)
        return x, outs

    def forward_stages(self, x: Tensor, out_indices: Optional[Sequence[int]] = None) -> List[Tensor]:
        """Outputs of the stages in ``out_indices`` (0-based; default: all built)."""
        indices = range(self.num_stages) if out_indices is None else out_indices
        return self.forward_taps(x, [i + 1 for i in indices], max(indices) + 1)[1]

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's output, before the head."""
        return self.forward_taps(x, (), self.num_stages)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.out_indices is not None:
            raise RuntimeError(
                f"this {type(self).__name__} is a feature extractor (out_indices={self.out_indices}) "
                "and has no head; build it without out_indices for a classifier")
        if self.fused and fast.can_fuse_head(self):
            x = fast.fused_head_pool(self, x)
        else:
            x = self.avgpool(self.final_addbias(x)).flatten(1)
        x = self.dropout(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, ...]]:
        if self.out_indices is None:
            return self.forward_head(self.forward_features(x))
        outs = self.forward_stages(x, self.out_indices)
        if self.with_final_addbias and self.out_indices[-1] == self.num_stages - 1:
            outs[-1] = self.final_addbias(outs[-1])
        return tuple(outs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # every loader (torch, timm, MMEngine) passes through here with the whole
        # network's keys: refuse a normalized network's weights, map the official names
        refuse_normalized_network(list(state_dict), f"the state_dict loaded into {type(self).__name__}", prefix)
        map_official_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __prepare_scriptable__(self):
        raise RuntimeError(
            "RescaleNet does not support torch.jit.script, which torch 2.11 deprecates "
            "(`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`): "
            "use torch.compile or torch.export (both tested), or torch.jit.trace of a model "
            "folded with rescalenet.fold_for_inference")

    # -- timm-style model API ---------------------------------------------------
    def no_weight_decay(self) -> set:
        """Names of the AddBias biases and branch multipliers (no weight decay)."""
        return set(no_weight_decay_names(self))

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r"^conv1|^addbias1",
            blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)",
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every block (recomputed in the backward pass, AddBias calibration
        kept exact: :func:`rescalenet.layers.checkpoint_without_recalibration`)."""
        self.grad_checkpointing = enable

    def set_fused_forward(self, enable: bool = True) -> None:
        """Fold the calibrated AddBias shifts and the residual factors into the
        convolutions (default; exact, faster, less memory: :mod:`rescalenet.fast`), or
        run every module separately (``False``: the reference forward, which
        calibration always uses)."""
        self.fused = enable
        for m in self.modules():
            if isinstance(m, RescaleBlock):
                m.fused = enable

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        if self.out_indices is not None:
            raise RuntimeError("a feature extractor (out_indices set) has no classifier")
        if global_pool != "avg":
            raise ValueError(f"RescaleNet only supports global_pool='avg', got {global_pool!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        self.num_classes = num_classes
        device = self.conv1.weight.device
        if num_classes > 0:
            self.fc = nn.Linear(self.num_features, num_classes, device=device)
            init_linear_preserving_(self.fc)
        else:
            self.fc = nn.Identity()


# -- the registered architectures -----------------------------------------------------
@dataclass(frozen=True)
class RescaleNetCfg:
    """A RescaleNet architecture as data: the constructor arguments that define it."""

    block: Type[RescaleBlock]
    layers: Tuple[int, ...]
    groups: int = 1
    width_per_group: int = 64
    stem: StemCfg = IMAGENET_STEM
    widths: Optional[Tuple[int, ...]] = None
    strides: Optional[Tuple[int, ...]] = None
    num_classes: int = 1000

    def kwargs(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# depth -> (block, blocks per stage) of the ImageNet family
ARCH_SETTINGS: Dict[int, Tuple[Type[RescaleBlock], Tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
    200: (Bottleneck, (3, 24, 36, 3)),
}

# The CIFAR family (He et al. 2016 section 4.2; the Fixup and SkipInit depth studies):
# name suffix -> (blocks per stage n, widening factor k): 6 n + 2 layers of basic blocks
# at widths 16k-32k-64k; wrn40_4 is Zagoruyko & Komodakis' WRN-40-4 (their depth
# 6 n + 4 also counts the two shortcut convs)
CIFAR_SETTINGS: Dict[str, Tuple[int, int]] = {
    "cifar20": (3, 1),
    "cifar32": (5, 1),
    "cifar56": (9, 1),
    "cifar110": (18, 1),
    "cifar1202": (200, 1),
    "wrn40_4": (6, 4),
}


def cifar_cfg(blocks_per_stage: int, width: int = 1) -> RescaleNetCfg:
    """3x3/1 stem of 16 channels, three stages of basic blocks at widths
    ``16, 32, 64`` times ``width``, strides 1, 2, 2 (output stride 4), 10 classes."""
    return RescaleNetCfg(BasicBlock, (blocks_per_stage,) * 3, stem=CIFAR_STEM,
                         widths=tuple(16 * width * 2**i for i in range(3)), strides=(1, 2, 2), num_classes=10)


MODEL_CFGS: Dict[str, RescaleNetCfg] = {
    **{f"rescalenet{d}": RescaleNetCfg(b, layers) for d, (b, layers) in ARCH_SETTINGS.items()},
    "rescalenext50_32x4d": RescaleNetCfg(Bottleneck, (3, 4, 6, 3), groups=32, width_per_group=4),
    "rescalenext101_32x8d": RescaleNetCfg(Bottleneck, (3, 4, 23, 3), groups=32, width_per_group=8),
    **{f"rescalenet_{suffix}": cifar_cfg(n, k) for suffix, (n, k) in CIFAR_SETTINGS.items()},
}


def build_rescalenet(name: str, **kwargs: Any) -> RescaleNet:
    """The registered architecture ``name`` (:data:`MODEL_CFGS`), with ``kwargs`` on top."""
    return RescaleNet(**{**MODEL_CFGS[name].kwargs(), **kwargs})


def _rescalenet(depth: int, **kwargs: Any) -> RescaleNet:
    if depth not in ARCH_SETTINGS:
        raise ValueError(f"unknown RescaleNet depth {depth!r}; choose from {sorted(ARCH_SETTINGS)}")
    return build_rescalenet(f"rescalenet{depth}", **kwargs)


def _imagenet(builder):
    return register_model("2d", "imagenet", (3, 224, 224), cfg=MODEL_CFGS[builder.__name__])(builder)


@_imagenet
def rescalenet18(**kwargs: Any) -> RescaleNet:
    """RescaleNet-18: basic blocks (2, 2, 2, 2), L = 8. 11.7 M parameters at 1000 classes."""
    return _rescalenet(18, **kwargs)


@_imagenet
def rescalenet34(**kwargs: Any) -> RescaleNet:
    """RescaleNet-34: basic blocks (3, 4, 6, 3), L = 16. 21.8 M parameters at 1000 classes."""
    return _rescalenet(34, **kwargs)


@_imagenet
def rescalenet50(**kwargs: Any) -> RescaleNet:
    """RescaleNet-50: bottlenecks (3, 4, 6, 3), L = 16. 25.5 M parameters at 1000 classes."""
    return _rescalenet(50, **kwargs)


@_imagenet
def rescalenet101(**kwargs: Any) -> RescaleNet:
    """RescaleNet-101: bottlenecks (3, 4, 23, 3), L = 33. 44.5 M parameters at 1000 classes."""
    return _rescalenet(101, **kwargs)


@_imagenet
def rescalenet152(**kwargs: Any) -> RescaleNet:
    """RescaleNet-152: bottlenecks (3, 8, 36, 3), L = 50. 60.1 M parameters at 1000 classes."""
    return _rescalenet(152, **kwargs)


@_imagenet
def rescalenet200(**kwargs: Any) -> RescaleNet:
    """RescaleNet-200: bottlenecks (3, 24, 36, 3), L = 66 (the official ``rescale200``).
    64.6 M parameters at 1000 classes."""
    return _rescalenet(200, **kwargs)


@_imagenet
def rescalenext50_32x4d(**kwargs: Any) -> RescaleNet:
    """RescaleNeXt-50 32x4d: bottlenecks (3, 4, 6, 3), 32 groups of width 4. 25.0 M parameters."""
    return build_rescalenet("rescalenext50_32x4d", **kwargs)


@_imagenet
def rescalenext101_32x8d(**kwargs: Any) -> RescaleNet:
    """RescaleNeXt-101 32x8d: bottlenecks (3, 4, 23, 3), 32 groups of width 8. 88.7 M parameters."""
    return build_rescalenet("rescalenext101_32x8d", **kwargs)


def _register_cifar(suffix: str, blocks: int, width: int) -> None:
    name = f"rescalenet_{suffix}"

    def builder(**kwargs: Any) -> RescaleNet:
        return build_rescalenet(name, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"CIFAR-layout RescaleNet, {6 * blocks + 2} layers: 3x3 stem, 3 stages of {blocks} basic "
                       f"blocks at widths {16 * width}-{32 * width}-{64 * width}, L = {3 * blocks}; for 28-32 px "
                       "inputs, 10 classes by default.")
    globals()[name] = register_model("2d", "cifar", (3, 32, 32), num_classes=10, cfg=MODEL_CFGS[name])(builder)
    __all__.append(name)


for _suffix, (_blocks, _width) in CIFAR_SETTINGS.items():
    _register_cifar(_suffix, _blocks, _width)
