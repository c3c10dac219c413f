"""Images/s of every JPEG backend against ART's JpegCompression, and how far nvJPEG lands from libjpeg.

Every ratio compares rates measured in the same run. Run from the repository root:

    python -m benchmarks.bench_jpeg_backends            # CPU backends (and CUDA when available)
    python -m benchmarks.bench_jpeg_backends --quick

Rows: ART's ``JpegCompression`` (quality 50, per image, PIL), then ``jpeg_round_trip`` with random qualities 20-60
(as CompressRestore draws them) through each installed exact backend on the CPU, among them the tensor codec
eager (``"libjpeg"``) and compiled (``"libjpeg-compiled"``, its compilation time on first use in brackets, and its
rate over TorchCodec's); with CUDA,
the tensor codec on CUDA images (the default there) eager and compiled, TorchCodec on the host from CUDA images, and
the nvJPEG option at 224x224 b256 and 32x32 b1024, plus nvJPEG's PSNR against libjpeg on scikit-image photos.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import torch
from art.defences.preprocessor import JpegCompression

from art_purifiers.demo import load_photos
from art_purifiers.ops.codec import EXACT_BACKENDS, available_backends, default_backend
from art_purifiers.ops.jpeg import jpeg_round_trip
from benchmarks.bench_dct_defences import images_per_second, print_table, repeats_from_command_line

SETTINGS = ((32, 512), (224, 64))  # (image size, batch size) on the CPU
CUDA_SETTINGS = ((224, 256), (32, 1024))


def photo_batch(size: int, batch: int) -> torch.Tensor:
    """The demo's scikit-image photos resized to ``size``, repeated to ``batch`` images, float32 NCHW in [0, 1]."""
    photos = torch.from_numpy(load_photos(size))
    return photos[torch.arange(batch) % len(photos)].contiguous()


def bench_setting(size: int, batch: int, repeats: int) -> list[str]:
    """Markdown rows for one CPU setting: ART, each exact CPU backend, the compiled tensor codec against TorchCodec."""
    x = photo_batch(size, batch)
    qualities = torch.randint(20, 61, (batch,), generator=torch.Generator().manual_seed(0))
    art = JpegCompression(clip_values=(0, 1), quality=50, channels_first=True)
    x_numpy = x.numpy()
    art_rate = images_per_second(lambda: art(x_numpy), batch, repeats)
    label = f"{size}x{size} b{batch}"
    rows = [f"| {label} | cpu | ART JpegCompression q50 | {art_rate:,.0f} | 1.00x |"]
    rates = {}
    for name in [name for name in EXACT_BACKENDS if name in available_backends()]:
        if name == "libjpeg-compiled":
            rates[name], seconds = compiled_rate(x, qualities, repeats)
            tag = f" [{seconds:.0f} s compiling]"
        else:
            rates[name] = images_per_second(partial(jpeg_round_trip, x, qualities, backend=name), batch, repeats)
            tag = " (default)" if name == default_backend() else " (eager)" if name == "libjpeg" else ""
        rows.append(f"| {label} | cpu | {name}{tag}, q 20-60 | {rates[name]:,.0f} | {rates[name] / art_rate:.2f}x |")
    if "torchcodec" in rates:
        ratio = rates["libjpeg-compiled"] / rates["torchcodec"]
        rows.append(f"| {label} | cpu | libjpeg-compiled / torchcodec | | {ratio:.2f}x |")
    return rows


def compiled_rate(x: torch.Tensor, qualities: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Images/s of the compiled tensor codec on ``x`` (8-bit conversion included), and its first call's seconds."""
    run = partial(jpeg_round_trip, x, qualities, backend="libjpeg-compiled")
    started = time.perf_counter()
    run()
    if x.is_cuda:
        torch.cuda.synchronize()
    return images_per_second(run, len(x), repeats), time.perf_counter() - started


def bench_cuda_setting(size: int, batch: int, repeats: int) -> list[str]:
    """Markdown rows for one CUDA setting: the tensor codec eager and compiled, TorchCodec on the host, nvJPEG."""
    x = photo_batch(size, batch).cuda()
    qualities = torch.randint(20, 61, (batch,), generator=torch.Generator().manual_seed(0))
    label = f"{size}x{size} b{batch}"
    host = images_per_second(partial(jpeg_round_trip, x, qualities, backend=default_backend()), batch, repeats)
    rows = [f"| {label} | cuda | {default_backend()} (on the host), q 20-60 | {host:,.0f} | 1.00x |"]
    for name, what in (("libjpeg", "tensor codec, eager (default)"), ("nvjpeg", "nvJPEG, inexact")):
        rate = images_per_second(partial(jpeg_round_trip, x, qualities, backend=name), batch, repeats)
        rows.append(f"| {label} | cuda | {what}, q 20-60 | {rate:,.0f} | {rate / host:.2f}x |")
    rate, seconds = compiled_rate(x, qualities, repeats)
    rows.append(f"| {label} | cuda | tensor codec, compiled [{seconds:.0f} s] | {rate:,.0f} | {rate / host:.2f}x |")
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
        print_table(
            "\n| setting | device | method | images/s | vs the host codec |\n|---|---|---|---|---|",
            bench_cuda_setting,
            CUDA_SETTINGS,
            repeats,
        )
        print(
            "\n| channels | quality | nvJPEG vs libjpeg PSNR (dB) | max difference (grey levels) |\n|---|---|---|---|"
        )
        print("\n".join(nvjpeg_psnr()))


if __name__ == "__main__":
    main()
