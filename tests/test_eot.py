"""EOTPyTorchClassifier: it must average over draws, and the averaging must survive every ART attack we list."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from art.attacks.evasion import (
    AutoAttack,
    AutoProjectedGradientDescent,
    CarliniL2Method,
    DeepFool,
    ProjectedGradientDescent,
)
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_purifiers import EOTPyTorchClassifier
from art_purifiers.base import PurifierPreprocessor


class RandomInvert(PurifierPreprocessor):
    """Toy randomized defence: each image is inverted (1 - x) with probability 1/2. Records its gradient batches."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gradient_batches: list[int] = []

    def _is_randomized(self) -> bool:
        return True

    def _draw(self, num_images: int, height: int, width: int) -> dict[str, torch.Tensor]:
        return {"invert": torch.rand(num_images, generator=self._generator) < 0.5}

    def _purify(self, x: torch.Tensor, randomness: Any) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.gradient_batches.append(x.shape[0])
        invert = randomness["invert"].to(x.device)[:, None, None, None]
        return torch.where(invert, 1 - x, x)


def linear_model(weight: torch.Tensor | None = None) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3, bias=False))
    if weight is not None:
        with torch.no_grad():
            model[1].weight.copy_(weight)
    return model


def eot_classifier(defence: PurifierPreprocessor, k: int, model: nn.Module | None = None, **kwargs: Any) -> Any:
    return EOTPyTorchClassifier(
        model or linear_model(),
        loss=nn.CrossEntropyLoss(),
        input_shape=(3, 4, 4),
        nb_classes=3,
        clip_values=(0.0, 1.0),
        preprocessing_defences=[defence],
        eot_samples=k,
        device_type="cpu",
        **kwargs,
    )


def test_class_gradient_is_the_average_over_draws() -> None:
    # f_c(t(x)) = w_c . x or w_c . (1 - x): gradient +w_c or -w_c; E over the coin flip is 0.
    torch.manual_seed(1)
    weight = torch.randn(3, 48)
    x = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    single = eot_classifier(RandomInvert(seed=0, device_type="cpu"), 1, linear_model(weight))
    one_draw = single.class_gradient(x, label=0).reshape(2, 48)
    np.testing.assert_allclose(np.abs(one_draw), np.abs(weight[0].numpy())[None].repeat(2, 0), rtol=1e-5)

    defence = RandomInvert(seed=0, device_type="cpu")
    eot = eot_classifier(defence, 4000, linear_model(weight))
    averaged = eot.class_gradient(x, label=0).reshape(2, 48)
    # the mean of 4000 fair +-1 coins is within 0.06 of 0 (>3.5 sigma); a single draw is +-1
    assert np.abs(averaged / weight[0].numpy()).max() < 0.06
    # and it is exactly the empirical mean of the draws it made
    reference = defence.__class__(seed=0, device_type="cpu")
    draws = reference._draw(2 * 4000, 4, 4)["invert"].view(2, 4000).float()
    expected = (1 - 2 * draws.mean(1)).numpy()[:, None] * weight[0].numpy()[None]
    np.testing.assert_allclose(averaged, expected, rtol=1e-4, atol=1e-6)


