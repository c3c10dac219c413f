"""Metrics of the reports and the training scripts: binomial intervals, perturbation norms, image quality."""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a proportion measured on ``n`` trials."""
    if n <= 0:
        return (float("nan"), float("nan"))
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if accuracy <= 0 else max(0.0, centre - half)  # exact ends where round-off would leave a tiny gap
    high = 1.0 if accuracy >= 1 else min(1.0, centre + half)
    return (low, high)


def binomial_standard_error(accuracy: float, n: int) -> float:
    """Standard error of a proportion on ``n`` trials."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(n, 1))


def perturbation_norms(x_clean: np.ndarray, x_adv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image L2 and Linf norms of ``x_adv - x_clean``."""
    delta = (x_adv.astype(np.float64) - x_clean.astype(np.float64)).reshape(len(x_clean), -1)
    return np.linalg.norm(delta, axis=1), np.abs(delta).max(axis=1, initial=0.0)


def image_quality(reference: np.ndarray, images: np.ndarray, data_range: float = 1.0) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of NCHW ``images`` against ``reference`` (scikit-image's definitions)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    with np.errstate(divide="ignore"):  # identical images have an infinite PSNR; they are counted below
        psnr = [peak_signal_noise_ratio(r, i, data_range=data_range) for r, i in zip(reference, images)]
    ssim = [structural_similarity(r, i, channel_axis=0, data_range=data_range) for r, i in zip(reference, images)]
    finite = [p for p in psnr if np.isfinite(p)]
    return {
        "psnr_db": float(np.mean(finite)) if finite else float("inf"),
        "ssim": float(np.mean(ssim)),
        "identical_images": int(len(psnr) - len(finite)),
    }


def randomness(first: np.ndarray, second: np.ndarray, data_range: float = 1.0) -> dict[str, float]:
    """
    Qiu et al. (2021) Table 1: how different two purifications of the same images are, as the RMS difference
    ("L2", in [0, 1] pixel units) and the mean SSIM between them.
    """
    rms = np.sqrt(np.mean((first.astype(np.float64) - second.astype(np.float64)) ** 2, axis=(1, 2, 3)))
    return {"l2_rms": float(rms.mean()), "ssim": image_quality(first, second, data_range)["ssim"]}
