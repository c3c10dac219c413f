"""The attack-unaware (gray-box) protocol: examples from the undefended model, per-image worst case, budgets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from art.estimators.classification import PyTorchClassifier

from art_purifiers.evaluation.unaware import (
    UnawareAttack,
    attack_unaware,
    kurakin_steps,
    markdown,
    paper_attacks,
    predictor,
    zhang2021_attacks,
)


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
        attack_unaware(undefended, x, np.zeros(2, dtype=int), attacks, {}, cache=tmp_path / "new", verbose=False)
    assert len(built) == 1
    attack_unaware(undefended, x + 0.01, np.zeros(2, dtype=int), attacks, {}, cache=tmp_path / "new", verbose=False)
    assert len(built) == 2  # other images: computed again


def test_kurakin_steps_follow_the_published_rule() -> None:
    # ceil(min(eps + 4, 1.25 eps)) with eps in 1/255 units; 16/255 gives the 20 steps of Mustafa et al.'s I-FGSM
    assert [kurakin_steps(k / 255) for k in (2, 3, 4, 8, 16, 32)] == [3, 4, 5, 10, 20, 36]


@pytest.mark.parametrize("transfer", [False, True])
def test_zhang2021_attacks_use_their_budgets_on_a_real_model(transfer: bool, tmp_path) -> None:
    torch.manual_seed(0)
    # input diversity resizes the input: the model must take any size, like a convolutional surrogate
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, 10)
    ).eval()
    classifier = PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), (3, 8, 8), 10, clip_values=(0, 1))
    x = np.random.default_rng(0).uniform(0.1, 0.9, (6, 3, 8, 8)).astype(np.float32)
    y = classifier.predict(x).argmax(1)
    attacks = zhang2021_attacks(transfer=transfer, batch_size=4, cw_steps=5)
    tail = ["DI-FGSM-2", "DI-FGSM-4"] if transfer else ["DeepFool", "C&W"]
    assert [a.label for a in attacks] == ["FGSM-2", "FGSM-4", "FGSM-8", "I-FGSM-2", "I-FGSM-3", "I-FGSM-4", *tail]
    predict = lambda images: classifier.predict(images).argmax(1)  # noqa: E731
    attack_unaware(classifier, x, y, attacks, {"none": predict}, cache=tmp_path, verbose=False)  # checks budgets
    for attack in attacks:
        saved = np.load(tmp_path / ("unaware-" + "".join(c if c.isalnum() else "_" for c in attack.label) + ".npz"))
        change = np.abs(saved["x_adv"] - x).max(axis=(1, 2, 3))
        if attack.label.startswith("FGSM"):  # one full step of eps away from the [0, 1] bounds
            np.testing.assert_allclose(change, attack.eps, rtol=1e-4)
        elif attack.eps is not None:  # iterative: steps of 1/255 (DI: eps/steps) add up to the budget
            assert np.all(change > attack.eps / 2) and np.all(change <= attack.eps + 1e-6)


def test_predictor_and_markdown_table() -> None:
    x = np.full((4, 1, 4, 4), 0.45, dtype=np.float32)
    x[2:] = 0.55
    model = brightness_classifier().model
    np.testing.assert_array_equal(predictor(model, batch_size=3)(x), [0, 0, 1, 1])
    np.testing.assert_array_equal(predictor(model, lambda images: images + 0.1, batch_size=3)(x), [1, 1, 1, 1])
    attacks = [UnawareAttack("A", lambda m: Shift([0], 0.1), 0.1), UnawareAttack("B", lambda m: Shift([1], 0.1), 0.1)]
    result = attack_unaware(brightness_classifier(), x, np.array([0, 0, 1, 1]), attacks, {"none": predictor(model)},
                            verbose=False)  # fmt: skip
    lines = markdown(result, "Intro.", "cmd --flag").splitlines()
    assert lines[:3] == ["Intro.", "", "`cmd --flag`"] and lines[4] == "| defence | A | B | every attack |"
    low, high = result["rows"]["none"]["every attack"]["low"], result["rows"]["none"]["every attack"]["high"]
    assert lines[6] == f"| none | 75.0 | 75.0 | 50.0 [{100 * low:.1f}, {100 * high:.1f}] |"
