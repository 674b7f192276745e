"""Small networks written the ways people write them, for the importer's tests (CPU, milliseconds)."""

import torch
import torch.nn.functional as F
from torch import nn


def cbr(cin, cout, **kw):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU())


class BnAfterRelu(nn.Module):
    """Sequential blocks conv -> ReLU -> BN -> Dropout, a 1x1 head, AvgPool2d over the whole map, view + log_softmax."""

    def __init__(self, width=16):
        super().__init__()
        def blk(i, o, **kw):
            return nn.Sequential(nn.Conv2d(i, o, 3, bias=False, **kw), nn.ReLU(), nn.BatchNorm2d(o), nn.Dropout(0.1))

        self.convblock1 = blk(3, width, padding=1)
        self.convblock2 = blk(width, width, padding=1, stride=2)
        self.convblock3 = blk(width, width)  # no padding: 16 -> 14
        self.head = nn.Conv2d(width, 10, 1, bias=False)
        self.gap = nn.AvgPool2d(14)

    def forward(self, x):
        x = self.convblock3(self.convblock2(self.convblock1(x)))
        x = self.gap(self.head(x))
        return F.log_softmax(x.view(-1, 10), dim=-1)


class BnBeforeRelu(nn.Module):
    """conv -> BN -> ReLU -> Dropout in Sequential blocks, AdaptiveAvgPool2d, Flatten, Linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(cbr(3, 16), nn.Dropout(0.05), cbr(16, 32, stride=2), nn.Dropout(0.05),
                                      cbr(32, 32, dilation=2))  # padding 1 at dilation 2: 16 -> 14
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


class Functional(nn.Module):
    """Functional calls in forward: F.relu, F.adaptive_avg_pool2d, torch.flatten, F.log_softmax."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.bn2(F.relu(self.conv2(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.log_softmax(self.fc(x), dim=1)


class Residual(nn.Module):
    """Residual adds: an identity shortcut, a 1x1 stride-2 conv + BN shortcut, ReLU and dropout after the add."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.b1 = nn.Sequential(cbr(16, 16), nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.b2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.short = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
        self.drop = nn.Dropout(0.1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.b1(x))
        x = self.drop(F.relu(self.b2(x) + self.short(x)))
        return self.head(x)


class CatBranches(nn.Module):
    """torch.cat of parallel depthwise 3x3 / dilated 3x3 paths and the input, then a pointwise conv."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = cbr(3, c)
        self.a = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, padding=3, dilation=3, groups=c, bias=False), nn.BatchNorm2d(c))
        self.mix = nn.Conv2d(3 * c, 32, 1)
        self.out = nn.Conv2d(32, 10, 1)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.a(x), self.b(x), x], dim=1)
        x = F.relu(self.mix(x))
        return self.out(F.adaptive_avg_pool2d(x, 1)).view(-1, 10)


class DepthwisePointwise(nn.Module):
    """Depthwise + pointwise pairs: a plain one (a sepconv), one with a depthwise bias and BN/ReLU between."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.dw1 = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.pw1 = nn.Conv2d(16, 32, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.dw2 = nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32, bias=True)
        self.bn2 = nn.BatchNorm2d(32)
        self.pw2 = nn.Conv2d(32, 48, 1, bias=False)
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(self.bn1(self.pw1(self.dw1(x))))
        x = F.relu(self.pw2(F.relu(self.bn2(self.dw2(x)))))
        return self.fc(x.mean((2, 3)))


class Dilated(nn.Module):
    """Dilated convs (d 2 and 4, padding='same'), a stride-2 3x3, GELU and SiLU."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding="same"), nn.GELU(), nn.BatchNorm2d(16),
            nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.GELU(), nn.BatchNorm2d(16),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU(), nn.BatchNorm2d(32),
            nn.Conv2d(32, 32, 3, padding="same", dilation=4), nn.SiLU(), nn.BatchNorm2d(32),
            nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(32, 10, 1))

    def forward(self, x):
        return self.net(x).view(x.size(0), -1)


class ReplicatePadding(nn.Module):
    """padding_mode replicate / reflect / circular, a local AvgPool2d(2), a MaxPool2d(2)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1, padding_mode="replicate", bias=False)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect", bias=False)
        self.c3 = nn.Conv2d(16, 32, 3, padding=2, dilation=2, padding_mode="circular", bias=False)
        self.bn = nn.BatchNorm2d(32)
        self.head = nn.Conv2d(32, 10, 1)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = self.bn(F.relu(self.c3(x)))
        return F.adaptive_avg_pool2d(self.head(x), 1).flatten(1)


class ChannelDropout(nn.Module):
    """Dropout2d after ReLU, ReLU6 and LeakyReLU, and AvgPool2d(8) as the global pool."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(), nn.Dropout2d(0.1),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.LeakyReLU(),
            nn.Dropout2d(0.1), nn.Conv2d(32, 10, 3, stride=2, padding=1), nn.AvgPool2d(8))

    def forward(self, x):
        return self.body(x).view(-1, 10)


