"""Wavelet denoising and image super-resolution (Mustafa et al., 2019).

A. Mustafa, S. H. Khan, M. Hayat, J. Shen and L. Shao, "Image Super-Resolution as a Defense Against Adversarial
Attacks", IEEE Transactions on Image Processing 29, 2019.

Algorithm 1 of the paper: (1) wavelet-transform the image, (2) shrink its detail coefficients by BayesShrink soft
thresholding (scikit-image's ``denoise_wavelet`` with YCbCr channels, ``db1`` and sigma 0.04;
:func:`art_purifiers.ops.wavelet.denoise_wavelet`), (3) invert the transform, (4) super-resolve x2 with EDSR
(:mod:`art_purifiers.nets.edsr`), and classify the 2x image with the same network. The paper's ablations swap EDSR
for nearest, bilinear or bicubic interpolation and drop the denoising.

Backward (``bpda``): every step here is differentiable, so ``"straight_through"`` (and ``"surrogate"``, the same)
gives the exact gradient (zero where soft thresholding zeroes a coefficient); ``"identity"`` differentiates only the
resize (bicubic x2 for EDSR, the interpolation itself otherwise, and the resize back for ``output_size="input"``;
the identity with ``upsampler="none"``).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers import zoo
from art_purifiers.base import PurifierPreprocessor, Randomness
from art_purifiers.nets import run_image_network
from art_purifiers.ops.wavelet import check_denoise_arguments, denoise_wavelet

#: The shipped EDSR x2.
DEFAULT_NETWORK = "edsr-x2-cifar10-photos"
UPSAMPLERS = ("edsr", "bicubic", "bilinear", "nearest", "none")
OUTPUT_SIZES = ("upscaled", "input")
SCALE = 2


def upsample(x: torch.Tensor, mode: str) -> torch.Tensor:
    """x2 interpolation: ``"nearest"``, ``"bilinear"`` or ``"bicubic"`` (half-pixel centres)."""
    corners = None if mode == "nearest" else False
    return F.interpolate(x, scale_factor=SCALE, mode=mode, align_corners=corners)


def resize_back(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize to ``size`` with antialiasing (a x2 reduction averages, it does not alias)."""
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


class SuperResolution(PurifierPreprocessor):
    """
    Wavelet denoising (BayesShrink) then x2 super-resolution. Deterministic.

    With ``output_size="upscaled"`` (the paper) the output is twice the input's height and width: the classifier
    must accept that size (networks ending in global pooling do). ``output_size="input"`` resizes the result back so
    any classifier fits.
    """

    params = PurifierPreprocessor.params + [
        "sigma", "wavelet", "levels", "ycbcr", "denoise", "upsampler", "network", "output_size"
    ]  # fmt: skip

    def __init__(
        self,
        sigma: float | None = 0.04,
        wavelet: str = "db1",
        levels: int | None = None,
        ycbcr: bool = True,
        denoise: bool = True,
        upsampler: str = "edsr",
        network: str | Path | nn.Module = DEFAULT_NETWORK,
        output_size: str = "input",
        **kwargs: Any,
    ) -> None:
        """
        :param sigma: Noise standard deviation for BayesShrink in [0, 1] pixel units (scikit-image's
                      ``rescale_sigma=True`` meaning; see :mod:`art_purifiers.ops.wavelet`); paper: 0.04, the
                      authors' later code: 0.01; ``None`` estimates it per image.
        :param wavelet: PyWavelets wavelet name (paper: ``"db1"``).
        :param levels: Wavelet decomposition levels; ``None`` is scikit-image's default (3 fewer than the maximum).
        :param ycbcr: Denoise colour images in YCbCr (paper: yes).
        :param denoise: Run the wavelet denoising (``False``: super-resolution only, the paper's "SR" ablation).
        :param upsampler: ``"edsr"`` (the paper), an interpolation (``"bicubic"``, ``"bilinear"``, ``"nearest"``), or
                          ``"none"`` (denoising only, the paper's "WD" ablation).
        :param network: The EDSR x2 for ``upsampler="edsr"``: a zoo name, a weight file in the zoo format, or a
                        module (copied; see :func:`art_purifiers.nets.edsr.load_reference_state_dict` for the
                        reference implementation's weights).
        :param output_size: ``"input"`` (resized back; the default: the reference classifier keeps 87.9% of its
                            88.3% clean accuracy) or ``"upscaled"`` (2x the input, as the paper classifies; a
                            classifier trained at the input size loses much there: 44.3%).
        :param kwargs: Arguments of :class:`~art_purifiers.base.PurifierPreprocessor`.
        """
        super().__init__(**kwargs)
        self.sigma = sigma
        self.wavelet = wavelet
        self.levels = levels
        self.ycbcr = ycbcr
        self.denoise = denoise
        self.upsampler = upsampler
        self.network = network
        self.output_size = output_size

    def purified_size(self, height: int, width: int) -> tuple[int, int]:
        if self.output_size == "upscaled" and self.upsampler != "none":
            return SCALE * height, SCALE * width
        return height, width

    def _check_params(self) -> None:
        super()._check_params()
        check_denoise_arguments(self.sigma, self.wavelet, self.levels)
        for name in ("ycbcr", "denoise"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}.")
        if self.upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {self.upsampler!r}.")
        if self.output_size not in OUTPUT_SIZES:
            raise ValueError(f"output_size must be one of {OUTPUT_SIZES}, got {self.output_size!r}.")

    def _network_sources(self) -> dict[Hashable, Any]:
        return {"edsr": self.network} if self.upsampler == "edsr" else {}  # interpolations need no network

    def _load_network(self, key: Hashable, source: Any) -> nn.Module:
        return zoo.resolve(source, train_command="python -m art_purifiers.training.edsr")

    def _chunk_size(self, x: torch.Tensor) -> int:
        return self._network_chunk_size(x) if self.upsampler == "edsr" else super()._chunk_size(x)

    # ------------------------------------------------------------------ Algorithm 1

    def _purify(self, x: torch.Tensor, randomness: Randomness) -> torch.Tensor:
        if self.denoise:
            x = denoise_wavelet(x, self.sigma, self.wavelet, self.levels, self.ycbcr)
        if self.upsampler == "none":
            return x
        upscaled = self._upscale(x)
        if self.output_size == "input":
            return resize_back(upscaled, (x.shape[-2], x.shape[-1]))
        return upscaled

    def _upscale(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsampler == "edsr":
            return run_image_network(self._network("edsr", x.device, x.dtype), x)
        return upsample(x, self.upsampler)

    def _identity_surrogate(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The resize alone: x2 (bicubic in place of EDSR), then back to the input's size for ``"input"``."""
        if self.upsampler == "none":
            return x
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        upscaled = upsample(work, "bicubic" if self.upsampler == "edsr" else self.upsampler)
        if self.output_size == "input":
            upscaled = resize_back(upscaled, (x.shape[-2], x.shape[-1]))
        return upscaled.to(x.dtype)
