"""PyTorch twins of the engine's models (engine/models.c), with the same state_dict names.

Used by the golden-value generator, the CPU throughput peer (tests/bench/torch_peer.py), the checkpoint
interop test and the Python package (python/scadles/models.py loads this file). `width` is the engine's
channel multiplier (the experiment key `width`), rounded as engine/models.c rounds it.
"""
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F


def _f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def scaled(ch, width):
    """engine/models.c's scaled(): (int)(ch * width + 0.5f) in float32, at least 1."""
    if width == 1:
        return ch
    return max(1, int(_f32(_f32(ch * _f32(width)) + 0.5)))


class FmnistCNN(nn.Module):
    """conv5x5(16)-relu-maxpool2-conv5x5(32)-relu-maxpool2-linear, as in engine/models.c."""

    def __init__(self, in_c=1, size=28, classes=10, width=1.0):
        super().__init__()
        c1, c2 = scaled(16, width), scaled(32, width)
        self.conv1 = nn.Conv2d(in_c, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.fc = nn.Linear(c2 * (size // 4) * (size // 4), classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. 2016 CIFAR ResNet (depth 6n+2) with 1x1 projection shortcuts (option B)."""

    def __init__(self, depth=20, in_c=3, classes=10, width=1.0):
        super().__init__()
        n = (depth - 2) // 6
        cin = scaled(16, width)
        self.conv1 = nn.Conv2d(in_c, cin, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        for stage in range(3):
            cout = scaled(16 << stage, width)
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (b == 0 and stage > 0) else 1))
                cin = cout
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-18/34/50/101/152 in the CIFAR form: 3x3 stem, no max-pool."""

    BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

    def __init__(self, depth, in_c=3, classes=10, width=1.0):
        super().__init__()
        cin = scaled(64, width)
        self.conv1 = nn.Conv2d(in_c, cin, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        for stage, n in enumerate(self.BLOCKS[depth]):
            planes = scaled(64 << stage, width)
            blocks = []
            for b in range(n):
                stride = 2 if (b == 0 and stage > 0) else 1
                if depth >= 50:
                    blocks.append(Bottleneck(cin, planes, stride))
                    cin = planes * 4
                else:
                    blocks.append(BasicBlock(cin, planes, stride))
                    cin = planes
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


VGG_CFG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """VGG with batch norm, CIFAR form: features, global average pool, classifier 512 -> classes."""

    def __init__(self, depth, in_c=3, classes=10, width=1.0):
        super().__init__()
        layers, cin = [], in_c
        for v in VGG_CFG[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                v = scaled(v, width)
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def build(name, classes=10, width=1.0, in_c=None, size=None):
    """The twin of model `name` and its input shape (c, h, w); in_c and size default to the model's
    usual dataset (Fashion-MNIST 1x28x28 for fmnist_cnn, CIFAR 3x32x32 for the others)."""
    if name == "fmnist_cnn":
        c, s = in_c or 1, size or 28
        return FmnistCNN(c, s, classes, width), (c, s, s)
    c, s = in_c or 3, size or 32
    if name.startswith("resnet") and name[6:] in ("20", "32", "44", "56", "110"):
        return CifarResNet(int(name[6:]), c, classes, width), (c, s, s)
    if name.startswith("resnet") and name[6:] in ("18", "34", "50", "101", "152"):
        return ResNet(int(name[6:]), c, classes, width), (c, s, s)
    if name.startswith("vgg") and name[3:] in ("11", "13", "16", "19"):
        return VGG(int(name[3:]), c, classes, width), (c, s, s)
    raise ValueError(f"unknown model {name!r}; the engine's models: fmnist_cnn, resnet20/32/44/56/110, "
                     f"resnet18/34/50/101/152, vgg11/13/16/19")
