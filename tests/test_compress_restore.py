"""The exact JPEG op against PIL, its differentiable surrogate, and CompressRestore with stand-in restorers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from art_purifiers.defences.compress_restore import CompressRestore, nearest_quality
from art_purifiers.nets.argan import PatchDiscriminator, RestorationGenerator
from art_purifiers.ops.jpeg import jpeg_differentiable, jpeg_round_trip
from tests.references import pil_round_trip

#: What the shipped restorers must add to JPEG's PSNR on the photo thumbnails (measured: +1.26, +1.08 and +0.57 dB at
#: qualities 20, 40 and 60; an identity restorer adds 0).
MIN_GAIN_DB = 0.4


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 37, 29), (1, 24, 40), (3, 8, 8)])
def test_jpeg_round_trip_is_bit_exact_with_pil(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    # smooth images plus noise, like photos and like adversarial perturbations
    base = rng.random((5, shape[0], 1, 1)) * np.linspace(0, 1, shape[2])[None, None, None, :]
    images = np.clip(base + 0.1 * rng.standard_normal((5, *shape)), 0, 1).astype(np.float32)
    qualities = [10, 20, 40, 60, 95]
    out = jpeg_round_trip(torch.from_numpy(images), torch.tensor(qualities)).numpy()
    for image, result, quality in zip(images, out, qualities):
        np.testing.assert_array_equal(result, pil_round_trip(image, quality))


def test_jpeg_round_trip_on_a_photo_at_several_qualities(photo_224: np.ndarray) -> None:
    image = torch.from_numpy(photo_224).float()[None]
    for quality in (20, 40, 60, 75):
        np.testing.assert_array_equal(
            jpeg_round_trip(image, quality)[0].numpy(), pil_round_trip(image[0].numpy(), quality)
        )


def test_jpeg_round_trip_validates() -> None:
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="one per image"):
        jpeg_round_trip(x, [20, 30, 40])
    with pytest.raises(ValueError, match=r"\[1, 100\]"):
        jpeg_round_trip(x, 0)
    with pytest.raises(ValueError, match="integers"):
        jpeg_round_trip(x, torch.tensor([20.5, 30.0]))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        jpeg_round_trip(torch.rand(2, 4, 8, 8), 50)


def test_differentiable_jpeg_is_close_to_the_codec_and_has_gradients(photo_224: np.ndarray) -> None:
    image = torch.from_numpy(photo_224).float()[None].requires_grad_(True)
    for quality in (20, 60):
        approximation = jpeg_differentiable(image, quality)
        assert torch.equal(
            approximation.detach(), jpeg_round_trip(image.detach(), quality)
        )  # only its backward differs
    approximation.sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    grey = jpeg_differentiable(torch.rand(2, 1, 16, 16), [30, 70])
    assert grey.shape == (2, 1, 16, 16)


def test_nearest_quality_ties_go_to_the_lower() -> None:
    available = [20, 40, 60]
    assert [nearest_quality(q, available) for q in (10, 20, 29, 30, 31, 45, 50, 55, 60, 90)] == [
        20, 20, 20, 20, 40, 40, 40, 60, 60, 60,
    ]  # fmt: skip


class Constant(nn.Module):
    """A stand-in restorer whose output identifies it: every pixel = value."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0 + self.value


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = nn.Parameter(torch.tensor(factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


IDENTITIES = {20: nn.Identity(), 40: nn.Identity(), 60: nn.Identity()}


def test_identity_restorers_leave_n_jpeg_round_trips_at_the_drawn_qualities() -> None:
    x = np.random.default_rng(1).random((6, 3, 16, 16)).astype(np.float32)
    defence = CompressRestore(restorers=IDENTITIES, seed=3, device_type="cpu")
    out, _ = defence(x)
    draws = CompressRestore(restorers=IDENTITIES, seed=3, device_type="cpu")._draw(6, 16, 16)["quality"].numpy()
    assert draws.shape == (6, 3) and draws.min() >= 20 and draws.max() <= 60
    for image, result, qualities in zip(x, out, draws):
        expected = image
        for quality in qualities:
            expected = pil_round_trip(expected, int(quality))
        np.testing.assert_array_equal(result, expected)


def test_each_image_is_restored_by_the_generator_of_its_nearest_quality() -> None:
    restorers = {20: Constant(0.2), 40: Constant(0.4), 60: Constant(0.6)}
    defence = CompressRestore(restorers=restorers, n_iter=1, seed=0, device_type="cpu")
    x = np.random.default_rng(2).random((40, 3, 8, 8)).astype(np.float32)
    out, _ = defence(x)
    qualities = CompressRestore(restorers=restorers, n_iter=1, seed=0, device_type="cpu")._draw(40, 8, 8)["quality"]
    expected = [nearest_quality(int(q), [20, 40, 60]) / 100 for q in qualities[:, 0]]
    np.testing.assert_allclose(out[:, 0, 0, 0], expected, atol=1e-6)
    assert len(set(expected)) == 3  # all three generators were used


@pytest.mark.parametrize("bpda, expected", [("straight_through", 0.5**3), ("identity", 1.0)])
def test_bpda_gradients(bpda: str, expected: float) -> None:
    # restorers multiply by 0.5: JPEG as identity in backward gives 0.5^3 through three iterations
    restorers = {20: Scale(0.5), 40: Scale(0.5), 60: Scale(0.5)}
    defence = CompressRestore(restorers=restorers, bpda=bpda, seed=0, device_type="cpu")
    x = torch.full((2, 3, 8, 8), 0.6, requires_grad=True)
    out, _ = defence.forward(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, expected))
    assert all(p.grad is None for r in restorers.values() for p in r.parameters())  # weights are frozen


def test_surrogate_backward_goes_through_the_differentiable_jpeg() -> None:
    defence = CompressRestore(restorers=IDENTITIES, bpda="surrogate", n_iter=1, qf_range=(20, 20), device_type="cpu")
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    out, _ = defence.forward(x)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    (jpeg_differentiable(reference, 20) * weights).sum().backward()
    torch.testing.assert_close(x.grad, reference.grad)
    torch.testing.assert_close(out.detach(), jpeg_round_trip(x.detach(), 20))  # the forward stays exact


def test_seeds_and_determinism() -> None:
    x = np.random.default_rng(0).random((4, 3, 16, 16)).astype(np.float32)
    first = CompressRestore(restorers=IDENTITIES, seed=1, device_type="cpu")
    second = CompressRestore(restorers=IDENTITIES, seed=1, device_type="cpu")
    np.testing.assert_array_equal(first(x)[0], second(x)[0])
    assert not np.array_equal(first(x)[0], CompressRestore(restorers=IDENTITIES, seed=2, device_type="cpu")(x)[0])
    fixed = CompressRestore(restorers=IDENTITIES, qf_range=(40, 40), device_type="cpu")
    assert not fixed.randomized and CompressRestore(restorers=IDENTITIES, device_type="cpu").randomized
    np.testing.assert_array_equal(fixed(x)[0], fixed(x)[0])
    clone = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(clone(x)[0], first(x)[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"qf_range": (60, 20)}, "low <= high"),
        ({"qf_range": (0, 20)}, "low <= high"),
        ({"qf_range": (20.0, 60)}, "pair of integers"),
        ({"n_iter": 0}, "n_iter"),
        ({"restorers": {}}, "restorers"),
        ({"restorers": {40: "no-such-artifact"}}, "neither a shipped artifact"),
    ],
)
def test_invalid_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompressRestore(**{"restorers": IDENTITIES, **kwargs}, device_type="cpu")


