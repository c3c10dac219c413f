"""
libjpeg's baseline lossy path in integer tensor ops: the pixels libjpeg-turbo (as Pillow ships it) decodes from the
file it encodes, bit for bit, for a whole ``(N, C, H, W)`` uint8 batch on any device.

A JPEG file holds quantized DCT coefficients; the entropy coding that packs them is lossless, so it is skipped here:
:func:`encode` gives the coefficients of the file Pillow writes with ``Image.save(buffer, "JPEG", quality=q)`` (or
with ``qtables=``), :func:`decode` the pixels Pillow reads back from it, and :func:`round_trip` both. Every value is
an exact integer, every division is floored as libjpeg's shifts are, so the result does not depend on the device,
autocast or the order of a reduction. Run eagerly, the values are held in float64 (far below 2^53, so the matrix
products that carry the DCTs and colour conversions are exact in any order; integer matrix products are not offered
on CUDA); ``round_trip(..., compiled=True)`` runs libjpeg's own butterflies in int32, fused by ``torch.compile`` into
kernels that vectorize twice as wide: in a round trip of 8-bit images every intermediate stays below 2^30 (the
forward DCT's output below 2^13 in magnitude, a dequantized coefficient below 2^11 whatever the table). Only the round
trip runs in int32: :func:`decode` of arbitrary coefficients stays in float64.
Each step takes its rounding as a ``floor`` function: with a differentiable stand-in the same steps are the BPDA
surrogate of :func:`art_purifiers.ops.jpeg.jpeg_differentiable`, which therefore differs from the codec only in its
rounding. The steps and the facts of libjpeg-turbo's arithmetic they follow (read from its source; naive variants
differ):

* tables: the IJG tables of ITU-T T.81 Annex K scaled to the quality (``5000 / q`` below 50, ``200 - 2q`` above,
  ``(entry * scale + 50) // 100``), clipped to ``[1, 255]`` (``force_baseline``, as Pillow asks);
* RGB to YCbCr (``jccolor``): 16-bit fixed point, rounding offset 1/2 for Y and 1/2 - 2^-16 for Cb and Cr;
* edges: a component is padded to whole 8x8 blocks by repeating its last row and column; with 4:2:0 chroma the
  full-resolution image is first padded to an even height and to a multiple of 16 columns, then averaged, then the
  last chroma row repeated;
* 2x2 chroma averaging (``jcsample`` h2v2): ``(a + b + c + d + bias) >> 2``, the bias alternating 1, 2, 1, ... across
  output columns;
* forward DCT (``jfdctint``, "islow"): two passes of 13-bit fixed-point butterflies, each output descaled
  (``(x + 2^(n-1)) >> n``); each pass is an integer linear combination, computed eagerly as a matrix product in
  float64, exact because every partial sum is an integer below 2^53 (compiled: the butterflies themselves);
* quantization (``jcdctmgr``): the DCT output is 8 times the coefficient; it is divided by 8 times the table entry,
  rounding half away from zero;
* inverse DCT (``jidctint``): dequantize, two passes descaled by 2^11 and 2^18, recentred and saturated to [0, 255];
* chroma upsampling (``jdsample``): "fancy" h2v2, a 3:1 triangle filter vertically and horizontally, biases 8 and 7
  for the left and right output column, edge samples repeated (also the rows above the first and below the last);
  chroma 2 or fewer samples wide (images up to 4 pixels wide) is repeated 2x2 instead;
* YCbCr to RGB (``jdcolor``): 16-bit fixed point with its own rounding terms, saturated to [0, 255].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import torch

from art_purifiers.ops.device import cached_constant

#: IJG base luminance table (ITU-T T.81 Annex K.1), quality 50, row = vertical frequency.
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
#: IJG base chrominance table (Annex K.2).
CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)
#: Chroma layouts: Pillow's default 4:2:0 (``subsampling=2``) and 4:4:4 (``subsampling=0``).
SUBSAMPLINGS = ("4:2:0", "4:4:4")

_BLOCK = 8
_CONST_BITS = 13  # the DCTs' fixed point
_PASS1_BITS = 2  # extra precision kept between the DCTs' passes
_COLOUR_BITS = 16  # the colour conversions' fixed point
_CENTRE = 128
#: Pixels (images x channels x height x width) coded at once by :func:`round_trip`: bounds its working memory.
CHUNK_PIXELS = 1 << 22
#: The same for the compiled codec on the CPU, whose fused kernels run fastest on chunks near the CPU's caches.
COMPILED_CHUNK_PIXELS = 1 << 19


def _fix(value: float, bits: int) -> int:
    """libjpeg's ``FIX``: ``value`` in fixed point, rounded half up."""
    return int(value * (1 << bits) + 0.5)


