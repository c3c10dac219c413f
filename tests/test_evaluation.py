"""The evaluation suite on tiny data: columns carry the right numbers, sanity checks fire, runs resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from art_purifiers import metrics
from art_purifiers.evaluation import EvaluationConfig, evaluate, parse_attack, parse_spec, sanity
from art_purifiers.evaluation.results import DefenceResult, Row

SIZE = 8
# sign(w): half +1, half -1, so that the mid-grey base cancels in w . x
SIGNS = np.where(np.arange(3 * SIZE * SIZE) % 2 == 0, 1.0, -1.0).reshape(3, SIZE, SIZE)
# margins t (in grey levels) of the images; none equals a tested budget, so no ties
LEVELS = [1, 2, 3, 5, 6, 7, 9, 10, 11, 13]


def margin_model() -> nn.Module:
    """Two classes: logit_0 = w . x, logit_1 = -w . x, with w = sign pattern; ||w||_1 = 3*8*8."""
    weight = torch.tensor(SIGNS.reshape(1, -1), dtype=torch.float32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.cat([weight, -weight]))
    return model.eval()


def flipped_margin_model() -> nn.Module:
    """The margin model with its classes swapped: its gradients point the other way."""
    model = margin_model()
    with torch.no_grad():
        model[1].weight.neg_()
    return model


def scaled_margin_model() -> nn.Module:
    """The margin model's decisions from other weights (doubled): a transfer source that agrees with it."""
    model = margin_model()
    with torch.no_grad():
        model[1].weight.mul_(2)
    return model


def write_dataset(root: Path) -> None:
    """Images 128 + s*t*sign(w) grey levels: w . x = s * t * ||w||_1 / 255, class a if s = +1 else b."""
    for split in ("train", "test"):
        for label, sign in (("a", 1), ("b", -1)):
            (root / split / label).mkdir(parents=True)
            for index, level in enumerate(LEVELS):
                pixels = (128 + sign * level * SIGNS).astype(np.uint8).transpose(1, 2, 0)
                Image.fromarray(pixels).save(root / split / label / f"{index}.png")


@pytest.fixture
def dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    write_dataset(tmp_path / "data")
    return f"imagefolder:{tmp_path / 'data'}"


def tiny_config(dataset: str, **overrides: object) -> EvaluationConfig:
    """A run of the margin model on the tiny dataset: no defence, one short PGD, no sanity attacks."""
    settings: dict = dict(
        defences=["none"],
        attacks=["pgd:eps=6/255,steps=2"],
        classifier="tests.test_evaluation:margin_model",
        dataset=dataset,
        num_images=4,
        draws=1,
        fit_images=4,
        sanity_checks=False,
        device="cpu",
        verbose=False,
    )
    return EvaluationConfig(**{**settings, **overrides})


def test_pgd_columns_hold_the_exact_robust_accuracy_of_a_linear_model(dataset: str, tmp_path: Path) -> None:
    # Linf PGD moves w . x by eps * ||w||_1 at most, and reaches it on a linear model: an image with margin t grey
    # levels survives eps = e/255 exactly when t > e. A swapped or mislabelled column gets other fractions.
    budgets = [4, 8, 12]
    config = tiny_config(dataset, attacks=[f"pgd:eps={e}/255,steps=20" for e in budgets], num_images=20)
    results = evaluate(config, tmp_path / "out")
    rows = results["defences"]["none"]["rows"]
    for e in budgets:
        expected = np.mean([level > e for level in LEVELS])
        assert rows[f"PGD-BPDA Linf {e}/255 (20 steps)"]["accuracy"] == pytest.approx(expected)
        assert rows[f"PGD-BPDA Linf {e}/255 (20 steps)"]["mean_linf"] == pytest.approx(e / 255, abs=1e-6)
    table = (tmp_path / "out" / "results.md").read_text()
    lines = table.splitlines()
    for header_start, name in (
        ("| Defence | Clean", "PGD-BPDA Linf {e}/255 (20 steps)"),
        ("| Defence | Linf", "Linf {e}/255"),
    ):
        at = next(i for i, line in enumerate(lines) if line.startswith(header_start))
        row = next(line for line in lines[at:] if line.startswith("| `none`"))
        cells = dict(zip([c.strip() for c in lines[at].split("|")], [c.strip() for c in row.split("|")]))
        for e in budgets:  # the per-attack table, and the robust-accuracy headline (one attack per budget here)
            expected = np.mean([t > e for t in LEVELS])
            cell = cells[name.format(e=e)]
            # PGD alone is no strong attack: a headline cell above 0% is shown as an upper bound
            assert cell.startswith("≤ ") == (header_start == "| Defence | Linf" and expected > 0)
            assert cell.removeprefix("≤ ").split(" [")[0].strip("*") == f"{100 * expected:.1f}"
    csv_text = (tmp_path / "out" / "results.csv").read_text()
    assert csv_text.count("\n") == 1 + len(budgets)
    assert (tmp_path / "out" / "accuracy_vs_budget.png").stat().st_size > 1000


