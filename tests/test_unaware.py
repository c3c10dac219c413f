"""The attack-unaware (gray-box) protocol: examples from the undefended model, per-image worst case, budgets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from art.estimators.classification import PyTorchClassifier

from art_purifiers.evaluation.unaware import UnawareAttack, attack_unaware, paper_attacks


class Shift:
    """A stand-in ART attack that adds a fixed perturbation to chosen images."""

    def __init__(self, images: list[int], amount: float) -> None:
        self.images, self.amount = images, amount

    def generate(self, x: np.ndarray, y: Any = None) -> np.ndarray:
        out = x.copy()
        out[self.images] = np.clip(out[self.images] + self.amount, 0, 1)
        return out


def brightness_classifier() -> PyTorchClassifier:
    """Class 1 when the mean pixel exceeds 0.5, else class 0."""

    class Model(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            score = x.mean((1, 2, 3)) - 0.5
            return torch.stack([-score, score], 1) * 100

    return PyTorchClassifier(Model(), torch.nn.CrossEntropyLoss(), (1, 4, 4), 2, clip_values=(0, 1))


def test_every_attack_is_the_per_image_worst_case() -> None:
    x = np.full((4, 1, 4, 4), 0.45, dtype=np.float32)
    y = np.zeros(4, dtype=int)
    undefended = brightness_classifier()
    # attack A breaks images 0 and 1, attack B images 1 and 2: each alone leaves 50%, together only image 3 survives
    attacks = [
        UnawareAttack("A", lambda model: Shift([0, 1], 0.1), 0.1),
        UnawareAttack("B", lambda model: Shift([1, 2], 0.1), 0.1),
    ]
    predict = lambda images: undefended.predict(images).argmax(1)  # noqa: E731
    result = attack_unaware(undefended, x, y, attacks, {"none": predict}, verbose=False)
    row = result["rows"]["none"]
    assert row["A"]["accuracy"] == row["B"]["accuracy"] == 0.5
    assert row["every attack"]["accuracy"] == 0.25
    np.testing.assert_array_equal(result["correct"]["none"], [[0, 0, 1, 1], [1, 0, 0, 1]])
    assert row["every attack"]["low"] < 0.25 < row["every attack"]["high"]


def test_a_defence_is_scored_on_the_undefended_models_examples() -> None:
    x = np.full((2, 1, 4, 4), 0.45, dtype=np.float32)
    undefended = brightness_classifier()
    attacks = [UnawareAttack("A", lambda model: Shift([0, 1], 0.1), 0.1)]
    darken = lambda images: undefended.predict(np.clip(images - 0.2, 0, 1)).argmax(1)  # noqa: E731
    result = attack_unaware(undefended, x, np.zeros(2, dtype=int), attacks, {"darken": darken}, verbose=False)
    assert result["rows"]["darken"]["A"]["accuracy"] == 1.0


def test_an_attack_over_its_budget_is_refused() -> None:
    x = np.full((2, 1, 4, 4), 0.45, dtype=np.float32)
    attacks = [UnawareAttack("greedy", lambda model: Shift([0], 0.2), 0.1)]
    with pytest.raises(AssertionError, match="exceeds the Linf budget"):
        attack_unaware(brightness_classifier(), x, np.zeros(2, dtype=int), attacks, {}, verbose=False)


def test_the_paper_attacks_respect_their_budgets_on_a_real_model() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    classifier = PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), (3, 8, 8), 10, clip_values=(0, 1))
    x = np.random.default_rng(0).random((6, 3, 8, 8)).astype(np.float32)
    y = classifier.predict(x).argmax(1)
    attacks = paper_attacks(batch_size=6, cw_steps=5)
    assert [a.label for a in attacks] == ["FGSM-2", "FGSM-5", "FGSM-10", "I-FGSM", "MI-FGSM", "DeepFool", "C&W"]
    predict = lambda images: classifier.predict(images).argmax(1)  # noqa: E731
    result = attack_unaware(classifier, x, y, attacks, {"none": predict}, verbose=False)
    # the budgets are checked inside; the linear model falls to the iterative attacks
    assert result["rows"]["none"]["I-FGSM"]["accuracy"] < 0.5


def test_examples_are_cached_and_reused_for_the_same_images(tmp_path) -> None:
    x = np.full((2, 1, 4, 4), 0.45, dtype=np.float32)
    undefended = brightness_classifier()
    built = []

    def build(model: Any) -> Shift:
        built.append(1)
        return Shift([0], 0.1)

    attacks = [UnawareAttack("A", build, 0.1)]
    for _ in range(2):
        attack_unaware(undefended, x, np.zeros(2, dtype=int), attacks, {}, cache=tmp_path, verbose=False)
    assert len(built) == 1
    attack_unaware(undefended, x + 0.01, np.zeros(2, dtype=int), attacks, {}, cache=tmp_path, verbose=False)
    assert len(built) == 2  # other images: computed again
