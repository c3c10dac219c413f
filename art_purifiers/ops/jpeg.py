"""
JPEG round trips: the exact codec (libjpeg through ``torchvision.io``) and a differentiable approximation of it.

* :func:`jpeg_round_trip` encodes and decodes with the real codec: libjpeg-turbo on the CPU (baseline, YCbCr,
  4:2:0 chroma subsampling, the IJG tables scaled to the quality, islow DCT: byte-identical files to PIL's
  ``Image.save(..., "JPEG", quality=q)``, so the decoded pixels equal PIL's exactly), nvjpeg on CUDA (a different
  implementation: its output differs from libjpeg's by a few grey levels, see the tests and benchmarks). The
  encoder takes one quality per call, so images are grouped by quality; on the CPU the groups are split across
  threads (the codec releases the GIL).
* :func:`jpeg_differentiable` rebuilds the same steps from differentiable tensor ops (colour conversion, 2x2
  chroma averaging, blockwise DCT quantization with the scaled IJG tables, bilinear chroma upsampling) for
  ``bpda="surrogate"`` backward passes; it approximates the codec (no Huffman stage is needed, rounding is soft).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from art_purifiers.ops.color import rgb_to_ycbcr, ycbcr_to_rgb
from art_purifiers.ops.quantize import Rounding, quantize_dct, scale_quantization_table

# torchvision 0.29 warns on every JPEG call that its codecs will move to TorchCodec; they still are libjpeg-turbo and
# nvjpeg, and the tests pin them to PIL's output, so keep users' logs readable.
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning
)

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


def _qualities(quality: int | Sequence[int] | torch.Tensor, count: int) -> list[int]:
    values = torch.as_tensor(quality).reshape(-1)
    if values.numel() == 1:
        values = values.expand(count)
    if values.numel() != count:
        raise ValueError(f"Expected one quality or {count} (one per image), got {values.numel()}.")
    if values.is_floating_point() and not torch.equal(values, values.round()):
        raise ValueError("JPEG qualities must be integers.")
    qualities = [int(v) for v in values]
    if any(not 1 <= q <= 100 for q in qualities):
        raise ValueError(f"JPEG qualities must lie in [1, 100], got {min(qualities)}..{max(qualities)}.")
    return qualities


def _groups(qualities: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for index, q in enumerate(qualities):
        groups.setdefault(q, []).append(index)
    return groups


def _codec(images: list[torch.Tensor], quality: int, device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import decode_jpeg, encode_jpeg

    encoded = encode_jpeg(images, quality=quality)
    return list(decode_jpeg(encoded, device=device))


def jpeg_round_trip(
    x: torch.Tensor, quality: int | Sequence[int] | torch.Tensor, workers: int | None = None
) -> torch.Tensor:
    """
    Encode and decode ``(N, C, H, W)`` images in ``[0, 1]`` (C = 1 or 3) with the real JPEG codec.

    The images are rounded to 8 bits first (ART's ``JpegCompression`` truncates instead).

    :param x: Floating-point images in ``[0, 1]`` on the CPU or a CUDA device.
    :param quality: One integer quality in ``[1, 100]``, or one per image.
    :param workers: CPU threads (default: the CPU count, at most the number of chunks).
    :return: Decoded images, same shape, dtype and device as ``x``.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"Expected (N, C, H, W) images with 1 or 3 channels, got shape {tuple(x.shape)}.")
    qualities = _qualities(quality, x.shape[0])
    pixels = (x.detach() * 255).round_().clamp_(0, 255).to(torch.uint8)
    output = torch.empty_like(pixels)
    jobs = []
    for q, indices in _groups(qualities).items():
        if x.device.type == "cpu":  # split big groups so both cores work
            step = max(1, -(-len(indices) // (workers or os.cpu_count() or 1)))
            jobs += [(q, indices[i : i + step]) for i in range(0, len(indices), step)]
        else:
            jobs.append((q, indices))

    def run(job: tuple[int, list[int]]) -> None:
        q, indices = job
        decoded = _codec([pixels[i] for i in indices], q, x.device)
        output[indices] = torch.stack(decoded).to(x.device)

    if x.device.type == "cpu" and len(jobs) > 1:
        with ThreadPoolExecutor(min(len(jobs), workers or os.cpu_count() or 1)) as pool:
            list(pool.map(run, jobs))
    else:
        for job in jobs:
            run(job)
    return output.to(x.dtype) / 255


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
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"Expected (N, C, H, W) images with 1 or 3 channels, got shape {tuple(x.shape)}.")
    qualities = _qualities(quality, x.shape[0])
    height, width = x.shape[-2:]
    pieces = []
    order = []
    for q, indices in _groups(qualities).items():
        batch = x[indices]
        luma_table = scale_quantization_table(torch.tensor(LUMA_TABLE, dtype=torch.float64), q)
        if x.shape[1] == 1:
            pieces.append(quantize_dct(batch, luma_table, rounding).clamp(0, 1))
        else:
            chroma_table = scale_quantization_table(torch.tensor(CHROMA_TABLE, dtype=torch.float64), q)
            ycbcr = rgb_to_ycbcr(batch)
            luma = quantize_dct(ycbcr[:, :1], luma_table, rounding)
            chroma = F.avg_pool2d(_pad_even(ycbcr[:, 1:]), 2)
            chroma = quantize_dct(chroma, chroma_table, rounding)
            chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)[..., :height, :width]
            pieces.append(ycbcr_to_rgb(torch.cat([luma, chroma], dim=1)).clamp(0, 1))
        order += indices
    output = torch.cat(pieces)
    return output[torch.argsort(torch.tensor(order, device=x.device))]
