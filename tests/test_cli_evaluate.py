"""
``art-purifiers evaluate`` as a new user meets it: bad names and values end in one line that names the problem before
anything is loaded or written, the help and ``list`` show every option, only the needed images are classified, an
output directory is never merged silently, and the data note is said only where it is true.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from art_purifiers import cli
from art_purifiers.evaluation import context, evaluate, suite
from art_purifiers.evaluation.specs import ATTACK_KINDS, OPTION_TYPES, kind_options, parse_attack
from tests.test_evaluation import tiny_config, write_dataset

MODEL = "tests.test_evaluation:margin_model"


@pytest.fixture
def dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    write_dataset(tmp_path / "data")
    return f"imagefolder:{tmp_path / 'data'}"


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the suite loads a dataset or a model: a bad spec must be refused before."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loaded data or a model before checking the specs")

    monkeypatch.setattr(context, "load_dataset", refuse)
    monkeypatch.setattr(context, "load_classifier", refuse)


def run(arguments: list[str], output: Path) -> int:
    return cli.main(["evaluate", *arguments, "--classifier", MODEL, "--output", str(output), "--quiet"])


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--defence", "NNFavoredJpg"], "Unknown defence 'NNFavoredJpg'; known: none, jpeg, NNFavoredJpeg"),
        (["--defence", "NNFavoredJpeg:favoured_diagonals=3"], "Unknown option(s) favoured_diagonals for defence "
         "'NNFavoredJpeg'; it takes: table, favored_diagonals"),
        (["--defence", "QuantizeDistort:table=searched"], "table must be one of default, learned, got 'searched'"),
        (["--defence", "QuantizeDistort:distortion_limit=2"], "distortion_limit must be in [0, 1), got 2"),
        (["--defence", "none", "--attack", "pgd:eps=abc"], "eps='abc' is not valid; eps must be a number > 0"),
        (["--defence", "none", "--attack", "square:queries=-5"], "queries=-5 is not valid; queries must be an integer"),
        (["--defence", "none", "--attack", "pgd:eps=8"], "give it as 8/255, or pass --eps-scale 255"),
        (["--defence", "none", "--attack", "pgd:eps=8/255,eps_step=2"], "eps_step=2 is a Linf budget"),
        (["--defence", "none", "--attack", "cascade:levels=-1"], "levels must be an integer >= 0"),
        (["--defence", "none", "--attack", "transfer:method=fgsm"], "method must be one of pgd, mi, dim"),
        (["--defence", "none", "--attack", "pgd:restart=2"], "Unknown option(s) restart for attack 'pgd'"),
        (["--defence", "none", "--num-images", "0"], "--num-images must be a positive integer, got 0"),
    ],
)  # fmt: skip
def test_a_bad_spec_is_one_line_before_anything_is_loaded_or_written(
    arguments: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_data: None
) -> None:
    assert run(arguments, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert expected in error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_an_l2_budget_beyond_the_image_cube_is_refused_once_the_size_is_known(
    dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the 8x8 colour images span at most sqrt(192) = 13.9 in L2
    assert run(["--defence", "none", "--attack", "pgd-l2:eps=20", "--dataset", dataset], tmp_path / "out") == 2
    assert "exceeds the largest distance between images in [0, 1] of 192 values" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_budgets_in_pixel_units_are_read_with_the_scale_and_never_guessed() -> None:
    assert parse_attack("pgd:eps=8,eps_step=2", eps_scale=255) == parse_attack("pgd:eps=8/255,eps_step=2/255")
    assert parse_attack("pgd-l2:eps=128", eps_scale=255).eps == pytest.approx(128 / 255)
    with pytest.raises(ValueError, match="eps=2040 with --eps-scale 255 is a Linf budget of 8"):
        parse_attack("pgd:eps=2040", eps_scale=255)
    for spec in ("pgd:eps=1", "apgd:norm=RMS,eps=0.05", "pgd-l2:eps=8"):  # in range: taken as given
        parse_attack(spec)


def test_every_attack_spec_parses_back_from_its_canonical_form() -> None:
    specs = [*suite.DEFAULT_ATTACKS, *suite.SANITY_ATTACKS, "apgd:eps=0.05,norm=RMS,targeted=True,k=30,bpda=identity",
             "transfer:eps=8/255,method=mi,source=cifar10-nrp-attacker+cifar10-surrogate", "pgd:eps=0.01,eps_step=1",
             "square:eps=8/255,queries=100", "cascade:eps=4/255,levels=2,square=0"]  # fmt: skip
    for spec in specs:
        attack = parse_attack(spec)
        assert parse_attack(attack.spec) == attack and parse_attack(attack.spec).slug == attack.slug


def test_help_and_list_show_every_option_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = capsys.readouterr().out
    assert all(command in top for command in ("demo", "evaluate", "report", "list", "zoo"))
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: None" not in text and "(default 0)" in text and "(default 100)" in text
    for option in ("--seed", "--batch-size", "--eps-scale", "--extend", "--clean-images"):
        assert option in text
    for kind in ATTACK_KINDS:  # the epilog: every kind with its options
        assert f"{kind} {', '.join(kind_options(kind))}" in text
    assert cli.main(["list"]) == 0
    listing = capsys.readouterr().out
    for kind in ATTACK_KINDS:
        assert f"  {kind} " in listing
    for option, kind in OPTION_TYPES.items():
        assert f"  {option}" in listing and kind.description in listing
    for name in (
        "NNFavoredJpeg",
        "QuantizeDistort",
        "CompressRestore",
        "SuperResolution",
        "NeuralRepresentationPurifier",
    ):
        assert f"  {name} " in listing


def test_sanity_attacks_stay_out_of_the_users_columns(dataset: str, tmp_path: Path) -> None:
    evaluate(tiny_config(dataset, sanity_checks=True), tmp_path / "out")
    report = (tmp_path / "out" / "results.md").read_text()
    headline = report.split("## Robust accuracy (%)")[1].split("## Accuracy (%) per attack")[0]
    per_attack = report.split("## Accuracy (%) per attack")[1].split("## Sanity checks")[0]
    assert "Linf 6/255" in headline and "64/255" not in headline and "64/255" not in per_attack
    sanity_section = report.split("## Sanity checks")[1]
    assert "Threat models only the sanity checks attacked" in sanity_section and "Linf 64/255" in sanity_section
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "Linf 64/255" in results["defences"]["none"]["robust"]  # still computed and saved, only not headlined


def test_only_the_images_the_selection_needs_are_classified(dataset: str, tmp_path: Path) -> None:
    # 20 test images, all correct: finding 4 correct ones classifies a few (a margin for misclassified ones), not 20
    config = tiny_config(dataset, chunk_size=2, batch_size=2)
    results = evaluate(config, tmp_path / "lazy")
    examined = int((np.load(tmp_path / "lazy" / "state" / "undefended-predictions.npy") >= 0).sum())
    assert results["data"]["examined_images"] == examined and 4 <= examined <= 6
    assert results["defences"]["none"]["clean"]["full_split_images"] == examined
    whole = evaluate(tiny_config(dataset, chunk_size=2, batch_size=2, clean_images=0), tmp_path / "whole")
    assert whole["data"]["examined_images"] == whole["defences"]["none"]["clean"]["full_split_images"] == 20
    # the same images are selected as when every image is classified first
    labels = np.repeat([0, 1], 10)
    everything = context.select_clean_correct(labels, labels, 4, config.seed)
    assert results["data"]["selected_indices"] == whole["data"]["selected_indices"] == everything.tolist()
    assert (
        f"(undefended clean accuracy on {examined} of 20 test images" in (tmp_path / "lazy" / "results.md").read_text()
    )


def test_an_output_directory_is_never_merged_silently(dataset: str, tmp_path: Path) -> None:
    first = tiny_config(dataset, command="first")
    evaluate(first, tmp_path / "out")
    evaluate(first, tmp_path / "out")  # the same command resumes
    other = tiny_config(dataset, attacks=["pgd:eps=3/255,steps=2"], command="second")
    with pytest.raises(ValueError, match=r"would add attack\(s\) PGD-BPDA Linf 3/255 \(2 steps\)\. Pass --extend"):
        evaluate(other, tmp_path / "out")
    with pytest.raises(ValueError, match=r"would add defence\(s\) NNFavoredJpeg"):
        evaluate(tiny_config(dataset, defences=["NNFavoredJpeg"]), tmp_path / "out")
    other.extend = True
    results = evaluate(other, tmp_path / "out")
    assert [entry["command"] for entry in results["invocations"]] == ["first", "second"]
    labels = {attack["label"] for attack in results["attacks"]}
    assert labels == {"PGD-BPDA Linf 6/255 (2 steps)", "PGD-BPDA Linf 3/255 (2 steps)"}
    assert set(results["defences"]["none"]["robust"]) == {"Linf 6/255", "Linf 3/255"}  # both stay in the table
    provenance = (tmp_path / "out" / "results.md").read_text().split("## Provenance")[1]
    assert "command 1: `first`" in provenance and "command 2: `second`" in provenance


def test_the_data_note_is_said_only_for_images_stored_as_jpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from art_purifiers.data import load_image_folder

    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for name, suffix, options in (("png", ".png", {}), ("q50", ".jpg", {"quality": 50}), ("q75", ".jpg", {})):
        (tmp_path / name / "a").mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / name / "a" / f"0{suffix}", **options)
    assert load_image_folder(tmp_path / "png").note == ""
    assert "stored as JPEG files at quality 50" in load_image_folder(tmp_path / "q50").note
    assert "at quality 75" in load_image_folder(tmp_path / "q75").note
    assert "at quality 75" in load_image_folder(tmp_path / "q75").note  # from the decoded cache too


def test_a_run_written_before_invocations_were_recorded_resumes_as_one_command(dataset: str, tmp_path: Path) -> None:
    config = tiny_config(dataset, command="only")
    evaluate(config, tmp_path / "out")
    file = tmp_path / "out" / "results.json"
    old = json.loads(file.read_text())
    del old["invocations"]
    old["config"]["attacks"] = list(config.attacks)  # as older versions recorded them: the user's specs
    file.write_text(json.dumps(old))
    results = evaluate(config, tmp_path / "out")
    assert [entry["command"] for entry in results["invocations"]] == ["only"]


def test_the_budget_scale_applies_to_the_users_specs_alone() -> None:
    parser, commands = cli.build_parser()
    args = parser.parse_args(["evaluate", "--defence", "none", "--output", "x", "--eps-scale", "255",
                              "--attack", "pgd:eps=8", "--protocol", "ferrari2022"])  # fmt: skip
    attacks = [parse_attack(spec) for spec in cli._evaluation_config(args, None).attacks]
    assert attacks[0] == parse_attack("pgd:eps=8/255") and attacks[1] == parse_attack("pgd:eps=8/255,steps=200,"
                                                                                      "eps_step=0.001")  # fmt: skip
    defaults = parser.parse_args(["evaluate", "--defence", "none", "--output", "x", "--eps-scale", "255"])
    assert cli._evaluation_config(defaults, None).attacks == list(suite.DEFAULT_ATTACKS)
    assert parse_attack("pgd:eps=0.0001").group == "Linf 0.0001"  # never shown as 0
    with pytest.raises(ValueError, match="not both"):
        parse_attack("square:steps=10,queries=20")


def test_a_resumed_cascade_keeps_its_columns_when_attacks_were_added_since(dataset: str, tmp_path: Path) -> None:
    cascade = "cascade:eps=6/255,steps=5,square=0,levels=0"
    first = tiny_config(dataset, attacks=[cascade], num_images=20, command="1")
    whole = evaluate(first, tmp_path / "out")["defences"]["none"]["robust"]["Linf 6/255"]["robust"]["accuracy"]
    # a quick attack of the same threat model joins the output, then the cascade's merged state is lost (a run
    # killed after its level chunks were saved): it resumes after a prior that is now one column wider
    weak = tiny_config(dataset, attacks=["pgd:eps=6/255,steps=1,eps_step=1e-6"], num_images=20, command="2")
    weak.extend = True
    evaluate(weak, tmp_path / "out")
    next((tmp_path / "out" / "state" / "none").glob("cascade*.npz")).unlink()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    results["defences"]["none"]["rows"] = {k: v for k, v in results["defences"]["none"]["rows"].items()
                                           if not k.startswith("Cascade")}  # fmt: skip
    (tmp_path / "out" / "results.json").write_text(json.dumps(results))
    again = evaluate(first, tmp_path / "out")["defences"]["none"]
    row = next(row for label, row in again["rows"].items() if label.startswith("Cascade"))
    assert row["columns"][0].startswith("APGD")  # the cascade's own first attack is still its first column
    assert again["robust"]["Linf 6/255"]["robust"]["accuracy"] <= whole


def test_every_defence_of_a_command_runs_every_attack_of_the_output(dataset: str, tmp_path: Path) -> None:
    two = tiny_config(dataset, attacks=["pgd:eps=6/255,steps=2", "pgd:eps=3/255,steps=2"], command="1")
    evaluate(two, tmp_path / "out")
    # a later command with a new defence and only one of the attacks: the new defence runs both
    extend = tiny_config(dataset, defences=["NNFavoredJpeg"], attacks=["pgd:eps=6/255,steps=2"], command="2")
    extend.extend = True
    results = evaluate(extend, tmp_path / "out")
    assert set(results["defences"]["NNFavoredJpeg"]["rows"]) == set(results["defences"]["none"]["rows"])
    # an attack added later that an earlier defence has not run marks that defence's cell as an upper bound
    more = tiny_config(dataset, defences=["NNFavoredJpeg"], attacks=["pgd:eps=6/255,steps=4"], command="3")
    more.extend = True
    results = evaluate(more, tmp_path / "out")
    assert results["defences"]["none"]["robust"]["Linf 6/255"]["missing"] == ["PGD-BPDA Linf 6/255 (4 steps)"]
    assert "missing" not in results["defences"]["NNFavoredJpeg"]["robust"]["Linf 6/255"]
    report = (tmp_path / "out" / "results.md").read_text()
    assert "| `none` | ≤ " in report and "(not run on it: PGD-BPDA Linf 6/255 (4 steps))" in report


def test_merging_runs_keeps_each_commands_provenance(dataset: str, tmp_path: Path) -> None:
    from art_purifiers.evaluation.results import merge

    first = evaluate(tiny_config(dataset, command="A"), tmp_path / "a")
    extend = tiny_config(dataset, defences=["NNFavoredJpeg"], command="B")
    extend.extend = True
    second = evaluate(extend, tmp_path / "a")
    other = evaluate(tiny_config(dataset, defences=["QuantizeDistort:distort=False"], command="C"), tmp_path / "b")
    merged = merge([second, other], ["a", "b"])  # the runs differ in `extend`: still one configuration
    commands = {spec: [stamp["command"] for stamp in entry.provenance or []] for spec, entry in merged.defences.items()}
    assert commands == {"none": ["A"], "NNFavoredJpeg": ["B"], "QuantizeDistort:distort=False": ["C"]}
    assert first["invocations"][0]["command"] == "A"