def test_loss_gradient_is_the_average_of_per_draw_loss_gradients() -> None:
    torch.manual_seed(2)
    model = linear_model(torch.randn(3, 48))
    x = np.random.default_rng(1).random((3, 3, 4, 4)).astype(np.float32)
    y = np.eye(3)[[0, 1, 2]]
    k = 6
    eot = eot_classifier(RandomInvert(seed=5, device_type="cpu"), k, model)
    averaged = eot.loss_gradient(x, y)
    # reference: the same draws, one image-copy at a time, through a plain classifier and a mean-reduced loss
    invert = RandomInvert(seed=5, device_type="cpu")._draw(3 * k, 4, 4)["invert"].view(3, k)
    plain = PyTorchClassifier(
        model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(3, 4, 4),
        nb_classes=3,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    expected = np.zeros_like(x)
    for i in range(3):
        for j in range(k):
            flipped = 1 - x[i : i + 1] if invert[i, j] else x[i : i + 1]
            grad = plain.loss_gradient(flipped, y[i : i + 1])
            expected[i] += (-grad[0] if invert[i, j] else grad[0]) / k / 3  # mean over the batch of 3
    np.testing.assert_allclose(averaged, expected, rtol=1e-4, atol=1e-7)


def test_tensor_inputs_are_averaged_too() -> None:
    eot = eot_classifier(RandomInvert(seed=0, device_type="cpu"), 5)
    x = torch.rand(2, 3, 4, 4)
    gradient = eot.loss_gradient(x, torch.eye(3)[[0, 1]])
    assert isinstance(gradient, torch.Tensor) and gradient.shape == x.shape


def test_predict_is_one_draw_unless_asked() -> None:
    x = np.random.default_rng(0).random((4, 3, 4, 4)).astype(np.float32)
    defence = RandomInvert(seed=0, device_type="cpu")
    eot = eot_classifier(defence, 8)
    assert eot.predict(x).shape == (4, 3)
    averaged = eot_classifier(RandomInvert(seed=0, device_type="cpu"), 2000, eot_predict=True)
    averaged.model.load_state_dict(eot.model.state_dict())
    # the mean of the outputs on x and 1 - x, for a bias-free linear model: W(x + 1 - x)/2 = W 1 / 2
    expected = eot.model(torch.full((1, 3, 4, 4), 0.5)).detach().numpy()
    np.testing.assert_allclose(averaged.predict(x), np.repeat(expected, 4, 0), atol=0.08 * np.abs(expected).max())


def test_invalid_eot_samples() -> None:
    with pytest.raises(ValueError, match="eot_samples"):
        eot_classifier(RandomInvert(device_type="cpu"), 0)


def test_cw_pairs_its_two_class_gradient_calls() -> None:
    eot = eot_classifier(RandomInvert(seed=0, device_type="cpu"), 3)
    x = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    first = eot.class_gradient(x, label=np.array([0, 1]))
    again = eot.class_gradient(x, label=np.array([0, 1]))  # same batch: the same k draws
    np.testing.assert_array_equal(first, again)
    other = eot.class_gradient(x * 0.9, label=np.array([0, 1]))  # a new batch: fresh draws
    assert other.shape == first.shape


ATTACKS = {
    "PGD": lambda c: ProjectedGradientDescent(c, eps=0.1, eps_step=0.05, max_iter=2, verbose=False),
    "APGD-CE": lambda c: AutoProjectedGradientDescent(
        c, eps=0.1, max_iter=2, nb_random_init=1, loss_type="cross_entropy", verbose=False
    ),
    "APGD-DLR": lambda c: AutoProjectedGradientDescent(
        c, eps=0.1, max_iter=2, nb_random_init=1, loss_type="difference_logits_ratio", verbose=False
    ),
    "AutoAttack": lambda c: AutoAttack(
        c,
        eps=0.1,
        attacks=[
            AutoProjectedGradientDescent(
                c, eps=0.1, max_iter=2, nb_random_init=1, loss_type="cross_entropy", verbose=False
            )
        ],
    ),
    "C&W": lambda c: CarliniL2Method(c, max_iter=2, binary_search_steps=1, verbose=False),
    "DeepFool": lambda c: DeepFool(c, max_iter=2, verbose=False),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_eot_survives_the_attack(name: str) -> None:
    # Every gradient the attack takes through the defence must see k copies of each image.
    k = 7
    defence = RandomInvert(seed=0, device_type="cpu")
    classifier = eot_classifier(defence, k)
    x = np.random.default_rng(3).random((4, 3, 4, 4)).astype(np.float32)
    # labels = predictions on the defended model, so that APGD has robust points to attack
    y = np.eye(3)[classifier.predict(x).argmax(1)]
    ATTACKS[name](classifier).generate(x, y=y)
    assert defence.gradient_batches, f"{name} took no gradient through the defence"
    assert all(size % k == 0 for size in defence.gradient_batches), defence.gradient_batches


def test_cw_pairing_reaches_a_defence_wrapped_for_learned_bpda() -> None:
    from art_purifiers.attacks.learned_bpda import Approximator, LearnedBPDA

    torch.manual_seed(0)
    wrapped = LearnedBPDA(RandomInvert(seed=0, device_type="cpu"), Approximator(width=4, depth=2), device_type="cpu")
    # a non-linear model: its class gradients depend on the draw, so unpaired draws would differ
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.Tanh(), nn.Linear(8, 3))
    eot = eot_classifier(wrapped, 3, model)  # type: ignore[arg-type]
    x = np.random.default_rng(1).random((2, 3, 4, 4)).astype(np.float32)
    first = eot.class_gradient(x, label=np.array([0, 1]))
    np.testing.assert_array_equal(eot.class_gradient(x, label=np.array([0, 1])), first)  # the same draws replayed
    state = wrapped.get_random_state()
    wrapped.defence(x)
    assert not torch.equal(wrapped.get_random_state(), state)  # the wrapper exposes the defence's live state