def test_generator_shape_and_sizes() -> None:
    generator = RestorationGenerator()
    assert 1.3e6 < sum(p.numel() for p in generator.parameters()) < 1.5e6  # the authors' ~1.4 M
    small = RestorationGenerator(blocks=2, features=8).eval()
    for size in [(32, 32), (31, 29), (9, 16)]:
        out = small(torch.rand(2, 3, *size))
        assert out.shape == (2, 3, *size) and out.min() >= 0 and out.max() <= 1
    assert PatchDiscriminator()(torch.rand(2, 3, 32, 32)).shape == (2, 1, 4, 4)


def test_a_real_generator_runs_inside_the_defence_with_art() -> None:
    from art.estimators.classification import PyTorchClassifier

    generator = RestorationGenerator(blocks=1, features=8)
    defence = CompressRestore(restorers={40: generator}, seed=0, device_type="cpu")
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
    classifier = PyTorchClassifier(model, nn.CrossEntropyLoss(), input_shape=(3, 16, 16), nb_classes=10,
                                   clip_values=(0, 1), preprocessing_defences=[defence], device_type="cpu")  # fmt: skip
    x = np.random.default_rng(0).random((3, 3, 16, 16)).astype(np.float32)
    gradient = classifier.loss_gradient(x, np.eye(10)[[1, 2, 3]])
    assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0