def test_randomized_defence_run_with_eot_draws_and_resume(dataset: str, tmp_path: Path) -> None:
    config = tiny_config(
        dataset,
        defences=["QuantizeDistort:distortion_limit=0.25"],
        attacks=["pgd:eps=8/255,steps=2", "pgd-eot:eps=8/255,steps=2,k=3", "square:eps=8/255,queries=3"],
        num_images=8,
        draws=3,
        sanity_checks=True,
        chunk_size=4,
        batch_size=4,
    )
    output = tmp_path / "out"
    first = evaluate(config, output)
    entry = first["defences"]["QuantizeDistort:distortion_limit=0.25"]
    assert entry["randomized"] is True
    row = entry["rows"]["PGD-BPDA+EOT Linf 8/255 (2 steps, k=3)"]
    assert row["eot"] == 3 and len(row["per_draw"]) == 3 and row["n"] == 8
    assert 0 <= row["ci95"][0] <= row["accuracy"] <= row["ci95"][1] <= 1
    assert "randomness" in entry["clean"] and entry["clean"]["randomness"]["l2_rms"] > 0
    assert [c["name"] for c in entry["sanity"]]  # the sanity attacks ran and were checked
    # resuming: a finished run recomputes nothing and gives the same results
    state = sorted((output / "state").rglob("*.npz"))
    stamps = [f.stat().st_mtime_ns for f in state]
    second = evaluate(config, output)
    assert [f.stat().st_mtime_ns for f in state] == stamps
    assert second["defences"] == json.loads(json.dumps(first["defences"]))


def test_learned_bpda_trains_one_approximator_per_defence(dataset: str, tmp_path: Path) -> None:
    attack = "learned-bpda:eps=8/255,steps=2"
    config = tiny_config(dataset, defences=["NNFavoredJpeg", "QuantizeDistort"], attacks=[attack], draws=2)
    results = evaluate(config, tmp_path / "out")
    label = parse_attack(attack).label
    assert all(label in results["defences"][spec]["rows"] for spec in config.defences)
    assert len(list((tmp_path / "out" / "state").rglob("learned-bpda-approximator.pt"))) == 2


@pytest.mark.parametrize("attack", ["pgd:eps=6/255,steps=5", "apgd:eps=6/255,steps=5", "cascade:eps=6/255,steps=5"])
def test_an_interrupted_attack_continues_from_its_saved_chunks(attack: str, dataset: str, tmp_path: Path) -> None:
    config = tiny_config(dataset, attacks=[attack], num_images=20, chunk_size=8, batch_size=4)
    output = tmp_path / "out"
    full = evaluate(config, output)
    chunks = sorted((output / "state").rglob("*.chunks/**/*.npz"))
    assert [f.name for f in chunks if "level1" not in str(f)] == ["00000000.npz", "00000008.npz", "00000016.npz"]
    # pretend the run stopped while the last chunk was under way: its file and the attack's merged state are missing
    (output / "results.json").unlink()
    (merged,) = [f for f in (output / "state" / "none").glob("*.npz") if not f.name.startswith("correctness")]
    merged.unlink()
    kept, lost = chunks[:2], chunks[2]
    lost.unlink()
    stamps = [f.stat().st_mtime_ns for f in kept]
    resumed = evaluate(config, output)
    assert [f.stat().st_mtime_ns for f in kept] == stamps and lost.is_file()  # only the lost chunk was attacked again
    (label,) = full["defences"]["none"]["rows"]
    for key in ("robust_per_image", "per_draw", "mean_l2"):
        before, after = full["defences"]["none"]["rows"][label].get(key), resumed["defences"]["none"]["rows"][
            label
        ].get(key)
        assert before == after, key


