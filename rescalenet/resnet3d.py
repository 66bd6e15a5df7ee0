"""RescaleNet 3D: a normalization-free 3D ResNet for video, and 2D -> 3D inflation.

The paper trains 3D networks on Kinetics without normalization; the official code only
left ``Bias3D`` behind. This module applies the 2D rules of :mod:`rescalenet.resnet`
unchanged to 3D convolutions:

* global block index ``k = c + i`` over all ``L`` blocks, ``alpha_k`` on the shortcut,
  ``m_k / sqrt(L)`` on the branch (:class:`~rescalenet.layers.RescaledResidual`);
* depth-scaled He init of the ``n`` branch convs, exponent ``1 / (2 n)``
  (:func:`~rescalenet.rescale.branch_init_gain`); the fan-in counts the temporal taps;
* an :class:`~rescalenet.layers.AddBias` (mean over N, T, H, W) before every branch
  conv and every shortcut conv, after the stem conv and, in the classifier, before
  the global pool.

The temporal layout mirrors MMAction2's ``ResNet3d`` (argument names included):
``inflate`` per stage (an int, or a tuple with one entry per block), ``inflate_style``
``'3x1x1'`` (bottleneck conv1 is 3x1x1) or ``'3x3x3'`` (conv2 is 3x3x3), temporal
strides on the stride-carrying conv (conv2 of a bottleneck, conv1 of a basic block),
``conv1_kernel`` / ``conv1_stride_t`` / ``pool1_stride_t`` for the stem and ``with_pool2``
(a 2x1x1 max-pool after ``layer1``). :func:`slowonly_rescalenet50` and
:func:`i3d_rescalenet50` give the SlowOnly and I3D layouts of MMAction2's configs.

Module names are those of the 2D network (``conv1``, ``addbias1``, ``layer1.0.conv2``,
``layer1.0.downsample.{1,2}``, ``layer1.0.rescale._scale`` ...), so a 2D RescaleNet
state_dict inflates name for name (:func:`inflate_from_2d`): conv kernels are repeated
over time and divided by the temporal kernel size, which keeps a clip of identical
frames mapped to the 2D features; AddBias biases, calibrated means and counts and the
multipliers are copied.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .blocks import LAYERS_3D, Bottleneck
from .checkpoint import extract_state_dict
from .registry import register_model
from .resnet import ARCH_SETTINGS, RescaleNet, StemCfg

__all__ = [
    "RescaleNet3d",
    "inflate_from_2d",
    "InflationReport",
    "slowonly_rescalenet50",
    "i3d_rescalenet50",
    "INFLATE_STYLES",
]

INFLATE_STYLES = ("3x1x1", "3x3x3")
# 2D head keys that a 3D backbone without classifier legitimately leaves unused
_HEAD_KEYS = ("fc.", "final_addbias.")

Triple = Tuple[int, int, int]


def _triple(value: Union[int, Sequence[int]], name: str) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3 or any(v < 1 for v in value):
        raise ValueError(f"{name} must be an int or 3 positive ints (t, h, w), got {value}")
    return value  # type: ignore[return-value]


def _per_stage(value: Union[int, Sequence], num_stages: int, name: str) -> tuple:
    if isinstance(value, int):
        return (value,) * num_stages
    value = tuple(value)
    if len(value) != num_stages:
        raise ValueError(
            f"{name} has {len(value)} entries but the network has {num_stages} stages: {value}"
        )
    return value


def _block_inflations(stage_inflate: Union[int, Sequence[int]], blocks: int, stage: int) -> Tuple[bool, ...]:
    """MMAction2's rule: an int applies to every block, a tuple gives one flag per block."""
    if isinstance(stage_inflate, (bool, int)):
        flags: Tuple[int, ...] = (int(stage_inflate),) * blocks
    else:
        flags = tuple(stage_inflate)
        if len(flags) != blocks:
            raise ValueError(
                f"inflate for stage {stage + 1} has {len(flags)} entries but the stage has "
                f"{blocks} blocks: {flags}"
            )
    if any(f not in (0, 1) for f in flags):
        raise ValueError(f"inflate flags must be 0 or 1, got {flags} for stage {stage + 1}")
    return tuple(bool(f) for f in flags)


