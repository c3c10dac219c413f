"""Images/s of NNFavoredJpeg and QuantizeDistort against ART's JpegCompression and a per-image NumPy version.

Every ratio compares rates measured in the same run on the same random batch. Run from the repository root:

    python -m benchmarks.bench_dct_defences            # CPU (and CUDA when available)
    python -m benchmarks.bench_dct_defences --quick    # fewer repetitions

Baselines: ART's ``JpegCompression`` (PIL/libjpeg per image, quality 50, output truncated to 8 bits) and a
straightforward NumPy/SciPy version (per image, blocks vectorized, ``tests/references.py``).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from art.defences.preprocessor import JpegCompression

from art_purifiers import NNFavoredJpeg, QuantizeDistort
from art_purifiers.defences import FEATURE_DISTILLATION_TABLE
from art_purifiers.ops import sample_grid_distortion
from tests.references import quantize_dct_numpy_vectorized

SETTINGS = ((32, 512), (224, 64))  # (image size, batch size)


def images_per_second(run: Callable[[], object], batch: int, repeats: int) -> float:
    """Best of ``repeats`` timed runs after one warm-up."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return batch / best


def numpy_quantize_distort(x: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Per-image NumPy baseline of QuantizeDistort: quantization, then the index-map remap with NumPy indexing."""
    out = np.empty_like(x)
    for i, image in enumerate(x):
        grid = sample_grid_distortion(1, x.shape[2], x.shape[3], 0.15, generator)
        quantized = np.clip(quantize_dct_numpy_vectorized(image.astype(np.float64), FEATURE_DISTILLATION_TABLE), 0, 1)
        out[i] = quantized[:, grid.rows[0].numpy()][:, :, grid.cols[0].numpy()]
    return out


def bench_setting(size: int, batch: int, repeats: int) -> list[str]:
    """Markdown rows for one (size, batch) setting: the baselines and each defence on each device."""
    x = np.random.default_rng(0).random((batch, 3, size, size)).astype(np.float32)
    art = JpegCompression(clip_values=(0, 1), quality=50, channels_first=True)
    art_rate = images_per_second(lambda: art(x), batch, repeats)
    generator = torch.Generator().manual_seed(0)
    nn_table = np.full((8, 8), 50.0)
    numpy_rates = {
        "NNFavoredJpeg": images_per_second(
            lambda: [quantize_dct_numpy_vectorized(image.astype(np.float64), nn_table) for image in x],
            batch,
            max(1, repeats // 2),
        ),
        "QuantizeDistort": images_per_second(lambda: numpy_quantize_distort(x, generator), batch, max(1, repeats // 2)),
    }
    rows = [f"| {size} | {batch} | cpu | ART JpegCompression (q50) | {art_rate:,.0f} | 1.00x | - |"]
    inputs = {"cpu": x}
    if torch.cuda.is_available():
        inputs["cuda"] = torch.from_numpy(x).cuda()
    for device, data in inputs.items():
        for defence in (NNFavoredJpeg(device_type="cpu"), QuantizeDistort(seed=0, device_type="cpu")):
            name = type(defence).__name__
            run = defence if isinstance(data, np.ndarray) else defence.forward
            rate = images_per_second(lambda: run(data), batch, repeats)  # noqa: B023 (called at once)
            rows.append(
                f"| {size} | {batch} | {device} | {name} | {rate:,.0f} | {rate / art_rate:.2f}x "
                f"| {rate / numpy_rates[name]:.1f}x |"
            )
    return rows


def repeats_from_command_line(description: str) -> int:
    """The shared command line of the benchmarks: ``--quick`` times 2 repetitions instead of 5."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    return 2 if parser.parse_args().quick else 5


def print_table(header: str, rows_of: Callable[[int, int, int], list[str]], settings: tuple, repeats: int) -> None:
    """The machine line, then a Markdown table of ``rows_of(size, batch, repeats)`` for each setting."""
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(header)
    for size, batch in settings:
        for row in rows_of(size, batch, repeats):
            print(row, flush=True)


def main() -> None:
    repeats = repeats_from_command_line(__doc__ or "")
    header = "| size | batch | device | method | images/s | vs ART JpegCompression | vs NumPy per image |"
    print_table(header + "\n|---|---|---|---|---|---|---|", bench_setting, SETTINGS, repeats)


if __name__ == "__main__":
    main()
