"""The defences on CUDA against the CPU: same seed, same output within the tolerances the numerics allow.

Run on a machine with a GPU by ``tox -e gpu`` (or ``python -m benchmarks.gpu_check``); skipped without CUDA.
Figures measured here (flip rates, PSNRs) go to the GPU report through the ``record_figure`` fixture.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from art_purifiers import CompressRestore, EOTPyTorchClassifier, NNFavoredJpeg, QuantizeDistort
from art_purifiers.base import PurifierPreprocessor
from art_purifiers.ops.dct import block_dct
from art_purifiers.ops.jpeg import jpeg_round_trip
from art_purifiers.ops.quantize import quantize_dct
from tests.test_defences import eight_bit_images

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

CUDA = torch.device("cuda")
DCT_DEFENCES = [NNFavoredJpeg, QuantizeDistort]
#: Share of DCT coefficients allowed to round the other way on the GPU (float32 round-off at .5 boundaries).
MAX_FLIP_SHARE = 1e-4


def photos(count: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Photo-like float32 NCHW batches in [0, 1]: scikit-image photos, resized and cropped at random."""
    from skimage import data, transform

    rng = np.random.default_rng(seed)
    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    images = []
    for index in range(count):
        photo = sources[index % len(sources)]
        side = int(rng.integers(size, min(photo.shape[:2]) + 1))
        top, left = (int(rng.integers(0, photo.shape[axis] - side + 1)) for axis in (0, 1))
        crop = transform.resize(photo[top : top + side, left : left + side], (size, size), anti_aliasing=True)
        images.append(crop.transpose(2, 0, 1)[:channels])
    return torch.from_numpy(np.stack(images)).float()


