"""Does restoration work? PSNR/SSIM of JPEG alone vs JPEG + generator, and clean accuracy under (C&R)^3.

For each shipped restorer (quality 20, 40, 60): the CIFAR-10 test images are JPEG-compressed at that quality with
the real codec and restored by its generator; both are compared with the originals (scikit-image's PSNR and SSIM).
Then the reference classifier's clean accuracy undefended, behind JPEG-only (C&R)^3 (``restorers="none"``) and
behind the full ``CompressRestore()`` (mean and spread over ``--draws`` seeds). Run from the repository root:

    python -m reproductions.restoration_quality --data-dir path/to/cifar10
    python -m reproductions.restoration_quality --data-dir path/to/cifar10 --images 500   # quicker
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

from art_purifiers import CompressRestore, zoo
from art_purifiers.base import PurifierPreprocessor
from art_purifiers.data import load_cifar10
from art_purifiers.defences.compress_restore import DEFAULT_RESTORERS
from art_purifiers.metrics import image_quality
from art_purifiers.training.restorer import restoration_quality


@torch.no_grad()
def accuracy(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, defence: PurifierPreprocessor | None = None
) -> tuple[float, float]:
    """Top-1 accuracy of ``model`` on ``images`` (float NCHW), behind ``defence``; also the defence's PSNR (NaN when
    it changes the size)."""
    purified = []
    correct = 0
    for start in range(0, len(images), 250):
        batch = images[start : start + 250]
        if defence is not None:
            batch = torch.from_numpy(defence(batch.numpy())[0])
        purified.append(batch)
        correct += int((model(batch).argmax(1) == labels[start : start + 250]).sum())
    purified_images = torch.cat(purified)
    if defence is None or purified_images.shape != images.shape:
        return correct / len(images), np.inf if defence is None else np.nan
    psnr = image_quality(images.numpy(), purified_images.numpy())["psnr_db"]
    return correct / len(images), psnr


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="CIFAR-10 directory (default: $ART_PURIFIERS_DATA)")
    parser.add_argument("--images", type=int, help="first N test images (default: all)")
    parser.add_argument("--draws", type=int, default=3, help="seeds of the randomized defences")
    parser.add_argument("--output", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    test = load_cifar10(args.data_dir, "test")
    count = args.images or len(test)
    images_uint8, labels = test.images[:count], test.labels[:count]
    images = images_uint8.float() / 255
    started = time.time()
    lines = [
        f"# Restoration quality and clean accuracy ({count} CIFAR-10 test images from {test.source})",
        "",
        "`python -m reproductions.restoration_quality " + shlex.join(sys.argv[1:] if argv is None else argv) + "`",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "",
        "| quality | JPEG PSNR (dB) | JPEG + generator PSNR (dB) | JPEG SSIM | JPEG + generator SSIM |",
        "|---|---|---|---|---|",
    ]
    for quality, name in sorted(DEFAULT_RESTORERS.items()):
        result = restoration_quality(zoo.load(name), images_uint8, quality)
        jpeg, restored = result["jpeg"], result["jpeg+generator"]
        lines.append(
            f"| {quality} | {jpeg['psnr_db']:.2f} | {restored['psnr_db']:.2f} | {jpeg['ssim']:.4f} "
            f"| {restored['ssim']:.4f} |"
        )
    model = zoo.load("cifar10-reference").eval()
    lines += ["", "| classifier input | clean accuracy (%) | PSNR to the clean images (dB) |", "|---|---|---|"]
    undefended, _ = accuracy(model, images, labels)
    lines.append(f"| undefended | {100 * undefended:.2f} | - |")
    for label, restorers in (("JPEG-only (C&R)^3 (restorers 'none')", {40: "none"}), ("(C&R)^3", None)):
        runs = [
            accuracy(model, images, labels, CompressRestore(restorers=restorers, seed=seed, device_type="cpu"))
            for seed in range(args.draws)
        ]
        acc = 100 * np.array([r[0] for r in runs])
        psnr = np.mean([r[1] for r in runs])
        lines.append(f"| {label}, {args.draws} seeds | {acc.mean():.2f} ± {acc.std():.2f} | {psnr:.2f} |")
    lines += ["", f"{time.time() - started:.0f} s"]
    emit("\n".join(lines), args.output)
    return 0


def emit(text: str, output: Path | None) -> None:
    """Print a report and, when asked, write it to ``output``."""
    print(text)
    if output:
        output.write_text(text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