@dataclass(frozen=True)
class JpegCoefficients:
    """
    What a baseline JPEG file holds before entropy coding, for a batch.

    :param luma: Quantized DCT coefficients of Y (or grey), int32 ``(N, 1, rows, columns, 8, 8)`` in blocks.
    :param chroma: Those of Cb and Cr, int32 ``(N, 2, rows, columns, 8, 8)``; ``None`` for grey images.
    :param tables: The quantization tables, int32 ``(N, 2, 8, 8)``: luma, then chroma (the grey images' second is
        unused).
    :param size: The images' ``(height, width)``.
    :param subsampling: ``"4:2:0"`` or ``"4:4:4"``.
    """

    luma: torch.Tensor
    chroma: torch.Tensor | None
    tables: torch.Tensor
    size: tuple[int, int]
    subsampling: str


# --- tables ----------------------------------------------------------------------------------------------------------
def quality_tables(quality: int | Sequence[int] | torch.Tensor, count: int) -> torch.Tensor:
    """
    The luma and chroma tables libjpeg uses at each quality (``force_baseline``), int32 ``(count, 2, 8, 8)``.

    :param quality: One quality in ``[1, 100]`` or ``count`` of them.
    :raises ValueError: for qualities that are not integers in ``[1, 100]`` or of the wrong count.
    """
    values = torch.as_tensor(quality).reshape(-1).cpu()
    if values.numel() == 1:
        values = values.expand(count)
    if values.numel() != count:
        raise ValueError(f"Expected one JPEG quality or {count} (one per image), got {values.numel()}.")
    if values.dtype == torch.bool or (values.is_floating_point() and not torch.equal(values, values.round())):
        raise ValueError("JPEG qualities must be integers.")
    values = values.long()
    if count and not (1 <= int(values.min()) and int(values.max()) <= 100):
        raise ValueError(f"JPEG qualities must lie in [1, 100], got {int(values.min())}..{int(values.max())}.")
    scale = torch.where(values < 50, 5000 // values, 200 - 2 * values)[:, None, None, None]
    base = torch.tensor((LUMA_TABLE, CHROMA_TABLE), dtype=torch.long)[None]
    return ((base * scale + 50) // 100).clamp(1, 255).int()


def check_tables(tables: torch.Tensor, count: int) -> torch.Tensor:
    """
    Per-image tables as libjpeg takes them from Pillow's ``qtables=`` (entries in natural order, row = vertical
    frequency), int32 ``(count, 2, 8, 8)``: one table serves every component; of two, the second serves Cb and Cr.

    :param tables: ``(T, 8, 8)`` for every image or ``(count, T, 8, 8)``, T = 1 or 2, integer entries in
        ``[1, 32767]``.
    :raises ValueError: for other shapes or entries.
    """
    tables = torch.as_tensor(tables)
    if tables.dim() == 3:
        tables = tables.expand(count, *tables.shape)
    if tables.dim() != 4 or tables.shape[0] != count or tables.shape[1] not in (1, 2) or tables.shape[2:] != (8, 8):
        raise ValueError(f"Quantization tables must be (T, 8, 8) or ({count}, T, 8, 8) with T = 1 or 2, got "
                         f"{tuple(tables.shape)}.")  # fmt: skip
    if tables.is_floating_point() and not torch.equal(tables, tables.round()):
        raise ValueError("Quantization table entries must be integers.")
    if count and not (1 <= int(tables.min()) and int(tables.max()) <= 32767):
        raise ValueError(f"Quantization table entries must lie in [1, 32767], got {int(tables.min())}..."
                         f"{int(tables.max())}.")  # fmt: skip
    return tables.expand(count, 2, 8, 8).int().cpu() if tables.shape[1] == 1 else tables.int().cpu()


# --- the DCTs: each pass an integer matrix and a descaling shift per output -----------------------------------------
#: What the passes compute on: Python integers (to find their matrices) or tensors of them (compiled).
Sample = TypeVar("Sample", int, torch.Tensor)


def _butterfly_even(a: list[Sample], b: list[Sample]) -> tuple[Sample, Sample, Sample, Sample]:
    """The even half shared by the forward DCT's passes: ``(0, 4)`` unscaled sums, ``(2, 6)`` products."""
    t0, t1, t2, t3 = a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]  # x[k] + x[7 - k]
    sum03, diff03, sum12, diff12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    z1 = (diff12 + diff03) * _fix(0.541196100, _CONST_BITS)
    return (sum03 + sum12, sum03 - sum12, z1 + diff03 * _fix(0.765366865, _CONST_BITS),
            z1 - diff12 * _fix(1.847759065, _CONST_BITS))  # fmt: skip


def _rotations(t4: Sample, t5: Sample, t6: Sample, t7: Sample) -> tuple[Sample, Sample, Sample, Sample]:
    """The odd half of the islow DCTs (the same rotation network in both directions): four fixed-point sums."""
    z5 = (t4 + t5 + t6 + t7) * _fix(1.175875602, _CONST_BITS)
    z1 = (t4 + t7) * -_fix(0.899976223, _CONST_BITS)
    z2 = (t5 + t6) * -_fix(2.562915447, _CONST_BITS)
    z3 = (t4 + t6) * -_fix(1.961570560, _CONST_BITS) + z5
    z4 = (t5 + t7) * -_fix(0.390180644, _CONST_BITS) + z5
    return (t4 * _fix(0.298631336, _CONST_BITS) + z1 + z3, t5 * _fix(2.053119869, _CONST_BITS) + z2 + z4,
            t6 * _fix(3.072711026, _CONST_BITS) + z2 + z3, t7 * _fix(1.501321110, _CONST_BITS) + z1 + z4)  # fmt: skip


def _forward_pass(x: list[Sample], first: bool) -> tuple[list[Sample], list[int]]:
    """One pass of ``jfdctint`` on 8 samples: the outputs before descaling, and each one's shift."""
    even = _butterfly_even(x[:4], x[7:3:-1])
    odd = _rotations(*(x[3 - k] - x[4 + k] for k in range(4)))  # t4 .. t7 = x[3]-x[4] .. x[0]-x[7]
    raw = [even[0], odd[3], even[2], odd[2], even[1], odd[1], even[3], odd[0]]
    if first:  # outputs 0 and 4 are shifted up, the others descaled to keep PASS1_BITS of extra precision
        raw[0], raw[4] = raw[0] * (1 << _PASS1_BITS), raw[4] * (1 << _PASS1_BITS)
        return raw, [0, *([_CONST_BITS - _PASS1_BITS] * 3), 0, *([_CONST_BITS - _PASS1_BITS] * 3)]
    return raw, [_PASS1_BITS, *([_CONST_BITS + _PASS1_BITS] * 3), _PASS1_BITS, *([_CONST_BITS + _PASS1_BITS] * 3)]


def _inverse_pass(x: list[Sample]) -> list[Sample]:
    """One pass of ``jidctint`` on 8 coefficients: the 8 outputs before descaling (every shift is the same)."""
    z1 = (x[2] + x[6]) * _fix(0.541196100, _CONST_BITS)
    even2, even3 = z1 - x[6] * _fix(1.847759065, _CONST_BITS), z1 + x[2] * _fix(0.765366865, _CONST_BITS)
    sum04, diff04 = (x[0] + x[4]) * (1 << _CONST_BITS), (x[0] - x[4]) * (1 << _CONST_BITS)
    t10, t13, t11, t12 = sum04 + even3, sum04 - even3, diff04 + even2, diff04 - even2
    o0, o1, o2, o3 = _rotations(x[7], x[5], x[3], x[1])
    return [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3]


def _rows(linear: Callable[[list[int]], list[int]]) -> tuple[tuple[int, ...], ...]:
    """The integer matrix of a linear map of 8 integers (a row per output), found from the unit vectors."""
    columns = [linear([int(i == j) for i in range(_BLOCK)]) for j in range(_BLOCK)]
    return tuple(tuple(column[row] for column in columns) for row in range(_BLOCK))


#: The islow passes as integer matrices (the eager codec's matrix products).
_PASSES = {
    "forward1": _rows(lambda x: _forward_pass(x, True)[0]),
    "forward2": _rows(lambda x: _forward_pass(x, False)[0]),
    "inverse": _rows(_inverse_pass),
}


@cached_constant
def _dct_constants(dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """The passes as matrices (exact integers in float64) and the descaling shift of each forward output."""
    constants = {name: torch.tensor(rows, dtype=dtype, device=device) for name, rows in _PASSES.items()}
    for name, first in (("shift1", True), ("shift2", False)):
        constants[name] = torch.tensor(_forward_pass([0] * _BLOCK, first)[1], dtype=dtype, device=device)
    return constants


Floor = Callable[[torch.Tensor], torch.Tensor]


def _shift(x: torch.Tensor, bits: int, floor: Floor = torch.floor) -> torch.Tensor:
    """
    ``floor(x / 2^bits)``, libjpeg's right shift: an arithmetic shift of integer tensors; for float64 ones (exact
    integers) ``floor`` of the product with the exact reciprocal.
    """
    return x >> bits if not x.is_floating_point() else floor(x * 2.0**-bits)


def _descale(x: torch.Tensor, shift: torch.Tensor | int, floor: Floor = torch.floor) -> torch.Tensor:
    """
    libjpeg's ``DESCALE``: ``floor((x + 2^(shift-1)) / 2^shift)``, where ``shift`` is 0 ``floor(x)``, which is ``x``
    for the integers the codec's steps hold (``shift`` a tensor: one per output, float64 only).
    """
    if isinstance(shift, int):
        return _shift(x + (1 << shift >> 1), shift, floor)
    return floor((x + torch.where(shift > 0, torch.exp2(shift - 1), 0.0)) * torch.exp2(-shift))


def _forward(blocks: torch.Tensor, first: bool, dim: int, floor: Floor) -> torch.Tensor:
    """
    A pass of the forward DCT along the rows (``dim=-1``) or columns (``-2``) of 8x8 blocks, descaled: a matrix
    product in float64 when run eagerly; under ``torch.compile`` libjpeg's own butterflies (a third of the matrix's
    operations) in the blocks' dtype (int32 for the compiled codec), which fuse with their neighbours into one kernel
    (a matrix product cannot). Exact either way.
    """
    if torch.compiler.is_compiling():
        raw, shifts = _forward_pass(list(blocks.unbind(dim)), first)
        return torch.stack([_descale(value, shift, floor) for value, shift in zip(raw, shifts)], dim)
    constants = _dct_constants(torch.float64, blocks.device)
    matrix, shift = constants["forward1" if first else "forward2"], constants["shift1" if first else "shift2"]
    blocks = blocks.double()
    return _descale(blocks @ matrix.T, shift, floor) if dim == -1 else _descale(matrix @ blocks, shift[:, None], floor)


def _inverse(blocks: torch.Tensor, shift: int, dim: int, floor: Floor) -> torch.Tensor:
    """A pass of the inverse DCT along ``dim`` of 8x8 blocks, descaled by ``shift`` (as :func:`_forward`)."""
    if torch.compiler.is_compiling():
        return torch.stack([_descale(value, shift, floor) for value in _inverse_pass(list(blocks.unbind(dim)))], dim)
    blocks, matrix = blocks.double(), _dct_constants(torch.float64, blocks.device)["inverse"]
    return _descale(blocks @ matrix.T if dim == -1 else matrix @ blocks, shift, floor)


def forward_dct(blocks: torch.Tensor, floor: Floor = torch.floor) -> torch.Tensor:
    """
    ``jfdctint``'s islow DCT of ``(..., 8, 8)`` blocks of samples minus 128 (integers, float64 when eager): 8 times
    the coefficients, row = vertical frequency.

    :param floor: The rounding of each descaling (``torch.floor``; a differentiable stand-in for a surrogate).
    """
    return _forward(_forward(blocks, True, -1, floor), False, -2, floor)


def inverse_dct(coefficients: torch.Tensor, floor: Floor = torch.floor) -> torch.Tensor:
    """
    ``jidctint``'s islow inverse DCT of dequantized ``(..., 8, 8)`` blocks (integers, float64 when eager),
    recentred and saturated to [0, 255].
    """
    columns = _inverse(coefficients, _CONST_BITS - _PASS1_BITS, -2, floor)
    return (_inverse(columns, _CONST_BITS + _PASS1_BITS + 3, -1, floor) + _CENTRE).clamp(0, 255)


def quantize(dct: torch.Tensor, tables: torch.Tensor, floor: Floor = torch.floor) -> torch.Tensor:
    """
    ``jcdctmgr``'s quantization: ``dct / (8 * table)`` rounded half away from zero. A floating-point division is
    exact enough: the true quotient of ``|dct| < 2^14`` (8-bit samples) is a half-integer exactly or at least
    ``1 / (16 * table)`` away from one, far beyond float32's rounding error at that size (float64: any integers).
    Integer input (the compiled codec) is always rounded exactly this way (``floor`` is for float input).
    """
    if not dct.is_floating_point():  # the compiled codec's int32: the quotient in float32, vectorized
        quotient = dct.abs().float() / (8 * tables.float())
        return torch.sign(dct) * torch.floor(quotient + 0.5).to(dct.dtype)
    return torch.sign(dct) * floor(dct.abs() / (8 * tables) + 0.5)


# --- colour ----------------------------------------------------------------------------------------------------------
def _colour_fix(value: float) -> int:
    return _fix(value, _COLOUR_BITS)


_HALF, _OFFSET = 1 << (_COLOUR_BITS - 1), _CENTRE << _COLOUR_BITS
#: Rounding (and Cb and Cr's centring) added before the fixed-point RGB to YCbCr conversion is shifted down.
_YCBCR_OFFSETS = (_HALF, _OFFSET + _HALF - 1, _OFFSET + _HALF - 1)
#: The fixed-point colour matrices (plain integers; a matrix product of them is exact in float64).
_COLOUR = {
    "to_ycbcr": ((_colour_fix(0.29900), _colour_fix(0.58700), _colour_fix(0.11400)),
                 (-_colour_fix(0.16874), -_colour_fix(0.33126), _colour_fix(0.5)),
                 (_colour_fix(0.5), -_colour_fix(0.41869), -_colour_fix(0.08131))),
    "to_rgb": ((0, _colour_fix(1.40200)), (-_colour_fix(0.34414), -_colour_fix(0.71414)),
               (_colour_fix(1.77200), 0)),  # from (Cb, Cr)
}  # fmt: skip


@cached_constant
def _colour_constants(dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """:data:`_COLOUR` and :data:`_YCBCR_OFFSETS` as tensors."""
    constants = {name: torch.tensor(value, dtype=dtype, device=device) for name, value in _COLOUR.items()}
    return {**constants, "to_ycbcr_offsets": torch.tensor(_YCBCR_OFFSETS, dtype=dtype, device=device)[:, None, None]}


def _mix(name: str, x: torch.Tensor) -> torch.Tensor:
    """The colour matrix ``name`` times every pixel of ``(N, C, H, W)`` samples, in float64 (run eagerly)."""
    return torch.einsum("oc,nchw->nohw", _colour_constants(torch.float64, x.device)[name], x.double())


def _mixed_channels(name: str, x: torch.Tensor) -> list[torch.Tensor]:
    """
    :func:`_mix` written out term by term in the samples' dtype (compiled), one ``(N, H, W)`` tensor per output
    channel: each is finished before the channels are stacked, because on the CPU inductor writes a stack to memory
    and would read it back for every step after it.
    """
    channels = x.unbind(1)
    return [sum(w * c for w, c in zip(row, channels) if w) for row in _COLOUR[name]]  # type: ignore[misc]


def rgb_to_ycbcr(rgb: torch.Tensor, floor: Floor = torch.floor) -> torch.Tensor:
    """``jccolor``'s conversion of ``(N, 3, H, W)`` integer samples in [0, 255] (YCbCr in [0, 255])."""
    if torch.compiler.is_compiling():
        mixed = _mixed_channels("to_ycbcr", rgb)
        return torch.stack([_shift(m + offset, _COLOUR_BITS, floor) for m, offset in zip(mixed, _YCBCR_OFFSETS)], 1)
    offsets = _colour_constants(torch.float64, rgb.device)["to_ycbcr_offsets"]
    return _shift(_mix("to_ycbcr", rgb) + offsets, _COLOUR_BITS, floor)


def ycbcr_to_rgb(ycbcr: torch.Tensor, floor: Floor = torch.floor) -> torch.Tensor:
    """``jdcolor``'s conversion of ``(N, 3, H, W)`` integer YCbCr samples (RGB saturated to [0, 255])."""
    return _to_rgb(ycbcr[:, :1], ycbcr[:, 1:], floor)


def _to_rgb(luma: torch.Tensor, chroma: torch.Tensor, floor: Floor) -> torch.Tensor:
    """:func:`ycbcr_to_rgb` of ``(N, 1, H, W)`` Y and ``(N, 2, H, W)`` Cb and Cr (never concatenated: see above)."""
    # red and blue round their own term; green rounds the sum of its two (one ONE_HALF between them)
    if torch.compiler.is_compiling():
        differences = _mixed_channels("to_rgb", chroma - _CENTRE)
        return torch.stack(
            [(luma[:, 0] + _shift(d + _HALF, _COLOUR_BITS, floor)).clamp(0, 255) for d in differences], 1
        )
    return (luma + _shift(_mix("to_rgb", chroma - _CENTRE) + _HALF, _COLOUR_BITS, floor)).clamp(0, 255)


# --- edges, chroma resampling and blocks -----------------------------------------------------------------------------
def _extend(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``x`` grown to ``height`` x ``width`` by repeating its last row and column."""
    if (height, width) == tuple(x.shape[-2:]):
        return x
    rows = torch.arange(height, device=x.device).clamp_(max=x.shape[-2] - 1)
    columns = torch.arange(width, device=x.device).clamp_(max=x.shape[-1] - 1)
    return x.index_select(-2, rows).index_select(-1, columns)


def _ceil(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def downsample_h2v2(x: torch.Tensor, floor: Floor = torch.floor) -> torch.Tensor:
    """``jcsample``'s 2x2 averaging of ``(N, C, H, W)`` samples, H and W even: bias 1, 2, 1, ... by column."""
    total = x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2]
    bias = 1 + torch.arange(total.shape[-1], device=x.device, dtype=total.dtype) % 2
    return _shift(total + bias, 2, floor)


def upsample_h2v2(x: torch.Tensor, floor: Floor = torch.floor) -> torch.Tensor:
    """
    ``jdsample``'s 2x upsampling of ``(N, C, h, w)`` chroma: "fancy" (triangle filter, edges repeated), or plain 2x2
    repetition when ``w <= 2`` as libjpeg does there.
    """
    if x.shape[-1] <= 2:
        return x.repeat_interleave(2, -2).repeat_interleave(2, -1)
    above = torch.cat([x[..., :1, :], x[..., :-1, :]], dim=-2)
    below = torch.cat([x[..., 1:, :], x[..., -1:, :]], dim=-2)
    rows = torch.stack([3 * x + above, 3 * x + below], dim=-2).flatten(-3, -2)  # (.., 2h, w) column sums
    left = torch.cat([rows[..., :1], rows[..., :-1]], dim=-1)
    right = torch.cat([rows[..., 1:], rows[..., -1:]], dim=-1)
    return torch.stack([_shift(3 * rows + left + 8, 4, floor), _shift(3 * rows + right + 7, 4, floor)], -1).flatten(-2)


def _to_blocks(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, 8r, 8c)`` to ``(N, C, r, c, 8, 8)``."""
    n, c, height, width = x.shape
    return x.reshape(n, c, height // _BLOCK, _BLOCK, width // _BLOCK, _BLOCK).transpose(3, 4)


def _from_blocks(blocks: torch.Tensor) -> torch.Tensor:
    n, c, rows, columns = blocks.shape[:4]
    return blocks.transpose(3, 4).reshape(n, c, rows * _BLOCK, columns * _BLOCK)


def _code(plane: torch.Tensor, tables: torch.Tensor, floor: Floor, quantization: Floor) -> torch.Tensor:
    """Quantized DCT blocks of a plane padded to whole blocks, with per-image ``(N, 8, 8)`` tables."""
    return quantize(forward_dct(_to_blocks(plane) - _CENTRE, floor), tables[:, None, None, None], quantization)


def _pixels(levels: torch.Tensor, tables: torch.Tensor, floor: Floor) -> torch.Tensor:
    """The samples of quantized blocks: dequantized and inverse transformed."""
    return _from_blocks(inverse_dct(levels * tables[:, None, None, None], floor))


# --- the codec -------------------------------------------------------------------------------------------------------
def encode_samples(
    samples: torch.Tensor,
    tables: torch.Tensor,
    subsampling: str = "4:2:0",
    floor: Floor = torch.floor,
    quantization: Floor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    The quantized luma and chroma blocks of ``(N, C, H, W)`` samples in [0, 255] (float64; int32 when compiled) with
    per-image ``(N, 2, 8, 8)`` tables. With ``torch.floor`` and integer samples, libjpeg's integers; with
    differentiable floors, its surrogate.

    :param floor: The fixed-point arithmetic's rounding (colour, averaging, the DCT's descaling).
    :param quantization: The quantization's rounding (default ``floor``).
    """
    height, width = samples.shape[-2:]
    code = partial(_code, floor=floor, quantization=floor if quantization is None else quantization)
    if samples.shape[1] == 1:
        return code(_extend(samples, _ceil(height, 8), _ceil(width, 8)), tables[:, 0]), None
    ycbcr = rgb_to_ycbcr(samples, floor)
    luma = code(_extend(ycbcr[:, :1], _ceil(height, 8), _ceil(width, 8)), tables[:, 0])
    chroma = ycbcr[:, 1:]
    if subsampling == "4:2:0":  # even height and whole MCUs of columns at full resolution, then chroma rows
        chroma = downsample_h2v2(_extend(chroma, _ceil(height, 2), _ceil(width, 16)), floor)
    chroma = _extend(chroma, _ceil(chroma.shape[-2], 8), _ceil(chroma.shape[-1], 8))
    return luma, code(chroma, tables[:, 1])


def decode_samples(
    luma: torch.Tensor,
    chroma: torch.Tensor | None,
    tables: torch.Tensor,
    size: tuple[int, int],
    subsampling: str = "4:2:0",
    floor: Floor = torch.floor,
) -> torch.Tensor:
    """The ``(N, C, H, W)`` samples of quantized blocks, in their dtype (the inverse of :func:`encode_samples`)."""
    height, width = size
    samples = _pixels(luma, tables[:, 0], floor)[..., :height, :width]
    if chroma is None:
        return samples
    colour = _pixels(chroma, tables[:, 1], floor)
    if subsampling == "4:2:0":
        colour = upsample_h2v2(colour[..., : -(-height // 2), : -(-width // 2)], floor)
    return _to_rgb(samples, colour[..., :height, :width], floor)


def _tables(
    images: torch.Tensor, quality: object, tables: torch.Tensor | None, subsampling: str, floating: bool = False
) -> torch.Tensor:
    """Check the codec's arguments (``floating``: images may be floating point too); the per-image tables."""
    _check_images(images, floating)
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(f"subsampling must be one of {SUBSAMPLINGS}, got {subsampling!r}.")
    if quality is not None and tables is not None:
        raise ValueError("Give a quality or quantization tables, not both.")
    count = images.shape[0]
    chosen = check_tables(tables, count) if tables is not None else quality_tables(
        75 if quality is None else quality, count)  # type: ignore[arg-type]  # fmt: skip
    return chosen.to(device=images.device, dtype=torch.float64)


def encode(
    images: torch.Tensor,
    quality: int | Sequence[int] | torch.Tensor | None = None,
    tables: torch.Tensor | None = None,
    subsampling: str = "4:2:0",
) -> JpegCoefficients:
    """
    The quantized DCT coefficients of the baseline JPEG files of a batch: what Pillow writes with
    ``Image.save(buffer, "JPEG", quality=q)``, or ``qtables=tables`` (then without scaling), before entropy coding.

    :param images: uint8 ``(N, C, H, W)``, C = 1 (grey) or 3 (RGB), any H and W >= 1, on any device.
    :param quality: One quality in ``[1, 100]`` or one per image (default 75, as Pillow's); or give ``tables``.
    :param tables: Quantization tables instead of a quality (see :func:`check_tables`).
    :param subsampling: ``"4:2:0"`` (Pillow's default) or ``"4:4:4"`` (``subsampling=0``); grey images have none.
    :raises ValueError: for another dtype, shape or layout, or both ``quality`` and ``tables``.
    """
    per_image = _tables(images, quality, tables, subsampling)
    luma, chroma = encode_samples(images.double(), per_image, subsampling)
    return JpegCoefficients(luma.int(), None if chroma is None else chroma.int(), per_image.int(),
                            (images.shape[-2], images.shape[-1]), subsampling)  # fmt: skip


def decode(coefficients: JpegCoefficients) -> torch.Tensor:
    """The uint8 ``(N, C, H, W)`` images libjpeg decodes from the coefficients (Pillow's ``Image.open``)."""
    chroma = coefficients.chroma
    samples = decode_samples(coefficients.luma.double(), None if chroma is None else chroma.double(),
                             coefficients.tables.to(coefficients.luma.device).double(), coefficients.size,
                             coefficients.subsampling)  # fmt: skip
    return samples.to(torch.uint8)


def round_trip(
    images: torch.Tensor,
    quality: int | Sequence[int] | torch.Tensor | None = None,
    tables: torch.Tensor | None = None,
    subsampling: str = "4:2:0",
    compiled: bool = False,
) -> torch.Tensor:
    """
    :func:`decode` of :func:`encode`: exactly the pixels of Pillow's ``Image.save(buffer, "JPEG", quality=q)`` then
    ``Image.open(buffer)``, for uint8 ``(N, C, H, W)`` images on any device (same arguments as :func:`encode`).
    Floating-point images in ``[0, 1]`` are rounded to 8 bits first (:func:`to_pixels`) and come back in their dtype
    (:func:`from_pixels`), within the same kernels when compiled. Large batches run in chunks of about
    :data:`CHUNK_PIXELS` pixels, written into the output as they finish, which
    bounds the working memory (94-127 bytes per pixel of a chunk when eager; see
    ``benchmarks/bench_libjpeg_memory.py``).

    :param compiled: Run the codec through ``torch.compile`` (opt-in: fused int32 kernels, faster once compiled, at
        a compilation of 20-100 s per image size, layout, device and dtype on first use; any batch size shares one;
        the pixels are the same). On the CPU chunks then hold up to :data:`COMPILED_CHUNK_PIXELS` pixels (they run
        fastest in the CPU's caches). torch recompiles a function for at most 8 different shapes
        (``torch._dynamo.config.recompile_limit``), then runs it eagerly.
    :raises RuntimeError: if ``torch.compile`` cannot build the codec (on the CPU it needs a C++ compiler).
    """
    per_image = _tables(images, quality, tables, subsampling, floating=True)
    lookup = None if images.dtype == torch.uint8 else _lookup_table(images.dtype, images.device)
    budget = COMPILED_CHUNK_PIXELS if compiled and images.device.type == "cpu" else CHUNK_PIXELS
    step = max(1, budget // max(1, math.prod(images.shape[1:])))
    decoded = torch.empty_like(images)
    starts = list(range(0, images.shape[0], step))
    if compiled and len(starts) > 1 and images.shape[0] - starts[-1] == 1:
        starts.pop()  # torch specialises a batch of one: a last chunk of one image would compile the codec again
    for start, end in zip(starts, [*starts[1:], images.shape[0]]):
        chunk, chunk_tables = images[start:end], per_image[start:end]
        if compiled:
            decoded[start:end] = _run_compiled(chunk, chunk_tables, subsampling, lookup)
        else:
            decoded[start:end] = _codec(chunk, chunk_tables, subsampling, lookup)
    return decoded


def _run_compiled(
    images: torch.Tensor, tables: torch.Tensor, subsampling: str, lookup: torch.Tensor | None
) -> torch.Tensor:
    """:func:`_codec` compiled, the batch dimension dynamic (one compilation serves every batch size)."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InductorError

    torch._dynamo.maybe_mark_dynamic(images, 0)
    torch._dynamo.maybe_mark_dynamic(tables, 0)
    try:
        return _compiled_codec()(images, tables, subsampling, lookup)
    except (BackendCompilerFailed, InductorError) as error:
        raise RuntimeError(
            "torch.compile could not build the compiled JPEG codec (on the CPU it needs a working C++ compiler); "
            "the eager codec (compiled=False, backend 'libjpeg') gives the same pixels."
        ) from error


def _codec(
    images: torch.Tensor, tables: torch.Tensor, subsampling: str, lookup: torch.Tensor | None = None
) -> torch.Tensor:
    """
    The round trip of checked images with per-image tables: in float64 when eager; compiled, in int32 (every
    intermediate of a round trip fits, see the module docstring), which vectorizes twice as wide. Images come back
    in their dtype, floating-point ones as :func:`from_pixels` gives them (``lookup``: its table, if it uses one).
    """
    dtype = torch.int32 if torch.compiler.is_compiling() else torch.float64
    pixels = images if images.dtype == torch.uint8 else to_pixels(images)
    samples, tables = pixels.to(dtype), tables.to(dtype)
    coefficients = encode_samples(samples, tables, subsampling)
    decoded = decode_samples(*coefficients, tables, (images.shape[-2], images.shape[-1]), subsampling)
    return decoded.to(torch.uint8) if images.dtype == torch.uint8 else _to_unit(decoded, images.dtype, lookup)


@functools.cache
def _compiled_codec() -> Callable[[torch.Tensor, torch.Tensor, str, torch.Tensor | None], torch.Tensor]:
    return torch.compile(_codec, fullgraph=True)  # type: ignore[return-value]


def _check_images(images: torch.Tensor, floating: bool = False) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"Expected a torch.Tensor of uint8 images, got {type(images).__name__}.")
    if images.dtype != torch.uint8 and not (floating and images.is_floating_point()):
        kinds = "uint8 images (0-255) or floating-point ones in [0, 1]" if floating else "uint8 images (0-255)"
        raise ValueError(f"Expected {kinds}, got {images.dtype}.")
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[-2] < 1 or images.shape[-1] < 1:
        raise ValueError(f"Expected (N, C, H, W) images with 1 or 3 channels and H, W >= 1, got {tuple(images.shape)}.")


# --- 8-bit pixels and [0, 1] images ---------------------------------------------------------------------------------
def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """
    ``[0, 1]`` images rounded to 8-bit pixels, ``round(255 x)`` clipped to [0, 255], in float32 at least (float16
    cannot hold ``255 x`` finely enough to round it like the float32 images it holds).
    """
    work = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return (work * 255).round().clamp(0, 255).to(torch.uint8)


@cached_constant
def _levels(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``k / 255`` for the 256 pixel values, divided on the CPU."""
    return (torch.arange(256, dtype=dtype) / 255).to(device)


def _lookup_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """
    The table :func:`from_pixels` looks values up from: none on the CPU, which divides by 255; elsewhere ``k / 255``
    divided on the CPU (CUDA may divide by multiplying with the reciprocal, which can differ in the last bit).
    """
    return None if device.type == "cpu" else _levels(dtype, device)


def _to_unit(pixels: torch.Tensor, dtype: torch.dtype, lookup: torch.Tensor | None) -> torch.Tensor:
    """Integer-valued pixels (any dtype) divided by 255 in ``dtype``, or looked up from ``lookup``."""
    return pixels.to(dtype) / 255 if lookup is None else lookup[pixels.long()]


def from_pixels(pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """8-bit pixels as ``[0, 1]`` images of ``dtype``, the same floats on every device (see :func:`_lookup_table`)."""
    return _to_unit(pixels, dtype, _lookup_table(dtype, pixels.device))