def test_an_attack_saved_in_one_file_by_an_earlier_version_continues(dataset: str, tmp_path: Path) -> None:
    config = tiny_config(dataset, attacks=["pgd:eps=6/255,steps=5"], num_images=20, chunk_size=10)
    output = tmp_path / "out"
    full = evaluate(config, output)
    first_chunk = next((output / "state").rglob("pgd-*.chunks/00000000.npz"))
    x_adv = np.full((20, 3, 8, 8), 0.5, dtype=np.float32)  # images 10-19 were never attacked
    x_adv[:10] = np.load(first_chunk)["x_adv"]
    (output / "results.json").unlink()
    for file in (output / "state").rglob("pgd-*.chunks/*.npz"):
        file.unlink()
    merged = next((output / "state").rglob("pgd-*.npz"))
    np.savez_compressed(merged, x_adv=x_adv, done=10, seconds=1.5)  # the old format: one file, a done count
    resumed = evaluate(config, output)
    np.testing.assert_array_equal(np.load(first_chunk)["x_adv"], x_adv[:10])  # taken over, not attacked again
    label = "PGD-BPDA Linf 6/255 (5 steps)"
    assert resumed["defences"]["none"]["rows"][label]["accuracy"] == full["defences"]["none"]["rows"][label]["accuracy"]
    assert resumed["defences"]["none"]["rows"][label]["seconds"] >= 1.5


@pytest.mark.parametrize("attack", ["pgd:eps=6/255,steps=5", "apgd:eps=6/255,steps=5"])
def test_an_unreadable_state_file_is_set_aside_and_its_attack_redone(attack: str, dataset: str, tmp_path: Path) -> None:
    config = tiny_config(dataset, attacks=[attack], num_images=20)
    output = tmp_path / "out"
    full = evaluate(config, output)
    file = next((output / "state").rglob(f"{attack.split(':')[0]}-*.npz"))
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # a copy cut short
    resumed = evaluate(config, output)
    assert file.with_name(file.name + ".unreadable").is_file() and np.load(file).files  # redone and saved again
    (label,) = full["defences"]["none"]["rows"]
    assert resumed["defences"]["none"]["rows"][label]["accuracy"] == full["defences"]["none"]["rows"][label]["accuracy"]


def test_a_changed_configuration_is_refused_in_the_same_directory(dataset: str, tmp_path: Path) -> None:
    evaluate(tiny_config(dataset), tmp_path / "out")
    with pytest.raises(ValueError, match="another configuration"):
        evaluate(tiny_config(dataset, seed=1), tmp_path / "out")


ROW = {"kind": "pgd", "eps": None, "steps": None, "eot_requested": 1, "eot": 1, "std": 0.0, "ci95": [0, 0]}


def _entry(values: dict[str, float]) -> DefenceResult:
    return DefenceResult(rows={label: Row.from_json({**ROW, "accuracy": value}) for label, value in values.items()})


def test_sanity_checks_fire_on_contradictions() -> None:
    attacks = [
        parse_attack(s)
        for s in (
            "pgd:eps=8/255,steps=10",
            "pgd:eps=8/255,steps=50",
            "pgd:eps=64/255,steps=20",
            "square:eps=8/255,queries=100",
            "pgd:eps=4/255,steps=50",
        )
    ]
    labels = [a.label for a in attacks]
    healthy = _entry(dict(zip(labels, [0.30, 0.25, 0.0, 0.6, 0.5])))
    assert all(c.passed for c in sanity.run_checks(healthy, attacks, 500))
    broken = _entry(dict(zip(labels, [0.30, 0.45, 0.40, 0.10, 0.2])))
    failed = {c.name.split(" (")[0] for c in sanity.run_checks(broken, attacks, 500) if not c.passed}
    assert failed == {"large budget", "iterations", "budget", "white-box vs black-box"}


