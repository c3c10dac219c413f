"""A run interrupted under the evaluation code before its redesign resumes under today's code with the same figures.

The state files in ``tests/fixtures/pre_redesign/state`` were written by the old code (``make_fixture.py`` there says
when); ``expected.json`` holds what the old code computed for the same run uninterrupted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from art_purifiers.evaluation import EvaluationConfig, evaluate
from tests.test_evaluation import tiny_config

FIXTURE = Path(__file__).parent / "fixtures" / "pre_redesign"
# timings (seconds, images per second) differ from run to run; everything else is a figure


def _is_timing(key: object) -> bool:
    return str(key).endswith(("seconds", "per_second"))


def config_for(dataset: str) -> EvaluationConfig:
    """A deterministic and a randomized defence (two draws), a PGD and a cascade, in chunks of 4 images."""
    return tiny_config(dataset, defences=["none", "QuantizeDistort"], attacks=["pgd:eps=6/255,steps=3",
                       "cascade:eps=6/255,steps=3"], draws=2, num_images=12, chunk_size=4, batch_size=4)  # fmt: skip


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items() if not _is_timing(key)}
    if isinstance(value, list):
        return [_without_timings(item) for item in value]
    return value


def figures(results: dict[str, Any], output: Path) -> dict[str, Any]:
    """Every figure of a run: the results of each defence (rows, clean, robust, ...) without timings, and the
    per-image correctness over attacks and draws."""
    correctness = {
        f"{path.parent.name}/{path.stem}": {key: np.asarray(array).tolist() for key, array in np.load(path).items()}
        for path in sorted((output / "state").glob("*/correctness-*.npz"))
    }
    return {"defences": _without_timings(results["defences"]), "correctness": correctness}


@pytest.fixture
def dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from tests.test_evaluation import write_dataset

    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    write_dataset(tmp_path / "data")
    return f"imagefolder:{tmp_path / 'data'}"


def test_a_run_interrupted_before_the_redesign_finishes_with_the_old_figures(dataset: str, tmp_path: Path) -> None:
    output = tmp_path / "out"
    shutil.copytree(FIXTURE / "state", output / "state")
    kept = {path: path.stat().st_mtime_ns for path in (output / "state").rglob("*.npz")}
    resumed = evaluate(config_for(dataset), output)
    assert kept and all(path.stat().st_mtime_ns == stamp for path, stamp in kept.items())  # taken over, not redone
    expected = _without_timings(json.loads((FIXTURE / "expected.json").read_text()))
    resumed_figures = json.loads(json.dumps(figures(resumed, output)))
    assert not _differences(resumed_figures, expected)


def _differences(got: Any, expected: Any, path: str = "") -> list[str]:
    """The paths where two JSON values differ, with both values. Loss curves (float32 means, a diagnostic drawn in
    the plots) may differ in their last digits with the number of threads; every other value must be equal."""
    if isinstance(got, dict) and isinstance(expected, dict):
        return [difference for key in sorted(set(got) | set(expected), key=str)
                for difference in _differences(got.get(key), expected.get(key), f"{path}/{key}")]  # fmt: skip
    if "/loss_curves/" in path and isinstance(got, list) and isinstance(expected, list) and len(got) == len(expected):
        if np.allclose(got, expected, rtol=1e-5, atol=0.0):
            return []
    return [] if got == expected else [f"{path}: {str(got)[:120]} != {str(expected)[:120]}"]
