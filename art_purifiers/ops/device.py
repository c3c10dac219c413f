"""Per-device helpers for the ops: constants cached per device and dtype, and full-precision float32 regions."""

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
def full_precision(device: torch.device | str) -> Iterator[None]:
    """
    Inside the block: autocast off for ``device``'s type, and float32 matrix products at full precision (no TF32),
    so float32 inputs are computed in float32.

    Quantization rounds DCT coefficients to integers: under bf16 autocast a matrix product loses enough precision to
    move pixels by several grey levels (measured: 23/255), and TF32 (``torch.set_float32_matmul_precision("high")``)
    keeps 10 mantissa bits, so coefficients of a few hundred land on the wrong side of a rounding boundary. The
    matmul precision is a process-wide setting: it is restored when the block ends. Device types without autocast
    are left alone.
    """
    device_type = torch.device(device).type
    autocast = (
        torch.autocast(device_type=device_type, enabled=False)
        if torch.amp.is_autocast_available(device_type)
        else contextlib.nullcontext()
    )
    previous = torch.get_float32_matmul_precision()
    with autocast:
        if device_type != "cuda" or previous == "highest":
            yield
            return
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(previous)
