"""
The typed results file: every published and fixture results file reads into records and writes back byte for byte;
unknown keys survive; a record missing a field or a newer layout is refused clearly; a run writes its layout version.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from art_purifiers.evaluation.results import (
    SCHEMA_VERSION,
    DefenceResult,
    Results,
    RobustFigures,
    Row,
    SanityCheck,
    load_results,
)

ROOT = Path(__file__).parents[1]
PUBLISHED = ROOT / "docs" / "results"
#: every results file in the repository: the published pages and the results of older layouts
RESULTS_FILES = sorted(
    file
    for folder in ("docs/results", "reproductions", "tests/fixtures")
    for file in (ROOT / folder).rglob("*.json")
    if {"config", "defences"} <= set(json.loads(file.read_text()))
)


def test_published_results_written_before_versions_read_as_version_1() -> None:
    files = sorted(PUBLISHED.glob("*.json"))
    assert files
    for file in files:
        results = load_results(file)
        assert results.schema_version is None and results.check_version() == 1


@pytest.mark.parametrize("file", RESULTS_FILES, ids=[str(f.relative_to(ROOT)) for f in RESULTS_FILES])
def test_a_results_file_reads_into_records_and_writes_back_byte_for_byte(file: Path) -> None:
    text = json.dumps(json.loads(file.read_text()), indent=1)
    results = load_results(file)
    assert json.dumps(results.to_json(), indent=1) == text  # key order included
    for entry in results.defences.values():  # the nested records are typed, not dicts
        assert isinstance(entry, DefenceResult)
        assert all(isinstance(row, Row) and isinstance(row.kind, str) for row in entry.rows.values())
        assert all(isinstance(figures, RobustFigures) for figures in (entry.robust or {}).values())
        assert all(isinstance(check, SanityCheck) for check in entry.sanity or [])


def test_the_files_checked_include_every_published_page() -> None:
    assert set(PUBLISHED.glob("*.json")) <= set(RESULTS_FILES) and len(RESULTS_FILES) >= 15


def test_unknown_keys_survive_and_a_record_missing_a_field_is_named() -> None:
    row = {"kind": "pgd", "eps": None, "steps": 10, "eot_requested": 1, "eot": 1, "a_later_field": [1, 2]}
    assert Row.from_json(row).to_json() == row and list(Row.from_json(row).to_json()) == list(row)
    with pytest.raises(ValueError, match="SanityCheck lacks passed"):
        SanityCheck.from_json({"name": "large budget", "detail": "0%"})
    # a record read writes back the keys it read, nothing more
    assert Row.from_json({"kind": "deepfool"}).to_json() == {"kind": "deepfool"}
    with pytest.raises(TypeError, match="from a JSON object, got list"):
        Results.from_json([])  # type: ignore[arg-type]


def test_a_record_made_in_code_leaves_unset_optional_fields_out() -> None:
    check = SanityCheck("large budget", True, "0%")
    assert check.to_json() == {"name": "large budget", "passed": True, "detail": "0%"}
    row = Row("deepfool", None, None, 1, 1, accuracy=0.5)
    assert row.to_json() == {"kind": "deepfool", "eps": None, "steps": None, "eot_requested": 1, "eot": 1,
                             "accuracy": 0.5}  # fmt: skip
    read = Row.from_json({"kind": "pgd", "norm": "linf", "accuracy": 0.5})
    read.accuracy, read.n = 0.25, 4  # a field set after reading is written; one unset with discard is not
    read.discard("norm")
    assert read.to_json() == {"kind": "pgd", "accuracy": 0.25, "n": 4}


def test_an_early_row_that_only_says_why_it_was_skipped_loads_renders_and_round_trips() -> None:
    from art_purifiers.evaluation.report import _cell

    legacy = {"skipped": "needs a differentiable defence"}
    row = Row.from_json(legacy)
    assert row.kind is None and not row.measured and row.to_json() == legacy
    entry = DefenceResult(rows={"deepfool": row})
    assert _cell("deepfool", entry, "deepfool") == "needs a differentiable defence"
    assert _cell("pgd", entry, "pgd") == "n/a"


def test_incomplete_records_refuse_the_rules_that_need_the_missing_figures() -> None:
    cascade = Row.from_json({"kind": "cascade", "controller": {"accuracy_by_level": [0.5, 0.4], "converged": False}})
    with pytest.raises(ValueError, match="without a cascade controller or an image count"):
        cascade.converged()
    with pytest.raises(ValueError, match="do not record which test images"):
        Results.from_json({"config": {}, "defences": {}}).selected_indices()
    from art_purifiers.evaluation.results import merge

    with pytest.raises(ValueError, match="do not record which test images"):
        merge([{"config": {}, "defences": {}}, {"config": {}, "defences": {}}], ["a", "b"])


def test_a_newer_layout_with_renamed_fields_gets_the_version_message_not_a_missing_field(tmp_path: Path) -> None:
    file = tmp_path / "results.json"
    renamed = {"defences": {"x": {"sanity": [{"check": "large budget", "ok": True}]}}}
    file.write_text(json.dumps(renamed))
    with pytest.raises(ValueError, match="SanityCheck lacks name"):  # read as today's layout: a field is missing
        load_results(file)
    file.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, **renamed}))
    with pytest.raises(ValueError, match=f"layout version {SCHEMA_VERSION + 1}"):  # the version is checked first
        load_results(file)
    file.write_text(json.dumps([renamed]))
    with pytest.raises(ValueError, match="does not hold a results file"):
        load_results(file)


def test_a_newer_layout_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    file = tmp_path / "results.json"
    file.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "defences": {}}))
    with pytest.raises(ValueError, match=f"layout version {SCHEMA_VERSION + 1}.*update the package"):
        load_results(file)


def test_a_run_records_the_version_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from art_purifiers.evaluation import evaluate
    from tests.test_evaluation import tiny_config, write_dataset

    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    write_dataset(tmp_path / "data")
    evaluate(tiny_config(f"imagefolder:{tmp_path / 'data'}"), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["schema_version"] == SCHEMA_VERSION and next(iter(written)) == "schema_version"
    assert json.dumps(load_results(tmp_path / "out" / "results.json").to_json()) == json.dumps(written)