def test_sanity_tolerance_absorbs_binomial_noise() -> None:
    attacks = [parse_attack("pgd:eps=8/255,steps=10"), parse_attack("pgd:eps=8/255,steps=50")]
    noisy = _entry({attacks[0].label: 0.30, attacks[1].label: 0.31})  # one image out of 100
    assert all(c.passed for c in sanity.run_checks(noisy, attacks, 100))


def test_specs_parse_budgets_and_reject_nonsense() -> None:
    attack = parse_attack("pgd-eot:eps=8/255,steps=20,k=10")
    assert (attack.eps, attack.steps, attack.eot) == (pytest.approx(8 / 255), 20, 10)
    assert attack.label == "PGD-BPDA+EOT Linf 8/255 (20 steps, k=10)"
    assert parse_spec("CompressRestore:qf_range=(20,60),n_iter=3") == (
        "CompressRestore",
        {"qf_range": (20, 60), "n_iter": 3},
    )
    assert parse_spec("CompressRestore:restorers={20:'none',40:'x'},n_iter=1")[1] == {
        "restorers": {20: "none", 40: "x"},
        "n_iter": 1,
    }
    for bad in ("fgsm", "pgd:eps=-1", "cw:eps=0.1", "pgd:steps=0", "pgd:eps", "pgd-eot:k=0"):
        with pytest.raises(ValueError):
            parse_attack(bad)


def test_wilson_interval_against_a_known_value() -> None:
    # Wilson 95% interval of 50/100: 0.4038 .. 0.5962 (standard tables)
    low, high = metrics.wilson_interval(0.5, 100)
    assert (low, high) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))


def test_cli_reports_a_bad_defence_spec(dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from art_purifiers.cli import main

    arguments = ["evaluate", "--defence", "nonsense", "--classifier", "tests.test_evaluation:margin_model"]
    arguments += ["--dataset", dataset, "--num-images", "2", "--output", str(tmp_path / "out"), "--quiet"]
    assert main(arguments) == 2
    assert "Unknown defence 'nonsense'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_report_merges_runs_of_other_defences_and_refuses_mismatches(dataset: str, tmp_path: Path) -> None:
    from art_purifiers.cli import main

    evaluate(tiny_config(dataset), tmp_path / "a")
    extra = ["pgd:eps=6/255,steps=2", "pgd:eps=4/255,steps=2"]
    evaluate(tiny_config(dataset, defences=["NNFavoredJpeg"], attacks=extra), tmp_path / "b")
    assert (
        main(["report", str(tmp_path / "a"), str(tmp_path / "b" / "results.json"), "--output", str(tmp_path / "m")])
        == 0
    )
    table = (tmp_path / "m" / "results.md").read_text()
    assert "| `NNFavoredJpeg` |" in table and "PGD-BPDA Linf 4/255 (2 steps) |" in table
    lines = table.splitlines()
    per_attack = next(i for i, line in enumerate(lines) if line.startswith("| Defence | Clean"))
    none_row = next(line for line in lines[per_attack:] if line.startswith("| `none` |"))
    assert none_row.rstrip().endswith("| n/a |")  # the attack only the second run made
    provenance = table.split("## Provenance")[1]  # each run's own command and machine
    assert f"- `{tmp_path / 'a'}`: `" in provenance and f"- `{tmp_path / 'b'}`: `" in provenance
    evaluate(tiny_config(dataset, seed=3), tmp_path / "c")
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "a"), str(tmp_path / "c"), "--output", str(tmp_path / "n")])


def _run_with(spec: str, label: str, per_image: list[int]) -> dict:
    group = {"robust": {"accuracy": float(np.mean(per_image))}, "per_image": per_image, "attacks": [label], "draws": 1}
    return {
        "config": {"seed": 0, "num_images": len(per_image)},
        "data": {"selected_indices": list(range(len(per_image)))},
        "attacks": [{"label": label, "kind": "cascade", "eps": 4 / 255, "steps": 100, "eot": 1, "sanity_only": False}],
        "defences": {
            spec: {
                "rows": {label: {**ROW, "accuracy": float(np.mean(per_image)), "kind": "cascade"}},
                "robust": {"Linf 4/255": group},
            }
        },
    }


