"""
The restoration GAN of (Compress and Restore)^N (Ferrari et al., ACM TOMM 2022).

:class:`RestorationGenerator` follows the shape of the authors' generator (a public port): a 3x3 conv and ReLU at
full resolution, 2x2 average pooling so the trunk runs at half resolution, a conv-BN-ReLU, residual blocks
(conv-BN-ReLU-conv-BN plus identity), a conv-BN closed by a long skip over the blocks, a conv to 4x the features and
a x2 pixel shuffle back to full resolution, ReLU, a 1x1 conv to the image channels and tanh. As in the paper, the
output adds this to the (JPEG-compressed) input: the network learns the residual, and its last conv starts at zero so
an untrained generator is the identity. Inputs of odd size are reflect-padded to even size (replicated where a side
is one pixel) and cropped back. Defaults (64 features, 16 blocks) give about 1.4 M parameters.

:class:`PatchDiscriminator` is a small strided conv net scoring patches, for the adversarial loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.nets import register_architecture
from art_purifiers.ops.quantize import clamp


class _ResidualBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.BatchNorm2d(features),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, features, 3, padding=1),
            nn.BatchNorm2d(features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _pad_to_even(x: torch.Tensor) -> torch.Tensor:
    """Reflect-pad odd heights and widths by one pixel (replicate where a side is a single pixel)."""
    height, width = x.shape[-2:]
    if not (height % 2 or width % 2):
        return x
    mode = "reflect" if min(height, width) > 1 else "replicate"
    return F.pad(x, (0, width % 2, 0, height % 2), mode=mode)


@register_architecture("argan-generator")
class RestorationGenerator(nn.Module):
    """
    :param channels: Image channels (1 or 3).
    :param features: Width of the trunk.
    :param blocks: Number of residual blocks (paper: 16).
    """

    def __init__(self, channels: int = 3, features: int = 64, blocks: int = 16) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(inplace=True), nn.AvgPool2d(2))
        self.trunk_in = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.BatchNorm2d(features), nn.ReLU())
        self.blocks = nn.Sequential(*(_ResidualBlock(features) for _ in range(blocks)))
        self.trunk_out = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.BatchNorm2d(features))
        self.upsample = nn.Sequential(nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2), nn.ReLU())
        # start as the identity (zero residual): training then only has to learn the correction
        self.tail = nn.Conv2d(features, channels, 1)
        with torch.no_grad():
            self.tail.weight.zero_()
            self.tail.bias.zero_()  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``(N, C, H, W)`` images in ``[0, 1]``; returns images in ``[0, 1]`` of the same size."""
        height, width = x.shape[-2:]
        padded = _pad_to_even(x)
        signed = padded * 2 - 1
        features = self.trunk_in(self.head(signed))
        features = features + self.trunk_out(self.blocks(features))
        residual = torch.tanh(self.tail(self.upsample(features)))
        restored = signed + residual
        # straight-through inside straight_through_clamps() (CompressRestore's bpda="straight_through"): overshooting
        # pixels keep a gradient; exact otherwise (training)
        restored = clamp(restored, -1, 1)
        return ((restored + 1) / 2)[..., :height, :width]


@register_architecture("argan-discriminator")
class PatchDiscriminator(nn.Module):
    """
    Strided 3x3 convs (LeakyReLU 0.2, BN after the first), doubling the width at each stride, then a 1x1 conv
    giving one logit per patch.

    :param channels: Image channels.
    :param features: Width of the first layer.
    :param depth: Number of stride-2 stages.
    """

    def __init__(self, channels: int = 3, features: int = 32, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, features, 3, padding=1), nn.LeakyReLU(0.2)]
        width = features
        for _ in range(depth):
            layers += [
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                nn.BatchNorm2d(2 * width),
                nn.LeakyReLU(0.2),
            ]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits ``(N, 1, H / 2^depth, W / 2^depth)`` for images in ``[0, 1]``."""
        return self.body(x * 2 - 1)
