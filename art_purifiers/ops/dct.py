"""Blockwise 8x8 orthonormal DCT-II and its inverse on batches of images.

Images whose height or width is not a multiple of the block size are padded by replicating the last row and
column (what libjpeg does) and cropped back by the inverse. The transform matrices are built once per device and
dtype (:func:`~art_purifiers.ops.device.cached_constant`), and the transforms run without autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from art_purifiers.ops.device import cached_constant, full_precision

BLOCK_SIZE = 8


@cached_constant
def dct_matrix(
    n: int = BLOCK_SIZE, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """
    Orthonormal DCT-II matrix ``D`` (``D @ v`` transforms a length-``n`` signal; ``D.T`` inverts it).

    :param n: Transform length.
    :param dtype: Output dtype.
    :param device: Output device.
    :return: Tensor of shape ``(n, n)`` (cached: do not modify it).
    """
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


@cached_constant
def block_dct_matrix(dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """
    The 64x64 matrix ``K = D kron D`` of the 2-D 8x8 DCT acting on row-major flattened blocks.

    ``coeffs.flatten() == K @ block.flatten()``; ``K`` is orthogonal, so ``K.T`` is the inverse (cached: do not
    modify it).
    """
    d = dct_matrix(BLOCK_SIZE, torch.float64)
    return torch.kron(d, d).to(dtype=dtype, device=device)


def pad_to_blocks(x: torch.Tensor) -> torch.Tensor:
    """
    Replicate-pad the last two dimensions of ``(N, C, H, W)`` images up to multiples of 8.
    """
    height, width = x.shape[-2:]
    pad_h = -height % BLOCK_SIZE
    pad_w = -width % BLOCK_SIZE
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def to_blocks(x: torch.Tensor) -> torch.Tensor:
    """
    Split ``(N, C, H, W)`` images (H, W multiples of 8) into blocks of shape ``(N, C, H/8, W/8, 8, 8)``.
    """
    n, c, h, w = x.shape
    return x.reshape(n, c, h // BLOCK_SIZE, BLOCK_SIZE, w // BLOCK_SIZE, BLOCK_SIZE).transpose(3, 4)


def from_blocks(blocks: torch.Tensor) -> torch.Tensor:
    """
    Inverse of :func:`to_blocks`: ``(N, C, Hb, Wb, 8, 8)`` to ``(N, C, 8 Hb, 8 Wb)``.
    """
    n, c, hb, wb = blocks.shape[:4]
    return blocks.transpose(3, 4).reshape(n, c, hb * BLOCK_SIZE, wb * BLOCK_SIZE)


def block_dct(x: torch.Tensor) -> torch.Tensor:
    """
    Orthonormal 8x8 DCT-II of every block of ``(N, C, H, W)`` images.

    :param x: Images of any height and width (padded by edge replication to multiples of 8).
    :return: Coefficients of shape ``(N, C, ceil(H/8), ceil(W/8), 8, 8)``; ``[..., u, v]`` is vertical frequency
             ``u`` and horizontal frequency ``v``.
    """
    d = dct_matrix(BLOCK_SIZE, x.dtype, x.device)
    with full_precision(x.device):
        return d @ to_blocks(pad_to_blocks(x)) @ d.T


def block_idct(coeffs: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """
    Inverse of :func:`block_dct`.

    :param coeffs: Coefficients of shape ``(N, C, Hb, Wb, 8, 8)``.
    :param size: ``(H, W)`` to crop the result to (the size before padding); ``None`` keeps ``(8 Hb, 8 Wb)``.
    :return: Images of shape ``(N, C, H, W)``.
    """
    d = dct_matrix(BLOCK_SIZE, coeffs.dtype, coeffs.device)
    with full_precision(coeffs.device):
        x = from_blocks(d.T @ coeffs @ d)
    if size is not None:
        x = x[..., : size[0], : size[1]]
    return x
