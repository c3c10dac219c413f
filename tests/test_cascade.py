"""Evaluation v2: worst case per image, paired tests, the cascade, the controller, budgets, EOT choice, suite rows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from art_purifiers.evaluation import cascade, robust
from art_purifiers.evaluation.suite import EvaluationConfig, evaluate
from tests.test_evaluation import LEVELS, SIGNS, write_dataset

# --- robust accuracy -------------------------------------------------------------------------------------------------


def reference_figures(correct: np.ndarray) -> tuple[float, float, float]:
    """A plain loop: per image, the worst attack (that ran) by share of correct draws."""
    robust_count, expected_sum, majority_count = 0, 0.0, 0
    for image in correct:
        shares = [row.mean() for row in image if (row != -1).all()]
        worst = min(shares)
        robust_count += worst == 1.0
        expected_sum += worst
        majority_count += worst > 0.5
    n = len(correct)
    return robust_count / n, expected_sum / n, majority_count / n


def test_robust_accuracy_is_the_per_image_worst_case_over_attacks_and_draws() -> None:
    rng = np.random.default_rng(0)
    correct = (rng.random((200, 4, 5)) < 0.85).astype(np.int8)
    correct[rng.random(200) < 0.3, 3, :] = robust.NOT_RUN  # attacks skipped on some images
    figures = robust.summarise(correct)
    expected = reference_figures(correct)
    assert figures["robust"]["accuracy"] == pytest.approx(expected[0])
    assert figures["expected"]["accuracy"] == pytest.approx(expected[1])
    assert figures["majority"]["accuracy"] == pytest.approx(expected[2])
    # not the minimum over attacks of per-attack accuracies (what one column at a time would report)
    per_attack = [np.mean((correct[:, a, :] == 1).all(axis=1)) for a in range(3)]
    assert figures["robust"]["accuracy"] < min(per_attack)
    low, high = figures["robust"]["ci95"]
    assert low < figures["robust"]["accuracy"] < high


def test_one_wrong_draw_breaks_an_image() -> None:
    correct = np.ones((3, 2, 5), dtype=np.int8)
    correct[0, 1, 4] = 0  # image 0: one draw of one attack fooled
    figures = robust.summarise(correct)
    assert figures["robust"]["accuracy"] == pytest.approx(2 / 3)
    assert figures["expected"]["accuracy"] == pytest.approx((0.8 + 1 + 1) / 3)
    assert figures["majority"]["accuracy"] == pytest.approx(1.0)


def test_correctness_tensor_is_validated() -> None:
    with pytest.raises(ValueError, match="shape"):
        robust.summarise(np.ones((3, 2)))
    with pytest.raises(ValueError, match="only hold"):
        robust.summarise(np.full((3, 2, 1), 2))
    with pytest.raises(ValueError, match="at least one attack"):
        robust.summarise(np.full((3, 2, 1), robust.NOT_RUN))


def test_paired_comparison_uses_the_discordant_pairs() -> None:
    first = np.array([True] * 60 + [False] * 40)
    second = first.copy()
    second[:10] = False  # 10 images only the first row gets right, none the other way round
    result = robust.paired_comparison(first, second)
    assert result["difference"] == pytest.approx(0.10)
    assert result["p_value"] == pytest.approx(2 * 0.5**10)  # exact McNemar: both tails of Binomial(10, 1/2)
    assert result["ci95"][0] > 0 and result["significant"]
    same = robust.paired_comparison(first, first)
    assert same["p_value"] == 1.0 and not same["significant"] and same["difference"] == 0
    assert "no difference larger than" in robust.describe_difference(same, "A", "B")
    assert "points against" in robust.describe_difference(result, "A", "B")
    with pytest.raises(ValueError, match="same images"):
        robust.paired_comparison(first, first[:5])


def test_newcombe_interval_is_wider_for_independent_than_for_correlated_rows() -> None:
    rng = np.random.default_rng(1)
    first = rng.random(400) < 0.5
    correlated = first.copy()
    correlated[rng.choice(400, 20, replace=False)] ^= True
    independent = rng.random(400) < first.mean()
    narrow = np.diff(robust.paired_comparison(first, correlated)["ci95"])[0]
    wide = np.diff(robust.paired_comparison(first, independent)["ci95"])[0]
    assert narrow < wide


# --- cascade ---------------------------------------------------------------------------------------------------------


def test_cascade_attacks_only_images_no_earlier_attack_broke() -> None:
    x = torch.rand(10, 3, 4, 4)
    y = torch.zeros(10, dtype=torch.long)
    broken_by_first = {1, 4, 7}
    seen: list[list[int]] = []

    def first(images: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
        return images

    def second(images: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
        seen.append([int(v) for v in (images[:, 0, 0, 0] * 1e6).round()])
        return images

    ids = {int(v): i for i, v in enumerate((x[:, 0, 0, 0] * 1e6).round())}
    calls = {"n": 0}

    def score(images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        calls["n"] += 1
        rows = [ids[int(v)] for v in (images[:, 0, 0, 0] * 1e6).round()]
        if calls["n"] == 2:  # the first attack's examples: three images fooled in one of two draws
            return np.array([[1, 0] if r in broken_by_first else [1, 1] for r in rows], dtype=np.int8)
        return np.ones((len(images), 2), dtype=np.int8)

    attacks = [cascade.CascadeAttack("first", first), cascade.CascadeAttack("second", second)]
    result = cascade.run_cascade(attacks, x, y, score, "Linf", 8 / 255, batch_size=4)
    attacked = sorted(ids[v] for batch in seen for v in batch)
    assert attacked == [i for i in range(10) if i not in broken_by_first]
    assert result.attacked == [10, 10, 7]
    assert (result.correct[sorted(broken_by_first), 2] == robust.NOT_RUN).all()
    assert robust.summarise(result.correct)["robust"]["accuracy"] == pytest.approx(0.7)


def test_round_to_8bit_keeps_examples_inside_their_budget() -> None:
    x = torch.randint(0, 256, (6, 3, 5, 5)).float() / 255
    rng = torch.Generator().manual_seed(0)
    for norm, eps in (("Linf", 8 / 255), ("Linf", 0.03), ("L2", 0.5)):
        delta = torch.rand(x.shape, generator=rng) * 2 - 1
        if norm == "Linf":
            x_adv = (x + eps * delta).clamp(0, 1)
        else:
            x_adv = (x + eps * delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
        rounded = cascade.round_to_8bit(x, x_adv, norm, eps)
        assert torch.allclose(rounded * 255, (rounded * 255).round(), atol=1e-4)  # on the 8-bit grid
        cascade.check_budget(x, rounded, norm, eps, "test")
    off_grid = x + 0.001
    assert torch.equal(cascade.round_to_8bit(off_grid, off_grid, "Linf", 0.1), off_grid)


def test_budget_check_catches_violations() -> None:
    x = torch.full((2, 3, 4, 4), 0.5)
    with pytest.raises(AssertionError, match="exceeds the Linf budget"):
        cascade.check_budget(x, x + 0.1, "Linf", 0.05, "attack")
    with pytest.raises(AssertionError, match="leave"):
        cascade.check_budget(x, x + 0.6, "Linf", 1.0, "attack")
    with pytest.raises(AssertionError, match="L2"):
        cascade.check_budget(x, x + 0.1, "L2", 0.2, "attack")


def test_controller_keeps_going_while_a_stronger_level_still_breaks_images() -> None:
    # A synthetic defence whose robustness decays with attack strength: image i falls once the level reaches its
    # threshold. The controller must not stop while a stronger level still breaks more images than chance would.
    n = 500
    thresholds = np.repeat([0, 1, 2, 3, 9], [100, 150, 150, 50, 50])

    def decaying(level: int) -> float:
        return float(np.mean(thresholds > level))

    result = cascade.converge(decaying, n, max_level=6)
    assert result["accuracy_by_level"][:3] == [0.8, 0.5, 0.2]
    # 0.2 -> 0.1 (50 images newly broken) is still falling; 0.1 -> 0.1 is converged
    assert result["converged"] and result["levels_run"] == 5
    capped = cascade.converge(decaying, n, max_level=1)
    assert capped["capped"] and not capped["converged"]
    plateau = cascade.converge(lambda level: 0.3, n, max_level=3)
    assert plateau["converged"] and plateau["levels_run"] == 2
    # 0.30 -> 0.28 on 500 images lies inside the Wilson interval of 0.30, but 10 images newly broken is more than
    # chance (McNemar exact p = 0.002): the paired criterion keeps going; 0.28 -> 0.27 (5 images) may stop
    slow = cascade.converge(lambda level: [0.30, 0.28, 0.27, 0.27][level], n, max_level=3)
    assert slow["accuracy_by_level"] == [0.30, 0.28, 0.27] and slow["converged"]
    assert cascade.stopped_falling(0.30, 0.29, 500) and not cascade.stopped_falling(0.30, 0.288, 500)
    assert cascade.stopped_falling(0.30, 0.296, 50_000) and not cascade.stopped_falling(0.30, 0.294, 50_000)


class NoisyGradient(nn.Module):
    """A randomized defence stand-in: the logits carry a random linear term, so single-draw gradients disagree."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 48))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(len(x), 48, device=x.device) * 3
        return x.flatten(1) @ self.weight.T + (x.flatten(1) * noise).sum(1, keepdim=True) * torch.tensor([1.0, -1.0])