def _inflated_kernels(bottleneck: bool, inflate: bool, style: str) -> Tuple[Triple, ...]:
    """MMAction2's kernels: a basic block inflates both 3x3 convs to 3x3x3; a bottleneck
    its first conv to 3x1x1 (``'3x1x1'``) or its 3x3 conv to 3x3x3 (``'3x3x3'``)."""
    if not bottleneck:
        kt = 3 if inflate else 1
        return ((kt, 3, 3), (kt, 3, 3))
    kt1 = 3 if inflate and style == "3x1x1" else 1
    kt2 = 3 if inflate and style == "3x3x3" else 1
    return ((kt1, 1, 1), (kt2, 3, 3), (1, 1, 1))


class RescaleNet3d(RescaleNet):
    """A normalization-free 3D ResNet with rescaled residuals, for (N, C, T, H, W) clips:
    :class:`~rescalenet.RescaleNet` with 3D layers (:data:`~rescalenet.blocks.LAYERS_3D`)
    and the temporal layout given with MMAction2's ``ResNet3d`` arguments.

    Defaults are MMAction2's ``ResNet3d`` (I3D-like: ``conv1_kernel=(3, 7, 7)``, every
    block inflated, ``with_pool2=True``); :func:`slowonly_rescalenet50` and
    :func:`i3d_rescalenet50` give the two standard layouts.

    Args:
        depth: 18, 34, 50, 101, 152 or 200 (the 2D :data:`~rescalenet.resnet.ARCH_SETTINGS`).
        stage_blocks: blocks per stage; defaults to the depth's first ``num_stages``.
        in_channels: input channels.
        num_stages: 1-4 residual stages.
        base_channels: stem width (64).
        out_indices: stages whose outputs ``forward`` returns (0-based), as a tuple,
            when ``num_classes == 0``. With ``num_classes > 0`` a classifier head is
            built (AddBias, global average pool, dropout, linear) as in 2D.
        spatial_strides, temporal_strides: the stride of each stage's first block
            (default ``(1, 2, 2, 2)`` and ``1``).
        conv1_kernel, conv1_stride_s, conv1_stride_t: the stem conv.
        pool1_stride_s, pool1_stride_t, with_pool1: the stem's (1, 3, 3) max-pool.
        with_pool2: a (2, 1, 1) temporal max-pool after ``layer1``.
        inflate: per stage, ``0``/``1`` for all blocks or a tuple with one flag per block.
        inflate_style: ``'3x1x1'`` or ``'3x3x3'`` (bottlenecks; basic blocks inflate both convs).
        num_classes: the classifier head's outputs (``0``: none, a feature extractor).
        with_final_addbias: with no head, put the head's AddBias on the last returned
            stage, so an external head (MMAction2's ``I3DHead``) pools centred features
            as the 2D classifier does.
        **kwargs: :class:`~rescalenet.RescaleNet`'s ``groups``, ``width_per_group``,
            ``multiplier``, ``c``, ``drop_conv`` (``Dropout3d`` in stages 3-4), ``drop_fc``,
            ``frozen_stages`` (stem and stages ``1..frozen_stages`` frozen, in eval mode),
            ``calibration_steps``, ``depth_scaled_init``, ``shortcut_pool``.
    """

    def __init__(
        self,
        depth: int = 50,
        stage_blocks: Optional[Sequence[int]] = None,
        in_channels: int = 3,
        num_stages: int = 4,
        base_channels: int = 64,
        out_indices: Sequence[int] = (3,),
        spatial_strides: Optional[Sequence[int]] = None,
        temporal_strides: Optional[Sequence[int]] = None,
        conv1_kernel: Union[int, Sequence[int]] = (3, 7, 7),
        conv1_stride_s: int = 2,
        conv1_stride_t: int = 1,
        pool1_stride_s: int = 2,
        pool1_stride_t: int = 1,
        with_pool1: bool = True,
        with_pool2: bool = True,
        inflate: Union[int, Sequence] = 1,
        inflate_style: str = "3x1x1",
        num_classes: int = 0,
        with_final_addbias: bool = False,
        **kwargs: Any,
    ) -> None:
        if depth not in ARCH_SETTINGS:
            raise ValueError(f"unknown RescaleNet3d depth {depth!r}; choose from {sorted(ARCH_SETTINGS)}")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be in 1..4, got {num_stages}")
        block, default_blocks = ARCH_SETTINGS[depth]
        stage_blocks = tuple(default_blocks[:num_stages] if stage_blocks is None else stage_blocks)
        if len(stage_blocks) != num_stages or any(n < 1 for n in stage_blocks):
            raise ValueError(
                f"stage_blocks must give {num_stages} positive block counts (one per stage), "
                f"got {list(stage_blocks)}"
            )
        if spatial_strides is None:
            spatial_strides = (1, 2, 2, 2)[:num_stages]
        spatial_strides = _per_stage(spatial_strides, num_stages, "spatial_strides")
        temporal_strides = _per_stage(1 if temporal_strides is None else temporal_strides,
                                      num_stages, "temporal_strides")
        stage_inflate = _per_stage(inflate, num_stages, "inflate")
        inflations = [_block_inflations(f, n, i) for i, (f, n) in enumerate(zip(stage_inflate, stage_blocks))]
        if inflate_style not in INFLATE_STYLES:
            raise ValueError(f"inflate_style must be one of {INFLATE_STYLES}, got {inflate_style!r}")
        out_indices = tuple(out_indices)
        if num_classes == 0 and (not out_indices or any(i not in range(num_stages) for i in out_indices)):
            raise ValueError(
                f"out_indices must be a non-empty subset of 0..{num_stages - 1}, got {out_indices}"
            )
        self.depth = depth
        self.stage_blocks = stage_blocks
        self.in_channels = in_channels
        self.spatial_strides = spatial_strides
        self.temporal_strides = temporal_strides
        self.conv1_kernel = _triple(conv1_kernel, "conv1_kernel")
        self.stage_inflations = tuple(inflations)
        self.inflate_style = inflate_style
        self.with_pool1 = with_pool1
        self.with_pool2 = with_pool2
        stem = StemCfg(
            channels=base_channels, kernel=self.conv1_kernel, stride=(conv1_stride_t, conv1_stride_s, conv1_stride_s),
            pool_kernel=(1, 3, 3) if with_pool1 else None,
            pool_stride=(pool1_stride_t, pool1_stride_s, pool1_stride_s), pool_padding=(0, 1, 1))
        super().__init__(
            block, stage_blocks, num_classes=num_classes, in_chans=in_channels,
            out_indices=out_indices if num_classes == 0 else None, stem=stem,
            widths=tuple(base_channels * 2**i for i in range(num_stages)),
            strides=tuple((t, s, s) for t, s in zip(temporal_strides, spatial_strides)),
            conv_layers=LAYERS_3D, with_final_addbias=with_final_addbias and num_classes == 0, **kwargs,
        )
        self.pool2 = nn.MaxPool3d((2, 1, 1), (2, 1, 1)) if with_pool2 else nn.Identity()
        self.feat_dim = self.num_features  # MMAction2's name

    def _block_kernels(self, stage: int, j: int) -> Tuple[Triple, ...]:
        return _inflated_kernels(issubclass(self.block, Bottleneck), self.stage_inflations[stage][j],
                                 self.inflate_style)

    def _after_stage(self, stage: int, x: Tensor) -> Tensor:
        return self.pool2(x) if stage == 1 else x

    # -- init (reset_parameters: RescaleNet's, with 3D fan-ins) -------------------
    def inflate_2d_(self, state_dict_2d: Mapping[str, Tensor], strict: bool = True) -> "InflationReport":
        """In-place :func:`inflate_from_2d` of a 2D RescaleNet state_dict into this model."""
        return inflate_from_2d(self, state_dict_2d, strict=strict)


