"""The exact tensor JPEG (ops/libjpeg.py) against Pillow's libjpeg, pixel for pixel, and ART's JpegCompression."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from art_purifiers.ops import libjpeg


def pillow_round_trip(
    image: torch.Tensor, quality: int | None = 75, subsampling: int = -1, qtables: list[list[int]] | None = None
) -> torch.Tensor:
    """Pillow's save and load of one uint8 (C, H, W) image (the reference)."""
    array = image.numpy()
    options: dict = {"subsampling": subsampling}
    options.update({"qtables": qtables} if qtables is not None else {"quality": quality})
    buffer = io.BytesIO()
    Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)).save(buffer, "JPEG", **options)
    pixels = np.array(Image.open(buffer))
    return torch.from_numpy(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))


def make(kind: str, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random, smooth or saturated uint8 images, (1, C, H, W)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return torch.from_numpy(rng.integers(0, 256, (1, channels, height, width), dtype=np.uint8))
    if kind == "saturated":
        return torch.from_numpy(rng.choice([0, 255], (1, channels, height, width)).astype(np.uint8))
    rows, columns = np.mgrid[:height, :width]
    planes = [128 + 120 * np.sin(rows / (3.0 + c) + columns / (5.0 - c)) for c in range(channels)]
    return torch.from_numpy(np.stack(planes).round().astype(np.uint8)[None])


SIZES = [(1, 1), (1, 9), (9, 1), (2, 3), (3, 4), (5, 5), (7, 9), (8, 8), (15, 17), (16, 16), (31, 33), (32, 32),
         (33, 32), (224, 224)]  # fmt: skip
LAYOUTS = [(1, "4:2:0", -1), (3, "4:2:0", -1), (3, "4:4:4", 0)]


@pytest.mark.parametrize("kind", ["random", "smooth", "saturated"])
@pytest.mark.parametrize("channels, subsampling, pillow_subsampling", LAYOUTS, ids=["grey", "4:2:0", "4:4:4"])
@pytest.mark.parametrize("height, width", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_every_pixel_equals_pillows(
    height: int, width: int, channels: int, subsampling: str, pillow_subsampling: int, kind: str
) -> None:
    image = make(kind, channels, height, width, seed=height * 100 + width)
    for quality in (1, 12, 50, 75, 95, 100):
        expected = pillow_round_trip(image[0], quality, pillow_subsampling)
        assert torch.equal(libjpeg.round_trip(image, quality, subsampling=subsampling)[0], expected), quality


@pytest.mark.parametrize("channels, subsampling, pillow_subsampling", LAYOUTS, ids=["grey", "4:2:0", "4:4:4"])
def test_every_quality_from_1_to_100(channels: int, subsampling: str, pillow_subsampling: int) -> None:
    images = torch.cat([make("random", channels, 17, 23, seed=1), make("smooth", channels, 17, 23)])
    qualities = torch.arange(1, 101)
    ours = libjpeg.round_trip(images.repeat_interleave(100, 0), qualities.repeat(2), subsampling=subsampling)
    for index, image in enumerate(images.repeat_interleave(100, 0)):
        quality = int(qualities.repeat(2)[index])
        assert torch.equal(ours[index], pillow_round_trip(image, quality, pillow_subsampling)), quality


def test_mixed_qualities_and_custom_tables_in_one_batch() -> None:
    images = torch.cat([make("random", 3, 20, 28, seed=s) for s in range(6)])
    qualities = [5, 20, 50, 75, 95, 100]
    ours = libjpeg.round_trip(images, torch.tensor(qualities))
    assert all(torch.equal(ours[i], pillow_round_trip(images[i], q)) for i, q in enumerate(qualities))
    tables = torch.from_numpy(np.random.default_rng(3).integers(1, 256, (6, 2, 8, 8)))
    ours = libjpeg.round_trip(images, tables=tables)
    for i in range(6):
        qtables = [table.flatten().tolist() for table in tables[i]]
        assert torch.equal(ours[i], pillow_round_trip(images[i], qtables=qtables))
    # one table for every component
    one = libjpeg.round_trip(images[:1], tables=tables[0, :1])[0]
    assert torch.equal(one, pillow_round_trip(images[0], qtables=[tables[0, 0].flatten().tolist()]))


def test_the_coefficients_decode_to_the_round_trip_and_carry_the_tables() -> None:
    images = torch.cat([make("smooth", 3, 30, 44), make("random", 3, 30, 44)])
    coefficients = libjpeg.encode(images, quality=[30, 80])
    assert coefficients.luma.shape == (2, 1, 4, 6, 8, 8) and coefficients.chroma.shape == (2, 2, 2, 3, 8, 8)
    assert torch.equal(coefficients.tables, libjpeg.quality_tables([30, 80], 2))
    assert torch.equal(libjpeg.decode(coefficients), libjpeg.round_trip(images, [30, 80]))
    # quality 50 is Annex K itself; quality 100 is all ones
    assert torch.equal(libjpeg.quality_tables(50, 1)[0, 0], torch.tensor(libjpeg.LUMA_TABLE, dtype=torch.int32))
    assert bool((libjpeg.quality_tables(100, 1) == 1).all()) and int(libjpeg.quality_tables(1, 1).max()) == 255


def test_the_integer_dct_inverts_and_agrees_with_the_orthonormal_dct() -> None:
    blocks = torch.from_numpy(np.random.default_rng(4).integers(-128, 128, (50, 8, 8))).int()
    scaled = libjpeg.forward_dct(blocks).double() / 8  # islow's output is 8 times the coefficient
    basis = torch.tensor([[np.cos((2 * x + 1) * u * np.pi / 16) * (np.sqrt(0.125) if u == 0 else 0.5)
                           for x in range(8)] for u in range(8)], dtype=torch.float64)  # fmt: skip
    assert float((scaled - basis @ blocks.double() @ basis.T).abs().max()) < 1.0
    ones = torch.ones(8, 8, dtype=torch.int32)
    back = libjpeg.inverse_dct(libjpeg.quantize(libjpeg.forward_dct(blocks), ones)).int() - 128  # step 1: near-lossless
    assert int((back - blocks).abs().max()) <= 2 and float((back - blocks).abs().double().mean()) < 0.5


def test_art_jpeg_compression_equals_the_round_trip_of_its_truncated_input() -> None:
    from art.defences.preprocessor import JpegCompression

    x = np.random.default_rng(5).random((4, 3, 24, 20)).astype(np.float32)
    for quality in (10, 50, 90):
        art, _ = JpegCompression(clip_values=(0, 1), quality=quality, channels_first=True)(x)
        truncated = torch.from_numpy((x * 255).astype(np.uint8))  # ART truncates to 8 bits
        ours = libjpeg.round_trip(truncated, quality)
        assert torch.equal(torch.from_numpy(np.round(art * 255).astype(np.uint8)), ours)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: libjpeg.round_trip(torch.zeros(1, 3, 4, 4, dtype=torch.int16)), "uint8 images .* or floating-point"),
        (lambda: libjpeg.encode(torch.zeros(1, 3, 4, 4)), r"uint8 images \(0-255\), got torch.float32"),
        (lambda: libjpeg.round_trip(torch.zeros(1, 2, 4, 4, dtype=torch.uint8)), "1 or 3 channels"),
        (lambda: libjpeg.round_trip(torch.zeros(1, 3, 0, 4, dtype=torch.uint8)), "H, W >= 1"),
        (lambda: libjpeg.round_trip(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 0), r"\[1, 100\]"),
        (lambda: libjpeg.round_trip(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [50, 60, 70]), "one per image"),
        (lambda: libjpeg.round_trip(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 50.5), "integers"),
        (lambda: libjpeg.round_trip(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), subsampling="4:2:2"), "subsampling"),
        (lambda: libjpeg.round_trip(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), tables=torch.zeros(2, 8, 8)),
         r"\[1, 32767\]"),
        (lambda: libjpeg.round_trip(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), tables=torch.ones(3, 8, 8)),
         "T = 1 or 2"),
        (lambda: libjpeg.round_trip(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 50, torch.ones(2, 8, 8)), "not both"),
    ],
)  # fmt: skip
def test_bad_input_is_named(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_equals_cpu() -> None:
    images = torch.cat([make(kind, 3, 37, 53, seed=s) for s in range(4) for kind in ("random", "smooth")])
    qualities = torch.arange(8) * 13 + 1
    for subsampling in libjpeg.SUBSAMPLINGS:
        cpu = libjpeg.round_trip(images, qualities, subsampling=subsampling)
        with torch.autocast("cuda", dtype=torch.float16):
            cuda = libjpeg.round_trip(images.cuda(), qualities, subsampling=subsampling)
            compiled = libjpeg.round_trip(images.cuda(), qualities, subsampling=subsampling, compiled=True)
        assert torch.equal(cuda.cpu(), cpu) and torch.equal(compiled.cpu(), cpu)


def test_the_surrogate_is_the_codec_with_differentiable_roundings() -> None:
    from art_purifiers.ops.jpeg import jpeg_differentiable, jpeg_round_trip

    images = torch.cat([make("smooth", 3, 19, 26), make("random", 3, 19, 26, seed=2)]).float() / 255
    for quality in ([20, 75], [90, 5]):
        exact = jpeg_round_trip(images, quality, backend="libjpeg")
        assert torch.equal(jpeg_differentiable(images, quality, rounding="hard"), exact)
        for rounding in ("soft", "straight_through"):  # the same forward, gradients that are not zero
            x = images.clone().requires_grad_(True)
            out = jpeg_differentiable(x, quality, rounding=rounding)
            assert torch.equal(out.detach(), exact)
            out.sum().backward()
            assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().mean()) > 0.1
    grey = make("smooth", 1, 9, 13).float() / 255
    assert torch.equal(jpeg_differentiable(grey, 40, "hard"), jpeg_round_trip(grey, 40, backend="libjpeg"))


