"""
Compact CIFAR classifiers, small enough to train on a 2-core CPU: the reference model, the transfer surrogate and the
VGG-style feature network of the NRP defence.

Three stages of (conv 3x3, 2x2 max pool, BN, GELU, conv 3x3, BN, GELU) after a 3x3 stem, then global max pooling
and a linear layer whose logits are scaled down (a fixed temperature that keeps high learning rates stable).
The shape follows the fast CIFAR-10 training literature (Page's ResNet-9, Jordan's airbench); the widths are
chosen for CPU speed. Input: NCHW float in [0, 1]; the normalization lives inside the module, so attacks and
defences see pixel space.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from art_purifiers.nets import register_architecture

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _conv_bn_gelu(in_channels: int, out_channels: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(out_channels), nn.GELU()]
    return nn.Sequential(*layers)


class _NormalizedClassifier(nn.Module):
    """The input normalization both classifiers share: per-channel (x - mean) / std on [0, 1] input, channels-last."""

    mean: torch.Tensor
    std: torch.Tensor
    features: nn.Module
    head: nn.Module

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def average_pooled_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``head`` on the global average of ``features`` (the networks that pool by averaging)."""
        return self.head(self.features(self.normalize(x)).mean(dim=(2, 3)))


@register_architecture("cifar-convnet")
class CifarConvNet(_NormalizedClassifier):
    """
    :param widths: Channels of the stem and of the three stages.
    :param num_classes: Number of logits.
    :param logit_scale: Fixed multiplier of the logits.
    :param mean: Per-channel mean subtracted from the [0, 1] input.
    :param std: Per-channel standard deviation dividing it.
    """

    def __init__(
        self,
        widths: Sequence[int] = (24, 64, 192, 192),
        num_classes: int = 10,
        logit_scale: float = 0.125,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__(mean, std)
        if len(widths) != 4:
            raise ValueError(f"widths needs 4 entries (stem and three stages), got {list(widths)}.")
        stages: list[nn.Module] = [_conv_bn_gelu(3, widths[0])]
        for in_channels, out_channels in zip(widths[:-1], widths[1:]):
            stages += [_conv_bn_gelu(in_channels, out_channels, pool=True), _conv_bn_gelu(out_channels, out_channels)]
        self.features = nn.Sequential(*stages)
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = logit_scale
        # channels-last convolutions are about 1.3x faster on the CPU (oneDNN) and suit cuDNN too
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.normalize(x)).amax(dim=(2, 3))
        return self.head(x) * self.logit_scale


class _ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with ReLU and an identity shortcut (a 1x1 convolution where the width changes)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


@register_architecture("cifar-resnet")
class CifarResNet(_NormalizedClassifier):
    """
    A small residual network, deliberately unlike :class:`CifarConvNet` (residual blocks, ReLU, average pooling,
    global average pooling, unscaled logits): the transfer surrogate of the evaluation suite.

    :param widths: Channels of the three stages (each one residual block; 2x2 average pooling between stages).
    :param num_classes: Number of logits.
    :param mean: Per-channel mean subtracted from the [0, 1] input.
    :param std: Per-channel standard deviation dividing it.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128),
        num_classes: int = 10,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__(mean, std)
        if len(widths) != 3:
            raise ValueError(f"widths needs 3 entries (one per stage), got {list(widths)}.")
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0])]
        layers.append(nn.ReLU(inplace=True))
        for index, (in_channels, out_channels) in enumerate(zip((widths[0], *widths[:-1]), widths)):
            if index > 0:
                layers.append(nn.AvgPool2d(2))
            layers.append(_ResidualBlock(in_channels, out_channels))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], num_classes)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.average_pooled_logits(x)


@register_architecture("cifar-vgg")
class CifarVGG(_NormalizedClassifier):
    """
    A VGG-style network (Simonyan & Zisserman): stages of 3x3 conv-BN-ReLU layers separated by 2x2 max pooling, then
    global average pooling and a linear layer. It gives the Neural Representation Purifier (Naseer et al. 2020) its
    feature space, as VGG16 does in the paper: SSP attacks and the purifier's feature loss use ``features.relu3_3``
    by default, the output of the third conv of the third stage, mid-level like the paper's conv3.3 (after two
    poolings). The layers are named ``conv<stage>_<i>``, ``bn<stage>_<i>``, ``relu<stage>_<i>`` and ``pool<stage>``.

    :param widths: Channels of each stage.
    :param depths: Conv layers of each stage (VGG16's first three stages: 2, 2, 3).
    :param num_classes: Number of logits.
    :param mean: Per-channel mean subtracted from the [0, 1] input.
    :param std: Per-channel standard deviation dividing it.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128),
        depths: Sequence[int] = (2, 2, 3),
        num_classes: int = 10,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__(mean, std)
        if len(widths) != len(depths) or not widths or min([*widths, *depths]) < 1:
            raise ValueError(
                f"widths and depths need one positive entry per stage, got {list(widths)}, {list(depths)}."
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = 3
        for stage, (width, depth) in enumerate(zip(widths, depths), start=1):
            if stage > 1:
                layers[f"pool{stage - 1}"] = nn.MaxPool2d(2)
            for index in range(1, depth + 1):
                layers[f"conv{stage}_{index}"] = nn.Conv2d(channels, width, 3, padding=1, bias=False)
                layers[f"bn{stage}_{index}"] = nn.BatchNorm2d(width)
                layers[f"relu{stage}_{index}"] = nn.ReLU(inplace=False)  # its output is read by SSP hooks
                channels = width
        self.features = nn.Sequential(layers)
        self.head = nn.Linear(channels, num_classes)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.average_pooled_logits(x)