# -- 2D -> 3D inflation ---------------------------------------------------------

@dataclass
class InflationReport:
    """What :func:`inflate_from_2d` did: ``inflated`` (conv kernels repeated over
    time), ``copied`` (AddBias state, multipliers, head), ``unused`` (2D keys left out),
    ``missing`` (3D keys the 2D state_dict lacks; only possible with ``strict=False``)."""

    inflated: List[str]
    copied: List[str]
    unused: List[str]
    missing: List[str]


@torch.no_grad()
def inflate_from_2d(model3d: RescaleNet3d, state_dict_2d: Mapping[str, Tensor],
                    strict: bool = True) -> InflationReport:
    """Initialise ``model3d`` from a 2D :class:`~rescalenet.resnet.RescaleNet` state_dict.

    Names map one to one. A 2D conv kernel ``(O, I, h, w)`` becomes
    ``w.unsqueeze(2).repeat(1, 1, t, 1, 1) / t`` for a temporal kernel size ``t``, so on
    a clip of identical frames every time step whose temporal receptive field stays
    inside the clip gets exactly the 2D features. AddBias ``_bias``, ``init_mean`` and
    ``count`` (calibrated means stay calibrated), multipliers ``_scale`` and a matching
    classifier are copied. The 2D weights go through :func:`rescalenet.checkpoint.extract_state_dict`
    (``module.`` / ``_orig_mod.`` prefixes stripped, official names mapped).

    With ``strict`` (default) every 3D entry must be found in the 2D state_dict and
    every 2D backbone entry must be used: the rescaling coefficients depend on the
    total block count ``L``, so a partial match would not be an inflation of the same
    network. Only the 2D head (``fc.*``, ``final_addbias.*``) and the stages this 3D
    model counts but does not build (a feature extractor's unused last stages) may stay
    unused.
    Shape mismatches always raise ``ValueError``.
    """
    if not isinstance(model3d, RescaleNet3d):
        raise TypeError(f"inflate_from_2d needs a RescaleNet3d, got {type(model3d).__name__}")
    sd2 = extract_state_dict(state_dict_2d, source="the 2D state_dict")
    sd3 = model3d.state_dict()
    new: Dict[str, Tensor] = {}
    inflated, copied, missing = [], [], []
    for key, ref in sd3.items():
        if key not in sd2:
            missing.append(key)
            continue
        src = sd2[key]
        if ref.dim() == 5 and src.dim() == 4:
            t = ref.shape[2]
            if src.shape != ref.shape[:2] + ref.shape[3:]:
                raise ValueError(
                    f"inflate_from_2d: {key}: 2D kernel {tuple(src.shape)} does not match the 3D "
                    f"kernel {tuple(ref.shape)} (different depth or width?)"
                )
            new[key] = (src.to(ref.dtype).unsqueeze(2).repeat(1, 1, t, 1, 1) / t).to(ref.device)
            inflated.append(key)
        else:
            # 1-D AddBias / multiplier state may come as (1, C, 1, 1) from the official code
            if src.numel() != ref.numel() or (ref.dim() >= 2 and src.shape != ref.shape):
                raise ValueError(
                    f"inflate_from_2d: {key}: 2D shape {tuple(src.shape)} does not match the 3D "
                    f"shape {tuple(ref.shape)} (different depth, width or number of classes?)"
                )
            new[key] = src.reshape(ref.shape).to(dtype=ref.dtype, device=ref.device)
            copied.append(key)
    unused = sorted(set(sd2) - set(new))
    if strict:
        unbuilt = tuple(f"layer{i}." for i in range(model3d.num_stages + 1, len(model3d.layers) + 1))
        backbone_unused = [k for k in unused if not k.startswith(_HEAD_KEYS + unbuilt)]
        if missing or backbone_unused:
            raise ValueError(
                "inflate_from_2d: the 2D state_dict is not a RescaleNet with this 3D model's "
                f"stages (depth {model3d.depth}, blocks per stage {list(model3d.stage_blocks)}); "
                f"missing in 2D: {missing[:8]}{' ...' if len(missing) > 8 else ''}; "
                f"unused 2D entries: {backbone_unused[:8]}{' ...' if len(backbone_unused) > 8 else ''}"
            )
    model3d.load_state_dict(new, strict=False)
    return InflationReport(inflated=inflated, copied=copied, unused=unused, missing=missing)


