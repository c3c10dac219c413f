"""SuperResolution (Mustafa et al. 2019): the wavelet denoiser against scikit-image, EDSR, and the defence."""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import ptwt
import pytest
import pywt
import torch
import torch.nn.functional as F
from skimage import color, data, restoration, transform
from skimage.color import colorconv

from art_purifiers import SuperResolution, zoo
from art_purifiers.nets.edsr import DIV2K_RGB_MEAN, EDSR, load_reference_state_dict
from art_purifiers.ops.wavelet import (
    default_levels,
    denoise_wavelet,
    estimate_noise_sigma,
    finest_diagonal,
    haar_decompose,
    haar_reconstruct,
    soft_threshold,
)


def _per_pixel(matrix: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``image @ matrix.T`` over the last axis, as elementwise products and sums: every pixel rounds the same way."""
    channels = [image[..., j : j + 1] for j in range(3)]
    return (matrix[:, 0] * channels[0] + matrix[:, 1] * channels[1]) + matrix[:, 2] * channels[2]


def _rgb2ycbcr(rgb: np.ndarray) -> np.ndarray:
    return _per_pixel(colorconv.ycbcr_from_rgb, rgb) + np.array([16.0, 128.0, 128.0])


def _ycbcr2rgb(ycbcr: np.ndarray) -> np.ndarray:
    return _per_pixel(colorconv.rgb_from_ycbcr, ycbcr - np.array([16.0, 128.0, 128.0]))


def skimage_denoise(
    image: np.ndarray, sigma: float | None, wavelet: str, levels: int | None, ycbcr: bool
) -> np.ndarray:
    """
    scikit-image's denoiser on one (C, H, W) image, in the paper's configuration (BayesShrink, soft). Its colour
    conversion is a matrix product whose rounding differs from pixel to pixel with NumPy's kernels (so flat regions
    are flat or not depending on the CPU, and its noise estimate with them); the reference does the same conversion
    pixel by pixel, so that scikit-image's result is the same on every machine.
    """
    colour = image.shape[0] == 3
    with mock.patch.object(color, "rgb2ycbcr", _rgb2ycbcr), mock.patch.object(color, "ycbcr2rgb", _ycbcr2rgb):
        out = restoration.denoise_wavelet(
            image.transpose(1, 2, 0) if colour else image[0],
            sigma=sigma,
            wavelet=wavelet,
            mode="soft",
            wavelet_levels=levels,
            convert2ycbcr=ycbcr and colour,
            method="BayesShrink",
            rescale_sigma=True,
            channel_axis=-1 if colour else None,
        )
    return out.transpose(2, 0, 1) if colour else out[None]


def photo(name: str, height: int, width: int) -> np.ndarray:
    """A scikit-image photo resized to ``height`` x ``width``, float64 (3, H, W) in [0, 1]."""
    return transform.resize(getattr(data, name)(), (height, width), anti_aliasing=True).transpose(2, 0, 1)


def cifar_like(count: int, size: int = 32) -> np.ndarray:
    """8-bit images with flat regions, like CIFAR-10's: coarse random blocks plus a little noise, rounded."""
    rng = np.random.default_rng(5)
    blocks = rng.random((count, 3, size // 4, size // 4)).repeat(4, axis=2).repeat(4, axis=3)
    noisy = np.clip(blocks + rng.normal(0, 0.03, blocks.shape) * (rng.random(blocks.shape) < 0.3), 0, 1)
    return np.round(noisy * 255) / 255


CASES = [
    ("astronaut 64x64", lambda: photo("astronaut", 64, 64)),
    ("chelsea odd 45x67", lambda: photo("chelsea", 45, 67)),
    ("coffee 224x224", lambda: photo("coffee", 224, 224)),
    ("8-bit 32x32", lambda: cifar_like(1)[0]),
    ("grey odd 33x31", lambda: photo("astronaut", 33, 31)[:1]),
]
SETTINGS = [
    {"sigma": 0.04, "wavelet": "db1", "levels": None, "ycbcr": True},  # the paper
    {"sigma": 0.01, "wavelet": "db2", "levels": 2, "ycbcr": True},
    {"sigma": 0.04, "wavelet": "sym4", "levels": None, "ycbcr": False},
    {"sigma": None, "wavelet": "db1", "levels": None, "ycbcr": True},
    {"sigma": None, "wavelet": "bior2.2", "levels": 1, "ycbcr": False},
]


@pytest.mark.filterwarnings("ignore:Wavelet thresholding was designed for use with orthogonal wavelets")
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
@pytest.mark.parametrize("name, make", CASES, ids=[case[0] for case in CASES])
def test_denoiser_matches_scikit_image(name: str, make, setting: dict) -> None:
    image = make()
    expected = skimage_denoise(image, **setting)
    ours64 = denoise_wavelet(torch.from_numpy(image)[None], **setting)[0].numpy()
    ours32 = denoise_wavelet(torch.from_numpy(image).float()[None], **setting)[0].numpy()
    # with sigma estimated, which finest coefficients are exactly zero depends on round-off (in scikit-image too)
    tolerance64, tolerance32 = (1e-12, 1e-5) if setting["sigma"] is not None else (2e-4, 2e-4)
    np.testing.assert_allclose(ours64, expected, atol=tolerance64, rtol=0)
    np.testing.assert_allclose(ours32, expected, atol=tolerance32, rtol=0)
    assert np.abs(expected - image).max() > 1e-3  # the denoising did something to compare


def perturbed_wavedec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ptwt's 1-D transform add round-off of 1e-17..3e-17 to every coefficient, as some CPUs' kernels do where
    PyWavelets cancels exactly (flat regions)."""
    exact = ptwt.wavedec
    generator = torch.Generator().manual_seed(0)

    def wavedec(*args: Any, **kwargs: Any) -> list[torch.Tensor]:
        bands = exact(*args, **kwargs)
        noise = [torch.randint(1, 4, band.shape, generator=generator).double() * 1e-17 for band in bands]
        signs = [torch.randint(0, 2, band.shape, generator=generator).double() * 2 - 1 for band in bands]
        return [band + (n * s).to(band.dtype) for band, n, s in zip(bands, noise, signs)]

    monkeypatch.setattr(ptwt, "wavedec", wavedec)


def numpy_noise_sigma(channel: np.ndarray, wavelet: str) -> float:
    """
    The robust estimate on PyWavelets' coefficients in plain NumPy: the median of the finest diagonal details that are
    not zero, a zero being at most 1e-9 of the image's peak (PyWavelets' own flat regions give exact zeros, but a
    coincidental cancellation such as ``(a - b) - (c - d)`` with ``a - b == c - d`` may leave 1e-17 of round-off).
    """
    details = pywt.wavedecn(channel, wavelet, level=1, mode="symmetric")[-1]["dd"]
    real = np.abs(details) > 1e-9 * np.abs(channel).max()
    return float(np.median(np.abs(details[real])) / 0.6744897501960817)


@pytest.mark.filterwarnings("ignore:Wavelet thresholding was designed for use with orthogonal wavelets")
@pytest.mark.parametrize("setting", [s for s in SETTINGS if s["sigma"] is None], ids=["db1-ycbcr", "bior2.2"])
def test_the_noise_estimate_does_not_depend_on_the_transforms_round_off(
    setting: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8-bit images with flat regions, whose finest details are exact zeros in PyWavelets and must stay out
    images = cifar_like(4)
    channels = torch.from_numpy(images.reshape(-1, 32, 32))
    assert min(np.mean(pywt.wavedecn(c, "db1", level=1)[-1]["dd"] == 0) for c in channels.numpy()) > 0.2
    expected = [numpy_noise_sigma(channel, setting["wavelet"]) for channel in channels.numpy()]
    clean = denoise_wavelet(torch.from_numpy(images[:1]), **setting)
    perturbed_wavedec(monkeypatch)
    sigma = estimate_noise_sigma(finest_diagonal(channels, setting["wavelet"]), channels.abs().amax((-2, -1)))
    np.testing.assert_allclose(sigma.numpy(), expected, rtol=1e-9)
    # the whole denoiser still gives scikit-image's output (an image without coincidental cancellations)
    image = cifar_like(1)[0]
    np.testing.assert_allclose(
        denoise_wavelet(torch.from_numpy(image)[None], **setting)[0].numpy(),
        skimage_denoise(image, **setting),
        atol=2e-4,
        rtol=0,
    )
    torch.testing.assert_close(denoise_wavelet(torch.from_numpy(images[:1]), **setting), clean, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(32, 32), (33, 31), (5, 7), (1, 9), (224, 224)])
def test_the_haar_fast_path_has_pywavelets_coefficients_and_inverts(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(1).random(shape)
    levels = max(pywt.dwtn_max_level(shape, "db1"), 1)
    approximation, details, sizes = haar_decompose(torch.from_numpy(image)[None], levels)
    reference = pywt.wavedec2(image, "db1", mode="symmetric", level=levels)
    np.testing.assert_allclose(approximation[0].numpy(), reference[0], atol=1e-12)
    for ours, theirs in zip(details, reference[1:]):
        for band, expected in zip(ours, theirs):  # the same sub-bands in the same order, up to their sign
            np.testing.assert_allclose(np.abs(band[0].numpy()), np.abs(expected), atol=1e-12)
    rebuilt = haar_reconstruct(approximation, list(details), sizes)
    np.testing.assert_allclose(rebuilt[0].numpy(), image, atol=1e-12)


def test_a_batch_is_denoised_image_by_image() -> None:
    batch = torch.from_numpy(np.concatenate([cifar_like(3), photo("rocket", 32, 32)[None]]))
    together = denoise_wavelet(batch, sigma=None)
    alone = torch.cat([denoise_wavelet(image[None], sigma=None) for image in batch])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-12)
    # a batch larger than the op's CPU chunk (170 images at 3x32x32) is split without changing any image
    many = torch.from_numpy(cifar_like(400)).float()
    expected = torch.cat([denoise_wavelet(many[i : i + 1], sigma=0.04) for i in range(0, 400, 57)])
    torch.testing.assert_close(denoise_wavelet(many, sigma=0.04)[::57], expected, rtol=0, atol=1e-6)


def test_constant_channels_are_left_alone() -> None:
    # scikit-image skips a YCbCr channel without range; grey RGB images have constant chroma
    grey_rgb = torch.from_numpy(photo("astronaut", 32, 32)[:1]).expand(3, -1, -1)[None].contiguous()
    out = denoise_wavelet(grey_rgb, sigma=0.04)
    expected = skimage_denoise(grey_rgb[0].numpy(), 0.04, "db1", None, True)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-12)
    flat = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    torch.testing.assert_close(denoise_wavelet(flat, sigma=None), flat)


def test_thresholding_pieces_against_pywavelets_and_scikit_image() -> None:
    values = torch.linspace(-2, 2, 41, dtype=torch.float64)
    np.testing.assert_allclose(
        soft_threshold(values, torch.tensor(0.7, dtype=torch.float64)), pywt.threshold(values.numpy(), 0.7, "soft")
    )
    grey = photo("chelsea", 60, 90)[0]
    # scikit-image's estimate_sigma is the same robust estimate on the first level's db2 diagonal details
    image = torch.from_numpy(grey)[None]
    ours = estimate_noise_sigma(finest_diagonal(image, "db2"), image.abs().amax((-2, -1)))
    assert float(ours) == pytest.approx(restoration.estimate_sigma(grey), rel=1e-12)
    assert default_levels(32, 32) == 2 and default_levels(224, 224) == 4 and default_levels(2, 3) == 1


def test_denoiser_gradient_is_exact() -> None:
    x = torch.from_numpy(photo("astronaut", 12, 10))[None].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda image: denoise_wavelet(image, sigma=0.04), (x,), eps=1e-7, atol=1e-5)
    assert torch.autograd.gradcheck(lambda image: denoise_wavelet(image, sigma=None), (x,), eps=1e-7, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"wavelet": "db99"}, "wavelet"), ({"levels": 0}, "levels"), ({"sigma": -0.1}, "sigma")],
)
def test_denoiser_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        denoise_wavelet(torch.rand(1, 3, 8, 8), **kwargs)
    with pytest.raises(ValueError, match="N, C, H, W"):
        denoise_wavelet(torch.rand(3, 8, 8))


def test_non_orthogonal_wavelets_warn_as_in_scikit_image() -> None:
    with pytest.warns(UserWarning, match="orthogonal"):
        denoise_wavelet(torch.rand(1, 3, 8, 8), wavelet="bior2.2")


# ---------------------------------------------------------------------------------------------------- EDSR


def plain_reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor, blocks: int) -> torch.Tensor:
    """The reference EDSR's forward on 0-255 pixels written out with F.conv2d on its state-dict keys."""

    def conv(name: str, value: torch.Tensor) -> torch.Tensor:
        weight = state[f"{name}.weight"]
        return F.conv2d(value, weight, state[f"{name}.bias"], padding=weight.shape[-1] // 2)

    value = conv("sub_mean", x * 255)
    head = conv("head.0", value)
    value = head
    for i in range(blocks):
        value = value + conv(f"body.{i}.body.2", F.relu(conv(f"body.{i}.body.0", value)))
    value = conv(f"body.{blocks}", value) + head
    value = conv("tail.1", F.pixel_shuffle(conv("tail.0.0", value), 2))
    return conv("add_mean", value) / 255


def test_edsr_baseline_shape_and_reference_weights() -> None:
    assert sum(p.numel() for p in EDSR().parameters()) == 1_369_859  # EDSR-baseline x2: 1.37 M
    generator = torch.Generator().manual_seed(0)
    blocks, features = 2, 8
    mean = torch.tensor(DIV2K_RGB_MEAN) * 255
    state = {
        "sub_mean.weight": torch.eye(3).view(3, 3, 1, 1), "sub_mean.bias": -mean,
        "add_mean.weight": torch.eye(3).view(3, 3, 1, 1), "add_mean.bias": mean,
        "head.0.weight": torch.randn(features, 3, 3, 3, generator=generator) * 0.1,
        "head.0.bias": torch.randn(features, generator=generator),
        f"body.{blocks}.weight": torch.randn(features, features, 3, 3, generator=generator) * 0.1,
        f"body.{blocks}.bias": torch.randn(features, generator=generator),
        "tail.0.0.weight": torch.randn(4 * features, features, 3, 3, generator=generator) * 0.1,
        "tail.0.0.bias": torch.randn(4 * features, generator=generator),
        "tail.1.weight": torch.randn(3, features, 3, 3, generator=generator) * 0.1,
        "tail.1.bias": torch.randn(3, generator=generator),
    }  # fmt: skip
    for i in range(blocks):
        for j in (0, 2):
            state[f"body.{i}.body.{j}.weight"] = torch.randn(features, features, 3, 3, generator=generator) * 0.1
            state[f"body.{i}.body.{j}.bias"] = torch.randn(features, generator=generator)
    model = load_reference_state_dict(state)
    assert model.scale == 2 and len(model.body) == blocks + 1
    x = torch.rand(2, 3, 7, 9, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain_reference_forward(state, x, blocks), rtol=1e-4, atol=1e-4)
    x3 = {**state, "tail.0.0.weight": torch.zeros(9 * features, features, 3, 3)}
    with pytest.raises(ValueError, match="pixel-shuffle"):
        load_reference_state_dict(x3)
    broken = {key: value for key, value in state.items() if key != "tail.1.bias"}
    with pytest.raises(ValueError, match="does not fit"):
        load_reference_state_dict(broken)
    with pytest.raises(ValueError, match="head.0.weight"):
        load_reference_state_dict({"conv.weight": torch.zeros(1)})


def test_the_shipped_edsr_beats_bicubic_on_held_out_photos() -> None:
    from art_purifiers.training.edsr import HELD_OUT_PHOTOS, downsample, grid_crops, load_photo

    crops = torch.cat([grid_crops(load_photo(name), 64) for name in HELD_OUT_PHOTOS]).float() / 255
    small = downsample(crops)
    with torch.no_grad():
        edsr = zoo.load("edsr-x2-cifar10-photos")(small).clamp(0, 1)
    bicubic = F.interpolate(small, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)

    def psnr(images: torch.Tensor) -> float:
        return float((10 * torch.log10(1 / ((images - crops) ** 2).mean((1, 2, 3)))).mean())

    assert psnr(edsr) > psnr(bicubic) + 0.5


# ---------------------------------------------------------------------------------------------------- the defence


def tiny_edsr() -> EDSR:
    torch.manual_seed(3)
    return EDSR(blocks=1, features=4)


def test_defence_is_denoising_then_upsampling() -> None:
    images = cifar_like(2, 16).astype(np.float32)
    upscaled, _ = SuperResolution(upsampler="nearest", output_size="upscaled", device_type="cpu")(images)
    denoised = np.stack([skimage_denoise(image.astype(np.float64), 0.04, "db1", None, True) for image in images])
    expected = np.clip(denoised.repeat(2, axis=2).repeat(2, axis=3), 0, 1)
    np.testing.assert_allclose(upscaled, expected, atol=2e-6)
    # the ablations: no denoising, and the size restored for any classifier
    plain, _ = SuperResolution(denoise=False, upsampler="bicubic", output_size="upscaled", device_type="cpu")(images)
    bicubic = F.interpolate(torch.from_numpy(images), scale_factor=2, mode="bicubic", align_corners=False)
    np.testing.assert_allclose(plain, bicubic.clamp(0, 1).numpy(), atol=1e-6)
    back, _ = SuperResolution(upsampler="nearest", output_size="input", device_type="cpu")(images)
    assert back.shape == images.shape and np.abs(back - denoised).mean() < 0.05
    only, _ = SuperResolution(upsampler="none", output_size="upscaled", device_type="cpu")(images)
    np.testing.assert_allclose(only, np.clip(denoised, 0, 1), atol=2e-6)


def test_defence_runs_the_network_and_changes_size() -> None:
    network = tiny_edsr()
    x = torch.rand(3, 3, 10, 14)
    defence = SuperResolution(network=network, denoise=False, output_size="upscaled")
    out, _ = defence.forward(x)
    with torch.no_grad():
        torch.testing.assert_close(out, network(x).clamp(0, 1))
    assert defence.purified_size(10, 14) == (20, 28)
    assert defence.get_params()["output_size"] == "upscaled"
    defence.set_params(output_size="input")
    assert defence.forward(x)[0].shape == x.shape


@pytest.mark.parametrize("output_size", ["upscaled", "input"])
def test_identity_bpda_differentiates_only_the_resize(output_size: str) -> None:
    x = torch.rand(2, 3, 8, 12, requires_grad=True)
    defence = SuperResolution(network=tiny_edsr(), bpda="identity", output_size=output_size)
    out, _ = defence.forward(x)
    weights = torch.rand_like(out)
    (gradient,) = torch.autograd.grad((out * weights).sum(), x)
    resize = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    if output_size == "input":
        resize = F.interpolate(resize, size=(8, 12), mode="bicubic", align_corners=False, antialias=True)
    (expected,) = torch.autograd.grad((resize * weights).sum(), x)
    torch.testing.assert_close(gradient, expected)


def test_straight_through_is_the_exact_gradient() -> None:
    # float64 input runs in float64: autograd against finite differences through denoising, EDSR and the resize back
    x = (0.3 + 0.4 * torch.rand(1, 3, 6, 6, dtype=torch.float64)).requires_grad_(True)
    defence = SuperResolution(network=tiny_edsr(), bpda="straight_through")
    assert torch.autograd.gradcheck(lambda image: defence.forward(image)[0], (x,), eps=1e-7, atol=1e-5)
    assert SuperResolution(network=tiny_edsr(), bpda="surrogate").forward(x)[0].requires_grad


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"upsampler": "lanczos"}, "upsampler"),
        ({"output_size": "double"}, "output_size"),
        ({"sigma": 2.0}, "sigma"),
        ({"wavelet": "morl"}, "wavelet"),
        ({"levels": 0}, "levels"),
        ({"denoise": "yes"}, "denoise"),
        ({"network": "no-such-network"}, "training.edsr"),
    ],
)
def test_invalid_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        SuperResolution(**kwargs)


def test_interpolation_upsamplers_load_no_network() -> None:
    defence = SuperResolution(upsampler="bilinear", network="no-such-network")
    assert not list(defence._networks.keys()) and not defence.randomized
    with pytest.raises(ValueError, match="training.edsr"):
        defence.set_params(upsampler="edsr")
    assert defence.upsampler == "bilinear"
