"""Shared fixtures: small deterministic image batches and a scikit-image photo."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per xdist worker: several workers with several OpenMP threads each oversubscribe the cores
    # (measured: a restorer test 10x slower with 2 workers x 2 threads on 2 cores)
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture
def images() -> np.ndarray:
    """Four random 3x20x28 images in [0, 1] (sizes not multiples of 8 on purpose)."""
    return np.random.default_rng(0).random((4, 3, 20, 28)).astype(np.float32)


@pytest.fixture(scope="session")
def photo_224() -> np.ndarray:
    """scikit-image's astronaut, resized to 224x224, float64 (3, H, W) in [0, 1]."""
    from skimage import data, transform

    return transform.resize(data.astronaut(), (224, 224), anti_aliasing=True).transpose(2, 0, 1)


@pytest.fixture
def record_figure(request: pytest.FixtureRequest):
    """
    Record a measured figure (a PSNR, a flip rate) for the GPU report: appended as a JSON line to the file named by
    ``ART_PURIFIERS_FIGURES`` when it is set (``benchmarks/gpu_check.py`` sets it), ignored otherwise.
    """

    def record(name: str, value: float, note: str = "") -> None:
        path = os.environ.get("ART_PURIFIERS_FIGURES")
        if path:
            entry = {"test": request.node.name, "name": name, "value": float(value), "note": note}
            with open(path, "a") as handle:
                handle.write(json.dumps(entry) + "\n")

    return record
