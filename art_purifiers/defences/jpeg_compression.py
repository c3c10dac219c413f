"""
ART's ``JpegCompression`` on tensors: the same pixels, on the images' own device, with a BPDA backward.

The JPEG-compression defence of Dziugaite et al. (2016) and Das et al. (2017), as ART implements it: the images are
truncated to 8 bits (ART casts with ``astype(uint8)``; the other defences of this package round), saved by Pillow as
JPEG at ``quality`` (4:2:0 chroma) and read back. Here the codec is :mod:`art_purifiers.ops.libjpeg`, libjpeg's
arithmetic in tensor ops, so the output equals ART's on the same inputs (tested) without leaving the GPU. It is the
JPEG baseline of ``art-purifiers evaluate`` (``--defence jpeg:quality=Q``).

Backward: ``"straight_through"`` and ``"identity"`` make the codec the identity (ART's ``estimate_gradient``);
``"surrogate"`` differentiates :func:`~art_purifiers.ops.jpeg.jpeg_differentiable`.
"""

from __future__ import annotations

from typing import Any

import torch

from art_purifiers.base import PurifierPreprocessor, Randomness
from art_purifiers.ops import libjpeg
from art_purifiers.ops.jpeg import jpeg_differentiable
from art_purifiers.ops.quantize import replace_gradient


class JpegCompressionPyTorch(PurifierPreprocessor):
    """JPEG at one quality, ART's ``JpegCompression`` on tensors (8-bit truncation, 4:2:0). Deterministic."""

    params = PurifierPreprocessor.params + ["quality"]

    def __init__(self, quality: int = 50, **kwargs: Any) -> None:
        """
        :param quality: JPEG quality in ``[1, 100]`` (ART's default 50).
        :param kwargs: Arguments of :class:`~art_purifiers.base.PurifierPreprocessor`.
        """
        super().__init__(**kwargs)
        self.quality = quality

    def _check_params(self) -> None:
        super()._check_params()
        quality = self.quality
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an integer in [1, 100], got {quality!r}.")

    def _purify(self, x: torch.Tensor, randomness: Randomness) -> torch.Tensor:
        with torch.no_grad():  # ART truncates; k / 255 * 255 gives k back exactly in float32 and float64
            pixels = torch.floor(x * 255).clamp_(0, 255).to(torch.uint8)
            decoded = libjpeg.round_trip(pixels, self.quality).to(x.dtype) / 255
        if self.bpda == "surrogate":
            return replace_gradient(decoded, jpeg_differentiable(x, self.quality, self.rounding))
        return replace_gradient(decoded, x)