@pytest.mark.parametrize("channels, subsampling, pillow_subsampling", LAYOUTS, ids=["grey", "4:2:0", "4:4:4"])
@pytest.mark.parametrize("height, width", [(1, 1), (2, 3), (1, 9), (9, 1), (15, 17), (31, 33)])
def test_the_compiled_codecs_int32_arithmetic_equals_pillow(
    height: int, width: int, channels: int, subsampling: str, pillow_subsampling: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the compiled codec's code path (libjpeg's butterflies in int32, shifts, float32 quantization), run eagerly:
    # every quality, and tables up to the largest allowed
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    kinds = ("random", "smooth", "saturated")
    images = torch.cat([make(kinds[q % 3], channels, height, width, seed=q) for q in range(100)])
    tables = libjpeg.quality_tables(torch.arange(1, 101), 100).double()
    out = libjpeg._codec(images, tables, subsampling)
    assert out.dtype == torch.uint8
    for quality in range(1, 101):
        expected = pillow_round_trip(images[quality - 1], quality, pillow_subsampling)
        assert torch.equal(out[quality - 1], expected), quality
    large = torch.tensor([[1, 255], [32767, 4000]], dtype=torch.float64).repeat_interleave(32, 0).reshape(2, 8, 8)
    custom = libjpeg._codec(images[:1], large[None], subsampling)[0]
    qtables = [row.flatten().int().tolist() for row in large] if channels == 3 else [large[0].flatten().int().tolist()]
    assert torch.equal(custom, pillow_round_trip(images[0], None, pillow_subsampling, qtables))