def test_merging_one_defence_from_two_runs_keeps_the_worst_case_per_image() -> None:
    from art_purifiers.evaluation.results import merge

    first = _run_with("D", "attack A", [1, 1, 0, 1, 1])
    second = _run_with("D", "attack B", [1, 0, 1, 1, 1])  # each run alone: 80%; together 3 of 5 images survive
    merged = merge([first, second], ["cpu", "gpu"])
    figures = merged.defences["D"].robust["Linf 4/255"]  # type: ignore[index]
    assert figures.per_image == [1, 0, 0, 1, 1] and figures.attacks == ["attack A", "attack B"]
    assert figures.accuracy == pytest.approx(0.6)
    assert figures.robust["ci95"] == pytest.approx(list(metrics.wilson_interval(0.6, 5)))
    assert set(merged.defences["D"].rows) == {"attack A", "attack B"}
    del second["defences"]["D"]["robust"]["Linf 4/255"]["per_image"]
    with pytest.raises(ValueError, match="no per-image results"):
        merge([first, second], ["cpu", "gpu"])


def test_a_run_without_sanity_checks_merges_and_keeps_the_others_checks() -> None:
    from art_purifiers.evaluation.results import merge

    first = _run_with("D", "attack A", [1, 1, 0, 1, 1])
    first["config"]["sanity_checks"] = True
    first["defences"]["D"]["sanity"] = [{"name": "large budget", "passed": True, "detail": "0%"}]
    second = _run_with("D", "attack B", [1, 0, 1, 1, 1])
    second["config"]["sanity_checks"] = False
    second["defences"]["D"]["sanity"] = []
    merged = merge([first, second], ["with checks", "without"])
    assert [check.to_json() for check in merged.defences["D"].sanity or []] == first["defences"]["D"]["sanity"]
    assert merged.defences["D"].robust["Linf 4/255"].per_image == [1, 0, 0, 1, 1]  # type: ignore[index]
    second["config"]["seed"] = 1  # other images or seeds are still refused
    with pytest.raises(ValueError, match="another configuration"):
        merge([first, second], ["with checks", "without"])


def test_a_defence_whose_evaluation_stopped_is_named_not_given_a_row() -> None:
    from art_purifiers.evaluation.report import robust_table

    results = _run_with("D", "attack A", [1, 0, 0, 1])
    results["defences"]["D"]["robust"]["Linf 4/255"]["robust"]["ci95"] = [0.15, 0.85]
    results["defences"]["E"] = {"rows": {"attack A": {**ROW, "accuracy": 0.9}}}  # stopped before its worst case existed
    lines = robust_table(results)
    assert "| `D` | **50.0** [15.0, 85.0] |" in lines
    assert not any(line.startswith("| `E`") for line in lines)
    assert any(line.startswith("Not in this table: `E`") and "upper bounds" in line for line in lines)
    del results["defences"]["D"]
    assert robust_table(results)[0].startswith("No robust accuracy yet: the evaluation of `E` stopped")


def test_a_cell_is_marked_capped_unless_one_of_its_cascades_stopped_falling() -> None:
    from art_purifiers.evaluation.report import robust_table

    def cascade_row(levels: list[float]) -> dict:
        return {
            "n": 500,
            "kind": "cascade",
            "controller": {"accuracy_by_level": levels, "converged": False, "capped": True},
        }

    results = _run_with("D", "cpu cascade", [1, 0, 0, 1])
    figures = results["defences"]["D"]["robust"]["Linf 4/255"]
    figures["robust"]["ci95"] = [0.15, 0.85]
    results["defences"]["D"]["rows"] = {"cpu cascade": cascade_row([0.224, 0.196])}  # 14 images newly broken
    assert "| `D` | **50.0** [15.0, 85.0] ‡ |" in robust_table(results)
    figures["attacks"].append("gpu cascade")
    results["defences"]["D"]["rows"]["gpu cascade"] = cascade_row([0.212, 0.204])  # 4 images: stopped falling
    assert "| `D` | **50.0** [15.0, 85.0] |" in robust_table(results)


