"""Per-device helpers for the ops: constants cached per device and dtype, and float32 regions inside autocast."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
T = TypeVar("T")


def cached_constant(build: Callable[P, T]) -> Callable[P, T]:
    """
    Cache a function that builds constant tensors (a DCT matrix, a colour matrix) from hashable arguments, the
    device and dtype among them, so they are built and copied to the device once instead of at every call.

    The tensors are built outside inference mode and without autograd history, so a constant first built under
    ``torch.inference_mode()`` can still take part in a later backward pass. Callers must not modify them.
    """

    @functools.lru_cache(maxsize=256)
    def cached(*args: P.args, **kwargs: P.kwargs) -> T:
        with torch.inference_mode(False), torch.no_grad():
            return build(*args, **kwargs)

    return functools.wraps(build)(cached)  # type: ignore[return-value]


@contextlib.contextmanager
def autocast_disabled(device: torch.device | str) -> Iterator[None]:
    """
    Switch autocast off for ``device``'s type inside the block, so float32 inputs stay float32.

    Quantization rounds coefficients to integers: under bf16 autocast a matrix product loses enough precision to
    move pixels by several grey levels. Device types without autocast support are left alone.
    """
    device_type = torch.device(device).type
    if torch.amp.is_autocast_available(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield
