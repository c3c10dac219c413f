"""Straightforward NumPy/SciPy versions of the ops, written independently of the torch code, for tests and
benchmarks."""

from __future__ import annotations

import io

import numpy as np
import scipy.fft
from PIL import Image


def quantize_dct_numpy(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """
    JPEG-style quantization of one ``(C, H, W)`` image in [0, 1]: level shift 128, 8x8 orthonormal DCT per block
    (``scipy.fft.dctn``), round(coefficient / table) * table, inverse; edge-replicated padding, cropped back.
    """
    channels, height, width = image.shape
    pixels = np.pad(image * 255.0 - 128.0, ((0, 0), (0, -height % 8), (0, -width % 8)), mode="edge")
    out = np.empty_like(pixels)
    for c in range(channels):
        for top in range(0, pixels.shape[1], 8):
            for left in range(0, pixels.shape[2], 8):
                block = pixels[c, top : top + 8, left : left + 8]
                coefficients = scipy.fft.dctn(block, norm="ortho")
                quantized = np.round(coefficients / table) * table
                out[c, top : top + 8, left : left + 8] = scipy.fft.idctn(quantized, norm="ortho")
    return ((out + 128.0) / 255.0)[:, :height, :width]


def quantize_dct_numpy_vectorized(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The same as :func:`quantize_dct_numpy`, vectorized over the blocks of one image (the benchmark baseline)."""
    channels, height, width = image.shape
    pixels = np.pad(image * 255.0 - 128.0, ((0, 0), (0, -height % 8), (0, -width % 8)), mode="edge")
    hb, wb = pixels.shape[1] // 8, pixels.shape[2] // 8
    blocks = pixels.reshape(channels, hb, 8, wb, 8).transpose(0, 1, 3, 2, 4)
    coefficients = scipy.fft.dctn(blocks, axes=(-2, -1), norm="ortho")
    restored = scipy.fft.idctn(np.round(coefficients / table) * table, axes=(-2, -1), norm="ortho")
    out = restored.transpose(0, 1, 3, 2, 4).reshape(pixels.shape)
    return ((out + 128.0) / 255.0)[:, :height, :width]


def axis_map_numpy(length: int, cell: float, stretch: np.ndarray, from_end: bool) -> np.ndarray:
    """
    Source index of each output position along one axis by walking the cells one by one: cell ``m`` (input
    ``[m d, (m+1) d)``) is drawn over the next ``d * stretch[m]`` output pixels; each output pixel centre reads the
    input pixel under its preimage. Output beyond the last drawn pixel is a reflection (``np.pad`` "reflect") of
    the drawn part; ``from_end`` runs the grid from the far end.
    """
    drawn: list[int] = []
    start = 0.0
    for m, s in enumerate(stretch):
        end = start + cell * s
        position = len(drawn)
        while position + 0.5 < end and position < length:
            source = int(np.floor(m * cell + (position + 0.5 - start) / s))
            if source >= length:
                break
            drawn.append(source)
            position += 1
        if source_past_end(m, cell, length) or len(drawn) == length:
            break
        start = end
    drawn_array = np.array(drawn)
    if len(drawn_array) < length:
        drawn_array = np.pad(drawn_array, (0, length - len(drawn_array)), mode="reflect")
    return (length - 1) - drawn_array[::-1] if from_end else drawn_array


def source_past_end(cell_index: int, cell: float, length: int) -> bool:
    """Whether the input cell after ``cell_index`` starts past the end of the axis."""
    return (cell_index + 1) * cell >= length


def pil_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """Reference: PIL's JPEG (libjpeg, 4:2:0 for colour) on one CHW float image in [0, 1]."""
    pixels = np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(buffer, "JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255
    return decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1)
