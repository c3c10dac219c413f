"""Network architectures (``nn.Module`` only, no training loops), registered by name for the zoo."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

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


# Importing the architecture modules registers them (after the registry above exists).
from art_purifiers.nets import argan, classifier  # noqa: E402,F401
