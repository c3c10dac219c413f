"""
JPEG round trips: the exact codec (libjpeg, on any device) and a differentiable approximation of it.

* :func:`jpeg_round_trip` encodes and decodes with a real codec chosen in :mod:`art_purifiers.ops.codec`: by
  default libjpeg-turbo (through TorchCodec, else torchvision), whose files are byte-identical to PIL's
  ``Image.save(..., "JPEG", quality=q)``, so the decoded pixels equal PIL's exactly. Images on a CUDA device are
  coded on the host from a pinned copy and copied back, so the default output is the same on every device;
  ``backend="nvjpeg"`` codes on the GPU instead (faster on large images, inexact: 4:4:4 chroma, a different DCT).
  The encoder takes one quality per call, so images are grouped by quality.
* :func:`jpeg_differentiable` rebuilds the same steps from differentiable tensor ops (colour conversion, 2x2
  chroma averaging, blockwise DCT quantization with the scaled IJG tables, bilinear chroma upsampling) for
  ``bpda="surrogate"`` backward passes; it approximates the codec (no Huffman stage is needed, rounding is soft).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from art_purifiers.ops.codec import resolve_backend, round_trip_uint8
from art_purifiers.ops.color import rgb_to_ycbcr, ycbcr_to_rgb
from art_purifiers.ops.device import cached_constant
from art_purifiers.ops.groups import map_groups
from art_purifiers.ops.quantize import Rounding, quantize_dct, scale_quantization_table

#: IJG base luminance table (ITU-T T.81 Annex K.1), quality 50, row = vertical frequency.
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
#: IJG base chrominance table (Annex K.2).
CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)


def _qualities(quality: int | Sequence[int] | torch.Tensor, count: int) -> torch.Tensor:
    values = torch.as_tensor(quality).reshape(-1).cpu()
    if values.numel() == 1:
        values = values.expand(count)
    if values.numel() != count:
        raise ValueError(f"Expected one quality or {count} (one per image), got {values.numel()}.")
    if values.is_floating_point() and not torch.equal(values, values.round()):
        raise ValueError("JPEG qualities must be integers.")
    values = values.long()
    if count and not (1 <= int(values.min()) and int(values.max()) <= 100):
        raise ValueError(f"JPEG qualities must lie in [1, 100], got {int(values.min())}..{int(values.max())}.")
    return values


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"Expected (N, C, H, W) images with 1 or 3 channels, got shape {tuple(x.shape)}.")


def jpeg_round_trip(
    x: torch.Tensor,
    quality: int | Sequence[int] | torch.Tensor,
    backend: str = "auto",
    workers: int | None = None,
) -> torch.Tensor:
    """
    Encode and decode ``(N, C, H, W)`` images in ``[0, 1]`` (C = 1 or 3) with a real JPEG codec.

    The images are rounded to 8 bits first (ART's ``JpegCompression`` truncates instead).

    :param x: Floating-point images in ``[0, 1]`` on any device.
    :param quality: One integer quality in ``[1, 100]``, or one per image.
    :param backend: ``"auto"`` (exact libjpeg: TorchCodec, else torchvision), ``"torchcodec"``, ``"torchvision"``,
                    ``"pil"`` or ``"nvjpeg"`` (CUDA images only; inexact), see :mod:`art_purifiers.ops.codec`.
    :param workers: Host threads for the exact backends (default 1). A pool gave no reliable gain: per-quality
                    groups are small, and the GIL hand-offs around each codec call cost about what the threads save
                    (measured on 2 and 16 cores, 32x32 and 224x224; at 32x32 every pool was slower).
    :return: Decoded images, same shape, dtype and device as ``x``.
    """
    _check_images(x)
    qualities = _qualities(quality, x.shape[0])
    name = resolve_backend(backend, x.device)
    pixels = _to_uint8(x.detach())
    if name == "nvjpeg":
        decoded = map_groups(lambda images, q: round_trip_uint8(images, q, name), pixels, qualities)
        return _from_uint8(decoded, x.dtype)
    # the exact codecs run on the host (CUDA images too: one transfer each way)
    threads = max(1, workers or 1)
    with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
        decoded = map_groups(
            lambda images, q: round_trip_uint8(images, q, name), _to_host(pixels), qualities, threads, pool
        )
    return _from_uint8(decoded.to(x.device), x.dtype)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round ``[0, 1]`` images to 8-bit pixels (in float32 at least: float16 cannot hold ``255 * x`` finely enough to
    round it like the float32 images it holds)."""
    work = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return (work * 255).round_().clamp_(0, 255).to(torch.uint8).contiguous()


@cached_constant
def _levels(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``k / 255`` for the 256 pixel values, divided on the CPU."""
    return (torch.arange(256, dtype=dtype) / 255).to(device)


def _from_uint8(pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Pixels to ``[0, 1]``, the same floats on every device: CUDA divides by multiplying with the reciprocal, which
    can differ in the last bit, so there the values are looked up from a table divided on the CPU."""
    if pixels.device.type == "cpu":
        return pixels.to(dtype).div_(255)
    return _levels(dtype, pixels.device).index_select(0, pixels.reshape(-1).int()).view(pixels.shape)


def _to_host(pixels: torch.Tensor) -> torch.Tensor:
    """Copy device images to pinned host memory (one transfer, no pageable staging)."""
    if pixels.device.type == "cpu":
        return pixels
    host = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=pixels.device.type == "cuda")
    host.copy_(pixels)
    return host


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    height, width = x.shape[-2:]
    return F.pad(x, (0, width % 2, 0, height % 2), mode="replicate")


def jpeg_differentiable(
    x: torch.Tensor, quality: int | Sequence[int] | torch.Tensor, rounding: Rounding = "soft"
) -> torch.Tensor:
    """
    A differentiable approximation of :func:`jpeg_round_trip` (for backward passes).

    :param x: ``(N, C, H, W)`` images in ``[0, 1]``, C = 1 (luma only) or 3.
    :param quality: One quality or one per image.
    :param rounding: Backward of the rounding: ``"soft"`` (cubic), ``"straight_through"`` or ``"hard"``.
    :return: Images of the same shape, clipped to ``[0, 1]``.
    """
    _check_images(x)
    return map_groups(lambda images, q: _jpeg_surrogate(images, q, rounding), x, _qualities(quality, x.shape[0]))


def _jpeg_surrogate(x: torch.Tensor, quality: int, rounding: Rounding) -> torch.Tensor:
    luma_table = scale_quantization_table(torch.tensor(LUMA_TABLE, dtype=torch.float64), quality)
    if x.shape[1] == 1:
        return quantize_dct(x, luma_table, rounding).clamp(0, 1)
    height, width = x.shape[-2:]
    chroma_table = scale_quantization_table(torch.tensor(CHROMA_TABLE, dtype=torch.float64), quality)
    ycbcr = rgb_to_ycbcr(x)
    luma = quantize_dct(ycbcr[:, :1], luma_table, rounding)
    chroma = F.avg_pool2d(_pad_even(ycbcr[:, 1:]), 2)
    chroma = quantize_dct(chroma, chroma_table, rounding)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)[..., :height, :width]
    return ycbcr_to_rgb(torch.cat([luma, chroma], dim=1)).clamp(0, 1)
