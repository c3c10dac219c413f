"""Images/s of the NRP purifiers (Naseer et al. 2020): the full and light generators at 32x32 and 224x224.

Run from the repository root:

    python -m benchmarks.bench_nrp            # CPU (and CUDA when available)
    python -m benchmarks.bench_nrp --quick

(The GPU check, ``python -m benchmarks.gpu_check``, takes the CUDA rows alone, at the larger ``CUDA_SETTINGS``.)

Rows per setting and device: the authors' full residual-in-residual generator (23 blocks, 64 features, 16.5 M
parameters: the baseline of the ratios), their light residual generator (23 blocks, 64 features, 1.7 M), and our CPU
preset's light generator (8 blocks, 32 features), each as a network forward, then the whole
``NeuralRepresentationPurifier`` forward and forward+backward (what an attack pays per step) with the CPU preset's
generator. Timing does not depend on the weights, so the networks are freshly initialised. Images are scikit-image
photos resized to the setting's size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from art_purifiers import NeuralRepresentationPurifier
from art_purifiers.nets.nrp import NRPGenerator, NRPResidualGenerator
from benchmarks.bench_dct_defences import images_per_second, print_table, repeats_from_command_line
from benchmarks.bench_jpeg_backends import photo_batch
from benchmarks.bench_super_resolution import rate

SETTINGS = ((32, 64), (224, 1))  # (image size, batch size): the full generator takes seconds per 224x224 image on a CPU
CUDA_SETTINGS = ((32, 256), (224, 16))  # batches that keep a GPU busy
HEADER = "| size | batch | device | purifier | images/s | vs full generator |\n|---|---|---|---|---|---|"


def networks() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "full generator (23 RRDB, 64 features, 16.5 M)": NRPGenerator(),
        "light generator (23 blocks, 64 features, 1.7 M)": NRPResidualGenerator(),
        "CPU-preset light generator (8 blocks, 32 features)": NRPResidualGenerator(features=32, blocks=8),
    }


def rows(size: int, batch: int, repeats: int, devices: tuple[str, ...] | None = None) -> list[str]:
    """The table rows of one setting on ``devices`` (default: the CPU, and CUDA when available)."""
    lines = []
    for device in devices or ("cpu", *(["cuda"] if torch.cuda.is_available() else [])):
        rates = device_rates(photo_batch(size, batch).to(device), repeats)
        baseline = next(iter(rates.values()))
        prefix = f"| {size}x{size} | {batch} | {device} |"
        lines += [f"{prefix} {name} | {rate(value)} | {value / baseline:.1f}x |" for name, value in rates.items()]
    return lines


def cuda_rows(size: int, batch: int, repeats: int) -> list[str]:
    return rows(size, batch, repeats, ("cuda",))


def device_rates(x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Images/s of each network's forward, then of the defence around the last (the CPU preset's) one."""
    rates = {}
    for name, network in networks().items():
        rates[name] = forward_rate(network.to(x.device).eval(), x, repeats)
    defence = NeuralRepresentationPurifier(network=network, batch_size=len(x))
    rates["NeuralRepresentationPurifier forward (CPU preset)"] = forward_rate(lambda images: defence.forward(images),
                                                                              x, repeats)  # fmt: skip

    def gradient() -> None:
        leaf = x.clone().requires_grad_(True)
        defence.forward(leaf)[0].sum().backward()

    rates["NeuralRepresentationPurifier forward+backward (CPU preset)"] = images_per_second(gradient, len(x), repeats)
    return rates


def forward_rate(run: Callable[[torch.Tensor], object], x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        return images_per_second(lambda: run(x), len(x), repeats)


def main() -> None:
    repeats = repeats_from_command_line(__doc__ or "")
    print_table(HEADER, rows, SETTINGS, repeats)
    if torch.cuda.is_available():
        print_table(HEADER, cuda_rows, CUDA_SETTINGS, repeats)


if __name__ == "__main__":
    main()
