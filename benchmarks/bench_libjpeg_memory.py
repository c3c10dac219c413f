"""Peak working memory of the tensor JPEG codec on the CPU: eager and compiled, two batch sizes.

Run from the repository root (Linux: reads the peak resident set from ``/proc/self/status``):

    python -m benchmarks.bench_libjpeg_memory

For each mode and batch the round trip runs once to warm up (compilation included), the memory it freed is given
back to the system (glibc's ``malloc_trim``), the kernel's peak-resident counter is reset (``/proc/self/clear_refs``)
and the round trip runs again: the rise of the peak over the memory resident before the call. Less the output
(uint8, one byte per input pixel) it is the codec's working memory, which should not grow with the batch (the codec
works chunk by chunk); it is printed per pixel of a chunk (``libjpeg.CHUNK_PIXELS`` eager, ``COMPILED_CHUNK_PIXELS``
compiled).
"""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import torch

from art_purifiers.ops import libjpeg

SIZE = 224
BATCHES = (64, 256)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_extra_bytes(images: torch.Tensor, qualities: torch.Tensor, compiled: bool) -> int:
    """The rise of the peak resident memory over the resident memory before one round trip (warmed up first)."""
    libjpeg.round_trip(images, qualities, compiled=compiled)
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed memory would otherwise stay resident and hide the next peak
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current resident set
    before = _status_kib("VmRSS")
    out = libjpeg.round_trip(images, qualities, compiled=compiled)
    peak = _status_kib("VmHWM")
    del out
    return (peak - before) * 1024


def main() -> None:
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {SIZE}x{SIZE} colour")
    print("\n| mode | batch | input pixels | chunk pixels | peak extra memory | of it the output | working memory "
          "| working memory per chunk pixel |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    for compiled in (False, True):
        chunk = libjpeg.COMPILED_CHUNK_PIXELS if compiled else libjpeg.CHUNK_PIXELS
        for batch in BATCHES:
            images = torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
            qualities = torch.randint(20, 61, (batch,), generator=generator)
            extra, output = peak_extra_bytes(images, qualities, compiled), images.numel()  # uint8: 1 byte a pixel
            per_chunk = min(output, max(1, chunk // images[0].numel()) * images[0].numel())
            print(f"| {'compiled' if compiled else 'eager'} | {batch} | {output:,} | {per_chunk:,} | "
                  f"{extra / 2**20:,.0f} MiB | {output / 2**20:,.0f} MiB | {(extra - output) / 2**20:,.0f} MiB | "
                  f"{(extra - output) / per_chunk:.0f} B |")  # fmt: skip


if __name__ == "__main__":
    main()