def test_a_cell_that_no_strong_attack_decided_is_shown_as_an_upper_bound() -> None:
    from art_purifiers.evaluation.report import paired_lines, robust_table

    results = _run_with("D", "PGD-50", [1, 0, 0, 1])
    figures = results["defences"]["D"]["robust"]["Linf 4/255"]
    figures["robust"]["ci95"] = [0.15, 0.85]
    rows = results["defences"]["D"]["rows"]
    rows["PGD-50"]["kind"] = "pgd"  # e.g. a run stopped before its cascade, or a paper's replay alone
    lines = robust_table(results)
    assert "| `D` | ≤ **50.0** [15.0, 85.0] |" in lines
    assert any(line.startswith("≤: no strong attack") for line in lines)
    figures["attacks"].append("APGD-T")
    rows["APGD-T"] = {"accuracy": 0.5, "kind": "apgd-t"}
    lines = robust_table(results)
    assert "| `D` | **50.0** [15.0, 85.0] |" in lines and not any(line.startswith("≤") for line in lines)
    figures["attacks"].remove("APGD-T")
    undefended = _run_with("none", "PGD-50", [0, 0, 0, 1])["defences"]["none"]
    undefended["robust"]["Linf 4/255"]["robust"]["ci95"] = [0.05, 0.7]
    results["defences"] = {"none": undefended, **results["defences"]}
    comparison = next(line for line in paired_lines(results) if line.startswith("- Linf 4/255"))
    assert comparison.endswith("so this difference is not a measured gain)")
    figures["robust"]["accuracy"] = 0.0  # nothing survived: a weak attack's 0% is already the worst case
    assert any(line.startswith("| `D` | **0.0**") for line in robust_table(results))


def test_a_defence_without_sanity_checks_is_not_called_checked(dataset: str, tmp_path: Path) -> None:
    from art_purifiers.evaluation.report import markdown

    results = evaluate(tiny_config(dataset, attacks=["noise:eps=6/255", "pgd:eps=6/255,steps=2"]), tmp_path / "out")
    assert "All sanity checks that ran passed" in markdown(results)  # white-box vs black-box
    results["defences"]["none"]["sanity"] = []  # e.g. a run that stopped before its checks
    page = markdown(results)
    assert "No sanity checks ran for `none`." in page and "checks that ran passed" not in page


def test_a_transfer_attack_runs_on_its_own_source_model(dataset: str, tmp_path: Path) -> None:
    robust = {}
    for name in ("flipped_margin_model", "scaled_margin_model"):
        spec = f"transfer:eps=6/255,method=pgd,steps=5,source=tests.test_evaluation:{name}"
        assert parse_attack(spec).label == f"Transfer APGD-CE Linf 6/255 from tests.test_evaluation:{name} (5 steps)"
        results = evaluate(tiny_config(dataset, attacks=[spec]), tmp_path / name)
        (group,) = results["defences"]["none"]["robust"].values()
        robust[name] = group["robust"]["accuracy"]
    # the flipped source pushes every image deeper into its class; the agreeing one flips the low-contrast images
    assert robust["flipped_margin_model"] == 1.0 and robust["scaled_margin_model"] < 1.0


def test_a_run_resumed_elsewhere_keeps_the_earlier_environment_in_its_provenance() -> None:
    from art_purifiers.evaluation.output import environment as _environment
    from art_purifiers.evaluation.report import _environment_line

    here = _environment("cpu")
    assert "earlier" not in _environment("cpu", {**here, "started": "yesterday"})  # the same machine resuming
    gpu_run = {**here, "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130"}
    resumed = _environment("cpu", gpu_run)
    assert resumed["earlier"] == [gpu_run] and resumed["device"] == "cpu"
    assert _environment("cpu", resumed)["earlier"] == [gpu_run]  # resumed again here: nothing new to keep
    line = _environment_line(resumed)
    assert line.startswith("art-purifiers") and "device cpu" in line
    assert "resumed from a run begun on: " in line and "NVIDIA H100 80GB HBM3" in line
    assert "processes" not in line and "4 processes (torchrun)" in _environment_line(_environment("cpu", None, 4))
