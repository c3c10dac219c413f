"""Images/s of every JPEG backend against ART's JpegCompression, and how far nvJPEG lands from libjpeg.

Every ratio compares rates measured in the same run. Run from the repository root:

    python -m benchmarks.bench_jpeg_backends            # CPU backends (and CUDA when available)
    python -m benchmarks.bench_jpeg_backends --quick

Rows: ART's ``JpegCompression`` (quality 50, per image, PIL), then ``jpeg_round_trip`` with random qualities 20-60
(grouped per quality, as CompressRestore draws them) through each installed exact backend on the CPU; with CUDA,
the default backend on CUDA images (coded on the host from a pinned copy: the same bytes as the CPU) and the nvJPEG
option, plus nvJPEG's PSNR against libjpeg on scikit-image photos.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from art.defences.preprocessor import JpegCompression

from art_purifiers.demo import load_photos
from art_purifiers.ops.codec import EXACT_BACKENDS, available_backends, default_backend
from art_purifiers.ops.jpeg import jpeg_round_trip
from benchmarks.bench_dct_defences import images_per_second, print_table, repeats_from_command_line

SETTINGS = ((32, 512), (224, 64))  # (image size, batch size)


def photo_batch(size: int, batch: int) -> torch.Tensor:
    """The demo's scikit-image photos resized to ``size``, repeated to ``batch`` images, float32 NCHW in [0, 1]."""
    photos = torch.from_numpy(load_photos(size))
    return photos[torch.arange(batch) % len(photos)].contiguous()


def bench_setting(size: int, batch: int, repeats: int) -> list[str]:
    """Markdown rows for one setting: ART, each CPU backend, and the CUDA paths when there is a GPU."""
    x = photo_batch(size, batch)
    qualities = torch.randint(20, 61, (batch,), generator=torch.Generator().manual_seed(0))
    art = JpegCompression(clip_values=(0, 1), quality=50, channels_first=True)
    x_numpy = x.numpy()
    art_rate = images_per_second(lambda: art(x_numpy), batch, repeats)
    label = f"{size}x{size} b{batch}"
    rows = [f"| {label} | cpu | ART JpegCompression q50 | {art_rate:,.0f} | 1.00x |"]
    backends = [name for name in EXACT_BACKENDS if name in available_backends()]
    for name in backends:
        rate = images_per_second(partial(jpeg_round_trip, x, qualities, backend=name), batch, repeats)
        tag = " (default)" if name == default_backend() else ""
        rows.append(f"| {label} | cpu | {name}{tag}, q 20-60 | {rate:,.0f} | {rate / art_rate:.2f}x |")
    if torch.cuda.is_available():
        on_gpu = x.cuda()
        for name in ("auto", "nvjpeg"):
            rate = images_per_second(partial(jpeg_round_trip, on_gpu, qualities, backend=name), batch, repeats)
            what = "exact, coded on the host" if name == "auto" else "nvJPEG, inexact"
            rows.append(f"| {label} | cuda | {name} ({what}), q 20-60 | {rate:,.0f} | {rate / art_rate:.2f}x |")
    return rows


def nvjpeg_psnr(qualities: tuple[int, ...] = (20, 50, 90)) -> list[str]:
    """PSNR of nvJPEG's round trip against libjpeg's on the 224x224 photos, colour and grey."""
    rows = []
    x = photo_batch(224, 4)
    for channels in (3, 1):
        images = x[:, :channels]
        for quality in qualities:
            exact = jpeg_round_trip(images, quality)
            fast = jpeg_round_trip(images.cuda(), quality, backend="nvjpeg").cpu()
            mse = float(((exact.double() - fast.double()) ** 2).mean())
            worst = 255 * float((exact - fast).abs().max())
            rows.append(f"| {channels} | {quality} | {10 * np.log10(1 / mse):.2f} | {worst:.0f} |")
    return rows


def main() -> None:
    repeats = repeats_from_command_line(__doc__ or "")
    print_table(
        "| setting | device | method | images/s | vs ART |\n|---|---|---|---|---|", bench_setting, SETTINGS, repeats
    )
    if torch.cuda.is_available():
        print(
            "\n| channels | quality | nvJPEG vs libjpeg PSNR (dB) | max difference (grey levels) |\n|---|---|---|---|"
        )
        print("\n".join(nvjpeg_psnr()))


if __name__ == "__main__":
    main()
