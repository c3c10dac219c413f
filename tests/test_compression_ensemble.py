"""Zhang & Gao's ensemble as one model: the paper's averaged softmax against a plain version, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.attacks.evasion import ProjectedGradientDescent
from torch import nn

from art_purifiers import NNFavoredJpeg
from art_purifiers.estimators import CompressionEnsemble, compression_ensemble_classifier, search_ensemble_table


def member(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)
    )


def members() -> list[tuple[nn.Module, int | None]]:
    return [(member(0), None), (member(1), 90), (member(2), 50), (member(3), 30)]


def images(count: int = 6) -> np.ndarray:
    return np.random.default_rng(0).random((count, 3, 16, 16)).astype(np.float32)


def plain_probabilities(pairs: list[tuple[nn.Module, int | None]], x: np.ndarray, **table: float) -> np.ndarray:
    """The paper's rule written out: compress per member (NumPy path), softmax, average."""
    total = 0
    for model, quality in pairs:
        inputs = x if quality is None else NNFavoredJpeg(quality=quality, **table)(x)[0]
        with torch.no_grad():
            total = total + torch.softmax(model(torch.from_numpy(inputs)), dim=1).numpy()
    return total / len(pairs)


def test_the_output_is_the_log_of_the_members_averaged_softmax() -> None:
    pairs, x = members(), images()
    ensemble = CompressionEnsemble(pairs)
    with torch.no_grad():
        log_probabilities = ensemble(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.exp(log_probabilities), plain_probabilities(pairs, x), rtol=1e-5, atol=1e-6)
    # ART's cross-entropy on these outputs is -log of the ensemble's probability of the label
    classifier = compression_ensemble_classifier(ensemble, (3, 16, 16), 5)
    y = np.array([0, 1, 2, 3, 4, 0])
    loss = classifier.compute_loss(x, np.eye(5)[y], reduction="none")
    np.testing.assert_allclose(loss, -np.log(plain_probabilities(pairs, x)[np.arange(6), y]), rtol=1e-5)


def test_the_logit_average_option() -> None:
    pairs, x = members(), images()
    with torch.no_grad():
        expected = np.mean(
            [m(torch.from_numpy(x if q is None else NNFavoredJpeg(quality=q)(x)[0])).numpy() for m, q in pairs], axis=0
        )
        np.testing.assert_allclose(
            CompressionEnsemble(pairs, output="mean_logits")(torch.from_numpy(x)).numpy(),
            expected,
            rtol=1e-5,
            atol=1e-6,
        )


def test_logit_gradient_keeps_the_papers_prediction() -> None:
    pairs, x = members(), torch.from_numpy(images())
    hybrid = CompressionEnsemble(pairs, backward="mean_logits")
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    with torch.no_grad():
        torch.testing.assert_close(hybrid(x), CompressionEnsemble(pairs)(x))  # the averaged probabilities
    inputs = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(hybrid(inputs)[torch.arange(6), y].sum(), inputs)
    logit_inputs = x.clone().requires_grad_(True)
    logits = CompressionEnsemble(pairs, output="mean_logits")(logit_inputs)
    (expected,) = torch.autograd.grad(logits[torch.arange(6), y].sum(), logit_inputs)
    torch.testing.assert_close(gradient, expected)
    with pytest.raises(ValueError, match="backward must be None or one of"):
        CompressionEnsemble(pairs, backward="logits")


def test_gradients_reach_every_member_and_art_attacks_run() -> None:
    pairs, x = members(), images(4)
    classifier = compression_ensemble_classifier(CompressionEnsemble(pairs), (3, 16, 16), 5)
    y = np.eye(5)[[0, 1, 2, 3]]
    reference = classifier.loss_gradient(x, y)
    assert np.abs(reference).sum() > 0
    for index in range(len(pairs)):  # changing any one member changes the input gradient
        changed = [(member(10 + i) if i == index else m, q) for i, (m, q) in enumerate(pairs)]
        other = compression_ensemble_classifier(CompressionEnsemble(changed), (3, 16, 16), 5).loss_gradient(x, y)
        assert not np.allclose(other, reference)
    x_adv = ProjectedGradientDescent(classifier, eps=8 / 255, eps_step=2 / 255, max_iter=3, verbose=False).generate(
        x, y=y
    )
    assert np.abs(x_adv - x).max() <= 8 / 255 + 1e-6 and np.abs(x_adv - x).max() > 0


def test_majority_vote_counts_member_predictions() -> None:
    class Constant(nn.Module):
        def __init__(self, label: int) -> None:
            super().__init__()
            self.label = label

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.one_hot(torch.full((len(x),), self.label), 5).float() * 10

    ensemble = CompressionEnsemble([(Constant(3), 90), (Constant(1), 50), (Constant(3), None)])
    assert ensemble.majority_vote(torch.from_numpy(images(2))).tolist() == [3, 3]


def test_bad_members_and_options_are_named() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CompressionEnsemble([])
    with pytest.raises(ValueError, match="output"):
        CompressionEnsemble(members(), output="vote")
    with pytest.raises(TypeError, match="members\\[1\\]"):
        CompressionEnsemble([(member(0), 90), ("model", 50)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="quality"):
        CompressionEnsemble([(member(0), 0)])
    mismatched = [(member(0), 90), (nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3)), 50)]
    with pytest.raises(ValueError, match="output shape"):
        CompressionEnsemble(mismatched)(torch.from_numpy(images(2)))


class Detail(nn.Module):
    """Classes by the amount of pixel-to-pixel detail, which compression removes: the search has choices to make."""

    def __init__(self, centres: tuple[float, ...]) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.tensor(centres))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        detail = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))
        return -((detail[:, None] - self.centres) ** 2) * 2000