def test_gradient_report_measures_eot_consistency_and_choose_eot_follows_it() -> None:
    x = torch.rand(16, 3, 4, 4)
    y = torch.zeros(16, dtype=torch.long)
    deterministic = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    report = cascade.gradient_report(deterministic, x, y, draws=(1,))
    assert report["consistency"][1] == pytest.approx(1.0) and report["zero_fraction"] == 0
    noisy = cascade.gradient_report(NoisyGradient(), x, y, draws=(1, 5, 30))
    values = noisy["consistency"]
    assert values[1] < values[5] < values[30]
    choice = cascade.choose_eot({1: 0.5, 2: 0.7, 5: 0.92, 10: 0.95})
    assert choice["k"] == 5
    above_cap = cascade.choose_eot({1: 0.3, 10: 0.8, 20: 0.88, 30: 0.93})
    assert above_cap["k"] == 30 and "below" in above_cap["reason"]


def test_defended_model_runs_art_numpy_defences_with_identity_gradient() -> None:
    from art.defences.preprocessor import JpegCompression

    jpeg = JpegCompression(clip_values=(0.0, 1.0), quality=50, channels_first=True)
    model = cascade.DefendedModel(nn.Flatten(), [jpeg])
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = model(x)
    expected, _ = jpeg(x.detach().numpy())
    assert np.allclose(out.detach().numpy(), expected.reshape(2, -1))
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


