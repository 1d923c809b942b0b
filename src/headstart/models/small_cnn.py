"""A right-sized CNN for small grayscale images at their native 28 px: the from-scratch baseline.

Three VGG-style blocks (2x conv-BN-ReLU, then max-pool) take 28 -> 14 -> 7 -> 3; adaptive pooling
makes any input >= 28 px work. About 0.29 M parameters and 30 M MACs per 28 px image, so it trains
on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

ARCH = "small_cnn"
HEAD = "classifier"
WIDTHS = (32, 64, 128)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """conv blocks -> global average pool -> dropout -> linear `classifier`."""

    def __init__(self, num_classes: int, in_channels: int = 1, dropout: float = 0.3) -> None:
        super().__init__()
        widths = (in_channels, *WIDTHS)
        self.features = nn.Sequential(*(_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(WIDTHS[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.classifier.in_features, num_classes)
