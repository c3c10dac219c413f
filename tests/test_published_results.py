"""The published results pages are what the report code renders from their JSON files (nothing edited by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from art_purifiers.evaluation.report import write_reports

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
PAGES = sorted(RESULTS.glob("*.json"))


def test_there_are_published_pages() -> None:
    assert len(PAGES) >= 10


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_each_page_renders_from_its_json(page: Path, tmp_path: Path) -> None:
    notes = RESULTS / "notes" / f"{page.stem}.md"
    write_reports(json.loads(page.read_text()), tmp_path, page.stem, notes.read_text() if notes.is_file() else "")
    for suffix in (".md", ".csv"):
        assert (tmp_path / f"{page.stem}{suffix}").read_text() == (RESULTS / f"{page.stem}{suffix}").read_text()
