"""Hypothesis fuzzing of every defence over shapes, dtypes, ranges and layouts.

Valid batches must be purified correctly; anything else must raise a clear ``ValueError``/``TypeError``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from art_purifiers.base import PurifierPreprocessor
from tests.defences import DEFENCES

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None)

clips = st.sampled_from([(0.0, 1.0), (0.0, 255.0), (-1.0, 1.0)])
bpdas = st.sampled_from(["straight_through", "identity", "surrogate"])


def check_purified(defence: PurifierPreprocessor, x: np.ndarray) -> None:
    before = x.copy()
    out, _ = defence(x)
    np.testing.assert_array_equal(x, before)
    low, high = defence.clip_values
    slack = 1e-3 * (high - low)
    assert out.shape == x.shape and out.dtype == x.dtype and np.isfinite(out).all()
    assert out.min() >= low - slack and out.max() <= high + slack
    grad = defence.estimate_gradient(x, np.ones_like(x))
    assert grad.shape == x.shape and np.isfinite(grad).all()
    tensor_out, _ = defence.forward(torch.from_numpy(x))
    assert tuple(tensor_out.shape) == x.shape and tensor_out.dtype == torch.from_numpy(x).dtype


@pytest.mark.parametrize("defence_class", DEFENCES)
@FUZZ
@given(
    n=st.integers(1, 3),
    channels=st.sampled_from([1, 3]),
    height=st.integers(1, 20),
    width=st.integers(1, 20),
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
    clip=clips,
    channels_first=st.booleans(),
    bpda=bpdas,
    seed=st.integers(0, 2**16),
)
def test_fuzz_valid_batches_are_purified(
    defence_class: type[PurifierPreprocessor],
    n: int,
    channels: int,
    height: int,
    width: int,
    dtype: type,
    clip: tuple[float, float],
    channels_first: bool,
    bpda: str,
    seed: int,
) -> None:
    shape = (n, channels, height, width) if channels_first else (n, height, width, channels)
    x = np.random.default_rng(seed).uniform(*clip, shape).astype(dtype)
    defence = defence_class(clip_values=clip, channels_first=channels_first, bpda=bpda, seed=seed, device_type="cpu")
    check_purified(defence, x)


@pytest.mark.parametrize("defence_class", DEFENCES)
@FUZZ
@given(
    shape=st.lists(st.integers(0, 10), min_size=0, max_size=5).map(tuple),
    dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.uint8, np.bool_, np.complex64]),
    clip=clips,
    fill=st.sampled_from(["in range", "nan", "inf", "above", "below", "x255"]),
    channels_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fuzz_anything_else_raises_clear_errors(
    defence_class: type[PurifierPreprocessor],
    shape: tuple[int, ...],
    dtype: type,
    clip: tuple[float, float],
    fill: str,
    channels_first: bool,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    low, high = clip
    x = rng.uniform(low, high, shape)
    if x.size and fill != "in range":
        special = {"nan": np.nan, "inf": -np.inf, "above": high + 0.5, "below": low - 0.5}
        if fill == "x255":
            x = x * 255 + 1
        else:
            x.reshape(-1)[rng.integers(x.size)] = special[fill]
    with np.errstate(invalid="ignore"):
        x = x.astype(dtype)
    defence = defence_class(clip_values=clip, channels_first=channels_first, seed=seed, device_type="cpu")
    before = x.copy()
    try:
        check_purified(defence, x)
    except (ValueError, TypeError) as error:
        assert len(str(error)) > 10  # a message that names the problem
    np.testing.assert_array_equal(x, before)
