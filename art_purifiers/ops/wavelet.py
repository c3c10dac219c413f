"""
Wavelet denoising by BayesShrink soft thresholding, batched on the input's device and differentiable.

The same result as scikit-image's ``skimage.restoration.denoise_wavelet(image, sigma, wavelet, mode="soft",
wavelet_levels, convert2ycbcr, method="BayesShrink", rescale_sigma=True)`` on float images (up to float round-off,
tested), for a whole ``(N, C, H, W)`` batch at once. The transforms are ptwt's (``ptwt.wavedec2``/``waverec2``, which
give PyWavelets' coefficients, odd sizes included, with the ``"symmetric"`` boundary mode that scikit-image uses),
except for the paper's ``db1`` (Haar), done by 2x2 block sums and differences (:func:`haar_decompose`, tested against
PyWavelets) because ptwt's 2-tap convolutions are several times slower on the CPU. This module adds the thresholding
(Chang, Yu and Vetterli, IEEE TIP 2000):

* the noise sigma, when not given, is Donoho and Johnstone's robust estimate from the finest diagonal details:
  ``median(|d|) / 0.6745`` over the non-zero coefficients (scikit-image leaves out the zeros of flat regions). Here a
  coefficient counts as zero when ``|d| <= 1e-9 * max|x|`` of its image: exact zeros in exact arithmetic come out of
  float64 transforms as zeros or as round-off of about 1e-17 relative, depending on the CPU's kernels (and up to
  1e-12 for the ``sym`` wavelets, whose stored filters do not sum exactly to zero), while any real detail of 8-bit or
  float32 image content is above 1e-8 of the image's range. So the estimate is the exact transform's on every machine,
  and equals scikit-image's wherever PyWavelets cancels exactly (``db1``, the paper's wavelet, among them);
* each detail sub-band ``d`` gets the threshold ``sigma^2 / sqrt(max(mean(d^2) - sigma^2, eps))``;
* soft thresholding ``sign(d) * max(|d| - t, 0)``; the approximation band is kept.

``sigma`` follows scikit-image's ``rescale_sigma=True`` semantics: it is the noise standard deviation of the input
channels in [0, 1] pixel units; with ``ycbcr=True`` it is carried to each YCbCr channel (by the norm of its row of the
colour matrix) and to that channel's min-max normalisation. Scikit-image before 0.16, which Prakash et al. and
Mustafa et al. used with 0.04, applied ``sigma`` to each normalised YCbCr channel as it was: a smaller effective
noise level than the same number here.

Backward: autograd through the transforms (linear), the threshold (a function of the data through ``mean(d^2)`` and,
when estimated, the median) and the soft thresholding, whose derivative is 0 inside ``[-t, t]`` and 1 outside; the
gradient is exact wherever these are differentiable.
"""

from __future__ import annotations

import warnings
from typing import cast

import ptwt
import pywt
import torch
import torch.nn.functional as F
from ptwt.constants import WaveletDetailTuple2d  # the top-level name is ptwt >= 1.0's (Python >= 3.11) alone

from art_purifiers.ops.device import cached_constant, full_precision

#: scipy.stats.norm.ppf(0.75): the median of |N(0, 1)|.
_GAUSSIAN_MAD = 0.6744897501960817
#: ITU-R BT.601 RGB -> YCbCr (studio swing, per unit of [0, 1] RGB), the matrix of scikit-image's ``rgb2ycbcr``.
_BT601_RGB_TO_YCBCR = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))
#: Elements per CPU chunk: ptwt's symmetric padding copies through transposed views, fast only while they stay in
#: cache (measured at 32x32: 170-image chunks 1.6x faster than one 512-image batch; at 224x224: 3-image chunks 2x
#: faster than 6)
_CHUNK_ELEMENTS = 1 << 19
#: Wavelets transformed by :func:`haar_decompose` (2x2 block sums) instead of ptwt's convolutions: the paper's db1,
#: measured 5x faster on the CPU at 224x224, where ptwt's 2-tap convolutions and symmetric padding are memory-bound
_HAAR = ("db1", "haar")
#: A finest-level detail coefficient counts as zero for the noise estimate when its magnitude is at most this share of
#: its image's largest absolute value: far above float64 round-off of the transform, far below image content.
ZERO_DETAIL_RELATIVE = 1e-9
#: scikit-image skips this many of the coarsest possible levels by default.
_SKIPPED_LEVELS = 3


