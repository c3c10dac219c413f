"""RGB <-> YCbCr colour conversion (full-range JFIF / ITU-R BT.601, as used by JPEG)."""

from __future__ import annotations

import torch

from art_purifiers.ops.device import cached_constant, full_precision

_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)
_CHROMA_OFFSET_8BIT = 128.0
_YCBCR_TO_RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136, -0.714136),
    (1.0, 1.772, 0.0),
)


@cached_constant
def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def _offsets(offset: float, x: torch.Tensor) -> torch.Tensor:
    """``(0, offset, offset)`` shaped to broadcast over ``(..., 3, H, W)``."""
    return _constant(((0.0,), (offset,), (offset,)), x.dtype, x.device).unsqueeze(-1)


def _mix(x: torch.Tensor, matrix: tuple[tuple[float, ...], ...], before: float, after: float) -> torch.Tensor:
    """``matrix @ (pixel - (0, before, before)) + (0, after, after)`` for every pixel, without autocast."""
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"Expected images with 3 channels in dimension -3, got shape {tuple(x.shape)}.")
    with full_precision(x.device):
        centred = x - _offsets(before, x) if before else x
        return torch.einsum("ij,...jhw->...ihw", _constant(matrix, x.dtype, x.device), centred) + _offsets(after, x)


def rgb_to_ycbcr(x: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """
    Convert ``(..., 3, H, W)`` RGB images to YCbCr; chroma is centred on 128/255 of ``max_value`` (128 for 8-bit).

    :param x: RGB images with values in ``[0, max_value]``.
    :param max_value: 1.0 for images in [0, 1], 255.0 for 8-bit scale.
    """
    return _mix(x, _RGB_TO_YCBCR, 0.0, _CHROMA_OFFSET_8BIT / 255.0 * max_value)


def ycbcr_to_rgb(x: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """
    Inverse of :func:`rgb_to_ycbcr` (no clipping).
    """
    return _mix(x, _YCBCR_TO_RGB, _CHROMA_OFFSET_8BIT / 255.0 * max_value, 0.0)


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """The Y channel of :func:`rgb_to_ycbcr`, ``(..., 1, H, W)``: how JPEG and PIL turn colour into grey."""
    return rgb_to_ycbcr(x)[..., :1, :, :]