class ResNetMaxPool(nn.Module):
    """The S10 style: prep, conv -> MaxPool -> BN -> ReLU layers with a residual block, MaxPool2d(4), a
    Linear without bias, view(-1, 10) and log_softmax."""

    def __init__(self, c=8):
        super().__init__()
        self.prep = cbr(3, c)
        self.layer1 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), nn.MaxPool2d(2),
                                    nn.BatchNorm2d(2 * c), nn.ReLU())
        self.res1 = nn.Sequential(cbr(2 * c, 2 * c), cbr(2 * c, 2 * c))
        self.layer2 = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 3, padding=1, bias=False), nn.MaxPool2d(2),
                                    nn.BatchNorm2d(4 * c), nn.ReLU())
        self.layer3 = nn.Sequential(nn.Conv2d(4 * c, 4 * c, 3, padding=1, bias=False), nn.MaxPool2d(2),
                                    nn.BatchNorm2d(4 * c), nn.ReLU())
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(4 * c, 10, bias=False)

    def forward(self, x):
        x = self.layer1(self.prep(x))
        x = x + self.res1(x)
        x = self.layer3(self.layer2(x))
        x = self.pool(x).view(x.size(0), -1)
        return F.log_softmax(self.fc(x).view(-1, 10), dim=-1)


class NeverCalled(nn.Module):
    """A layer built in __init__ but never called in forward; a three-way add; Identity."""

    def __init__(self):
        super().__init__()
        self.conv1 = cbr(3, 16)
        self.a = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.b = nn.Conv2d(16, 16, 5, padding=2, bias=False)
        self.spare = nn.Conv2d(16, 16, 3, padding=1)  # built, never called
        self.skip = nn.Identity()
        self.conv_out = nn.Conv2d(16, 10, 1)

    def forward(self, x):
        x = self.conv1(x)
        x = self.a(x) + self.b(x) + self.skip(x)
        x = self.conv_out(F.relu(x))
        return F.log_softmax(F.adaptive_avg_pool2d(x, 1).view(-1, 10), dim=1)


class MixedOrders(nn.Module):
    """Mostly conv -> BN -> ReLU, once conv -> ReLU -> BN: the majority's order, the odd BN standalone."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = cbr(3, 8), cbr(8, 8), cbr(8, 16, stride=2)
        self.odd = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.ReLU(), nn.BatchNorm2d(16))
        self.head = nn.Sequential(nn.Conv2d(16, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(self.odd(self.c(self.b(self.a(x)))))


class EraS9(nn.Module):
    """The seed assignment's network (../shared/seed/ERA-V1-S9-README.md), from its published summary and
    forward: conv -> ReLU -> Dropout -> BN blocks, 1x1 stride-2 transitions with a bias, a 1x1 depthwise conv
    and a pointwise conv, AvgPool2d(6), view(-1, 10)."""

    def __init__(self, dropout=0.05):
        super().__init__()

        def block(i, o, k=3, p=1, d=1, s=1, bias=False, drop=True):
            mods = [nn.Conv2d(i, o, k, stride=s, padding=p, dilation=d, bias=bias), nn.ReLU()]
            return nn.Sequential(*mods, *([nn.Dropout(dropout)] if drop else []), nn.BatchNorm2d(o))

        self.convblock_1, self.convblock_2 = block(3, 32), block(32, 64)
        self.dilated_conv_1 = block(64, 64, p=2, d=2)
        self.strided_conv_1 = block(64, 32, k=1, s=2, bias=True, drop=False)
        self.convblock_3, self.convblock_4 = block(32, 64), block(64, 64, p=2, d=2)
        self.dilated_conv_2 = block(64, 32, k=1, p=0, s=2, bias=True, drop=False)
        self.sep_conv_1 = nn.Sequential(nn.Conv2d(32, 32, 1, groups=32, bias=False), nn.Conv2d(32, 64, 1, bias=False),
                                        nn.ReLU(), nn.BatchNorm2d(64))
        self.sep_conv_2 = block(64, 64)
        self.strided_conv_2 = block(64, 32, k=1, s=2, bias=True, drop=False)
        self.convblock_5 = block(32, 64)
        self.convblock_6 = nn.Conv2d(64, 10, 3, padding=1, bias=False)
        self.gap = nn.AvgPool2d(6)

    def forward(self, x):
        x = self.strided_conv_1(self.dilated_conv_1(self.convblock_2(self.convblock_1(x))))
        x = self.dilated_conv_2(self.convblock_4(self.convblock_3(x)))
        x = self.strided_conv_2(self.sep_conv_2(self.sep_conv_1(x)))
        x = self.convblock_6(self.convblock_5(x))
        return self.gap(x).view(-1, 10)


ZOO = [BnAfterRelu, BnBeforeRelu, Functional, Residual, CatBranches, DepthwisePointwise, Dilated, ReplicatePadding,
       ChannelDropout, ResNetMaxPool, NeverCalled, MixedOrders]