def default_levels(height: int, width: int, wavelet: str = "db1") -> int:
    """scikit-image's default: three fewer than PyWavelets' maximum level for the image size, at least 1."""
    return max(pywt.dwtn_max_level((height, width), pywt.Wavelet(wavelet)) - _SKIPPED_LEVELS, 1)


def soft_threshold(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``sign(x) * max(|x| - threshold, 0)``, with ``threshold`` broadcast against ``x``."""
    return torch.sign(x) * torch.relu(x.abs() - threshold)


def finest_diagonal(x: torch.Tensor, wavelet: str) -> torch.Tensor:
    """
    The first level's diagonal details of ``(B, H, W)`` images (PyWavelets' ``dd`` band), in float64 so that the
    noise estimate's median is PyWavelets' to round-off; which coefficients count as zero is decided by
    :func:`estimate_noise_sigma`'s tolerance, not by exact cancellation, which depends on the CPU's kernels.
    """
    rows = ptwt.wavedec(x.double(), pywt.Wavelet(wavelet), level=1, mode="symmetric", axis=-1)[1]
    return ptwt.wavedec(rows, pywt.Wavelet(wavelet), level=1, mode="symmetric", axis=-2)[1]


def estimate_noise_sigma(details: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """
    Robust noise sigma of each ``(h, w)`` slice of ``details`` (the finest diagonal sub-band): the median of the
    absolute non-zero coefficients (the mean of the two middle values for an even count, as NumPy) over 0.6745.
    A coefficient is zero when ``|d| <= ZERO_DETAIL_RELATIVE * scale`` (see the module docstring), so which flat
    regions drop out does not depend on the float rounding of the transform. Slices without a non-zero coefficient
    get 0 (scikit-image returns NaN there).

    :param details: ``(B, h, w)`` coefficients.
    :param scale: ``(B,)`` the largest absolute value of each image the details come from.
    :return: ``(B,)`` sigmas.
    """
    flat = details.abs().flatten(1)
    nonzero = flat > ZERO_DETAIL_RELATIVE * scale.to(flat.dtype)[:, None]
    count = nonzero.sum(1, keepdim=True)
    ordered = torch.where(nonzero, flat, torch.full_like(flat, float("inf"))).sort(1).values
    lower = ordered.gather(1, ((count - 1) // 2).clamp_min(0))
    upper = ordered.gather(1, (count // 2).clamp_max(flat.shape[1] - 1))
    median = torch.where(count > 0, (lower + upper) / 2, torch.zeros_like(lower))
    return median.squeeze(1) / _GAUSSIAN_MAD


def bayes_shrink_threshold(details: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """
    BayesShrink threshold of each ``(h, w)`` slice of a zero-mean detail sub-band.

    :param details: ``(B, h, w)`` coefficients.
    :param variance: ``(B,)`` noise variances.
    :return: ``(B, 1, 1)`` thresholds.
    """
    signal = (details * details).mean((-2, -1)) - variance
    eps = torch.finfo(details.dtype).eps
    return (variance / signal.clamp_min(eps).sqrt())[:, None, None]


def denoise_channels(
    x: torch.Tensor, sigma: torch.Tensor | None, wavelet: str = "db1", levels: int | None = None
) -> torch.Tensor:
    """
    BayesShrink soft thresholding of single-channel images (scikit-image's ``_wavelet_threshold``).

    :param x: ``(B, H, W)`` images.
    :param sigma: ``(B,)`` noise sigmas, or ``None`` to estimate each image's.
    :param wavelet: A PyWavelets wavelet name.
    :param levels: Decomposition levels (default :func:`default_levels`).
    :return: ``(B, H, W)`` denoised images.
    """
    height, width = x.shape[-2:]
    levels = default_levels(height, width, wavelet) if levels is None else levels
    if sigma is None:
        sigma = estimate_noise_sigma(finest_diagonal(x, wavelet), x.detach().abs().amax((-2, -1)))
    noise = sigma.to(x.dtype)
    variance = noise * noise
    if wavelet in _HAAR:
        approximation, details, sizes = haar_decompose(x, levels)
        shrunk = [tuple(soft_threshold(band, bayes_shrink_threshold(band, variance)) for band in level)
                  for level in details]  # fmt: skip
        return haar_reconstruct(approximation, shrunk, sizes)
    coefficients = ptwt.wavedec2(x, pywt.Wavelet(wavelet), level=levels, mode="symmetric")
    approximation = cast(torch.Tensor, coefficients[0])
    bands: tuple[WaveletDetailTuple2d, ...] = tuple(
        WaveletDetailTuple2d(*(soft_threshold(band, bayes_shrink_threshold(band, variance)) for band in level))
        for level in coefficients[1:]
    )
    # mypy cannot infer ptwt's (Tensor, *details) tuple type from unpacking
    return ptwt.waverec2((approximation, *bands), pywt.Wavelet(wavelet))[..., :height, :width]  # type: ignore[arg-type]


def haar_decompose(
    x: torch.Tensor, levels: int
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], list[tuple[int, int]]]:
    """
    Multi-level 2-D Haar (``db1``) transform of ``(B, H, W)`` images by 2x2 block sums and differences, PyWavelets'
    ``"symmetric"`` mode (an odd side repeats its last row or column), coefficients up to signs and round-off.

    :return: The approximation, the ``(rows, columns, diagonal)`` details from the coarsest level to the finest, and
             the size of the image at each level from the finest (for :func:`haar_reconstruct`).
    """
    details, sizes = [], []
    for _ in range(levels):
        sizes.append((x.shape[-2], x.shape[-1]))
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            x = F.pad(x[:, None], (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), mode="replicate")[:, 0]
        a, b, c, d = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        top, bottom, left_minus_right_top, left_minus_right_bottom = a + b, c + d, a - b, c - d
        details.append(
            ((top - bottom) * 0.5, (left_minus_right_top + left_minus_right_bottom) * 0.5,
             (left_minus_right_top - left_minus_right_bottom) * 0.5)
        )  # fmt: skip
        x = (top + bottom) * 0.5
    return x, details[::-1], sizes


def haar_reconstruct(
    approximation: torch.Tensor,
    details: list[tuple[torch.Tensor, ...]],
    sizes: list[tuple[int, int]],
) -> torch.Tensor:
    """The inverse of :func:`haar_decompose` (each level cropped to its image size, as PyWavelets trims)."""
    x = approximation
    for (rows, columns, diagonal), (height, width) in zip(details, sizes[::-1]):
        x = x[..., : rows.shape[-2], : rows.shape[-1]]
        top, bottom = x + rows, x - rows
        a, b = (top + columns + diagonal) * 0.5, (top - columns - diagonal) * 0.5
        c, d = (bottom + columns - diagonal) * 0.5, (bottom - columns + diagonal) * 0.5
        upper = torch.stack((a, b), -1).flatten(-2)
        lower = torch.stack((c, d), -1).flatten(-2)
        x = torch.stack((upper, lower), -2).flatten(-3, -2)[..., :height, :width]
    return x


@cached_constant
def _ycbcr_matrices(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The RGB -> YCbCr matrix and its exact inverse (offsets do not matter: channels are min-max normalised)."""
    forward = torch.tensor(_BT601_RGB_TO_YCBCR, dtype=torch.float64)
    return forward.to(dtype=dtype, device=device), torch.linalg.inv(forward).to(dtype=dtype, device=device)


def denoise_wavelet(
    x: torch.Tensor,
    sigma: float | None = None,
    wavelet: str = "db1",
    levels: int | None = None,
    ycbcr: bool = True,
) -> torch.Tensor:
    """
    BayesShrink wavelet denoising of a batch, as scikit-image's ``denoise_wavelet`` on each image (see the module
    docstring for the ``sigma`` semantics).

    :param x: ``(N, C, H, W)`` float images in [0, 1] (any device).
    :param sigma: Noise standard deviation in input pixel units; ``None`` estimates it per image and channel.
    :param wavelet: A PyWavelets wavelet name (``pywt.wavelist(kind="discrete")``).
    :param levels: Decomposition levels; ``None`` is scikit-image's default (:func:`default_levels`).
    :param ycbcr: For 3-channel images, denoise each min-max normalised YCbCr channel (scikit-image's
                  ``convert2ycbcr=True``); ignored for other channel counts, as scikit-image requires colour there.
    :raises ValueError: for a non-4-D input or invalid parameters (see :func:`check_denoise_arguments`).
    """
    if x.dim() != 4:
        raise ValueError(f"denoise_wavelet expects (N, C, H, W) images, got shape {tuple(x.shape)}.")
    check_denoise_arguments(sigma, wavelet, levels)
    if not pywt.Wavelet(wavelet).orthogonal:
        warnings.warn(f"Wavelet thresholding was designed for use with orthogonal wavelets; {wavelet} is not one "
                      "(scikit-image warns the same).", stacklevel=2)  # fmt: skip
    chunk = max(1, _CHUNK_ELEMENTS // max(1, x[0].numel()))
    if x.device.type == "cpu" and x.shape[0] > chunk:
        return torch.cat([_denoise_batch(part, sigma, wavelet, levels, ycbcr) for part in x.split(chunk)])
    return _denoise_batch(x, sigma, wavelet, levels, ycbcr)


def _denoise_batch(x: torch.Tensor, sigma: float | None, wavelet: str, levels: int | None, ycbcr: bool) -> torch.Tensor:
    batch, channels, height, width = x.shape
    with full_precision(x.device):
        if not (ycbcr and channels == 3):
            noise = None if sigma is None else x.new_full((batch * channels,), float(sigma))
            flat = denoise_channels(x.reshape(-1, height, width), noise, wavelet, levels)
            return flat.view_as(x)
        to_ycbcr, to_rgb = _ycbcr_matrices(x.dtype, x.device)
        colour = _mix_channels(to_ycbcr, x)
        low = colour.amin((-2, -1), keepdim=True)
        scale = colour.amax((-2, -1), keepdim=True) - low
        flat_channels = torch.where(scale > 0, scale, torch.ones_like(scale))  # constant channels are left alone
        normalised = ((colour - low) / flat_channels).reshape(-1, height, width)
        noise = None
        if sigma is not None:  # the RGB sigma carried to each YCbCr channel, then to its normalisation
            noise = (float(sigma) * to_ycbcr.norm(dim=1)[None, :] / flat_channels[..., 0, 0]).reshape(-1)
        denoised = denoise_channels(normalised, noise, wavelet, levels).view_as(colour) * flat_channels + low
        denoised = torch.where(scale > 0, denoised, colour)
        return _mix_channels(to_rgb, denoised)


def _mix_channels(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``matrix @ pixel`` for every pixel of ``(N, 3, H, W)`` images, as elementwise sums: every pixel is rounded the
    same way (a matrix product's blocking does not), so flat regions stay exactly flat for the noise estimate."""
    weights = matrix.to(x.dtype)[None, :, :, None, None]
    return (weights[:, :, 0] * x[:, 0:1] + weights[:, :, 1] * x[:, 1:2]) + weights[:, :, 2] * x[:, 2:3]


def check_denoise_arguments(sigma: float | None, wavelet: str, levels: int | None) -> None:
    """
    Validate :func:`denoise_wavelet`'s parameters (also used by the defence built on it).

    :raises ValueError: for an unknown discrete wavelet, ``levels`` other than ``None`` or a positive integer, or
                        ``sigma`` other than ``None`` or a number in [0, 1) (pixel units of [0, 1] images).
    """
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ValueError(f"wavelet must be a discrete PyWavelets wavelet (pywt.wavelist), got {wavelet!r}.")
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int) or levels < 1):
        raise ValueError(f"levels must be None or a positive integer, got {levels!r}.")
    if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma < 1):
        raise ValueError(f"sigma must be None or a number in [0, 1) (pixel units of [0, 1]), got {sigma!r}.")
