"""RGB <-> YCbCr colour conversion (full-range JFIF / ITU-R BT.601, as used by JPEG)."""

from __future__ import annotations

import torch

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


def _mix(x: torch.Tensor, matrix: tuple[tuple[float, ...], ...], offset: torch.Tensor) -> torch.Tensor:
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"Expected images with 3 channels in dimension -3, got shape {tuple(x.shape)}.")
    m = torch.tensor(matrix, dtype=x.dtype, device=x.device)
    return torch.einsum("ij,...jhw->...ihw", m, x) + offset.to(x.dtype).view(3, 1, 1)


def rgb_to_ycbcr(x: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """
    Convert ``(..., 3, H, W)`` RGB images to YCbCr; chroma is centred on 128/255 of ``max_value`` (128 for 8-bit).

    :param x: RGB images with values in ``[0, max_value]``.
    :param max_value: 1.0 for images in [0, 1], 255.0 for 8-bit scale.
    """
    half = _CHROMA_OFFSET_8BIT / 255.0 * max_value
    return _mix(x, _RGB_TO_YCBCR, torch.tensor([0.0, half, half], device=x.device))


def ycbcr_to_rgb(x: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """
    Inverse of :func:`rgb_to_ycbcr` (no clipping).
    """
    half = _CHROMA_OFFSET_8BIT / 255.0 * max_value
    centred = x - torch.tensor([0.0, half, half], dtype=x.dtype, device=x.device).view(3, 1, 1)
    return _mix(centred, _YCBCR_TO_RGB, torch.zeros(3, device=x.device))
