"""
JPEG round trips: the exact codec (libjpeg, on any device) and a differentiable approximation of it.

* :func:`jpeg_round_trip` encodes and decodes with an exact codec chosen in :mod:`art_purifiers.ops.codec`: the
  decoded pixels equal PIL's ``Image.save(..., "JPEG", quality=q)`` then ``Image.open`` exactly. By default CUDA
  images are coded on the GPU by libjpeg's arithmetic in tensor ops (:mod:`art_purifiers.ops.libjpeg`), every quality
  in one batch, and CPU images by libjpeg-turbo through TorchCodec (else torchvision), grouped by quality; the output
  is the same on every device. ``backend="nvjpeg"`` codes on the GPU with nvJPEG (inexact: 4:4:4 chroma, a
  different DCT).
* :func:`jpeg_differentiable` runs the same steps as the tensor codec with differentiable roundings, for
  ``bpda="surrogate"`` backward passes: it differs from the codec only in its roundings' backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import torch

from art_purifiers.ops import libjpeg
from art_purifiers.ops.codec import TENSOR_BACKENDS, resolve_backend, round_trip_uint8
from art_purifiers.ops.groups import map_groups
from art_purifiers.ops.quantize import Rounding, floor_with, quantize_dct, round_with


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
    :param backend: ``"auto"`` (exact libjpeg: the tensor codec for CUDA images, else TorchCodec, else
                    torchvision), ``"libjpeg"``, ``"libjpeg-compiled"``, ``"torchcodec"``, ``"torchvision"``,
                    ``"pil"`` or ``"nvjpeg"`` (CUDA images only; inexact), see :mod:`art_purifiers.ops.codec`.
    :param workers: Host threads for the exact backends (default 1). A pool gave no reliable gain: per-quality
                    groups are small, and the GIL hand-offs around each codec call cost about what the threads save
                    (measured on 2 and 16 cores, 32x32 and 224x224; at 32x32 every pool was slower).
    :return: Decoded images, same shape, dtype and device as ``x``.
    """
    _check_images(x)
    qualities = _qualities(quality, x.shape[0])
    name = resolve_backend(backend, x.device)
    if name in TENSOR_BACKENDS:  # every quality in one batch, on the images' device, 8-bit rounding included
        return libjpeg.round_trip(x.detach(), qualities, compiled=name == "libjpeg-compiled")
    pixels = libjpeg.to_pixels(x.detach()).contiguous()
    if name == "nvjpeg":
        decoded = map_groups(lambda images, q: round_trip_uint8(images, q, name), pixels, qualities)
        return libjpeg.from_pixels(decoded, x.dtype)
    # the exact codecs run on the host (CUDA images too: one transfer each way)
    threads = max(1, workers or 1)
    with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
        decoded = map_groups(
            lambda images, q: round_trip_uint8(images, q, name), _to_host(pixels), qualities, threads, pool
        )
    return libjpeg.from_pixels(decoded.to(x.device), x.dtype)


def _to_host(pixels: torch.Tensor) -> torch.Tensor:
    """Copy device images to pinned host memory (one transfer, no pageable staging)."""
    if pixels.device.type == "cpu":
        return pixels
    host = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=pixels.device.type == "cuda")
    host.copy_(pixels)
    return host


def jpeg_differentiable(
    x: torch.Tensor,
    quality: int | Sequence[int] | torch.Tensor | None = None,
    rounding: Rounding = "soft",
    tables: torch.Tensor | None = None,
    subsampling: str = "4:2:0",
) -> torch.Tensor:
    """
    The exact codec's steps (:mod:`art_purifiers.ops.libjpeg`: 8-bit input, colour conversion, 4:2:0 averaging,
    islow DCT, quantization, inverse DCT, fancy upsampling) with differentiable roundings, for backward passes: the
    forward gives the codec's pixels in every mode. The quantization's rounding gets ``rounding``'s backward; the
    fixed-point arithmetic's roundings (and the 8-bit input), which lose no more than round-off, pass gradients
    straight through (zero with ``"hard"``).

    :param x: ``(N, C, H, W)`` images in ``[0, 1]``, C = 1 (luma only) or 3.
    :param quality: One quality or one per image (or give ``tables``).
    :param rounding: Backward of the roundings: ``"soft"`` (cubic), ``"straight_through"`` or ``"hard"``.
    :param tables: Quantization tables instead of a quality, as Pillow's ``qtables=`` (see
        :func:`~art_purifiers.ops.libjpeg.check_tables`): the file a defence with its own table writes.
    :param subsampling: ``"4:2:0"`` or ``"4:4:4"``.
    :return: Images of the same shape and dtype, in ``[0, 1]``.
    """
    _check_images(x)
    count = x.shape[0]
    if tables is not None and quality is None:
        chosen = libjpeg.check_tables(tables, count)
    elif quality is not None and tables is None:
        chosen = libjpeg.quality_tables(_qualities(quality, count), count)
    else:
        raise ValueError("Give a quality or quantization tables (exactly one).")
    arithmetic: Rounding = "hard" if rounding == "hard" else "straight_through"
    samples = round_with(x.double() * 255, arithmetic).clamp(0, 255)
    floor, per_image = partial(floor_with, rounding=arithmetic), chosen.to(x.device, torch.float64)
    levels = libjpeg.encode_samples(samples, per_image, subsampling, floor, partial(floor_with, rounding=rounding))
    decoded = libjpeg.decode_samples(*levels, per_image, (x.shape[-2], x.shape[-1]), subsampling, floor)
    return (decoded / 255).to(x.dtype)


#: How a defence with its own quantization table applies it (:func:`quantize_with_table`).
TABLE_CODECS: tuple[str, ...] = ("dct", "jpeg")


def quantize_with_table(x: torch.Tensor, table: torch.Tensor, rounding: Rounding, codec: str = "dct") -> torch.Tensor:
    """
    A defence's own ``(8, 8)`` table applied to ``(N, C, H, W)`` images in ``[0, 1]``.

    * ``"dct"``: every RGB channel's orthonormal 8x8 DCT quantized with the table in 8-bit units, float output
      (:func:`~art_purifiers.ops.quantize.quantize_dct`; Feature Distillation's way);
    * ``"jpeg"``: a real JPEG file with the table for every component, as Pillow writes with ``qtables=[table]``
      (YCbCr, 4:2:0, the table rounded to integer steps in ``[1, 255]``), decoded to 8-bit pixels: exact, on the
      images' device (:func:`jpeg_differentiable`, whose forward is the codec's).

    :param rounding: Backward of the quantization's rounding (see :mod:`art_purifiers.ops.quantize`).
    :raises ValueError: for an unknown ``codec``.
    """
    if codec == "dct":
        return quantize_dct(x, table, rounding=rounding)
    if codec == "jpeg":
        return jpeg_differentiable(x, rounding=rounding, tables=jpeg_steps(table)[None])
    check_codec(codec)
    raise AssertionError("unreachable")


def jpeg_steps(table: torch.Tensor) -> torch.Tensor:
    """A table as the integer steps a baseline JPEG file holds: rounded, clipped to ``[1, 255]``."""
    return torch.as_tensor(table, dtype=torch.float64).round().clamp(1, 255).int()


def check_codec(codec: str) -> None:
    """:raises ValueError: unless ``codec`` is one of :data:`TABLE_CODECS`."""
    if codec not in TABLE_CODECS:
        raise ValueError(f"codec must be one of {TABLE_CODECS}, got {codec!r}.")
