"""
JPEG codec backends: one round trip (encode, then decode) of a batch of 8-bit images at one quality.

Exact backends (libjpeg-turbo: baseline, YCbCr, 4:2:0 chroma subsampling for colour, the IJG tables scaled to the
quality, islow DCT; the decoded pixels equal PIL's ``Image.save(..., "JPEG", quality=q)`` then ``Image.open``):

* ``"libjpeg"``: libjpeg's arithmetic in integer tensor ops (:mod:`art_purifiers.ops.libjpeg`), batched on the
  images' own device, every quality in one call: the default for CUDA images, which it keeps on the GPU;
* ``"libjpeg-compiled"``: the same through ``torch.compile`` (fused int32 kernels): once compiled, the fastest exact
  backend on the CPU for small images (see below), at 20-100 s of compilation per image size, layout, device and
  dtype on first use (any batch size shares it), hence opt-in;
* ``"torchcodec"``: TorchCodec's ``JpegEncoder`` and ``decode_jpeg`` (TorchCodec >= 0.16, the successor of
  torchvision's codecs);
* ``"torchvision"``: ``torchvision.io.encode_jpeg``/``decode_jpeg`` on the CPU (deprecated since torchvision 0.29);
* ``"pil"``: Pillow, one image at a time (the reference; slowest).

``"auto"`` is ``"libjpeg"`` for CUDA images and, for CPU images, the first installed of TorchCodec, torchvision and PIL:
on 2 CPU cores TorchCodec codes 1.0-1.9x (32x32) and 3.8-6.9x (224x224) more images per second than the tensor codec run
eagerly; once compiled, the tensor codec codes 4.1x as many as TorchCodec at 32x32 and 0.96-1.03x as many at 224x224
(two runs of ``benchmarks/bench_jpeg_backends.py``), but its compilation takes 20-100 s. The library codecs run on the
CPU: CUDA images given to them travel to the host and back. Every exact backend gives the same pixels on every device.

Fast, inexact option, chosen only by name: ``"nvjpeg"`` encodes and decodes on the GPU with nvJPEG through
torchvision. nvJPEG subsamples chroma 4:4:4 and its DCT and colour conversion differ from libjpeg's: on an H100,
colour photos came out 32.6-37.3 dB from the exact backends (up to about 100 grey levels at edges), grey ones
51.9-53.6 dB (``benchmarks/bench_jpeg_backends.py``, ``benchmarks/results/gpu-*.md``). nvJPEG encodes colour
images only: grey images are encoded as colour with equal channels and decoded to grey (luma).
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable

import numpy as np
import torch

#: Backend names accepted by :func:`round_trip_uint8` (``"auto"`` resolves to an exact one).
BACKENDS: tuple[str, ...] = ("auto", "libjpeg", "libjpeg-compiled", "torchcodec", "torchvision", "pil", "nvjpeg")
#: Backends whose output is the pixels of PIL's libjpeg.
EXACT_BACKENDS: tuple[str, ...] = ("libjpeg", "libjpeg-compiled", "torchcodec", "torchvision", "pil")
#: The tensor codec's backends: every quality in one batch, on the images' own device.
TENSOR_BACKENDS: tuple[str, ...] = ("libjpeg", "libjpeg-compiled")


@functools.cache
def _has_torchcodec_jpeg() -> bool:
    try:
        from torchcodec.decoders import decode_jpeg  # noqa: F401
        from torchcodec.encoders import JpegEncoder  # noqa: F401
    except Exception:  # not installed, too old (no image codecs before 0.16) or built for another torch
        return False
    return True


@functools.cache
def _has_torchvision_jpeg() -> bool:
    try:
        from torchvision.io import decode_jpeg, encode_jpeg  # noqa: F401
        from torchvision.io.image import _has_image_ops
    except Exception:  # removed in a future torchvision
        return False
    return bool(_has_image_ops())


def available_backends() -> list[str]:
    """The backends that can run here (``"nvjpeg"`` only where CUDA and torchvision's codecs are available)."""
    found = {
        "libjpeg": True,
        "libjpeg-compiled": True,
        "torchcodec": _has_torchcodec_jpeg(),
        "torchvision": _has_torchvision_jpeg(),
        "pil": True,
        "nvjpeg": _has_torchvision_jpeg() and torch.cuda.is_available(),
    }
    return [name for name in BACKENDS[1:] if found[name]]


@functools.cache
def default_backend() -> str:
    """The exact backend that ``"auto"`` means for CPU images: TorchCodec, else torchvision, else PIL (with a
    warning)."""
    for name in ("torchcodec", "torchvision"):
        if name in available_backends():
            return name
    warnings.warn(
        "Neither TorchCodec (>= 0.16) nor torchvision's JPEG codec is available: JPEG runs through PIL, one image "
        "at a time (exact, slower). Install `art-purifiers[codec]` for TorchCodec.",
        stacklevel=2,
    )
    return "pil"


def resolve_backend(backend: str, device: torch.device) -> str:
    """
    The concrete backend for images on ``device``.

    :raises ValueError: for unknown names, backends not installed, or ``"nvjpeg"`` on non-CUDA images.
    """
    if backend not in BACKENDS:
        raise ValueError(f"JPEG backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        return "libjpeg" if device.type == "cuda" else default_backend()
    if backend == "nvjpeg" and device.type != "cuda":
        raise ValueError(f"The nvjpeg backend runs on CUDA images only, got images on {device}.")
    if backend not in available_backends():
        raise ValueError(f"JPEG backend {backend!r} is not available here; available: {available_backends()}.")
    return backend


def round_trip_uint8(images: torch.Tensor, quality: int, backend: str) -> list[torch.Tensor]:
    """
    Encode and decode ``(N, C, H, W)`` uint8 images (C = 1 or 3) at one quality with a concrete backend.

    Only the codec runs here (no other torch operation), so it can run in a thread pool.

    :param images: Contiguous uint8 images: on the CPU for the library codecs, on CUDA for ``"nvjpeg"``, anywhere
        for the tensor codec.
    :param quality: JPEG quality in ``[1, 100]``.
    :param backend: One of :data:`EXACT_BACKENDS` or ``"nvjpeg"`` (see :func:`resolve_backend`).
    :return: The decoded ``(C, H, W)`` uint8 images, on ``images``' device.
    """
    return _RUNNERS[backend](images, quality)


def _libjpeg(images: torch.Tensor, quality: int, compiled: bool = False) -> list[torch.Tensor]:
    from art_purifiers.ops.libjpeg import round_trip

    return list(round_trip(images, quality, compiled=compiled))


def _torchcodec(images: torch.Tensor, quality: int) -> list[torch.Tensor]:
    from torchcodec.decoders import decode_jpeg
    from torchcodec.encoders import JpegEncoder

    encoded = [JpegEncoder(image).to_tensor(quality=quality) for image in images]
    return list(decode_jpeg(encoded, mode="UNCHANGED"))


def _torchvision(images: torch.Tensor, quality: int) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

    encoded = encode_jpeg(list(images), quality=quality)
    return list(decode_jpeg(encoded, mode=ImageReadMode.UNCHANGED))


def _pil(images: torch.Tensor, quality: int) -> list[torch.Tensor]:
    from PIL import Image

    decoded = []
    for image in images.numpy():
        buffer = io.BytesIO()
        Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(
            buffer, "JPEG", quality=quality
        )
        pixels = np.array(Image.open(buffer))
        decoded.append(torch.from_numpy(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)))
    return decoded


def _nvjpeg(images: torch.Tensor, quality: int) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

    colour = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    encoded = encode_jpeg([image.contiguous() for image in colour], quality=quality)
    # the decoder reads the encoded bytes from host memory: one copy for the whole batch
    lengths = [len(data) for data in encoded]
    host = torch.cat(encoded).cpu().split(lengths)
    mode = ImageReadMode.GRAY if images.shape[1] == 1 else ImageReadMode.RGB
    return list(decode_jpeg(list(host), mode=mode, device=images.device))


_RUNNERS: dict[str, Callable[[torch.Tensor, int], list[torch.Tensor]]] = {
    "libjpeg": _libjpeg,
    "libjpeg-compiled": functools.partial(_libjpeg, compiled=True),
    "torchcodec": _torchcodec,
    "torchvision": _torchvision,
    "pil": _pil,
    "nvjpeg": _nvjpeg,
}
