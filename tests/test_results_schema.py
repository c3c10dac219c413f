"""The layout version of results files: written by every run, 1 when absent, a newer one refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from art_purifiers.evaluation.results import SCHEMA_VERSION, load_results, schema_version

PUBLISHED = Path(__file__).parents[1] / "docs" / "results"


def test_published_results_written_before_versions_read_as_version_1() -> None:
    files = sorted(PUBLISHED.glob("*.json"))
    assert files
    for file in files:
        results = load_results(file)
        assert "schema_version" not in results and schema_version(results) == 1


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