def detailed_images(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.repeat(np.repeat(rng.random((count, 3, 4, 4)), 4, axis=2), 4, axis=3)
    noise = rng.normal(0, 1, smooth.shape) * np.linspace(0, 0.3, count)[:, None, None, None]
    return np.clip(smooth + noise, 0, 1).astype(np.float32)


def detail_members() -> list[tuple[nn.Module, int | None]]:
    centres = [(0.0, 0.05, 0.1, 0.15, 0.2), (0.02, 0.06, 0.1, 0.14, 0.25), (0.01, 0.04, 0.09, 0.2, 0.3)]
    return [(Detail(centres[0]), None), (Detail(centres[1]), 80), (Detail(centres[2]), 40)]


def test_the_table_search_scores_the_whole_ensemble_per_candidate() -> None:
    pairs, x = detail_members(), detailed_images(24)
    with torch.no_grad():
        y = pairs[0][0](torch.from_numpy(x)).argmax(1).numpy()  # labels: M's own predictions, so M scores 100%
    x_adv = np.clip(x + np.random.default_rng(1).normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
    ensemble = CompressionEnsemble(pairs)
    grid = {"favored_diagonals": [1, 6], "qs_af_values": [10, 60, 200]}
    result = search_ensemble_table(ensemble, x, y, x_adv, y, max_accuracy_loss=0.5, verbose=False, **grid)
    assert len(result.rows) == 6 and result.clean_accuracy_undefended == 1.0
    for row in result.rows:  # every row is the plain rule with that table in every member
        table = {"favored_diagonals": int(row["favored_diagonals"]), "qs_af": row["qs_af"]}
        assert row["clean_accuracy"] == np.mean(plain_probabilities(pairs, x, **table).argmax(1) == y)
        assert row["adversarial_accuracy"] == np.mean(plain_probabilities(pairs, x_adv, **table).argmax(1) == y)
    admissible = [r for r in result.rows if r["clean_accuracy_loss"] <= 0.5]
    assert len({(r["clean_accuracy"], r["adversarial_accuracy"]) for r in result.rows}) > 2  # the candidates differ
    assert result.adversarial_accuracy == max(r["adversarial_accuracy"] for r in admissible)
    assert ensemble.table_params == {"favored_diagonals": 4, "qs_af": 50.0}  # restored
    ensemble.set_table(**result.params)
    assert all(c.favored_diagonals == result.favored_diagonals for c in ensemble.compressions if c is not None)


def test_a_one_member_search_is_the_defences_own_search() -> None:
    model, x = detail_members()[1][0], detailed_images(24)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    x_adv = np.clip(x + np.random.default_rng(2).normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
    options = {"favored_diagonals": [1, 5], "qs_af_values": [5, 60, 200], "max_accuracy_loss": 0.3, "verbose": False}
    # the ensemble [(model, 70)] with the uncompressed model as its reference is NNFavoredJpeg(quality=70) + model
    ensemble = search_ensemble_table(CompressionEnsemble([(model, 70)]), x, y, x_adv, y, reference=model, **options)
    classifier = compression_ensemble_classifier(CompressionEnsemble([(model, None)]), (3, 16, 16), 5)
    single = NNFavoredJpeg(quality=70).search_table(classifier, x, y, x_adv, y, **options)
    assert ensemble.rows == single.rows and ensemble.params == single.params
    assert len({r["clean_accuracy"] for r in single.rows}) > 1  # the candidates differ
    with pytest.raises(ValueError, match="no uncompressed member"):
        search_ensemble_table(CompressionEnsemble([(model, 70)]), x, y, x_adv, y, **options)
    with pytest.raises(ValueError, match="compresses nothing"):
        search_ensemble_table(CompressionEnsemble([(model, None)]), x, y, x_adv, y, **options)


def test_the_shipped_ensemble_is_the_papers_five_models() -> None:
    from art_purifiers import zoo
    from art_purifiers.classifiers import load_classifier
    from art_purifiers.estimators import ZHANG2021_MEMBERS

    ensemble = load_classifier("art_purifiers.estimators.compression_ensemble:zhang2021_ensemble")
    assert isinstance(ensemble, CompressionEnsemble) and ensemble.qualities == [None, 90, 70, 50, 30]
    assert ensemble.output == "log_mean_softmax" and not ensemble.training
    assert ensemble.table_params == {"favored_diagonals": 2, "qs_af": 61.0}  # the ensemble's own search
    assert all(c.favored_diagonals == 2 and c.qs_af == 61.0 for c in ensemble.compressions if c is not None)
    variant = load_classifier("art_purifiers.estimators.compression_ensemble:zhang2021_ensemble_mean_logits")
    assert variant.output == "mean_logits"
    hybrid = load_classifier("art_purifiers.estimators.compression_ensemble:zhang2021_ensemble_logit_gradient")
    assert hybrid.output == "log_mean_softmax" and hybrid.backward == "mean_logits"
    reference = zoo.load("cifar10-reference").state_dict()
    for (name, quality), model in zip(ZHANG2021_MEMBERS[1:], ensemble.models[1:]):
        assert zoo.card(zoo.path(name))["quality"] == quality
        # a fine-tuned copy of M: the same architecture and keys, other weights
        state = model.state_dict()
        assert state.keys() == reference.keys() and any(not torch.equal(reference[k], state[k]) for k in state)
    x = np.random.default_rng(0).random((4, 3, 32, 32)).astype(np.float32)
    pairs = list(zip(ensemble.models, ensemble.qualities))
    with torch.no_grad():
        expected = plain_probabilities(pairs, x, favored_diagonals=2, qs_af=61.0)
        np.testing.assert_allclose(np.exp(ensemble(torch.from_numpy(x)).numpy()), expected, rtol=1e-4, atol=1e-6)
