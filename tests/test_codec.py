"""The JPEG codec backends against PIL, backend selection, and the group-run-scatter helper."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from art_purifiers.ops.codec import EXACT_BACKENDS, available_backends, default_backend, resolve_backend
from art_purifiers.ops.groups import group_indices, map_groups
from art_purifiers.ops.jpeg import jpeg_round_trip
from art_purifiers.ops.libjpeg import _levels, from_pixels
from tests.references import pil_round_trip

QUALITIES = [10, 25, 40, 50, 60, 75, 90, 95]
SIZES = [(8, 8), (13, 21), (32, 32), (57, 40), (224, 224)]
#: the compiled tensor codec compiles per shape (about 20 s each): its own tests are in test_libjpeg and below
INSTALLED_EXACT = [name for name in EXACT_BACKENDS if name in available_backends() and name != "libjpeg-compiled"]


def photo_like(count: int, channels: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth ramps plus noise: like photos and like adversarial perturbations, float32 NCHW in [0, 1]."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size[1])[None, None, None, :] * rng.random((count, channels, 1, 1))
    return np.clip(ramp + 0.1 * rng.standard_normal((count, channels, *size)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("backend", INSTALLED_EXACT + ["auto"])
def test_exact_backends_are_bit_exact_with_pil(backend: str, size: tuple[int, int], channels: int) -> None:
    images = photo_like(len(QUALITIES), channels, size, seed=size[0] * channels)
    out = jpeg_round_trip(torch.from_numpy(images), torch.tensor(QUALITIES), backend=backend).numpy()
    for image, result, quality in zip(images, out, QUALITIES):
        np.testing.assert_array_equal(result, pil_round_trip(image, quality), err_msg=f"quality {quality}")


def test_the_compiled_tensor_codec_backend_is_bit_exact_with_pil() -> None:
    images = photo_like(len(QUALITIES), 3, (13, 21), seed=5)
    out = jpeg_round_trip(torch.from_numpy(images), torch.tensor(QUALITIES), backend="libjpeg-compiled").numpy()
    for image, result, quality in zip(images, out, QUALITIES):
        np.testing.assert_array_equal(result, pil_round_trip(image, quality), err_msg=f"quality {quality}")


def test_torchcodec_is_the_default_when_installed() -> None:
    pytest.importorskip("torchcodec.encoders", reason="TorchCodec >= 0.16 is not installed")
    assert default_backend() == "torchcodec"
    assert resolve_backend("auto", torch.device("cpu")) == "torchcodec"


def test_threads_and_chunking_do_not_change_the_output() -> None:
    images = torch.from_numpy(photo_like(40, 3, (16, 16), seed=1))
    qualities = torch.randint(20, 61, (40,), generator=torch.Generator().manual_seed(0))
    single = jpeg_round_trip(images, qualities, workers=1)
    torch.testing.assert_close(jpeg_round_trip(images, qualities, workers=3), single, rtol=0, atol=0)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        cast = images.to(dtype)
        out = jpeg_round_trip(cast, qualities)
        assert out.dtype == dtype
        # the same 8-bit pixels as the float32 round trip of the cast images
        expected = jpeg_round_trip(cast.float(), qualities)
        torch.testing.assert_close((out.double() * 255).round(), (expected.double() * 255).round(), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_decoding_table_of_cuda_equals_ieee_division(dtype: type) -> None:
    # CUDA looks pixel values up in this table (its own division can differ in the last bit); the CPU divides
    torch_dtype = getattr(torch, np.dtype(dtype).name)
    table = _levels(torch_dtype, torch.device("cpu")).numpy()
    np.testing.assert_array_equal(table, np.arange(256, dtype=dtype) / dtype(255))
    np.testing.assert_array_equal(from_pixels(torch.arange(256, dtype=torch.uint8), torch_dtype).numpy(), table)


def test_backend_selection_errors() -> None:
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="must be one of"):
        jpeg_round_trip(x, 50, backend="mozjpeg")
    with pytest.raises(ValueError, match="CUDA images only"):
        jpeg_round_trip(x, 50, backend="nvjpeg")
    assert set(INSTALLED_EXACT) >= {"pil"} and default_backend() in INSTALLED_EXACT


SPY_ON_WARNING_FILTERS = """
import sys, warnings
callers = []
def spy(original):
    def wrapper(*args, **kwargs):
        callers.append(sys._getframe(1).f_globals.get("__name__", ""))
        return original(*args, **kwargs)
    return wrapper
warnings.filterwarnings, warnings.simplefilter = spy(warnings.filterwarnings), spy(warnings.simplefilter)
import torch
import art_purifiers
from art_purifiers.ops.jpeg import jpeg_round_trip
from art_purifiers.ops.libjpeg import _levels, from_pixels
for backend in ("auto", "torchvision", "pil"):
    jpeg_round_trip(torch.rand(2, 3, 8, 8), 50, backend=backend)
ours = [name for name in callers if name.startswith("art_purifiers")]
assert not ours, ours
"""


def test_the_package_sets_no_warning_filters() -> None:
    # torchvision's deprecation warning is a DeprecationWarning, hidden by Python's default filters: nothing to hide
    result = subprocess.run([sys.executable, "-c", SPY_ON_WARNING_FILTERS], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_group_indices() -> None:
    groups = group_indices([5, 2, 5, 9, 2, 5])
    assert [key for key, _ in groups] == [2, 5, 9]
    assert [rows.tolist() for _, rows in groups] == [[1, 4], [0, 2, 5], [3]]


@pytest.mark.parametrize("split", [1, 2, 5])
def test_map_groups_restores_the_order_and_carries_gradients(split: int) -> None:
    keys = torch.tensor([3, 1, 3, 2, 1, 1, 3, 2, 2, 3])
    x = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    calls: list[int] = []

    def scale_by_key(rows: torch.Tensor, key: int) -> torch.Tensor:
        calls.append(rows.shape[0])
        return rows * key

    out = map_groups(scale_by_key, x, keys, split=split)
    torch.testing.assert_close(out, x * keys[:, None].double())
    assert sum(calls) == 10 and max(calls) <= 4
    out.sum().backward()
    torch.testing.assert_close(x.grad, keys[:, None].double().expand(10, 4))
    with pytest.raises(ValueError, match="one key per row"):
        map_groups(scale_by_key, x, keys[:3])


def test_map_groups_in_a_pool_stacks_per_row_results_in_the_calling_thread() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    keys = torch.tensor([2, 1, 2, 1, 1, 2])
    x = torch.arange(12.0).reshape(6, 2)
    threads: set[str] = set()

    def rows_times_key(rows: torch.Tensor, key: int) -> list[torch.Tensor]:
        threads.add(threading.current_thread().name)
        return [row * key for row in rows]  # per-row results: map_groups stacks them

    with ThreadPoolExecutor(3) as pool:
        out = map_groups(rows_times_key, x, keys, split=3, pool=pool)
    torch.testing.assert_close(out, x * keys[:, None].float())
    assert threading.current_thread().name not in threads
