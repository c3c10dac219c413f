"""The defences inside ART's PyTorchClassifier: gradients in every BPDA mode and attacks that run through them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from art.attacks.evasion import ProjectedGradientDescent, SquareAttack
from art.estimators.classification import PyTorchClassifier

from art_purifiers import BPDA_MODES, CompressRestore, NNFavoredJpeg, QuantizeDistort, SuperResolution
from art_purifiers.base import PurifierPreprocessor

DEFENCES = [NNFavoredJpeg, QuantizeDistort, CompressRestore, SuperResolution]


def small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    ).eval()


def classifier(model: torch.nn.Module, defences: list | None = None) -> PyTorchClassifier:
    return PyTorchClassifier(
        model,
        torch.nn.CrossEntropyLoss(),
        (3, 16, 16),
        10,
        clip_values=(0.0, 1.0),
        preprocessing_defences=defences,
        device_type="cpu",
    )


def defence_and_twin(
    defence_class: type[PurifierPreprocessor], **kwargs: object
) -> tuple[PurifierPreprocessor, PurifierPreprocessor]:
    """A defence and a copy in the same generator state: the twin's next call makes the defence's next draw."""
    defence = defence_class(device_type="cpu", **kwargs)
    return defence, copy.deepcopy(defence)


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    # one-hot labels, as ART's attacks pass them to loss_gradient
    return rng.random((6, 3, 16, 16)).astype(np.float32), np.eye(10, dtype=np.float32)[rng.integers(0, 10, 6)]


@pytest.mark.parametrize("bpda", BPDA_MODES)
@pytest.mark.parametrize("defence_class", DEFENCES)
def test_loss_gradient_is_finite_and_non_zero(
    defence_class: type[PurifierPreprocessor], bpda: str, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    defended = classifier(small_cnn(), [defence_class(bpda=bpda, seed=0, device_type="cpu")])
    for inputs in (x, torch.from_numpy(x)):  # ART's numpy path and its torch path (used by PGD's torch version)
        grad = defended.loss_gradient(inputs, y)
        grad = grad.numpy() if isinstance(grad, torch.Tensor) else grad
        assert grad.shape == x.shape and np.isfinite(grad).all() and np.abs(grad).sum() > 0
        assert (np.abs(grad).reshape(len(x), -1).sum(1) > 0).all()


# SuperResolution's identity backward is its resize's gradient, not the identity (tests/test_super_resolution.py)
@pytest.mark.parametrize("defence_class", [NNFavoredJpeg, QuantizeDistort, CompressRestore])
def test_identity_mode_equals_undefended_gradient_at_the_purified_point(
    defence_class: type[PurifierPreprocessor], batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    model = small_cnn()
    defence, twin = defence_and_twin(defence_class, bpda="identity", seed=7)
    purified = twin(x)[0]
    defended = classifier(model, [defence]).loss_gradient(x, y)
    undefended = classifier(model).loss_gradient(purified, y)
    np.testing.assert_allclose(defended, undefended, rtol=1e-5, atol=1e-7)
    # and the straight-through backward is a different estimate for the random distortion (exact gather gradient)
    if defence_class is QuantizeDistort:
        straight = classifier(model, [defence_class(seed=7, device_type="cpu")]).loss_gradient(x, y)
        assert not np.allclose(straight, undefended, atol=1e-6)


@pytest.mark.parametrize("defence_class", DEFENCES)
def test_predictions_are_those_of_the_purified_images(
    defence_class: type[PurifierPreprocessor], batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = batch
    model = small_cnn()
    defence, twin = defence_and_twin(defence_class, seed=1)
    np.testing.assert_allclose(
        classifier(model, [defence]).predict(x), classifier(model).predict(twin(x)[0]), rtol=1e-5, atol=1e-6
    )


def test_two_of_our_defences_chain(batch: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = batch
    chain = [NNFavoredJpeg(device_type="cpu"), QuantizeDistort(seed=0, device_type="cpu")]
    grad = classifier(small_cnn(), chain).loss_gradient(x, y)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


@pytest.mark.parametrize("defence_class", DEFENCES)
def test_pgd_and_square_run_against_the_defence(
    defence_class: type[PurifierPreprocessor], batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    defended = classifier(small_cnn(), [defence_class(seed=0, device_type="cpu")])
    eps = 8 / 255
    pgd = ProjectedGradientDescent(defended, eps=eps, eps_step=2 / 255, max_iter=5, verbose=False)
    x_pgd = pgd.generate(x, y)
    square = SquareAttack(defended, eps=eps, max_iter=20, nb_restarts=1, verbose=False)
    x_square = square.generate(x, y)
    for x_adv in (x_pgd, x_square):
        assert x_adv.shape == x.shape and np.isfinite(x_adv).all()
        assert np.abs(x_adv - x).max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert np.abs(x_pgd - x).max() > eps / 2  # the gradient steps moved the images


def test_pgd_through_the_defence_lowers_the_loss_target() -> None:
    # with straight-through BPDA, PGD must raise the loss of the defended model on a trained-ish linear model
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10)).eval()
    rng = np.random.default_rng(1)
    x = rng.random((16, 3, 16, 16)).astype(np.float32)
    defence = NNFavoredJpeg(favored_diagonals=15, qs_of=4, device_type="cpu")
    defended = classifier(model, [defence])
    y = defended.predict(x).argmax(1)
    x_adv = ProjectedGradientDescent(defended, eps=16 / 255, eps_step=4 / 255, max_iter=10, verbose=False).generate(
        x, y
    )
    assert (defended.predict(x_adv).argmax(1) == y).mean() < 0.5
