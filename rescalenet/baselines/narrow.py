"""Depth-study networks: one stage of ``blocks`` bottlenecks of width 16 (64 channels)
behind a 3x3 stem, ``D = 3 * blocks + 2`` layers, with RescaleNet blocks or plain
residual ones, for studying trainability against depth at tiny cost."""
from __future__ import annotations

from torch import Tensor, nn

from ..blocks import Bottleneck as RescaleBottleneck
from ..layers import AddBias
from ..rescale import block_index

__all__ = ["NarrowResNet"]


class _PlainBottleneck(nn.Module):
    """``relu(x + conv3(relu(conv2(relu(conv1(x))))))`` with He fan-in init and conv
    biases: a residual network with neither normalization nor rescaling."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 1)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1)
        self.conv3 = nn.Conv2d(width, channels, 1)
        self.relu = nn.ReLU(inplace=True)
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.conv1(x))
        out = self.relu(self.conv2(out))
        return self.relu(x + self.conv3(out))


class NarrowResNet(nn.Module):
    """A single stage of ``blocks`` bottlenecks of width ``width`` (``4 * width``
    channels) behind a 3x3 stem, for studying trainability against depth at tiny
    cost. ``kind='rescale'`` uses :class:`rescalenet.resnet.Bottleneck` with the
    method's indices and init (AddBias in the stem and the head, as RescaleNet);
    ``kind='plain'`` uses plain residual blocks without normalization."""

    def __init__(self, kind: str, blocks: int, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        if kind not in ("rescale", "plain"):
            raise ValueError(f"kind must be 'rescale' or 'plain', got {kind!r}")
        channels = 4 * width
        self.kind = kind
        self.conv1 = nn.Conv2d(3, channels, 3, 1, 1, bias=kind == "plain")
        nn.init.kaiming_normal_(self.conv1.weight, nonlinearity="relu")
        if kind == "rescale":
            self.addbias1 = AddBias(channels)
            blks = []
            for i in range(blocks):
                blk = RescaleBottleneck(channels, width, block_index(i, blocks), blocks)
                blk.reset_parameters()
                blks.append(blk)
            self.blocks = nn.Sequential(*blks)
            self.final_addbias = AddBias(channels)
        else:
            nn.init.zeros_(self.conv1.bias)
            self.addbias1 = nn.Identity()
            self.blocks = nn.Sequential(*[_PlainBottleneck(channels, width) for _ in range(blocks)])
            self.final_addbias = nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels, num_classes)
        nn.init.kaiming_normal_(self.fc.weight, a=1)

    @property
    def depth(self) -> int:
        return 3 * len(self.blocks) + 2

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.relu(self.addbias1(self.conv1(x))))
        return self.fc(self.final_addbias(x).mean((2, 3)))