@pytest.mark.parametrize("channels, subsampling, pillow_subsampling", LAYOUTS, ids=["grey", "4:2:0", "4:4:4"])
def test_the_compiled_codec_equals_pillow_for_any_batch_size_with_one_compilation(
    channels: int, subsampling: str, pillow_subsampling: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch._dynamo.utils

    # compiled for real (about 20 s per layout): chunks of 3 and 4 images (a last one of 1 joins its predecessor),
    # then of 3 and 2, share one compilation
    kinds = ("random", "smooth", "saturated")
    images = torch.cat([make(kinds[s % 3], channels, 15, 17, seed=s) for s in range(7)])
    qualities = torch.tensor([1, 8, 25, 50, 75, 97, 100])
    monkeypatch.setattr(libjpeg, "COMPILED_CHUNK_PIXELS", 3 * channels * 15 * 17)
    torch._dynamo.utils.counters.clear()
    compiled = libjpeg.round_trip(images, qualities, subsampling=subsampling, compiled=True)
    again = libjpeg.round_trip(images[:5], qualities[:5], subsampling=subsampling, compiled=True)
    assert torch.equal(again, compiled[:5])
    for image, quality, out in zip(images, qualities.tolist(), compiled):
        assert torch.equal(out, pillow_round_trip(image, quality, pillow_subsampling)), quality
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_floating_images_are_rounded_to_8_bits_and_back_in_the_compiled_kernels(dtype: torch.dtype) -> None:
    # every level k / 255, the ties (k + 0.5) / 255 and random values; compiled, the rounding to 8 bits and the
    # division back run inside the codec's kernels and must give what the separate eager steps give
    levels = torch.arange(256, dtype=torch.float64)
    values = torch.cat(
        [levels / 255, (levels + 0.5) / 255, torch.rand(256, generator=torch.Generator().manual_seed(0))]
    )
    images = values.reshape(3, 1, 16, 16).to(dtype)
    qualities = torch.tensor([10, 50, 95])
    expected = libjpeg.from_pixels(libjpeg.round_trip(libjpeg.to_pixels(images), qualities), dtype)
    for compiled in (False, True):
        out = libjpeg.round_trip(images, qualities, compiled=compiled)
        assert out.dtype == dtype and torch.equal(out, expected), compiled


def test_chunking_does_not_change_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    images = torch.cat([make("random", 3, 21, 18, seed=s) for s in range(7)])
    whole = libjpeg.round_trip(images, torch.arange(7) * 14 + 3)
    monkeypatch.setattr(libjpeg, "CHUNK_PIXELS", 2 * 3 * 21 * 18)  # two images per chunk
    assert torch.equal(libjpeg.round_trip(images, torch.arange(7) * 14 + 3), whole)


@pytest.mark.parametrize("clip_values", [(0.0, 1.0), (0.0, 255.0)])
def test_the_table_defences_as_jpeg_files_equal_pillows_qtables(clip_values: tuple[float, float]) -> None:
    from art_purifiers import NNFavoredJpeg, QuantizeDistort
    from art_purifiers.ops.jpeg import jpeg_steps

    learned_like = 80 * np.random.default_rng(6).random((8, 8)) + 20  # Algorithm 2's tables are not integers
    defences = [NNFavoredJpeg(codec="jpeg", clip_values=clip_values),
                QuantizeDistort(table=learned_like, distort=False, codec="jpeg", clip_values=clip_values)]  # fmt: skip
    images = torch.cat([make("smooth", 3, 24, 30), make("random", 3, 24, 30, seed=8)])
    scale = clip_values[1] / 255
    for defence in defences:
        out, _ = defence((images.numpy() * scale).astype(np.float32))
        steps = jpeg_steps(torch.from_numpy(defence.table)).flatten().tolist()
        for image, result in zip(images, out):
            expected = pillow_round_trip(image, qtables=[steps]).numpy()
            np.testing.assert_array_equal(np.round(result / scale).astype(np.uint8), expected)
            np.testing.assert_allclose(result / scale, expected, atol=1e-3)  # 8-bit output, not a rounded float


def test_the_table_defences_as_jpeg_files_have_useful_gradients() -> None:
    from art_purifiers import NNFavoredJpeg

    x = (make("smooth", 3, 16, 16).float() / 255).requires_grad_(True)
    for bpda in ("straight_through", "surrogate"):
        out, _ = NNFavoredJpeg(codec="jpeg", bpda=bpda).forward(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        assert x.grad is not None and float(x.grad.abs().mean()) > 1e-3
        x.grad = None


@pytest.mark.parametrize("clip_values", [(0.0, 1.0), (0.0, 255.0)])
def test_jpeg_compression_pytorch_equals_arts(clip_values: tuple[float, float]) -> None:
    from art.defences.preprocessor import JpegCompression

    from art_purifiers import JpegCompressionPyTorch

    rng = np.random.default_rng(9)
    x = rng.random((5, 3, 19, 23)).astype(np.float32) * clip_values[1]
    eight_bit = np.round(x).astype(np.float32) if clip_values[1] == 255 else np.round(x * 255).astype(np.float32) / 255
    for images in (x, eight_bit):
        for quality in (10, 50, 95):
            art, _ = JpegCompression(clip_values=clip_values, quality=quality, channels_first=True)(images)
            ours, _ = JpegCompressionPyTorch(quality=quality, clip_values=clip_values)(images)
            np.testing.assert_array_equal(ours, art.astype(np.float32))
    grad = torch.ones(2, 3, 8, 8)
    x_grad = torch.rand(2, 3, 8, 8, requires_grad=True)
    out, _ = JpegCompressionPyTorch().forward(x_grad)
    (out * grad).sum().backward()
    assert torch.equal(x_grad.grad, grad)  # the identity in backward, as ART's estimate_gradient
