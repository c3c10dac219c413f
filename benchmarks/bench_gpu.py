"""Images/s of every defence on a CUDA device against ART's JpegCompression (CPU, per image), in the same run.

    python -m benchmarks.bench_gpu            # needs CUDA
    python -m benchmarks.bench_gpu --quick

For each setting (224x224 batch 64, 32x32 batch 256) and defence: the forward pass on a batch already on the GPU
(as ``PyTorchClassifier`` hands it over), the forward+backward pass of a BPDA gradient (what an attack pays per
step), and the ratio of the forward rate to ART's ``JpegCompression`` at quality 50 on the same images. Targets of
the GPU issue: the DCT defences at least 50x ART at 224x224, ``CompressRestore()`` at least 1,000 images/s at 32x32.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import numpy as np
import torch
from art.defences.preprocessor import JpegCompression

from art_purifiers import CompressRestore, NNFavoredJpeg, QuantizeDistort
from art_purifiers.base import PurifierPreprocessor
from benchmarks.bench_dct_defences import images_per_second

SETTINGS = ((224, 64), (32, 256))  # (image size, batch size)
TARGETS = {"dct_vs_art_224": 50.0, "compress_restore_32": 1000.0, "compress_restore_224": 1500.0}


def defences() -> dict[str, Callable[[], PurifierPreprocessor]]:
    """The defences timed, by label (built fresh for each setting)."""
    return {
        "NNFavoredJpeg()": lambda: NNFavoredJpeg(),
        "QuantizeDistort()": lambda: QuantizeDistort(seed=0),
        "CompressRestore()": lambda: CompressRestore(seed=0),
        'CompressRestore(jpeg_backend="nvjpeg")': lambda: CompressRestore(seed=0, jpeg_backend="nvjpeg"),
    }


def bench_setting(size: int, batch: int, repeats: int) -> tuple[list[str], dict[str, float]]:
    """Markdown rows for one setting, and the forward rates by label (``"ART"`` included)."""
    x_numpy = np.random.default_rng(0).random((batch, 3, size, size)).astype(np.float32)
    art = JpegCompression(clip_values=(0, 1), quality=50, channels_first=True)
    art_rate = images_per_second(lambda: art(x_numpy), batch, repeats)
    rates = {"ART": art_rate}
    label = f"{size}x{size} b{batch}"
    rows = [f"| {label} | ART JpegCompression q50 (CPU, per image) | {art_rate:,.0f} | - | 1.00x |"]
    x = torch.from_numpy(x_numpy).cuda()
    for name, build in defences().items():
        defence = build()
        with torch.no_grad():
            forward = images_per_second(lambda: defence.forward(x), batch, repeats)  # noqa: B023

        def gradient() -> None:
            leaf = x.clone().requires_grad_(True)
            defence.forward(leaf)[0].sum().backward()  # noqa: B023

        backward = images_per_second(gradient, batch, max(1, repeats // 2))
        rates[name] = forward
        rows.append(f"| {label} | {name} | {forward:,.0f} | {backward:,.0f} | {forward / art_rate:.1f}x |")
    return rows, rates


def run(repeats: int) -> tuple[list[str], list[str]]:
    """The table rows and the target verdicts."""
    rows: list[str] = []
    rates: dict[tuple[int, str], float] = {}
    with warnings.catch_warnings():  # the benchmark knowingly runs the CIFAR-10 restorers on 224x224 images
        warnings.filterwarnings("ignore", message="CompressRestore's restorers were trained")
        for size, batch in SETTINGS:
            setting_rows, setting_rates = bench_setting(size, batch, repeats)
            rows += setting_rows
            rates.update({(size, name): rate for name, rate in setting_rates.items()})
    verdicts = []
    for name in ("NNFavoredJpeg()", "QuantizeDistort()"):
        ratio = rates[(224, name)] / rates[(224, "ART")]
        met = "met" if ratio >= TARGETS["dct_vs_art_224"] else "NOT met"
        verdicts.append(f"- {name} at 224x224: {ratio:.1f}x ART (target 50x): {met}")
    rate = rates[(32, "CompressRestore()")]
    met = "met" if rate >= TARGETS["compress_restore_32"] else "NOT met"
    verdicts.append(f"- CompressRestore() forward at 32x32: {rate:,.0f} images/s (target 1,000): {met}")
    rate = rates[(224, "CompressRestore()")]  # the JPEG on the GPU (the tensor codec)
    met = "met" if rate >= TARGETS["compress_restore_224"] else "NOT met"
    verdicts.append(f"- CompressRestore() forward at 224x224: {rate:,.0f} images/s (target 1,500): {met}")
    return rows, verdicts


HEADER = "| setting | method | forward images/s | forward+backward images/s | forward vs ART |\n|---|---|---|---|---|"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA device.")
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    rows, verdicts = run(2 if args.quick else 5)
    print(HEADER)
    print("\n".join(rows))
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
