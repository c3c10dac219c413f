"""The GPU check's report says why a test failed, not only which (read back from a real pytest run)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.gpu_check import run_pytest


def test_a_failing_tests_assertion_reaches_the_report(tmp_path: Path) -> None:
    (tmp_path / "test_demo.py").write_text(
        "import numpy as np\n\n"
        "def test_passes():\n    assert True\n\n"
        "def test_fails():\n    np.testing.assert_allclose([1.0, 2.0], [1.0, 2.5], atol=1e-3)\n"
    )
    ok, summary, outcomes = run_pytest([str(tmp_path / "test_demo.py")])
    assert not ok and summary.startswith("1 failed, 1 passed")
    assert any(line.startswith("FAILED") and "test_fails" in line for line in outcomes)
    reasons = "\n".join(line for line in outcomes if line.startswith(" "))
    assert "why test_fails:" in reasons and "Max absolute difference among violations: 0.5" in reasons
    assert "test_passes" not in reasons
