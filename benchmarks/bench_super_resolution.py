"""Images/s of our batched wavelet denoiser against scikit-image's, and of the whole SuperResolution defence.

Run from the repository root:

    python -m benchmarks.bench_super_resolution            # CPU (and CUDA when available)
    python -m benchmarks.bench_super_resolution --quick

Rows per setting: scikit-image's ``denoise_wavelet`` (the paper's arguments, one image at a time: the baseline of the
ratios), our :func:`~art_purifiers.ops.wavelet.denoise_wavelet` on the batch, the shipped EDSR x2 alone, the whole
defence forward (denoise, EDSR, resize back) and forward+backward (what an attack pays per step), and the share of
the forward time spent denoising. Images are scikit-image photos resized to the setting's size.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.restoration import denoise_wavelet as skimage_denoise_wavelet

from art_purifiers import SuperResolution, zoo
from art_purifiers.ops.wavelet import denoise_wavelet
from benchmarks.bench_dct_defences import images_per_second, print_table, repeats_from_command_line
from benchmarks.bench_jpeg_backends import photo_batch

SETTINGS = ((32, 256), (224, 16))  # (image size, batch size)
HEADER = "| size | batch | device | method | images/s | vs scikit-image |\n|---|---|---|---|---|---|"
PAPER = {"sigma": 0.04, "wavelet": "db1", "mode": "soft", "method": "BayesShrink", "convert2ycbcr": True}


def rows(size: int, batch: int, repeats: int) -> list[str]:
    x_numpy = photo_batch(size, batch).numpy()
    nhwc = x_numpy.transpose(0, 2, 3, 1).astype(np.float64)
    reference_batch = min(batch, 32)  # scikit-image is timed on fewer images: its rate does not depend on the batch
    baseline = images_per_second(
        lambda: [skimage_denoise_wavelet(image, channel_axis=-1, rescale_sigma=True, **PAPER)
                 for image in nhwc[:reference_batch]], reference_batch, repeats)  # fmt: skip
    lines = [f"| {size}x{size} | {batch} | cpu | scikit-image denoise_wavelet, per image | {baseline:,.0f} | 1.00x |"]
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        lines += device_rows(
            torch.from_numpy(x_numpy).to(device), baseline, f"| {size}x{size} | {batch} | {device} |", repeats
        )
    return lines


def rate(images_per_second: float) -> str:
    """Images/s with thousands separators, and two decimals below 10 (EDSR at 224x224 on a CPU)."""
    return f"{images_per_second:,.0f}" if images_per_second >= 10 else f"{images_per_second:.2f}"


def device_rows(x: torch.Tensor, baseline: float, prefix: str, repeats: int) -> list[str]:
    """Our denoiser, EDSR, and the defence forward and forward+backward on ``x``'s device."""
    batch = len(x)
    edsr = zoo.load("edsr-x2-cifar10-photos", x.device)
    defence = SuperResolution(batch_size=batch)
    with torch.no_grad():
        denoise_rate = images_per_second(lambda: denoise_wavelet(x, sigma=0.04), batch, repeats)
        edsr_rate = images_per_second(lambda: edsr(x), batch, repeats)
        defence_rate = images_per_second(lambda: defence.forward(x), batch, repeats)

    def gradient() -> None:
        leaf = x.clone().requires_grad_(True)
        defence.forward(leaf)[0].sum().backward()

    gradient_rate = images_per_second(gradient, batch, max(1, repeats // 2))
    share = (1 / denoise_rate) / (1 / denoise_rate + 1 / edsr_rate)
    return [
        f"{prefix} our denoise_wavelet, batched | {rate(denoise_rate)} | {denoise_rate / baseline:.1f}x |",
        f"{prefix} EDSR x2 alone | {rate(edsr_rate)} | |",
        f"{prefix} SuperResolution forward | {rate(defence_rate)} | |",
        f"{prefix} SuperResolution forward+backward | {rate(gradient_rate)} | |",
        f"{prefix} share of denoising in (denoise + EDSR) | {100 * share:.1f}% | |",
    ]


def main() -> None:
    repeats = repeats_from_command_line(__doc__ or "")
    print_table(HEADER, rows, SETTINGS, repeats)


if __name__ == "__main__":
    main()
