"""Wide residual networks WRN-D-K (Zagoruyko & Komodakis, 2016), as used in the FDS paper.

Pre-activation basic blocks, 3 groups of n = (D - 4) / 6 blocks with 16K, 32K, 64K channels
(strides 1, 2, 2) after a 3x3 stem conv of 16 channels, then BN-ReLU, global average pooling and
a linear classifier. Convolutions have no bias. A block computes

    out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x)

with a 1x1 strided conv shortcut where the shape changes. WRN-16-1 on 3x32x32 inputs and 10
classes has 175,066 parameters. No dropout (the FDS paper used none), so the network is a
deterministic function of its parameters and batch, as the forward-mode engine requires.
"""

from __future__ import annotations

import re

import torch
from torch import nn

WRN_PATTERN = re.compile(r"^wrn-(\d+)-(\d+)$")


class PreActBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut = (None if in_channels == out_channels and stride == 1 else
                         nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        # the projection shortcut sees the pre-activated input, as in the reference WRN code
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-``depth``-``width`` for (C, H, W) inputs with H, W >= 4 (28x28 and 32x32 included)."""

    def __init__(self, depth: int, width: int, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0 or width < 1:
            raise ValueError(f"a wide ResNet needs depth = 6n + 4 >= 10 and width >= 1, got "
                             f"wrn-{depth}-{width} (e.g. wrn-16-1, wrn-28-10)")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        for group, stride in enumerate((1, 2, 2)):
            for i in range(n):
                blocks.append(PreActBlock(widths[group] if i == 0 else widths[group + 1],
                                          widths[group + 1], stride if i == 0 else 1))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(out.mean(dim=(2, 3)))


def parse_wrn(name: str) -> tuple[int, int] | None:
    """(depth, width) of a 'wrn-D-K' name, else None."""
    match = WRN_PATTERN.match(name)
    return (int(match[1]), int(match[2])) if match else None
