"""Does super-resolution work here? EDSR x2 against bicubic, and the classifier behind each SuperResolution setting.

1. PSNR/SSIM of the shipped EDSR x2 and of bicubic x2 on half-size versions of the CIFAR-10 test images and of
   64x64 crops of the photos held out of EDSR's training (``chelsea``, ``coffee``).
2. The wavelet denoiser's largest difference from scikit-image's on CIFAR-10 test images and photos.
3. Clean accuracy of the reference classifier (trained on 32x32) behind the defence and its ablations, with the 2x
   image classified as it is (``output_size="upscaled"``, the paper's choice: the classifier ends in global pooling)
   or resized back to 32x32 (``output_size="input"``).

Run from the repository root:

    python -m reproductions.super_resolution_quality --data-dir path/to/cifar10 --images 2000
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from art_purifiers import SuperResolution, zoo
from art_purifiers.data import load_cifar10
from art_purifiers.demo import load_photos
from art_purifiers.ops.wavelet import denoise_wavelet
from art_purifiers.training.edsr import HELD_OUT_PHOTOS, grid_crops, load_photo, upscaling_quality
from reproductions.restoration_quality import accuracy, emit

#: (label, SuperResolution arguments) of the accuracy table: the defence, then the paper's ablations.
SETTINGS = (
    ("WD + EDSR (the paper)", {}),
    ("EDSR only (no WD)", {"denoise": False}),
    ("WD only + bicubic", {"upsampler": "bicubic"}),
    ("bicubic only", {"denoise": False, "upsampler": "bicubic"}),
    ("WD + bilinear", {"upsampler": "bilinear"}),
    ("WD + nearest", {"upsampler": "nearest"}),
    ("WD + EDSR, sigma 0.01 (the authors' later code)", {"sigma": 0.01}),
)


def quality_rows(images: torch.Tensor) -> list[str]:
    """PSNR/SSIM rows of EDSR and bicubic on the CIFAR-10 images and the held-out photo crops."""
    network = zoo.load("edsr-x2-cifar10-photos")
    crops = torch.cat([grid_crops(load_photo(name), 64) for name in HELD_OUT_PHOTOS])
    rows = ["| images | bicubic PSNR / SSIM | EDSR PSNR / SSIM | EDSR gain |", "|---|---|---|---|"]
    for label, batch in ((f"{len(images)} CIFAR-10 test images, 16 -> 32 px", images),
                         (f"{len(crops)} held-out photo crops, 32 -> 64 px", crops)):  # fmt: skip
        result = upscaling_quality(network, batch)
        bicubic, edsr = result["bicubic"], result["edsr"]
        rows.append(
            f"| {label} | {bicubic['psnr_db']:.2f} dB / {bicubic['ssim']:.4f} | {edsr['psnr_db']:.2f} dB / "
            f"{edsr['ssim']:.4f} | {edsr['psnr_db'] - bicubic['psnr_db']:+.2f} dB |"
        )
    return rows


def skimage_batch(images: np.ndarray, sigma: float | None) -> np.ndarray:
    """scikit-image's denoiser on each NCHW image (YCbCr for colour), in the images' dtype, as float64."""
    from skimage.restoration import denoise_wavelet as skimage_denoise_wavelet

    colour = images.shape[1] == 3
    out = [
        skimage_denoise_wavelet(image.transpose(1, 2, 0) if colour else image[0], sigma=sigma,
                                channel_axis=-1 if colour else None, convert2ycbcr=colour, rescale_sigma=True,
                                method="BayesShrink", mode="soft")
        for image in images
    ]  # fmt: skip
    return np.stack(out).reshape(images.shape[0], images.shape[2], images.shape[3], -1).transpose(0, 3, 1, 2)


def agreement_rows(cifar: torch.Tensor) -> list[str]:
    """Max |ours - scikit-image| of the wavelet denoiser on CIFAR-10 test images and on the demo photos (224 and an
    odd 45x67 crop), colour and grey, float32 and float64, with the paper's sigma and with sigma estimated."""
    photos = torch.from_numpy(load_photos(224)).double()
    sets = {
        f"{len(cifar)} CIFAR-10 test images 32x32": cifar.double() / 255,
        "4 photos 224x224": photos,
        "4 photo crops 45x67 (odd)": photos[..., :45, :67],
    }
    rows = [
        "| images | channels | sigma | ours float64 | ours float32 | scikit-image float32 vs its float64 | "
        "images scikit-image turns into NaN |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, images in sets.items():
        for channels in (3, 1):
            batch = images[:, :channels].contiguous()
            for sigma in (0.04, None):
                reference = skimage_batch(batch.numpy(), sigma)
                # scikit-image's estimate is NaN without a non-zero finest diagonal coefficient (ours: 0, no change)
                finite = np.isfinite(reference).reshape(len(reference), -1).all(1)
                errors = [
                    float(
                        np.abs(denoise_wavelet(batch.to(dtype), sigma=sigma).double().numpy() - reference)[finite].max()
                    )
                    for dtype in (torch.float64, torch.float32)
                ]
                own = float(np.abs(skimage_batch(batch.float().numpy(), sigma) - reference)[finite].max())
                rows.append(f"| {label} | {channels} | {sigma} | {errors[0]:.1e} | {errors[1]:.1e} | {own:.1e} | "
                            f"{int((~finite).sum())} |")  # fmt: skip
    return rows


def accuracy_rows(images: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """Clean accuracy behind each setting, with the 2x image and with the image resized back."""
    model = zoo.load("cifar10-reference").eval()
    rows = ["| defence | upscaled 64x64 input (%) | resized back to 32x32 (%) |", "|---|---|---|"]
    undefended, _ = accuracy(model, images, labels)
    rows.append(f"| undefended (32x32) | {100 * undefended:.2f} | {100 * undefended:.2f} |")
    for label, kwargs in SETTINGS:
        cells = [
            100 * accuracy(model, images, labels, SuperResolution(output_size=size, device_type="cpu", **kwargs))[0]
            for size in ("upscaled", "input")
        ]
        rows.append(f"| {label} | {cells[0]:.2f} | {cells[1]:.2f} |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="CIFAR-10 directory (default: $ART_PURIFIERS_DATA)")
    parser.add_argument("--images", type=int, help="first N test images (default: all)")
    parser.add_argument("--output", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    test = load_cifar10(args.data_dir, "test")
    count = args.images or len(test)
    images_uint8, labels = test.images[:count], test.labels[:count]
    started = time.time()
    lines = [
        f"# SuperResolution: upscaling quality and clean accuracy ({count} CIFAR-10 test images, a JPEG q75 copy)",
        "",
        "`python -m reproductions.super_resolution_quality " + shlex.join(sys.argv[1:] if argv is None else argv) + "`",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "",
        *quality_rows(images_uint8),
        "",
        "Wavelet denoiser against scikit-image's `denoise_wavelet` (BayesShrink, soft, db1, YCbCr for colour):",
        "",
        *agreement_rows(images_uint8[:500]),
        "",
        *accuracy_rows(images_uint8.float() / 255, labels),
        "",
        f"{time.time() - started:.0f} s",
    ]
    emit("\n".join(lines), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
