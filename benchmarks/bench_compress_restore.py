"""Images/s of CompressRestore against ART's JpegCompression, and where its time goes (JPEG vs generators).

Uses the shipped paper-size restorers (16 blocks, 64 features). Run from the repository root:

    python -m benchmarks.bench_compress_restore            # CPU (and CUDA when available)
    python -m benchmarks.bench_compress_restore --quick

Rows: ART's ``JpegCompression`` (quality 50, per image, PIL), our exact JPEG op alone (random qualities 20-60,
grouped per quality), one generator pass, and the full (C&R)^3 forward; plus the forward+backward rate of a
BPDA gradient through (C&R)^3 (what an attack pays per step).
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch
from art.defences.preprocessor import JpegCompression

from art_purifiers import CompressRestore, zoo
from art_purifiers.ops.jpeg import jpeg_round_trip
from benchmarks.bench_dct_defences import images_per_second

SETTINGS = ((32, 256), (224, 16))  # (image size, batch size)


def bench(device: str, size: int, batch: int, repeats: int) -> list[str]:
    x_numpy = np.random.default_rng(0).random((batch, 3, size, size)).astype(np.float32)
    x = torch.from_numpy(x_numpy).to(device)
    art = JpegCompression(clip_values=(0, 1), quality=50, channels_first=True)
    art_rate = images_per_second(lambda: art(x_numpy), batch, repeats)
    qualities = torch.randint(20, 61, (batch,), generator=torch.Generator().manual_seed(0))
    jpeg_rate = images_per_second(lambda: jpeg_round_trip(x, qualities), batch, repeats)
    generator = zoo.load("cifar10-restorer-q40", device)
    with torch.no_grad():
        generator_rate = images_per_second(lambda: generator(x), batch, repeats)
    defence = CompressRestore(seed=0, batch_size=batch)  # the shipped restorers
    with torch.no_grad():
        defence_rate = images_per_second(lambda: defence.forward(x), batch, repeats)

    def gradient() -> None:
        leaf = x.clone().requires_grad_(True)
        defence.forward(leaf)[0].sum().backward()

    gradient_rate = images_per_second(gradient, batch, max(1, repeats // 2))
    # time shares of one (C&R)^3 forward: 3 JPEG round trips and 3 generator passes
    jpeg_time, generator_time = 3 / jpeg_rate, 3 / generator_rate
    share = jpeg_time / (jpeg_time + generator_time)
    label = f"{device} {size}x{size} b{batch}"
    return [
        f"| {label} | ART JpegCompression q50 | {art_rate:,.0f} | 1.00x |",
        f"| {label} | exact JPEG op, q 20-60 | {jpeg_rate:,.0f} | {jpeg_rate / art_rate:.2f}x |",
        f"| {label} | one generator pass | {generator_rate:,.0f} | {generator_rate / art_rate:.2f}x |",
        f"| {label} | CompressRestore (C&R)^3 forward | {defence_rate:,.0f} | {defence_rate / art_rate:.2f}x |",
        f"| {label} | (C&R)^3 forward+backward (BPDA) | {gradient_rate:,.0f} | {gradient_rate / art_rate:.2f}x |",
        f"| {label} | share of forward time in JPEG | {100 * share:.1f}% | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one timed repetition")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| setting | method | images/s | vs ART |\n|---|---|---|---|")
    for device in devices:
        for size, batch in SETTINGS:
            for row in bench(device, size, batch, repeats):
                print(row, flush=True)


if __name__ == "__main__":
    main()
