"""
Purifier networks of the Neural Representation Purifier (Naseer et al., "A Self-supervised Approach for Adversarial
Robustness", CVPR 2020).

:class:`NRPGenerator` is the paper's purifier: a 3x3 conv, a trunk of residual-in-residual dense blocks (each three
dense blocks of five 3x3 convs with growth 32 and LeakyReLU 0.2, every residual scaled by 0.2), and a 3x3 conv to
the image channels. There is deliberately no skip from the input to the output: the purifier has to re-synthesise
the image from its features rather than pass a perturbation through. The authors' full size (64 features, 23
blocks) has 16.5 M parameters.

:class:`NRPResidualGenerator` is the authors' light variant: a 3x3 conv with LeakyReLU 0.1, plain residual blocks
(conv-ReLU-conv plus identity, no normalisation) and a 3x3 conv to the image channels; 1.7 M parameters at 23 blocks.

Both take images in [0, 1] and return unclamped images (the defence clips them). Module names follow the authors'
released code (``conv_first``, ``RRDB_trunk.<i>.RDB<j>.conv<k>``, ``trunk_conv``; ``recon_trunk.<i>.conv1/2``,
``conv_last``), so their released weight files load with :func:`load_reference_state_dict`.

:class:`RelativisticCritic` scores images for the relativistic average GAN loss of the training recipe.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.nets import register_architecture
from art_purifiers.nets.argan import PatchDiscriminator

#: Scale of every dense-block and residual-in-residual shortcut (the ESRGAN/NRP value).
RESIDUAL_SCALE = 0.2


class _DenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output; the last maps back to ``features``."""

    conv5: nn.Conv2d

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        for index in range(1, 6):
            out_channels = features if index == 5 else growth
            self.add_module(f"conv{index}", nn.Conv2d(features + (index - 1) * growth, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for index in range(1, 5):
            outputs.append(F.leaky_relu(getattr(self, f"conv{index}")(torch.cat(outputs, 1)), 0.2))
        return x + RESIDUAL_SCALE * self.conv5(torch.cat(outputs, 1))


class _ResidualInResidualBlock(nn.Module):
    """Three dense blocks in a row, wrapped in a scaled shortcut."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.RDB1 = _DenseBlock(features, growth)
        self.RDB2 = _DenseBlock(features, growth)
        self.RDB3 = _DenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL_SCALE * self.RDB3(self.RDB2(self.RDB1(x)))


@register_architecture("nrp-generator")
class NRPGenerator(nn.Module):
    """
    :param channels: Image channels (input and output).
    :param features: Width of the trunk (authors: 64).
    :param blocks: Residual-in-residual dense blocks (authors: 23).
    :param growth: Channels each dense-block conv adds (authors: 32).
    """

    def __init__(self, channels: int = 3, features: int = 64, blocks: int = 23, growth: int = 32) -> None:
        super().__init__()
        _check_positive(channels=channels, features=features, blocks=blocks, growth=growth)
        self.conv_first = nn.Conv2d(channels, features, 3, padding=1)
        self.RRDB_trunk = nn.Sequential(*(_ResidualInResidualBlock(features, growth) for _ in range(blocks)))
        self.trunk_conv = nn.Conv2d(features, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Purify ``(N, C, H, W)`` images in [0, 1] (any size); the output is not clamped."""
        return self.trunk_conv(self.RRDB_trunk(self.conv_first(x)))


class _ResidualBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        # small initial residuals keep a deep trunk close to the identity at the start of training
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


@register_architecture("nrp-residual-generator")
class NRPResidualGenerator(nn.Module):
    """
    :param channels: Image channels (input and output).
    :param features: Width of the trunk (authors: 64).
    :param blocks: Residual blocks (authors: 23).
    """

    def __init__(self, channels: int = 3, features: int = 64, blocks: int = 23) -> None:
        super().__init__()
        _check_positive(channels=channels, features=features, blocks=blocks)
        self.conv_first = nn.Conv2d(channels, features, 3, padding=1)
        self.recon_trunk = nn.Sequential(*(_ResidualBlock(features) for _ in range(blocks)))
        self.conv_last = nn.Conv2d(features, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Purify ``(N, C, H, W)`` images in [0, 1] (any size); the output is not clamped."""
        return self.conv_last(self.recon_trunk(F.leaky_relu(self.conv_first(x), 0.1)))


@register_architecture("nrp-critic")
class RelativisticCritic(nn.Module):
    """
    The critic of the relativistic average GAN: a patch scorer (:class:`.argan.PatchDiscriminator`) whose patch
    logits are averaged into one raw score per image. :meth:`relativistic_logits` turns raw scores into the
    relativistic logits ``C(a) - mean C(b)`` that both the critic's and the generator's losses use.

    :param channels: Image channels.
    :param features: Width of the first layer.
    :param depth: Number of stride-2 stages.
    """

    def __init__(self, channels: int = 3, features: int = 32, depth: int = 3) -> None:
        super().__init__()
        self.scorer = PatchDiscriminator(channels, features, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores ``(N,)`` for images in [0, 1]."""
        return self.scorer(x).mean(dim=(1, 2, 3))

    @staticmethod
    def relativistic_logits(scores: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """How much more real each of ``scores`` looks than the average of ``others``: ``scores - others.mean()``."""
        return scores - others.mean()


def load_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """
    Build a purifier from a state dict of the authors' released files (``NRP.pth`` for :class:`NRPGenerator`,
    ``NRP_resG.pth`` for :class:`NRPResidualGenerator`, loaded with ``torch.load(file, weights_only=True)``). The
    variant is told by the keys, the size by the tensors: features and channels from ``conv_first``, blocks from
    the trunk's keys, the growth from the first dense conv.

    :raises ValueError: if the keys are neither variant's, or the tensors do not fit the shape read off them.
    """
    state = {key.removeprefix("module."): value.float() for key, value in state_dict.items()}  # DataParallel saves
    if "conv_first.weight" not in state:
        raise ValueError("Not an NRP state dict: no 'conv_first.weight' key.")
    features, channels = state["conv_first.weight"].shape[:2]
    model: nn.Module
    if "RRDB_trunk.0.RDB1.conv1.weight" in state:
        blocks = _count_blocks(state, "RRDB_trunk.", ".RDB1.conv1.weight")
        model = NRPGenerator(channels, features, blocks, growth=state["RRDB_trunk.0.RDB1.conv1.weight"].shape[0])
    elif "recon_trunk.0.conv1.weight" in state:
        model = NRPResidualGenerator(channels, features, _count_blocks(state, "recon_trunk.", ".conv1.weight"))
    else:
        raise ValueError("Neither NRP variant: no 'RRDB_trunk.0.RDB1.conv1.weight' or 'recon_trunk.0.conv1.weight'.")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"The state dict does not fit {type(model).__name__}: {error}") from error
    return model.eval()


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str, suffix: str) -> int:
    return sum(1 for key in state if key.startswith(prefix) and key.endswith(suffix))


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