# --- the suite -------------------------------------------------------------------------------------------------------


def ten_class_margin_model() -> nn.Module:
    """The two-class margin model of ``test_evaluation`` with eight dummy classes far below (AutoAttack needs 10)."""
    weight = torch.tensor(SIGNS.reshape(1, -1), dtype=torch.float32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[:2] = torch.cat([weight, -weight])
        model[1].bias.copy_(torch.tensor([0.0, 0.0] + [-1000.0] * 8))
    return model.eval()


@pytest.fixture
def dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    write_dataset(tmp_path / "data")
    return f"imagefolder:{tmp_path / 'data'}"


def test_cascade_and_original_autoattack_find_the_exact_robust_accuracy(dataset: str, tmp_path: Path) -> None:
    # On the linear margin model an image with margin t grey levels survives Linf e/255 exactly when t > e.
    attacks = ["noise:eps=12/255", "cascade:eps=12/255,steps=10,square=50", "apgd-t:eps=12/255,steps=10,targets=2",
               "original-autoattack:eps=12/255"]  # fmt: skip
    config = EvaluationConfig(
        defences=["none"], attacks=attacks, classifier="tests.test_cascade:ten_class_margin_model", dataset=dataset,
        num_images=20, draws=1, fit_images=4, sanity_checks=False, device="cpu", verbose=False, batch_size=8,
    )  # fmt: skip
    results = evaluate(config, tmp_path / "out")
    entry = results["defences"]["none"]
    exact = np.mean([level > 12 for level in LEVELS])
    assert entry["robust"]["Linf 12/255"]["robust"]["accuracy"] == pytest.approx(exact)
    rows = entry["rows"]
    cascade_row = next(row for label, row in rows.items() if label.startswith("Cascade"))
    assert cascade_row["robust"]["accuracy"] == pytest.approx(exact)
    assert cascade_row["controller"]["converged"]
    noise = next(row for label, row in rows.items() if label.startswith("Random noise"))
    assert noise["robust"]["accuracy"] > exact
    # the cascade's first attack saw exactly the images the noise left correct
    assert cascade_row["attacked"][0] == round(20 * noise["robust"]["accuracy"])
    targeted = next(row for label, row in rows.items() if label.startswith("APGD-T"))
    # APGD-T ran (twice: two targets) only on the images the cascade left, and could not go below the exact answer
    assert targeted["attacked"] == [round(20 * exact)] * 2 and targeted["robust"]["accuracy"] == pytest.approx(exact)
    original = next(row for label, row in rows.items() if label.startswith("AutoAttack original"))
    assert original["accuracy"] == pytest.approx(exact)
    saved = np.load(tmp_path / "out" / "state" / "none" / "correctness-Linf_12_255.npz")
    assert saved["correct"].shape[:2] == (20, 1 + 1 + len(cascade_row["columns"]) + 2 + 1)
    assert list(saved["columns"])[0] == "clean"


def test_targeted_rows_report_targeted_success_separately(dataset: str, tmp_path: Path) -> None:
    config = EvaluationConfig(
        defences=["none"], attacks=["apgd:eps=20/255,steps=10,targeted=True"],
        classifier="tests.test_cascade:ten_class_margin_model", dataset=dataset, num_images=20, draws=1,
        fit_images=4, sanity_checks=False, device="cpu", verbose=False,
    )  # fmt: skip
    row = next(iter(evaluate(config, tmp_path / "out")["defences"]["none"]["rows"].values()))
    # only images aimed at the other real class (1 in 9) can reach their target: the dummy classes are out of
    # reach, yet pushing towards them misclassifies images; a row reporting untargeted success would show those
    success = row["targeted_success"]["accuracy"]
    assert row["targeted_success_mean"] == pytest.approx(success)  # one deterministic draw: the same figure
    assert 0.0 < success <= 0.35
    assert success < 1 - row["accuracy"]


def test_report_pages_give_each_defence_its_page_and_a_summary(dataset: str, tmp_path: Path) -> None:
    from art_purifiers.cli import main

    config = EvaluationConfig(
        defences=["none", "QuantizeDistort"], attacks=["noise:eps=4/255", "pgd:eps=4/255,steps=3"],
        classifier="tests.test_evaluation:margin_model", dataset=dataset, num_images=8, draws=2, fit_images=4,
        sanity_checks=False, device="cpu", verbose=False,
    )  # fmt: skip
    evaluate(config, tmp_path / "run")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "quantizedistort.md").write_text("## What the numbers say\n")
    pages = tmp_path / "pages"
    assert main(["report", str(tmp_path / "run"), "--output", str(pages), "--pages", "--notes-dir",
                 str(tmp_path / "notes")]) == 0  # fmt: skip
    page = (pages / "quantizedistort.md").read_text()
    assert page.endswith("## What the numbers say\n") and "`none`" not in page
    assert (
        "quantizedistort-accuracy_vs_budget.png" in page and (pages / "quantizedistort-accuracy_vs_budget.png").exists()
    )
    summary = (pages / "summary.md").read_text()
    assert "[`QuantizeDistort`](quantizedistort.md)" in summary and "| `none` |" in summary
    # the undefended row of another classifier than the reference is that classifier's page
    assert "[`none`](margin-model.md)" in summary and (pages / "margin-model.md").is_file()
    # a run on other images cannot merge: its QuantizeDistort page gets its own name instead of overwriting
    evaluate(replace(config, num_images=6, defences=["QuantizeDistort"]), tmp_path / "fewer")
    assert main(["report", str(tmp_path / "run"), str(tmp_path / "fewer"), "--output", str(pages), "--pages"]) == 0
    assert " on 8 " in (pages / "quantizedistort.md").read_text()
    fewer_page = (pages / "quantizedistort-6-images.md").read_text()
    assert " on 6 " in fewer_page and "Merged from" not in fewer_page  # one run behind this defence
    assert "All sanity checks that ran passed" in fewer_page and "No sanity checks ran" not in fewer_page
    assert "[`QuantizeDistort`](quantizedistort-6-images.md)" in (pages / "summary.md").read_text()


def test_the_autoattack_cross_check_compares_with_our_worst_case_before_it() -> None:
    from art_purifiers.evaluation.report import _cross_checks
    from art_purifiers.evaluation.results import DefenceResult

    def row(kind: str, per_image: list[int]) -> dict:
        return {"kind": kind, "eps": 4 / 255, "norm": "Linf", "robust_per_image": per_image}

    entry = DefenceResult.from_json(
        {
            "rows": {
                "noise": row("noise", [1, 1, 1, 1, 0, 1, 1, 1]),
                "cascade": row("cascade", [1, 1, 0, 1, 0, 1, 1, 1]),
                "AA": row("original-autoattack", [1, 0, 0, 1, 0, 1, 1, 1]),
                "after": row("apgd-t", [0, 0, 0, 0, 0, 0, 0, 0]),  # ran on AA's survivors: not part of "ours"
                "other budget": {**row("cascade", [0] * 8), "eps": 8 / 255},
            }
        }
    )
    (line,) = _cross_checks(entry)
    assert "our 2 attacks before it (noise, cascade)" in line and "after" not in line
    # ours leave 6 of 8 images, AA 5 of 8 (one image only AA breaks): too few images to tell them apart
    assert "cannot be told apart on these 8 images" in line
