"""Network architectures (``nn.Module`` only, no training loops), registered by name for the zoo."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from art_purifiers.ops.color import rgb_to_luma

ModuleT = TypeVar("ModuleT", bound=type[nn.Module])

#: Architecture name -> ``nn.Module`` class; a zoo file names its architecture and stores its constructor config.
ARCHITECTURES: dict[str, type[nn.Module]] = {}


def register_architecture(name: str) -> Callable[[ModuleT], ModuleT]:
    """
    Class decorator that makes an architecture loadable by the zoo under ``name``.

    :param name: Unique architecture name stored in weight files.
    """

    def register(cls: ModuleT) -> ModuleT:
        if name in ARCHITECTURES and ARCHITECTURES[name] is not cls:
            raise ValueError(f"Architecture name {name!r} is already registered to {ARCHITECTURES[name].__name__}.")
        ARCHITECTURES[name] = cls
        return cls

    return register


def input_channels(network: nn.Module) -> int | None:
    """The channels of a network's first convolution (``None`` for networks without one, e.g. the identity)."""
    return next((int(m.in_channels) for m in network.modules() if isinstance(m, nn.Conv2d)), None)


def run_image_network(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """
    Run an image-to-image network on ``(N, C, H, W)`` images in the dtype of its parameters (float32 unless the
    caller fetched a float64 copy) and cast back to ``x``'s dtype. A colour
    network gets grey images as three equal channels, and its output is turned back into grey by its luma (what JPEG
    and PIL do).

    :raises ValueError: if the network takes another number of channels.
    """
    channels = input_channels(network)
    if channels not in (None, x.shape[1]) and not (x.shape[1] == 1 and channels == 3):
        raise ValueError(f"The network takes {channels}-channel images, got {x.shape[1]}.")
    dtype = next((p.dtype for p in network.parameters()), torch.float32)
    if x.shape[1] == 1 and channels == 3:
        return rgb_to_luma(network(x.to(dtype).expand(-1, 3, -1, -1))).to(x.dtype)
    return network(x.to(dtype)).to(x.dtype)


# Importing the architecture modules registers them (after the registry above exists).
from art_purifiers.nets import argan, classifier, edsr, nrp  # noqa: E402,F401
