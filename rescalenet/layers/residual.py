"""The rescaled residual sum and the learned multipliers of RescaleNet (paper
sections 4.2-4.3, ``docs/method.md`` sections 1.3-1.4)."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

__all__ = ["RescaledResidual", "ChannelMultiplier", "MULTIPLIERS"]

# kinds of the branch multiplier m_k that RescaledResidual itself holds
MULTIPLIERS = ("scalar", "vector", "none")


def _channel_view(v: Tensor, spatial_dims: int) -> Tensor:
    return v.view((-1,) + (1,) * spatial_dims)


class RescaledResidual(nn.Module):
    """``out = alpha_k * shortcut + (m_k / sqrt(L)) * branch`` (sections 4.2-4.3).

    ``alpha_k = sqrt(k / (k + 1))`` (``shortcut_scale``) and the constant
    ``1 / sqrt(L)`` (``residual_scale``) come from :mod:`rescalenet.rescale`; the
    block-dependent rest of ``beta_k`` lives in the branch's initial weights, so at
    init the branch reaches the sum with weight ``1 / sqrt(k + 1)`` and
    ``alpha_k ** 2 + beta_k ** 2 = 1``. ``m_k`` is the learnable multiplier:

    * ``'scalar'`` (default, the official code): one parameter ``_scale``, init 1;
    * ``'vector'``: one per channel of the branch output (``channels`` required);
    * ``'none'``: fixed at 1.

    ``channel_dim`` is where the channels are in the branch tensor (1 for
    convolutional maps, -1 for sequences); ``spatial_dims``, the number of dims after
    the channels of a ``channel_dim=1`` tensor (2 for images, 3 for clips), fixes the
    vector's broadcast shape at construction (``None``: read from the input).
    """

    def __init__(
        self,
        shortcut_scale: float,
        residual_scale: float,
        multiplier: str = "scalar",
        channels: Optional[int] = None,
        channel_dim: int = 1,
        spatial_dims: Optional[int] = None,
    ) -> None:
        super().__init__()
        if multiplier not in MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {MULTIPLIERS}, got {multiplier!r}")
        if multiplier == "vector" and not channels:
            raise ValueError("multiplier='vector' needs the number of channels")
        self.shortcut_scale = float(shortcut_scale)
        self.residual_scale = float(residual_scale)
        self.multiplier = multiplier
        self.channel_dim = channel_dim
        self.spatial_dims = spatial_dims
        if multiplier == "none":
            self.register_parameter("_scale", None)
        else:
            self._scale = nn.Parameter(torch.ones(channels if multiplier == "vector" else 1))

    def extra_repr(self) -> str:
        return (
            f"shortcut_scale={self.shortcut_scale:.4f}, residual_scale={self.residual_scale:.4f}, "
            f"multiplier={self.multiplier}"
        )

    def branch_weight(self) -> Union[float, Tensor]:
        """The current factor on the branch, ``m_k / sqrt(L)``: the float ``1 / sqrt(L)``
        without a learnable multiplier, else a tensor of one value or one per channel.
        The one definition that the forward, the fused forward and
        :func:`rescalenet.fold_for_inference` use."""
        if self._scale is None:
            return self.residual_scale
        return self._scale * self.residual_scale

    def forward(self, shortcut: Tensor, branch: Tensor) -> Tensor:
        scale = self.branch_weight()
        if isinstance(scale, float):
            weighted = branch * scale
        else:
            if self.multiplier == "vector" and self.channel_dim != -1:
                dims = branch.dim() - 2 if self.spatial_dims is None else self.spatial_dims
                scale = _channel_view(scale, dims)
            weighted = branch * scale.to(branch.dtype)
        # One fused kernel for the shortcut's scale and the sum.
        return torch.add(weighted, shortcut, alpha=self.shortcut_scale)


class ChannelMultiplier(nn.Module):
    """A learnable per-channel factor ``x * v`` (init 1) on ``(N, C, *spatial)`` maps.

    The official code's commented-out "vector multiplier" (``_scale1``, ``_scale2``
    after the ReLUs of a bottleneck's first two convs, ``docs/method.md`` section
    1.4); blocks built with ``multiplier='inner_vector'`` hold one after every inner
    ReLU, besides the scalar ``m_k`` of their :class:`RescaledResidual`."""

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self._scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * _channel_view(self._scale, self.spatial_dims).to(x.dtype)
