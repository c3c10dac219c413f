"""Quantization of blockwise DCT coefficients with an 8x8 table, and the rounding variants used for BPDA.

Rounding variants (the forward value is always the exact ``torch.round``):

- ``"hard"``: plain rounding, zero gradient almost everywhere (use under ``torch.no_grad``);
- ``"straight_through"``: identity in backward (BPDA of Athalye et al.);
- ``"soft"``: backward of the polynomial ``r(x) = round(x) + (x - round(x))**3`` (Shin & Song, 2017).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

import torch

from art_purifiers.ops.dct import BLOCK_SIZE, block_dct_matrix, from_blocks, pad_to_blocks, to_blocks
from art_purifiers.ops.device import cached_constant, full_precision

Rounding = Literal["hard", "straight_through", "soft"]
ROUNDING_MODES: tuple[str, ...] = ("hard", "straight_through", "soft")


class _RoundStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class _RoundSoft(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rounded = torch.round(x)
        ctx.save_for_backward(x - rounded)
        return rounded

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (residual,) = ctx.saved_tensors
        return grad * 3.0 * residual.square()


def round_with(x: torch.Tensor, rounding: Rounding) -> torch.Tensor:
    """
    Round to the nearest integer (ties to even, like ``torch.round``) with the chosen backward.

    :param x: Any tensor.
    :param rounding: ``"hard"``, ``"straight_through"`` or ``"soft"`` (see the module docstring).
    """
    if rounding == "hard":
        return torch.round(x)
    if rounding == "straight_through":
        return _RoundStraightThrough.apply(x)
    if rounding == "soft":
        return _RoundSoft.apply(x)
    raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}.")


def floor_with(x: torch.Tensor, rounding: Rounding) -> torch.Tensor:
    """
    ``torch.floor`` with the chosen backward: the rounding variants of :func:`round_with` shifted by a half (the soft
    one differentiates ``floor(x) + 1/2 + (x - floor(x) - 1/2)**3``).
    """
    if rounding == "hard":
        return torch.floor(x)
    floored = torch.floor(x.detach())
    if rounding == "straight_through":
        return replace_gradient(floored, x)
    if rounding == "soft":
        return replace_gradient(floored, floored + 0.5 + (x - floored - 0.5) ** 3)
    raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}.")


def clamp_straight_through(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """
    Clamp to ``[low, high]`` in forward, identity in backward (so saturated pixels keep their gradient).
    """
    return replace_gradient(x.detach().clamp(low, high), x)


_STRAIGHT_THROUGH_CLAMPS: ContextVar[bool] = ContextVar("straight_through_clamps", default=False)


@contextlib.contextmanager
def straight_through_clamps(enabled: bool = True) -> Iterator[None]:
    """
    Within the block, :func:`clamp` is :func:`clamp_straight_through` (when ``enabled``): a defence in
    ``bpda="straight_through"`` mode runs a network this way, so the network's own output clamp keeps gradients,
    without changing the (shared, cached) network.
    """
    token = _STRAIGHT_THROUGH_CLAMPS.set(enabled)
    try:
        yield
    finally:
        _STRAIGHT_THROUGH_CLAMPS.reset(token)


def clamp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """A network's output clamp: exact, or straight-through inside :func:`straight_through_clamps`."""
    return clamp_straight_through(x, low, high) if _STRAIGHT_THROUGH_CLAMPS.get() else x.clamp(low, high)


class _ReplaceGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.surrogate_dtype = surrogate.dtype
        return value.detach()  # an alias: no copy

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # type: ignore[override]
        return None, grad.to(ctx.surrogate_dtype)


