"""
Sanity checks of an evaluation (Carlini et al. 2019, section 5; Tramer et al. 2020). A failed check means the
attacks did not do their job (gradient masking, too few iterations, a broken attack), not that the defence works.

* ``large budget``: PGD at a budget that destroys any image must bring accuracy near zero.
* ``iterations``: more PGD iterations must not raise accuracy (beyond binomial noise).
* ``budget``: a larger budget must not raise accuracy.
* ``white-box vs black-box``: the best pure gradient attack (PGD, APGD; not AutoAttack or the cascade, which contain
  Square) must not be weaker than the black-box ones (Square, transfer, noise) at the same norm and budget.

Tolerances are two binomial standard errors plus one image, so a check fires on real contradictions only.
"""

from __future__ import annotations

from typing import Any

from art_purifiers.evaluation.specs import AttackKind, AttackSpec
from art_purifiers.metrics import binomial_standard_error

#: Attacks that only follow gradients (AutoAttack and the cascade include Square, a black-box attack, so they are not
#: compared with black-box attacks).
PURE_GRADIENT = (AttackKind.PGD, AttackKind.PGD_EOT, AttackKind.PGD_IDENTITY, AttackKind.LEARNED_BPDA, AttackKind.APGD)
#: Accuracy the large-budget PGD must stay under.
LARGE_BUDGET_MAX_ACCURACY = 0.05
LARGE_BUDGET_MIN_EPS = 32 / 255


def _tolerance(accuracy: float, n: int) -> float:
    return 2 * binomial_standard_error(accuracy, n) + 1 / max(n, 1)


Done = list[tuple[AttackSpec, dict[str, Any]]]


def run_checks(entry: dict[str, Any], attacks: list[AttackSpec], n: int) -> list[dict[str, Any]]:
    """
    The checks for one defence's results.

    :param entry: The defence's results, with ``rows`` keyed by attack label.
    :param attacks: The attacks of the run (for their kinds and budgets).
    :param n: Number of attacked images.
    :return: One dict per check: ``name``, ``passed``, ``detail``.
    """
    rows = entry.get("rows", {})
    done = [(attack, rows[attack.label]) for attack in attacks if "accuracy" in rows.get(attack.label, {})]
    pgd = [(a, r) for a, r in done if a.kind == AttackKind.PGD]
    by_eps: dict[float, Done] = {}
    for attack, row in pgd:
        by_eps.setdefault(attack.eps or 0.0, []).append((attack, row))
    for group in by_eps.values():
        group.sort(key=lambda item: item[0].steps)
    return _large_budgets(pgd) + _more_iterations(by_eps, n) + _larger_budgets(by_eps, n) + _white_vs_black(done, n)


def _check(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": passed, "detail": detail}


def _large_budgets(pgd: Done) -> list[dict[str, Any]]:
    """PGD with a large budget leaves (almost) nothing."""
    return [
        _check(f"large budget ({attack.label})", row["accuracy"] <= LARGE_BUDGET_MAX_ACCURACY,
               f"accuracy {row['accuracy']:.3f} (must be <= {LARGE_BUDGET_MAX_ACCURACY})")
        for attack, row in pgd
        if attack.eps is not None and attack.eps >= LARGE_BUDGET_MIN_EPS
    ]  # fmt: skip


def _no_rise(name: str, before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    """A stronger attack (row ``after``) leaves no more accuracy than a weaker one (``before``), beyond noise."""
    tolerance = _tolerance(before["accuracy"], n)
    return _check(name, after["accuracy"] <= before["accuracy"] + tolerance,
                  f"{before['accuracy']:.3f} -> {after['accuracy']:.3f} (tolerance {tolerance:.3f})")  # fmt: skip


def _more_iterations(by_eps: dict[float, Done], n: int) -> list[dict[str, Any]]:
    """More PGD steps at one budget do not raise the accuracy (beyond sampling noise)."""
    return [
        _no_rise(f"iterations ({fewer.steps} -> {more.steps} steps at {fewer.label.split(' (')[0]})", row_fewer,
                 row_more, n)
        for _, group in sorted(by_eps.items())
        for (fewer, row_fewer), (more, row_more) in zip(group, group[1:])
    ]  # fmt: skip


def _larger_budgets(by_eps: dict[float, Done], n: int) -> list[dict[str, Any]]:
    """A larger budget (each budget's longest PGD) does not raise the accuracy."""
    budgets = [group[-1] for _, group in sorted(by_eps.items())]
    return [_no_rise(f"budget ({small.label} -> {big.label})", row_small, row_big, n)
            for (small, row_small), (big, row_big) in zip(budgets, budgets[1:])]  # fmt: skip


def _white_vs_black(done: Done, n: int) -> list[dict[str, Any]]:
    """The best gradient attack beats every gradient-free one at the same budget."""
    checks = []
    for black, row_black in [(a, r) for a, r in done if a.gradient_free]:
        white = [(a, r) for a, r in done if a.kind in PURE_GRADIENT and a.eps == black.eps and a.norm == black.norm]
        if not white:
            continue
        best, row_best = min(white, key=lambda item: item[1]["accuracy"])
        tolerance = _tolerance(row_black["accuracy"], n)
        checks.append(_check(
            f"white-box vs black-box ({best.label} vs {black.label})",
            row_best["accuracy"] <= row_black["accuracy"] + tolerance,
            f"white-box {row_best['accuracy']:.3f}, black-box {row_black['accuracy']:.3f} (tolerance {tolerance:.3f})",
        ))  # fmt: skip
    return checks
