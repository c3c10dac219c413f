"""The tensor ops against independent references (SciPy's DCT, PIL's tables and colour conversion, NumPy loops)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.fft
import torch
from PIL import Image

from art_purifiers.ops import (
    block_dct,
    block_idct,
    distortion_statistics,
    quantize_dct,
    remap,
    rgb_to_luma,
    rgb_to_ycbcr,
    round_with,
    sample_grid_distortion,
    scale_quantization_table,
    ycbcr_to_rgb,
)
from art_purifiers.ops.distort import GridDistortion, axis_source_indices
from tests.references import axis_map_numpy, quantize_dct_numpy


@pytest.mark.parametrize("size", [(8, 8), (16, 24), (13, 21), (1, 1)])
def test_block_dct_matches_scipy_per_block(size: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    coefficients = block_dct(x)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (0, -size[0] % 8), (0, -size[1] % 8)), mode="edge")
    for bi in range(coefficients.shape[2]):
        for bj in range(coefficients.shape[3]):
            block = padded[..., 8 * bi : 8 * bi + 8, 8 * bj : 8 * bj + 8]
            expected = scipy.fft.dctn(block, axes=(-2, -1), norm="ortho")
            np.testing.assert_allclose(coefficients[:, :, bi, bj].numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(block_idct(coefficients, size).numpy(), x.numpy(), atol=1e-12)


@pytest.mark.parametrize("size", [(32, 32), (20, 28), (7, 9)])
def test_quantize_dct_matches_numpy_reference(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((3, 3, *size))
    table = rng.integers(5, 60, (8, 8)).astype(np.float64)
    out = quantize_dct(torch.from_numpy(x), torch.from_numpy(table)).numpy()
    expected = np.stack([quantize_dct_numpy(image, table) for image in x])
    np.testing.assert_allclose(out, expected, atol=1e-9)


def test_quantize_dct_float32_differs_only_at_rounding_ties() -> None:
    # float32 arithmetic may flip a coefficient that sits within round-off of a .5 boundary; nothing else differs
    x = np.random.default_rng(2).random((4, 3, 32, 32))
    table = np.full((8, 8), 30.0)
    out = quantize_dct(torch.from_numpy(x).float(), torch.from_numpy(table)).double().numpy()
    expected = np.stack([quantize_dct_numpy(image, table) for image in x])
    wrong = np.abs(out - expected) > 1e-4
    assert wrong.mean() < 0.01
    assert np.abs(out - expected).max() < 0.5 * 30 / 255


def test_quantize_with_unit_table_is_nearly_identity_and_coarse_table_is_not() -> None:
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    fine = quantize_dct(x, torch.full((8, 8), 1e-3))
    coarse = quantize_dct(x, torch.full((8, 8), 100.0))
    assert (fine - x).abs().max() < 1e-4
    assert (coarse - x).abs().mean() > 0.05


@pytest.mark.parametrize("quality", [10, 25, 50, 75, 90, 95])
def test_quality_scaling_matches_libjpeg_tables(quality: int) -> None:
    def pil_luma_table(q: int) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, "JPEG", quality=q)
        buffer.seek(0)
        return np.array(Image.open(buffer).quantization[0], dtype=np.float64).reshape(8, 8)  # type: ignore[attr-defined]

    scaled = scale_quantization_table(torch.from_numpy(pil_luma_table(50)), quality).numpy()
    np.testing.assert_array_equal(scaled, pil_luma_table(quality))


def test_quality_scaling_rejects_bad_quality() -> None:
    for quality in (0, 101, 50.5, True):
        with pytest.raises(ValueError, match="quality"):
            scale_quantization_table(torch.ones(8, 8), quality)  # type: ignore[arg-type]


def test_rounding_backwards() -> None:
    x = torch.tensor([0.2, 0.7, -1.4, 2.5], requires_grad=True)
    for rounding, expected in (
        ("straight_through", torch.ones(4)),
        ("soft", 3 * (x.detach() - torch.round(x.detach())) ** 2),
        ("hard", torch.zeros(4)),
    ):
        x.grad = None
        y = round_with(x, rounding)  # type: ignore[arg-type]
        assert torch.equal(y, torch.round(x.detach()))
        y.sum().backward()
        assert x.grad is not None
        torch.testing.assert_close(x.grad, expected)
    with pytest.raises(ValueError, match="rounding"):
        round_with(x, "floor")  # type: ignore[arg-type]


def test_ycbcr_matches_pil() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("YCbCr"), dtype=np.float64)
    ours = rgb_to_ycbcr(torch.from_numpy(rgb.astype(np.float64)).permute(2, 0, 1), max_value=255.0)
    # PIL converts in fixed point and truncates: within one grey level of our rounded values
    assert np.abs(np.round(ours.permute(1, 2, 0).numpy()) - expected).max() <= 1.0
    back = ycbcr_to_rgb(rgb_to_ycbcr(torch.from_numpy(rgb / 255.0).permute(2, 0, 1)))
    np.testing.assert_allclose(back.permute(1, 2, 0).numpy(), rgb / 255.0, atol=1e-5)
    with pytest.raises(ValueError, match="3 channels"):
        rgb_to_ycbcr(torch.rand(1, 1, 4, 4))
    grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64)  # PIL's ITU-R 601-2 luma
    luma = rgb_to_luma(torch.from_numpy(rgb.astype(np.float64)).permute(2, 0, 1)[None] / 255)[0, 0].numpy() * 255
    assert luma.shape == grey.shape and np.abs(luma - grey).max() <= 1.0


@pytest.mark.parametrize("length,num_cells,delta", [(32, 10, 0.15), (224, 10, 0.3), (37, 4, 0.4), (50, 7, 0.0)])
def test_axis_map_matches_cell_by_cell_reference(length: int, num_cells: int, delta: float) -> None:
    rng = np.random.default_rng(length)
    for trial in range(20):
        stretch = 1 + rng.uniform(-delta, delta, num_cells)
        from_end = bool(trial % 2)
        ours = axis_source_indices(
            length,
            torch.tensor([length / num_cells]),
            torch.from_numpy(stretch).unsqueeze(0),
            torch.tensor([from_end]),
        )[0].numpy()
        np.testing.assert_array_equal(ours, axis_map_numpy(length, length / num_cells, stretch, from_end))


def test_axis_map_with_pixel_cells_matches_reference() -> None:
    rng = np.random.default_rng(5)
    for cell in (3, 8, 11):
        stretch = 1 + rng.uniform(-0.3, 0.3, 40)
        ours = axis_source_indices(
            60, torch.tensor([float(cell)]), torch.from_numpy(stretch)[None], torch.tensor([False])
        )
        np.testing.assert_array_equal(ours[0].numpy(), axis_map_numpy(60, float(cell), stretch, False))


def test_zero_distortion_is_identity_and_maps_stay_in_range() -> None:
    generator = torch.Generator().manual_seed(0)
    grid = sample_grid_distortion(5, 24, 40, 0.0, generator)
    assert torch.equal(grid.rows, torch.arange(24).expand(5, 24))
    assert torch.equal(grid.cols, torch.arange(40).expand(5, 40))
    grid = sample_grid_distortion(50, 24, 40, 0.3, generator, cell_size=(2, 9))
    assert grid.rows.min() >= 0 and grid.rows.max() < 24 and grid.cols.max() < 40
    # every corner is used: some maps start at the far end (their first index is not the smallest)
    assert bool((grid.rows[:, -1] == 23).any()) and bool((grid.rows[:, 0] == 0).any())


def test_remap_matches_numpy_indexing_and_has_exact_gradient() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2, 12, 17, dtype=torch.float64, requires_grad=True)
    grid = sample_grid_distortion(3, 12, 17, 0.3, generator, num_cells=4)
    out = remap(x, grid)
    for n in range(3):
        expected = x.detach().numpy()[n][:, grid.rows[n].numpy()][:, :, grid.cols[n].numpy()]
        np.testing.assert_array_equal(out[n].detach().numpy(), expected)
    assert torch.autograd.gradcheck(lambda t: remap(t, grid), (x,))
    with pytest.raises(ValueError, match="do not fit"):
        remap(x, GridDistortion(grid.rows[:2], grid.cols[:2]))


def test_distortion_statistics_count_pixels() -> None:
    rows = torch.tensor([[0, 0, 2, 3]])
    cols = torch.tensor([[1, 1, 2, 3, 4]])
    stats = distortion_statistics(GridDistortion(rows, cols))
    # read: rows {0, 2, 3} of 4, columns {1, 2, 3, 4} of 5; in place: rows 0, 2, 3 and columns 1, 2, 3, 4
    assert stats["dropped"].item() == pytest.approx(1 - (3 / 4) * (4 / 5))
    assert stats["moved"].item() == pytest.approx(1 - (3 / 4) * (4 / 5))


def test_floor_with_its_backward_variants() -> None:
    from art_purifiers.ops.quantize import floor_with

    x = torch.tensor([-1.75, -0.5, 0.0, 0.25, 2.9], requires_grad=True)
    for rounding, expected in (("straight_through", torch.ones(5)), ("soft", 3 * (x.detach() % 1 - 0.5) ** 2)):
        out = floor_with(x, rounding)
        assert torch.equal(out.detach(), torch.floor(x.detach()))
        (grad,) = torch.autograd.grad(out.sum(), x)
        torch.testing.assert_close(grad, expected)
    assert torch.equal(floor_with(x.detach(), "hard"), torch.floor(x.detach()))


def test_straight_through_clamps_apply_inside_their_block_only() -> None:
    from art_purifiers.ops.quantize import clamp, straight_through_clamps

    def gradient() -> float:
        x = torch.tensor([1.5, 0.5], requires_grad=True)
        clamp(x, 0.0, 1.0).sum().backward()
        assert x.grad is not None
        return float(x.grad[0])

    assert gradient() < 0.5  # exact clamp: no gradient past the bound
    with straight_through_clamps():
        assert gradient() > 0.5
        with straight_through_clamps(False):
            assert gradient() < 0.5
        assert gradient() > 0.5
    assert gradient() < 0.5
    assert torch.equal(clamp(torch.tensor([1.5, -2.0]), 0.0, 1.0), torch.tensor([1.0, 0.0]))