def psnr(reference: torch.Tensor, image: torch.Tensor) -> float:
    mse = float(((reference.double().cpu() - image.double().cpu()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


@pytest.mark.parametrize("channels", [1, 3])
def test_default_jpeg_backend_is_identical_on_cuda(channels: int) -> None:
    x = photos(48, 40, channels)
    qualities = torch.randint(10, 96, (48,), generator=torch.Generator().manual_seed(channels))
    on_gpu = jpeg_round_trip(x.to(CUDA), qualities)
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), jpeg_round_trip(x, qualities))


@pytest.mark.parametrize("channels", [1, 3])
def test_nvjpeg_option_is_close_to_libjpeg(channels: int, record_figure: Any) -> None:
    x = photos(32, 224, channels, seed=1)
    for quality in (20, 50, 90):
        exact = jpeg_round_trip(x, quality)
        fast = jpeg_round_trip(x.to(CUDA), quality, backend="nvjpeg")
        assert fast.shape == x.shape and fast.device.type == "cuda"
        value = psnr(exact, fast)
        record_figure(f"nvjpeg vs libjpeg PSNR, {channels} channel(s), q{quality}, 224x224 photos (dB)", value)
        assert value > 30, f"nvjpeg is {value:.1f} dB from libjpeg at quality {quality}"


def coefficient_levels(images: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The integer DCT levels behind images made by ``quantize_dct`` with ``table`` (recovered in float64)."""
    coefficients = block_dct(images.double().cpu() * 255 - 128)
    return torch.round(coefficients / table.double())


@pytest.mark.parametrize("matmul_precision", ["highest", "high"])
def test_quantization_on_cuda_differs_only_by_rare_rounding_flips(matmul_precision: str, record_figure: Any) -> None:
    x = photos(64, 64)
    table = torch.from_numpy(NNFavoredJpeg().table)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(matmul_precision)  # "high" allows TF32: the op must not use it
    try:
        on_gpu = quantize_dct(x.to(CUDA), table).cpu()
    finally:
        torch.set_float32_matmul_precision(previous)
    on_cpu = quantize_dct(x, table)
    flips = coefficient_levels(on_gpu, table) != coefficient_levels(on_cpu, table)
    share = float(flips.double().mean())
    record_figure(f"DCT coefficients rounded differently on CUDA (matmul precision {matmul_precision})", share)
    assert share <= MAX_FLIP_SHARE
    # every pixel outside the blocks holding a flip agrees within 1e-5
    flipped_blocks = flips.flatten(-2).any(-1)  # (N, C, Hb, Wb)
    mask = flipped_blocks.repeat_interleave(8, 2).repeat_interleave(8, 3)[..., :64, :64]
    assert float((on_gpu - on_cpu).abs()[~mask].max()) <= 1e-5


@pytest.mark.parametrize("defence_class", DCT_DEFENCES)
def test_dct_defences_match_the_cpu(defence_class: type[PurifierPreprocessor], record_figure: Any) -> None:
    x = photos(64, 64)
    on_cpu = defence_class(seed=3, device_type="cpu").forward(x)[0]
    on_gpu = defence_class(seed=3).forward(x.to(CUDA))[0]
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    off = ((on_gpu.cpu() - on_cpu).abs() > 1e-5).double().mean()
    record_figure(f"{defence_class.__name__}: share of pixels more than 1e-5 from the CPU", float(off))
    assert off <= 64 * MAX_FLIP_SHARE  # a flipped coefficient moves the 64 pixels of its block


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("defence_class", DCT_DEFENCES)
def test_dct_rounding_ties_fall_the_same_way_in_0_1_and_0_255_on_cuda(
    defence_class: type[PurifierPreprocessor], dtype: torch.dtype
) -> None:
    # CUDA divides by a Python number through its rounded reciprocal: the range map must not take that path
    x = torch.from_numpy(eight_bit_images(np.float64)).to(device=CUDA, dtype=dtype)
    unit = defence_class(seed=5).forward(x)[0]
    scaled = defence_class(seed=5, clip_values=(0, 255)).forward(x * 255)[0]
    assert float((scaled.double() / 255 - unit.double()).abs().max()) <= 1e-5


def test_compress_restore_matches_the_cpu(record_figure: Any) -> None:
    x = photos(64, 32)
    one = [
        CompressRestore(seed=5, n_iter=1, device_type="cpu").forward(x.to(device))[0].cpu() for device in ("cpu", CUDA)
    ]
    worst = float((one[0] - one[1]).abs().max())
    record_figure("CompressRestore N=1: max |CPU - CUDA| (x255)", 255 * worst)
    assert worst <= 1 / 255
    three = [CompressRestore(seed=5, device_type="cpu").forward(x.to(device))[0].cpu() for device in ("cpu", CUDA)]
    value = psnr(three[0], three[1])
    record_figure("CompressRestore N=3: PSNR CPU vs CUDA (dB)", value)
    assert value >= 40


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    ).eval()


def art_classifier(defence: PurifierPreprocessor, device_type: str, cls: type = None, **kwargs: Any) -> Any:
    from art.estimators.classification import PyTorchClassifier

    return (cls or PyTorchClassifier)(
        small_cnn(), nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10, clip_values=(0.0, 1.0),
        preprocessing_defences=[defence], device_type=device_type, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("defence_class", [NNFavoredJpeg, QuantizeDistort, CompressRestore])
def test_gradients_through_art_on_cuda_match_the_cpu(
    defence_class: type[PurifierPreprocessor], record_figure: Any
) -> None:
    x = photos(16, 32).numpy()
    y = np.eye(10, dtype=np.float32)[np.arange(16) % 10]
    gradients = []
    for device_type in ("cpu", "gpu"):
        classifier = art_classifier(defence_class(seed=1, device_type=device_type), device_type)
        gradients.append(classifier.loss_gradient(x, y))
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in gradients)
    error = np.linalg.norm(gradients[1] - gradients[0]) / np.linalg.norm(gradients[0])
    cosine = float((gradients[0] * gradients[1]).sum() / np.linalg.norm(gradients[0]) / np.linalg.norm(gradients[1]))
    name = defence_class.__name__
    record_figure(f"{name}: loss gradient, relative L2 difference CUDA vs CPU", error)
    record_figure(f"{name}: loss gradient, cosine CUDA vs CPU", cosine)
    if defence_class is CompressRestore:
        # cuDNN's restorer output flips some 8-bit roundings before the next JPEG (forward PSNR ~50 dB), which
        # moves the path of those pixels: the gradients agree in direction, not to float precision
        assert cosine > 0.99
    else:
        assert error < 1e-3


class DeviceRecordingDistort(QuantizeDistort):
    """QuantizeDistort that records the device and size of every batch it purifies with gradients."""

    def _purify(self, x: torch.Tensor, randomness: Any) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.seen = getattr(self, "seen", []) + [(x.device.type, x.shape[0])]
        return super()._purify(x, randomness)


def test_eot_with_apgd_runs_on_cuda() -> None:
    from art.attacks.evasion import AutoProjectedGradientDescent

    defence = DeviceRecordingDistort(seed=0)
    classifier = art_classifier(defence, "gpu", EOTPyTorchClassifier, eot_samples=4)
    x = photos(8, 32).numpy()
    y = np.eye(10)[classifier.predict(x).argmax(1)]
    attack = AutoProjectedGradientDescent(
        classifier, eps=8 / 255, max_iter=5, nb_random_init=1, loss_type="cross_entropy", verbose=False
    )
    x_adv = attack.generate(x, y=y)
    assert np.isfinite(x_adv).all() and np.abs(x_adv - x).max() <= 8 / 255 + 1e-6
    assert defence.seen and all(device == "cuda" and size % 4 == 0 for device, size in defence.seen)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("defence_class", DCT_DEFENCES)
def test_half_precision_on_cuda(defence_class: type[PurifierPreprocessor], dtype: torch.dtype) -> None:
    cast = photos(32, 64).to(CUDA, dtype)
    out = defence_class(seed=2).forward(cast)[0]
    expected = defence_class(seed=2).forward(cast.float())[0]  # float32 work on the same down-cast input
    assert out.dtype == dtype
    assert float((out.float() - expected).abs().max()) <= 1 / 255


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("defence_class", [NNFavoredJpeg, QuantizeDistort, CompressRestore])
def test_autocast_on_cuda_changes_nothing(defence_class: type[PurifierPreprocessor], dtype: torch.dtype) -> None:
    x = photos(32, 32).to(CUDA)
    expected = defence_class(seed=4).forward(x)[0]
    with torch.autocast("cuda", dtype=dtype):
        inside = defence_class(seed=4).forward(x)[0]
    assert inside.dtype == torch.float32
    assert float((inside - expected).abs().max()) <= 1 / 255


def test_user_networks_stay_where_they_are() -> None:
    from art_purifiers.nets.argan import RestorationGenerator

    mine = RestorationGenerator(blocks=1, features=8)
    defence = CompressRestore(restorers={40: mine}, seed=0)
    defence.forward(photos(4, 32).to(CUDA))
    assert all(p.device.type == "cpu" for p in mine.parameters())
    clone = copy.deepcopy(defence)  # the per-device copies are not part of the state
    assert clone._networks._copies == {}
    assert clone.forward(photos(4, 32).to(CUDA))[0].device.type == "cuda"


def test_the_learned_bpda_approximator_trains_on_cuda() -> None:
    from art_purifiers.attacks import LearnedBPDA, train_approximator

    defence = NNFavoredJpeg()
    approximator = train_approximator(defence, photos(16, 32).numpy(), steps=5, batch_size=8, verbose=False)
    assert next(approximator.parameters()).device.type == "cuda"
    wrapper = LearnedBPDA(defence, approximator)
    x = photos(4, 32).to(CUDA).requires_grad_(True)
    out, _ = wrapper.forward(x)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("output_size", ["upscaled", "input"])
def test_super_resolution_on_cuda_matches_the_cpu(output_size: str, record_figure) -> None:
    from art_purifiers import SuperResolution

    x = photos(16, 48)
    expected = SuperResolution(output_size=output_size).forward(x)[0]
    on_gpu = SuperResolution(output_size=output_size).forward(x.to(CUDA))[0]
    assert on_gpu.device.type == "cuda" and on_gpu.shape == expected.shape
    error = float((on_gpu.cpu() - expected).abs().max())
    record_figure(f"SuperResolution {output_size} max |CUDA - CPU|", error * 255, "in 1/255 units")
    assert error < 1e-3
    leaf = x.to(CUDA).requires_grad_(True)
    SuperResolution(output_size=output_size).forward(leaf)[0].sum().backward()
    cpu_leaf = x.clone().requires_grad_(True)
    SuperResolution(output_size=output_size).forward(cpu_leaf)[0].sum().backward()
    assert leaf.grad is not None and cpu_leaf.grad is not None
    cosine = float(torch.nn.functional.cosine_similarity(leaf.grad.cpu().flatten(), cpu_leaf.grad.flatten(), dim=0))
    record_figure(f"SuperResolution {output_size} gradient cosine CUDA vs CPU", cosine)
    assert cosine > 0.999


def test_wavelet_denoiser_on_cuda_matches_scikit_image() -> None:
    from skimage.restoration import denoise_wavelet as skimage_denoise

    from art_purifiers.ops.wavelet import denoise_wavelet

    x = photos(4, 45)
    out = denoise_wavelet(x.to(CUDA), sigma=0.04).cpu().numpy()
    for image, ours in zip(x.double().numpy(), out):
        reference = skimage_denoise(image.transpose(1, 2, 0), sigma=0.04, channel_axis=-1, convert2ycbcr=True,
                                    rescale_sigma=True, method="BayesShrink", mode="soft")  # fmt: skip
        assert np.abs(ours - reference.transpose(2, 0, 1)).max() < 1e-5


def test_v2_apgd_and_cascade_run_on_cuda_like_on_the_cpu(record_figure: Any) -> None:
    # Our APGD on the defended reference classifier: same images broken on both devices (up to float round-off)
    from art_purifiers import zoo
    from art_purifiers.attacks.apgd import apgd
    from art_purifiers.evaluation.cascade import DefendedModel, gradient_report

    x = photos(32, 32)
    results = {}
    for device in ("cpu", "cuda"):
        model = DefendedModel(zoo.load("cifar10-reference", device=device), [NNFavoredJpeg(device_type="gpu")])
        images = x.to(device)
        with torch.no_grad():
            y = model(images).argmax(1)
        result = apgd(model, images, y, 4 / 255, steps=20, loss="dlr", seed=0)
        assert result.x_adv.device.type == device
        results[device] = (result.unfooled == 0).cpu()
        report = gradient_report(model, images[:8], y[:8], draws=(1,))
        assert report["consistency"][1] == pytest.approx(1.0, abs=1e-5)
    disagreement = float((results["cpu"] != results["cuda"]).float().mean())
    record_figure("apgd_cpu_cuda_disagreement", disagreement, "share of images broken on one device only")
    assert disagreement <= 0.1


@pytest.mark.parametrize("dynamic", [False, True])
def test_nrp_on_cuda_matches_the_cpu(dynamic: bool, record_figure: Any) -> None:
    from art_purifiers import NeuralRepresentationPurifier

    x = photos(8, 32)
    outputs = [NeuralRepresentationPurifier(dynamic=dynamic, seed=3, device_type=device_type).forward(images)[0]
               for device_type, images in (("cpu", x), ("gpu", x.to(CUDA)))]  # fmt: skip
    assert outputs[1].device.type == "cuda"
    value = psnr(outputs[0], outputs[1])
    record_figure(f"NeuralRepresentationPurifier dynamic={dynamic}: PSNR CPU vs CUDA (dB)", value)
    assert value >= 40  # TF32 convolutions on the GPU; the same seed draws the same dynamic noise on both


def test_nrp_gradients_through_art_on_cuda_match_the_cpu(record_figure: Any) -> None:
    from art_purifiers import NeuralRepresentationPurifier

    x = photos(16, 32).numpy()
    y = np.eye(10, dtype=np.float32)[np.arange(16) % 10]
    gradients = [art_classifier(NeuralRepresentationPurifier(device_type=device), device).loss_gradient(x, y)
                 for device in ("cpu", "gpu")]  # fmt: skip
    cosine = float((gradients[0] * gradients[1]).sum() / np.linalg.norm(gradients[0]) / np.linalg.norm(gradients[1]))
    record_figure("NeuralRepresentationPurifier: loss gradient (exact), cosine CUDA vs CPU", cosine)
    assert np.abs(gradients[0]).sum() > 0 and cosine > 0.999


def test_ssp_on_cuda_stays_in_budget_and_matches_the_cpu_loss(record_figure: Any) -> None:
    from art_purifiers import zoo
    from art_purifiers.attacks.ssp import layer_features, self_supervised_perturbation

    x, eps = photos(16, 32), 16 / 255
    losses = []
    for device in ("cpu", "cuda"):
        features = layer_features(zoo.resolve("cifar10-vgg-features").to(device).eval(), "features.relu3_3")
        generator = torch.Generator().manual_seed(0)
        adversarial = self_supervised_perturbation(features, x.to(device), eps, steps=20, generator=generator)
        assert adversarial.device.type == device and float((adversarial - x.to(device)).abs().max()) <= eps + 1e-6
        with torch.no_grad():
            losses.append(float((features(adversarial) - features(x.to(device))).pow(2).mean()))
    record_figure("SSP-20 feature MSE, CUDA / CPU", losses[1] / losses[0])
    assert losses[1] == pytest.approx(losses[0], rel=0.05)  # sign steps may flip where a gradient is ~0


def test_nrp_training_steps_run_on_cuda() -> None:
    from art_purifiers.nets.classifier import CifarVGG
    from art_purifiers.nets.nrp import NRPResidualGenerator, RelativisticCritic
    from art_purifiers.training.nrp import LossWeights, SSPSettings, frozen_features, training_step

    torch.manual_seed(0)
    features = frozen_features(CifarVGG(widths=(8, 8), depths=(1, 1)).to(CUDA), "features.relu2_1")
    purifier = NRPResidualGenerator(features=8, blocks=1).to(CUDA)
    critic = RelativisticCritic(features=4, depth=1).to(CUDA)
    before = [p.detach().clone() for p in purifier.parameters()]
    optimizers = (torch.optim.Adam(purifier.parameters(), 1e-2), torch.optim.Adam(critic.parameters(), 1e-3))
    clean, sampler = torch.rand(8, 3, 16, 16, device=CUDA), torch.Generator().manual_seed(0)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        losses = training_step(purifier, critic, optimizers, features, clean, SSPSettings(steps=2), LossWeights(),
                               sampler)  # fmt: skip
    assert all(np.isfinite(value) for value in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, purifier.parameters()))
