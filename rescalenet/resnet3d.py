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

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import MULTIPLIERS, AddBias
from .rescale import block_index
from .resnet import ARCH_SETTINGS, StagedNetworkAPI, _global_hooks, _RescaleBlock

__all__ = [
    "RescaleNet3d",
    "BasicBlock3d",
    "Bottleneck3d",
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


def _conv(cin: int, cout: int, kernel: Triple, stride: Triple = (1, 1, 1), groups: int = 1) -> nn.Conv3d:
    padding = tuple((k - 1) // 2 for k in kernel)
    return nn.Conv3d(cin, cout, kernel, stride, padding, groups=groups, bias=False)


# -- fused forward ---------------------------------------------------------------
# The blocks run the 2D blocks' fused forward (``rescalenet.resnet``, "fused forward"):
# once calibrated, every AddBias shift is computed inside the next conv (exact at the
# zero-padded borders, in time too), ``m_k / sqrt(L)`` is multiplied into the last
# branch conv's weights and ``alpha_k`` into the downsample conv's weights (Dropout3d
# commutes with both); the stem's post-conv AddBias becomes the conv's bias.
# ``RescaleNet3d.set_fused_forward(False)`` forces the module-by-module forward.


class _RescaleBlock3d(_RescaleBlock):
    """The 2D block's shortcut, rescaled sum, init and fused forward with 3D layers;
    the stride is ``(temporal_stride, spatial_stride, spatial_stride)``."""

    pool_layer = nn.AvgPool3d
    conv_layer = nn.Conv3d
    dropout_layer = nn.Dropout3d

    def __init__(
        self,
        inplanes: int,
        planes: int,
        index: int,
        num_blocks: int,
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        multiplier: str = "scalar",
        drop_conv: float = 0.0,
    ) -> None:
        super().__init__(inplanes, planes, index, num_blocks,
                         (temporal_stride, spatial_stride, spatial_stride), multiplier, drop_conv)


class BasicBlock3d(_RescaleBlock3d):
    """Two 3x3 convs (exponent 1/4); inflated, both are 3x3x3 (MMAction2's ``BasicBlock3d``).
    The spatial and temporal strides are on conv1."""

    expansion = 1
    num_branch_layers = 2

    def __init__(
        self,
        inplanes: int,
        planes: int,
        index: int,
        num_blocks: int,
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        inflate: bool = True,
        inflate_style: str = "3x1x1",
        groups: int = 1,
        base_width: int = 64,
        multiplier: str = "scalar",
        drop_conv: float = 0.0,
    ) -> None:
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock3d only supports groups=1 and base_width=64")
        super().__init__(inplanes, planes, index, num_blocks, spatial_stride, temporal_stride,
                         multiplier, drop_conv)
        kt = 3 if inflate else 1
        self.addbias1 = AddBias(inplanes)
        self.conv1 = _conv(inplanes, planes, (kt, 3, 3), (temporal_stride, spatial_stride, spatial_stride))
        self.addbias2 = AddBias(planes)
        self.conv2 = _conv(planes, planes, (kt, 3, 3))

    def branch_layers(self) -> List[nn.Conv3d]:
        return [self.conv1, self.conv2]

    def forward_reference(self, x: Tensor) -> Tensor:
        """Module by module, as the official code (used while calibrating)."""
        out = self.relu(self.drop(self.conv1(self.addbias1(x))))
        out = self.drop(self.conv2(self.addbias2(out)))
        return self.residual_sum(x, out)


class Bottleneck3d(_RescaleBlock3d):
    """1x1x1 -> 1x3x3 (strides, groups) -> 1x1x1 convs (exponent 1/6). Inflated, conv1
    becomes 3x1x1 (``inflate_style='3x1x1'``) or conv2 3x3x3 (``'3x3x3'``)."""

    expansion = 4
    num_branch_layers = 3

    def __init__(
        self,
        inplanes: int,
        planes: int,
        index: int,
        num_blocks: int,
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        inflate: bool = True,
        inflate_style: str = "3x1x1",
        groups: int = 1,
        base_width: int = 64,
        multiplier: str = "scalar",
        drop_conv: float = 0.0,
    ) -> None:
        super().__init__(inplanes, planes, index, num_blocks, spatial_stride, temporal_stride,
                         multiplier, drop_conv)
        width = int(planes * (base_width / 64.0)) * groups
        kt1 = 3 if inflate and inflate_style == "3x1x1" else 1
        kt2 = 3 if inflate and inflate_style == "3x3x3" else 1
        self.addbias1 = AddBias(inplanes)
        self.conv1 = _conv(inplanes, width, (kt1, 1, 1))
        self.addbias2 = AddBias(width)
        self.conv2 = _conv(width, width, (kt2, 3, 3), (temporal_stride, spatial_stride, spatial_stride), groups)
        self.addbias3 = AddBias(width)
        self.conv3 = _conv(width, planes * self.expansion, (1, 1, 1))

    def branch_layers(self) -> List[nn.Conv3d]:
        return [self.conv1, self.conv2, self.conv3]

    def forward_reference(self, x: Tensor) -> Tensor:
        """Module by module, as the official code (used while calibrating)."""
        out = self.relu(self.drop(self.conv1(self.addbias1(x))))
        out = self.relu(self.drop(self.conv2(self.addbias2(out))))
        out = self.drop(self.conv3(self.addbias3(out)))
        return self.residual_sum(x, out)


_BLOCKS_3D = {2: BasicBlock3d, 3: Bottleneck3d}  # keyed by the 2D block's number of convs


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


class RescaleNet3d(StagedNetworkAPI, nn.Module):
    """A normalization-free 3D ResNet with rescaled residuals, for (N, C, T, H, W) clips.

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
        groups, width_per_group: ResNeXt cardinality and width.
        multiplier: branch multiplier ``m_k``: ``'scalar'``, ``'vector'`` or ``'none'``.
        c: offset of the block index ``k = c + i`` (``None``: ``L - 1``, official).
        drop_conv: ``Dropout3d`` after each branch conv of stages 3-4 (as in 2D).
        num_classes, drop_fc: the classifier head (``0``: none).
        with_final_addbias: with no head, put the head's AddBias on the last returned
            stage, so an external head (MMAction2's ``I3DHead``) pools centred features
            as the 2D classifier does.
        frozen_stages: stem (0) and stages ``1..frozen_stages`` get no gradient and stay
            in eval mode (their AddBias never recalibrate); ``-1`` freezes nothing.
        calibration_steps: training passes each AddBias averages its mean over.
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
        groups: int = 1,
        width_per_group: int = 64,
        multiplier: str = "scalar",
        c: Optional[int] = None,
        drop_conv: float = 0.0,
        num_classes: int = 0,
        drop_fc: float = 0.0,
        with_final_addbias: bool = False,
        frozen_stages: int = -1,
        calibration_steps: int = 8,
    ) -> None:
        super().__init__()
        if depth not in ARCH_SETTINGS:
            raise ValueError(f"unknown RescaleNet3d depth {depth!r}; choose from {sorted(ARCH_SETTINGS)}")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be in 1..4, got {num_stages}")
        block2d, default_blocks = ARCH_SETTINGS[depth]
        block = _BLOCKS_3D[block2d.num_branch_layers]
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
        if multiplier not in MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {MULTIPLIERS}, got {multiplier!r}")
        out_indices = tuple(out_indices)
        if num_classes == 0 and (not out_indices or any(i not in range(num_stages) for i in out_indices)):
            raise ValueError(
                f"out_indices must be a non-empty subset of 0..{num_stages - 1}, got {out_indices}"
            )
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"frozen_stages must be in -1..{num_stages}, got {frozen_stages}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")

        self.depth = depth
        self.block = block
        self.stage_blocks = stage_blocks
        self.in_channels = in_channels
        self.num_stages = num_stages
        self.spatial_strides = spatial_strides
        self.temporal_strides = temporal_strides
        self.conv1_kernel = _triple(conv1_kernel, "conv1_kernel")
        self.stage_inflations = tuple(inflations)
        self.inflate_style = inflate_style
        self.groups = groups
        self.base_width = width_per_group
        self.multiplier = multiplier
        self.drop_conv = drop_conv
        self.drop_rate = drop_fc
        self.num_classes = num_classes
        self.out_indices = out_indices if num_classes == 0 else None
        self.with_pool1 = with_pool1
        self.with_pool2 = with_pool2
        self.frozen_stages = frozen_stages
        self.grad_checkpointing = False
        self.fused = True
        self.num_blocks = sum(stage_blocks)
        self.c = self.num_blocks - 1 if c is None else c

        self.conv1 = _conv(in_channels, base_channels, self.conv1_kernel,
                           (conv1_stride_t, conv1_stride_s, conv1_stride_s))
        self.addbias1 = AddBias(base_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (
            nn.MaxPool3d((1, 3, 3), (pool1_stride_t, pool1_stride_s, pool1_stride_s), (0, 1, 1))
            if with_pool1
            else nn.Identity()
        )
        self.pool2 = nn.MaxPool3d((2, 1, 1), (2, 1, 1)) if with_pool2 else nn.Identity()

        self.inplanes = base_channels
        self._next_block = 0
        for i, n in enumerate(stage_blocks):
            stage_drop = drop_conv if i >= 2 else 0.0  # official: dropout in stages 3-4 only
            layer = self._make_layer(base_channels * 2**i, n, spatial_strides[i], temporal_strides[i],
                                     inflations[i], stage_drop)
            self.add_module(f"layer{i + 1}", layer)
        self.num_features = self.inplanes
        self.feat_dim = self.num_features  # MMAction2's name

        self.feature_info = [
            dict(num_chs=base_channels * block.expansion * 2**i, module=f"layer{i + 1}")
            for i in range(num_stages)
        ]
        if num_classes > 0 or with_final_addbias:
            self.final_addbias = AddBias(self.num_features)
        self.with_final_addbias = with_final_addbias or num_classes > 0
        if num_classes > 0:
            self.avgpool = nn.AdaptiveAvgPool3d(1)
            self.dropout = nn.Dropout(drop_fc) if drop_fc > 0 else nn.Identity()
            self.fc = nn.Linear(self.num_features, num_classes)
        if calibration_steps != 8:
            for m in self.modules():
                if isinstance(m, AddBias):
                    m.calibration_steps = calibration_steps
        self.reset_parameters()
        self._freeze_stages()

    def _make_layer(self, planes: int, blocks: int, spatial_stride: int, temporal_stride: int,
                    inflations: Sequence[bool], drop_conv: float) -> nn.Sequential:
        layers = []
        for j in range(blocks):
            k = block_index(self._next_block, self.num_blocks, self.c)
            layers.append(
                self.block(
                    self.inplanes,
                    planes,
                    index=k,
                    num_blocks=self.num_blocks,
                    spatial_stride=spatial_stride if j == 0 else 1,
                    temporal_stride=temporal_stride if j == 0 else 1,
                    inflate=inflations[j],
                    inflate_style=self.inflate_style,
                    groups=self.groups,
                    base_width=self.base_width,
                    multiplier=self.multiplier,
                    drop_conv=drop_conv,
                )
            )
            self.inplanes = planes * self.block.expansion
            self._next_block += 1
        return nn.Sequential(*layers)

    # -- init (reset_parameters: StagedNetworkAPI, the 2D init with 3D fan-ins) --
    def inflate_2d_(self, state_dict_2d: Mapping[str, Tensor], strict: bool = True) -> "InflationReport":
        """In-place :func:`inflate_from_2d` of a 2D RescaleNet state_dict into this model."""
        return inflate_from_2d(self, state_dict_2d, strict=strict)

    # -- forward ----------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 5:
            raise ValueError(
                f"RescaleNet3d expects a 5-D (N, C, T, H, W) clip batch, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"RescaleNet3d was built for {self.in_channels} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}; expected (N, C, T, H, W))"
            )

    def stem(self, x: Tensor) -> Tensor:
        c = self.conv1
        if self.fused and self.addbias1.foldable() and not (
                _global_hooks() or c._forward_hooks or c._forward_pre_hooks):
            # a post-conv AddBias is the conv's bias
            x = F.conv3d(x, c.weight, self.addbias1.shift().to(c.weight.dtype), c.stride, c.padding)
            return self.maxpool(self.relu(x))
        return self.maxpool(self.relu(self.addbias1(self.conv1(x))))

    def forward_stages(self, x: Tensor, out_indices: Sequence[int]) -> List[Tensor]:
        """Outputs of the stages in ``out_indices`` (0-based)."""
        self._check_input(x)
        x = self.stem(x)
        outs = []
        for i in range(max(out_indices) + 1):
            x = self._run_stage(getattr(self, f"layer{i + 1}"), x)
            if i == 0:
                x = self.pool2(x)
            if i in out_indices:
                outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's output, before any head."""
        return self.forward_stages(x, (self.num_stages - 1,))[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
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


# -- 2D -> 3D inflation ---------------------------------------------------------

class InflationReport(dict):
    """What :func:`inflate_from_2d` did: ``inflated`` (conv kernels repeated over
    time), ``copied`` (AddBias state, multipliers, head), ``unused`` (2D keys left out),
    ``missing`` (3D keys the 2D state_dict lacks; only possible with ``strict=False``)."""

    @property
    def inflated(self) -> List[str]:
        return self["inflated"]

    @property
    def copied(self) -> List[str]:
        return self["copied"]

    @property
    def unused(self) -> List[str]:
        return self["unused"]

    @property
    def missing(self) -> List[str]:
        return self["missing"]


def _strip_prefix(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


@torch.no_grad()
def inflate_from_2d(model3d: RescaleNet3d, state_dict_2d: Mapping[str, Tensor],
                    strict: bool = True) -> InflationReport:
    """Initialise ``model3d`` from a 2D :class:`~rescalenet.resnet.RescaleNet` state_dict.

    Names map one to one. A 2D conv kernel ``(O, I, h, w)`` becomes
    ``w.unsqueeze(2).repeat(1, 1, t, 1, 1) / t`` for a temporal kernel size ``t``, so on
    a clip of identical frames every time step whose temporal receptive field stays
    inside the clip gets exactly the 2D features. AddBias ``_bias``, ``init_mean`` and
    ``count`` (calibrated means stay calibrated), multipliers ``_scale`` and a matching
    classifier are copied. ``module.`` prefixes (DataParallel/DDP) are stripped.

    With ``strict`` (default) every 3D entry must be found in the 2D state_dict and
    every 2D backbone entry must be used: the rescaling coefficients depend on the
    total block count ``L``, so a partial match would not be an inflation of the same
    network. Only the 2D head (``fc.*``, ``final_addbias.*``) may stay unused.
    Shape mismatches always raise ``ValueError``.
    """
    if not isinstance(model3d, RescaleNet3d):
        raise TypeError(f"inflate_from_2d needs a RescaleNet3d, got {type(model3d).__name__}")
    sd2 = _strip_prefix(state_dict_2d)
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
        backbone_unused = [k for k in unused if not k.startswith(_HEAD_KEYS)]
        if missing or backbone_unused:
            raise ValueError(
                "inflate_from_2d: the 2D state_dict is not a RescaleNet with this 3D model's "
                f"stages (depth {model3d.depth}, blocks per stage {list(model3d.stage_blocks)}); "
                f"missing in 2D: {missing[:8]}{' ...' if len(missing) > 8 else ''}; "
                f"unused 2D entries: {backbone_unused[:8]}{' ...' if len(backbone_unused) > 8 else ''}"
            )
    # load_state_dict (not copy_) so AddBias refreshes its Python-side calibrated flag
    model3d.load_state_dict(new, strict=False)
    return InflationReport(inflated=inflated, copied=copied, unused=unused, missing=missing)


# -- the two standard layouts ------------------------------------------------------

def slowonly_rescalenet50(**kwargs: Any) -> RescaleNet3d:
    """SlowOnly R-50 layout (MMAction2 ``ResNet3dSlowOnly``): 1x7x7 stem, no temporal
    down-sampling, only stages 4-5 (``layer3``, ``layer4``) inflated (3x1x1)."""
    cfg = dict(depth=50, conv1_kernel=(1, 7, 7), conv1_stride_t=1, pool1_stride_t=1,
               inflate=(0, 0, 1, 1), with_pool2=False)
    cfg.update(kwargs)
    return RescaleNet3d(**cfg)


def i3d_rescalenet50(**kwargs: Any) -> RescaleNet3d:
    """I3D R-50 layout (MMAction2 ``_base_/models/i3d_r50.py``): 5x7x7 stem with temporal
    stride 2, temporal max-pools after the stem and ``layer1``, alternating 3x1x1 inflation."""
    cfg = dict(depth=50, conv1_kernel=(5, 7, 7), conv1_stride_t=2, pool1_stride_t=2,
               inflate=((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)), with_pool2=True)
    cfg.update(kwargs)
    return RescaleNet3d(**cfg)