# -- the two standard layouts ------------------------------------------------------

@register_model("3d", "video", (3, 8, 224, 224), num_classes=0)
def slowonly_rescalenet50(**kwargs: Any) -> RescaleNet3d:
    """SlowOnly R-50 layout (MMAction2 ``ResNet3dSlowOnly``): 1x7x7 stem, no temporal
    down-sampling, only stages 4-5 (``layer3``, ``layer4``) inflated (3x1x1)."""
    cfg = dict(depth=50, conv1_kernel=(1, 7, 7), conv1_stride_t=1, pool1_stride_t=1,
               inflate=(0, 0, 1, 1), with_pool2=False)
    cfg.update(kwargs)
    return RescaleNet3d(**cfg)


@register_model("3d", "video", (3, 32, 224, 224), num_classes=0)
def i3d_rescalenet50(**kwargs: Any) -> RescaleNet3d:
    """I3D R-50 layout (MMAction2 ``_base_/models/i3d_r50.py``): 5x7x7 stem with temporal
    stride 2, temporal max-pools after the stem and ``layer1``, alternating 3x1x1 inflation."""
    cfg = dict(depth=50, conv1_kernel=(5, 7, 7), conv1_stride_t=2, pool1_stride_t=2,
               inflate=((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)), with_pool2=True)
    cfg.update(kwargs)
    return RescaleNet3d(**cfg)
