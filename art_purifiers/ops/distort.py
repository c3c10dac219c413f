"""Random grid distortion (Qiu et al. 2021, Algorithm 3) as separable nearest-pixel index maps.

Each axis is split into cells of ``d`` pixels. Starting from a chosen corner, cell ``m`` is drawn to the output with
length ``d * (1 + delta_m)``, ``delta_m ~ U(-delta, delta)``: shrunken cells drop rows or columns, grown cells push
the rest of the image past the border where it is cropped, and when the cells add up to less than the image the
output is reflect-padded back to the input size. Rows and columns are drawn independently (separable maps), and the
remap is a gather, so its exact gradient exists (a scatter-add onto the sampled pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GridDistortion:
    """
    Per-image source indices: output pixel ``(y, x)`` of image ``n`` reads input pixel ``(rows[n, y], cols[n, x])``.

    :param rows: Long tensor ``(N, H)``.
    :param cols: Long tensor ``(N, W)``.
    """

    rows: torch.Tensor
    cols: torch.Tensor

    def __getitem__(self, index: slice) -> GridDistortion:
        return GridDistortion(self.rows[index], self.cols[index])

    def to(self, device: torch.device | str) -> GridDistortion:
        """Move both maps to ``device``."""
        return GridDistortion(self.rows.to(device), self.cols.to(device))


def axis_source_indices(
    length: int, cell_size: torch.Tensor, stretch: torch.Tensor, from_end: torch.Tensor
) -> torch.Tensor:
    """
    Source index of every output position along one axis.

    :param length: Axis length ``L``.
    :param cell_size: Float tensor ``(N,)``: cell length ``d`` in pixels for each image.
    :param stretch: Float tensor ``(N, M)`` of factors ``1 + delta_m`` with ``M >= ceil(L / min(d))``.
    :param from_end: Bool tensor ``(N,)``: start the grid at the far end of the axis (the random start corner).
    :return: Long tensor ``(N, L)`` with values in ``[0, L)``.
    """
    n, num_cells = stretch.shape
    dtype = torch.float64
    cell = cell_size.to(dtype).unsqueeze(1)
    stretch = stretch.to(dtype)
    # output boundaries of the cells: 0, d s_0, d (s_0 + s_1), ...
    ends = cell * torch.cumsum(stretch, dim=1)
    starts = ends - cell * stretch
    centres = torch.arange(length, dtype=dtype).unsqueeze(0).expand(n, length) + 0.5
    which = torch.searchsorted(ends.contiguous(), centres.contiguous(), right=True).clamp(max=num_cells - 1)
    offset = (centres - starts.gather(1, which)) / stretch.gather(1, which)
    source = torch.floor(which.to(dtype) * cell + offset).long()
    # cells that ended before the border leave a gap: reflect the valid output prefix into it
    valid = (source < length).sum(dim=1, keepdim=True).clamp(min=1)
    position = torch.arange(length).unsqueeze(0).expand(n, length)
    reflected = (2 * (valid - 1) - position).clamp(min=0)
    reflected = torch.minimum(reflected, valid - 1)
    source = torch.where(position < valid, source, source.gather(1, reflected)).clamp(0, length - 1)
    mirrored = (length - 1) - source.flip(1)
    return torch.where(from_end.unsqueeze(1), mirrored, source)


def sample_grid_distortion(
    num_images: int,
    height: int,
    width: int,
    distortion_limit: float,
    generator: torch.Generator,
    num_cells: int = 10,
    cell_size: tuple[int, int] | None = None,
) -> GridDistortion:
    """
    Draw one random grid distortion per image on the CPU.

    :param num_images: Number of images ``N``.
    :param height: Image height.
    :param width: Image width.
    :param distortion_limit: ``delta`` in ``[0, 1)``: cells are scaled by ``1 + U(-delta, delta)``.
    :param generator: CPU generator that supplies all the randomness.
    :param num_cells: Cells per axis when ``cell_size`` is ``None`` (the authors' code uses 10).
    :param cell_size: ``(low, high)``: draw the cell length ``d`` in pixels uniformly from these integers for each
                      image (the paper's random grid size); overrides ``num_cells``.
    :return: The index maps.
    """
    if cell_size is None:
        cells_h = torch.full((num_images,), height / num_cells, dtype=torch.float64)
        cells_w = torch.full((num_images,), width / num_cells, dtype=torch.float64)
        max_cells = num_cells
    else:
        low, high = cell_size
        sizes = torch.randint(low, high + 1, (num_images,), generator=generator).to(torch.float64)
        cells_h = cells_w = sizes
        max_cells = -(-max(height, width) // low)
    corner = torch.randint(0, 4, (num_images,), generator=generator)
    stretch = 1.0 + distortion_limit * (2.0 * torch.rand((2, num_images, max_cells), generator=generator) - 1.0)
    rows = axis_source_indices(height, cells_h, stretch[0], corner >= 2)
    cols = axis_source_indices(width, cells_w, stretch[1], corner % 2 == 1)
    return GridDistortion(rows, cols)


def remap(x: torch.Tensor, distortion: GridDistortion) -> torch.Tensor:
    """
    Apply separable index maps to ``(N, C, H, W)`` images: ``out[n, c, y, x] = x[n, c, rows[n, y], cols[n, x]]``.
    """
    n, c, h, w = x.shape
    if tuple(distortion.rows.shape) != (n, h) or tuple(distortion.cols.shape) != (n, w):
        raise ValueError(
            f"Index maps of shapes {tuple(distortion.rows.shape)}, {tuple(distortion.cols.shape)} do not fit images "
            f"of shape {tuple(x.shape)}."
        )
    index = (distortion.rows.unsqueeze(2) * w + distortion.cols.unsqueeze(1)).reshape(n, 1, h * w)
    return x.reshape(n, c, h * w).gather(2, index.expand(n, c, h * w)).reshape(n, c, h, w)


def distortion_statistics(distortion: GridDistortion) -> dict[str, torch.Tensor]:
    """
    Per-image share of input pixels that no output pixel reads (``dropped``) and of output pixels that read a
    pixel other than their own coordinates (``moved``), as reported by Qiu et al. (Section 5.3).
    """
    rows, cols = distortion.rows, distortion.cols
    n, h = rows.shape
    w = cols.shape[1]
    used_rows = torch.zeros(n, h, dtype=torch.bool).scatter_(1, rows.cpu(), True).double().mean(1)
    used_cols = torch.zeros(n, w, dtype=torch.bool).scatter_(1, cols.cpu(), True).double().mean(1)
    kept_rows = (rows.cpu() == torch.arange(h)).double().mean(1)
    kept_cols = (cols.cpu() == torch.arange(w)).double().mean(1)
    return {"dropped": 1.0 - used_rows * used_cols, "moved": 1.0 - kept_rows * kept_cols}
