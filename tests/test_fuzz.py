"""Hypothesis fuzzing of every defence over shapes, dtypes, ranges and layouts: a correct output or a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from art_purifiers import NNFavoredJpeg, QuantizeDistort
from art_purifiers.base import PurifierPreprocessor

DEFENCES = [NNFavoredJpeg, QuantizeDistort]

any_shapes = st.lists(st.integers(0, 12), min_size=1, max_size=5).map(tuple)
image_shapes = st.tuples(st.integers(1, 3), st.sampled_from([1, 3]), st.integers(1, 20), st.integers(1, 20)).flatmap(
    lambda s: st.sampled_from([s, (s[0], s[2], s[3], s[1])])
)
shapes = st.one_of(image_shapes, image_shapes, any_shapes)
dtypes = st.sampled_from([np.float16, np.float32, np.float64, np.float32, np.int32, np.uint8, np.bool_, np.complex64])
ranges = st.sampled_from([(0.0, 1.0), (0.0, 255.0), (-1.0, 1.0)])
fills = st.sampled_from(["uniform", "nan", "inf", "above", "below", "large"])


OUTCOMES = {"purified": 0, "rejected": 0}


def make_input(shape: tuple[int, ...], dtype: type, value_range: tuple[float, float], fill: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low, high = value_range
    x = rng.uniform(low, high, shape)
    if x.size:
        flat = x.reshape(-1)
        if fill == "nan":
            flat[rng.integers(x.size)] = np.nan
        elif fill == "inf":
            flat[rng.integers(x.size)] = -np.inf
        elif fill == "above":
            flat[rng.integers(x.size)] = high + 0.5
        elif fill == "below":
            flat[rng.integers(x.size)] = low - 0.5
        elif fill == "large":
            x = x * 255
    with np.errstate(invalid="ignore"):
        return x.astype(dtype)


@pytest.mark.parametrize("defence_class", DEFENCES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=shapes,
    dtype=dtypes,
    value_range=ranges,
    clip=ranges,
    fill=fills,
    channels_first=st.booleans(),
    bpda=st.sampled_from(["straight_through", "identity", "surrogate"]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_only_clear_errors(
    defence_class: type[PurifierPreprocessor],
    shape: tuple[int, ...],
    dtype: type,
    value_range: tuple[float, float],
    clip: tuple[float, float],
    fill: str,
    channels_first: bool,
    bpda: str,
    seed: int,
) -> None:
    x = make_input(shape, dtype, value_range, fill, seed)
    defence = defence_class(clip_values=clip, channels_first=channels_first, bpda=bpda, seed=seed, device_type="cpu")
    before = x.copy()
    try:
        out, _ = defence(x)
    except (ValueError, TypeError) as error:
        assert str(error)  # a message that names the problem
        OUTCOMES["rejected"] += 1
        return
    finally:
        np.testing.assert_array_equal(x, before)
    assert out.shape == x.shape and out.dtype == x.dtype and np.isfinite(out).all()
    assert out.min() >= clip[0] - 1e-3 * (clip[1] - clip[0]) and out.max() <= clip[1] + 1e-3 * (clip[1] - clip[0])
    grad = defence.estimate_gradient(x, np.ones_like(x))
    assert grad.shape == x.shape and np.isfinite(grad).all()
    tensor_out, _ = defence.forward(torch.from_numpy(x))
    assert tuple(tensor_out.shape) == x.shape
    OUTCOMES["purified"] += 1


def test_fuzzing_reached_both_outcomes() -> None:
    # runs after the fuzz tests (file order): both the valid path and the error path must have been exercised
    assert OUTCOMES["purified"] >= 10 and OUTCOMES["rejected"] >= 10, OUTCOMES