def replace_gradient(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """
    The BPDA building block: exactly ``value`` in forward, the gradient of ``surrogate`` in backward.

    Unlike ``surrogate + (value - surrogate).detach()``, the forward is bit-exact (no round-off from adding and
    subtracting). ``value`` is usually computed without autograd (a codec, a whole defence); ``surrogate`` is a
    differentiable stand-in of the same shape (the input itself for the identity, a smooth approximation, a
    resize).

    :param value: What the forward returns (its own graph, if any, is cut).
    :param surrogate: What the backward differentiates; must have ``value``'s shape.
    :return: A tensor equal to ``value`` that requires grad when ``surrogate`` does.
    """
    if value.shape != surrogate.shape:
        raise ValueError(f"value {tuple(value.shape)} and surrogate {tuple(surrogate.shape)} differ in shape.")
    if not surrogate.requires_grad:
        return value.detach()
    return _ReplaceGradient.apply(value, surrogate)


def scale_quantization_table(table: torch.Tensor, quality: int) -> torch.Tensor:
    """
    Scale a base (quality 50) quantization table to another quality with the IJG (libjpeg) formula.

    :param table: Base table, shape ``(8, 8)``.
    :param quality: JPEG-style quality in ``[1, 100]``; 50 returns the table unchanged (for integer tables).
    :return: Integer-valued table clipped to ``[1, 255]``.
    """
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in [1, 100], got {quality!r}.")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return torch.floor((table * scale + 50) / 100).clamp(1, 255)


def check_table(table: torch.Tensor) -> None:
    """
    Raise a ``ValueError`` unless ``table`` is a finite, strictly positive ``(8, 8)`` tensor.
    """
    if tuple(table.shape) != (BLOCK_SIZE, BLOCK_SIZE):
        raise ValueError(f"A quantization table must have shape (8, 8), got {tuple(table.shape)}.")
    if not bool(torch.isfinite(table).all()) or not bool((table > 0).all()):
        raise ValueError("A quantization table must contain finite values > 0.")


def quantize_dct(
    x: torch.Tensor,
    table: torch.Tensor,
    rounding: Rounding = "hard",
    scale: float = 255.0,
    level_shift: float = 128.0,
) -> torch.Tensor:
    """
    Quantize and dequantize the orthonormal 8x8 DCT coefficients of every block and channel.

    Per block ``b`` (in units of ``x * scale``): ``IDCT(table * round(DCT(b - level_shift) / table)) + level_shift``,
    divided by ``scale`` again. The same table applies to every channel. The transforms, the division by the table
    and the level shift are folded into two 64x64 matrices so the work is two matrix products and one rounding.

    Exact rounding ties (frequent for 8-bit images: the DC and the (0, 4), (4, 0), (4, 4) coefficients are multiples
    of 1/8) fall on the side the float round-off of the product gives: the same floats in ``x`` give the same levels,
    but ``x`` and ``x * scale`` with ``scale=1`` may differ by a step at a tie. The defences always pass ``[0, 1]``
    images made by a correctly rounded division (:class:`~art_purifiers.base.PurifierPreprocessor`).

    :param x: Images ``(N, C, H, W)``, floating point (any size: edge-replicated to multiples of 8, cropped back).
    :param table: Quantization steps, shape ``(8, 8)``, ``[u, v]`` = vertical, horizontal frequency.
    :param rounding: Backward of the rounding (``"hard"``, ``"straight_through"``, ``"soft"``).
    :param scale: Factor from the units of ``x`` to the units of the table (255 for images in [0, 1]).
    :param level_shift: Value subtracted before the DCT (128, as in JPEG; only the DC coefficient is affected).
    :return: Images of the same shape and dtype; not clipped.
    """
    check_table(table)
    height, width = x.shape[-2:]
    steps = tuple(float(step) for step in table.detach().cpu().reshape(-1).tolist())
    analysis, bias, synthesis, offset = _quantization_matrices(steps, scale, level_shift, x.dtype, x.device)
    blocks = to_blocks(pad_to_blocks(x))
    with full_precision(x.device):
        levels = round_with(torch.addmm(bias, blocks.reshape(-1, BLOCK_SIZE * BLOCK_SIZE), analysis), rounding)
        restored = torch.addmm(offset, levels, synthesis)
    return from_blocks(restored.reshape(blocks.shape))[..., :height, :width]


@cached_constant
def _quantization_matrices(
    steps: tuple[float, ...], scale: float, level_shift: float, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DCT, the division by the table and the level shift folded into matrices (built once per table)."""
    kron = block_dct_matrix(torch.float64, "cpu")
    step = torch.tensor(steps, dtype=torch.float64)
    # coefficients / table = blocks @ analysis + bias, and pixels = levels @ synthesis + offset
    analysis = kron.T * (scale / step)
    bias = -level_shift * kron.sum(dim=1) / step
    synthesis = kron * (step / scale).unsqueeze(1)
    offset = torch.full_like(bias, level_shift / scale)
    return tuple(m.to(dtype=dtype, device=device) for m in (analysis, bias, synthesis, offset))  # type: ignore[return-value]
