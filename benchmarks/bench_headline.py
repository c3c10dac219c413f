"""Images/s of the headline CPU operations, printed as one JSON line, for before/after comparisons of two commits.

Uses only the public API (and ``images_per_second`` of ``bench_dct_defences``, which older checkouts have too), so
the same file times an older checkout. Interleave the two trees, since a shared 2-core machine drifts by tens of
percent between runs:

    git worktree add ../before <commit>
    for round in 1 2; do
        PYTHONPATH=../before python benchmarks/bench_headline.py
        PYTHONPATH=. python benchmarks/bench_headline.py
    done

Measures (best of 7, CPU): ``NNFavoredJpeg`` and ``QuantizeDistort`` through ``__call__`` at 32x32 (batch 512) and
224x224 (batch 64); the exact JPEG op with random qualities 20-60 at 32x32 (batch 256) and 224x224 (batch 16);
``CompressRestore()`` forward at 32x32 (batch 256, best of 2).
"""

from __future__ import annotations

import json
import warnings
from functools import partial

import numpy as np
import torch

from art_purifiers import CompressRestore, NNFavoredJpeg, QuantizeDistort
from art_purifiers.ops.jpeg import jpeg_round_trip
from benchmarks.bench_dct_defences import images_per_second


def measure() -> dict[str, float]:
    """The headline rates, by name."""
    rates: dict[str, float] = {}
    for size, batch in ((32, 512), (224, 64)):
        x = np.random.default_rng(0).random((batch, 3, size, size)).astype(np.float32)
        for defence in (NNFavoredJpeg(device_type="cpu"), QuantizeDistort(seed=0, device_type="cpu")):
            rates[f"{type(defence).__name__} {size}"] = images_per_second(lambda: defence(x), batch, 7)  # noqa: B023
    qualities = torch.randint(20, 61, (256,), generator=torch.Generator().manual_seed(0))
    for size, batch in ((32, 256), (224, 16)):
        images = torch.from_numpy(np.random.default_rng(0).random((batch, 3, size, size)).astype(np.float32))
        rates[f"jpeg op {size}"] = images_per_second(partial(jpeg_round_trip, images, qualities[:batch]), batch, 7)
    x32 = torch.from_numpy(np.random.default_rng(0).random((256, 3, 32, 32)).astype(np.float32))
    defence = CompressRestore(seed=0, device_type="cpu")
    with torch.no_grad():
        rates["CompressRestore 32"] = images_per_second(lambda: defence.forward(x32), 256, 2)
    return rates


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        print(json.dumps({name: round(rate, 1) for name, rate in measure().items()}))