@pytest.fixture(scope="module")
def thumbnails() -> np.ndarray:
    """Eight 32x32 thumbnails of scikit-image photos (CIFAR-like scale, not CIFAR data), float32 NCHW in [0, 1]."""
    from skimage import data, transform

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    thumbs = []
    for photo in photos:
        side = min(photo.shape[:2])
        square = photo[:side, :side]
        thumbs.append(transform.resize(square, (32, 32), anti_aliasing=True))  # the whole photo
        half = side // 2
        thumbs.append(transform.resize(square[half // 2 : half // 2 + half, :half], (32, 32), anti_aliasing=True))
    return np.round(np.stack(thumbs).transpose(0, 3, 1, 2) * 255).astype(np.float32) / 255


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Mean PSNR (dB) over images, straight from the definition."""
    mse = ((reference.astype(np.float64) - image.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(1 / mse)))


@pytest.mark.parametrize("quality", [20, 40, 60])
def test_the_shipped_restorers_undo_part_of_the_jpeg_damage(thumbnails: np.ndarray, quality: int) -> None:
    from art_purifiers import zoo

    restorer = zoo.load(f"cifar10-restorer-q{quality}")
    compressed = np.stack([pil_round_trip(image, quality) for image in thumbnails])
    with torch.no_grad():
        restored = restorer(torch.from_numpy(compressed)).numpy()
    assert psnr(thumbnails, restored) > psnr(thumbnails, compressed) + MIN_GAIN_DB


def test_the_default_defence_uses_the_shipped_restorers_and_stays_close_to_the_image(thumbnails: np.ndarray) -> None:
    defence = CompressRestore(seed=0, device_type="cpu")
    assert sorted(defence.restorers) == [20, 40, 60] and defence.randomized
    purified, _ = defence(thumbnails)
    jpeg_only, _ = CompressRestore(restorers={40: "none"}, seed=0, device_type="cpu")(thumbnails)
    # three JPEG round trips at the same drawn qualities, without the restoration between them, lose more
    assert psnr(thumbnails, purified) > psnr(thumbnails, jpeg_only)


def test_jpeg_only_ablation_through_an_evaluation_spec() -> None:
    from art_purifiers.evaluation.targets import build_defences

    (defence,), _ = build_defences("CompressRestore:qf_range=(40,40),n_iter=1,restorers={40:'none'}", None)
    x = np.random.default_rng(4).random((3, 3, 16, 16)).astype(np.float32)
    out, _ = defence(x)
    for image, result in zip(x, out):
        np.testing.assert_array_equal(result, pil_round_trip(image, 40))


class Tint(nn.Module):
    """A colour restorer stand-in: a fixed 1x1 convolution that makes the three channels differ."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.5, 0.0], [0.2, 0.2, 0.2]])[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x)


def test_grey_images_are_restored_as_colour_and_converted_back_by_luma() -> None:
    x = np.random.default_rng(5).random((3, 1, 12, 9)).astype(np.float32)
    defence = CompressRestore(restorers={40: Tint()}, qf_range=(40, 40), n_iter=1, device_type="cpu")
    out, _ = defence(x)
    grey_jpeg = np.stack([pil_round_trip(image, 40) for image in x])  # a grey JPEG, as PIL writes it
    channels = np.einsum("oc,nchw->nohw", Tint().mix.weight[:, :, 0, 0].detach().numpy(), np.repeat(grey_jpeg, 3, 1))
    luma = 0.299 * channels[:, 0] + 0.587 * channels[:, 1] + 0.114 * channels[:, 2]  # ITU-R BT.601, as JPEG
    np.testing.assert_allclose(out[:, 0], np.clip(luma, 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="takes 1-channel images, got 3"):
        CompressRestore(restorers={40: nn.Conv2d(1, 1, 1)}, device_type="cpu")(np.zeros((1, 3, 8, 8), np.float32))


def test_a_users_restorer_is_neither_moved_nor_frozen() -> None:
    mine = RestorationGenerator(blocks=1, features=8).train()
    defence = CompressRestore(restorers={40: mine}, seed=0, device_type="cpu")
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    defence.forward(x)[0].sum().backward()
    assert mine.training and all(p.requires_grad and p.grad is None for p in mine.parameters())
    # and the copy in use is the user's network as it was passed
    with torch.no_grad():
        used = CompressRestore(restorers={40: mine}, qf_range=(40, 40), n_iter=1, device_type="cpu")(x.detach().numpy())
        np.testing.assert_allclose(used[0], mine.eval()(jpeg_round_trip(x.detach(), 40)).numpy(), atol=1e-6)


def test_jpeg_backend_parameter() -> None:
    x = np.random.default_rng(6).random((2, 3, 16, 16)).astype(np.float32)
    outputs = [
        CompressRestore(restorers=IDENTITIES, seed=1, jpeg_backend=backend, device_type="cpu")(x)[0]
        for backend in ("auto", "pil", "libjpeg")
    ]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])
    with pytest.raises(ValueError, match="jpeg_backend"):
        CompressRestore(restorers=IDENTITIES, jpeg_backend="mozjpeg", device_type="cpu")
    with pytest.raises(ValueError, match="CUDA images only"):
        CompressRestore(restorers=IDENTITIES, jpeg_backend="nvjpeg", device_type="cpu")(x)


def test_straight_through_mode_passes_gradients_through_the_restorers_output_clamp() -> None:
    # A restorer that overshoots white everywhere: its exact clamp has zero gradient, which would mask the attack.
    from art_purifiers.nets.argan import RestorationGenerator

    generator = RestorationGenerator(blocks=1)
    with torch.no_grad():
        generator.tail.bias.fill_(5.0)  # tanh(5) ~ 1: every pixel lands above 1 before the clamp
    restorers = {20: generator, 40: generator, 60: generator}
    gradients = {}
    for bpda in ("straight_through", "surrogate"):
        defence = CompressRestore(restorers=restorers, bpda=bpda, n_iter=1, seed=0, device_type="cpu")
        x = torch.full((1, 3, 8, 8), 0.8, requires_grad=True)
        out, _ = defence.forward(x)
        torch.testing.assert_close(out, torch.ones_like(out))  # the forward clamps either way
        out.sum().backward()
        gradients[bpda] = float(x.grad.abs().sum())
    assert gradients["straight_through"] > 0
    assert gradients["surrogate"] == 0  # the exact clamp, as before
    # outside the defence (training) the restorer's clamp is exact: no gradient past white
    x = torch.full((1, 3, 8, 8), 0.8, requires_grad=True)
    generator(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().max()) < 1e-12
