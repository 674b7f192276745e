"""Networks the grammar cannot write: the importer must refuse each in one line naming what and where."""

import torch
import torch.nn.functional as F
from torch import nn


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.rnn = nn.LSTM(8, 10)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1)
        return self.rnn(x)[0]  # LINE: lstm


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3, padding=1)

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:  # LINE: branch
            x = F.relu(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 10, 3, padding=1)
        self.b = nn.Conv2d(3, 10, 3, padding=1)

    def forward(self, x):
        x = self.a(x) * self.b(x)  # LINE: mul
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class Upsampling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(self.conv(x), scale_factor=2)  # LINE: interpolate
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class SpatialFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 4 * 8 * 8))  # LINE: view


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(10, 10, 3, padding=1)
        self.stem = nn.Conv2d(3, 10, 3, padding=1)

    def forward(self, x):
        x = self.conv(self.conv(self.stem(x)))  # LINE: shared
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def factory(width=8, act="relu", in_channels=3):
    """A factory function works as SOURCE too; its arguments come from init.*."""
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU() if act == "relu" else nn.GELU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def line_of(tag: str) -> int:
    """The line of this file marked ``# LINE: tag``."""
    with open(__file__) as f:
        return next(i for i, text in enumerate(f, 1) if text.rstrip().endswith(f"# LINE: {tag}"))


_ = torch  # the nets above use torch through nn and F
