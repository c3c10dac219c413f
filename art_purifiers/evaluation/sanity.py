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

from art_purifiers.evaluation.results import DefenceResult, SanityCheck
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


#: attacks that ran, each with the accuracy it left
Done = list[tuple[AttackSpec, float]]


def run_checks(entry: DefenceResult, attacks: list[AttackSpec], n: int) -> list[SanityCheck]:
    """
    The checks for one defence's results.

    :param entry: The defence's results, with ``rows`` keyed by attack label.
    :param attacks: The attacks of the run (for their kinds and budgets).
    :param n: Number of attacked images.
    :return: The checks, each with its ``name``, whether it ``passed`` and a ``detail``.
    """
    rows = {label: row.accuracy for label, row in entry.rows.items() if row.accuracy is not None}
    done = [(attack, rows[attack.label]) for attack in attacks if attack.label in rows]
    pgd = [(a, r) for a, r in done if a.kind == AttackKind.PGD]
    by_eps: dict[float, Done] = {}
    for attack, accuracy in pgd:
        by_eps.setdefault(attack.eps or 0.0, []).append((attack, accuracy))
    for group in by_eps.values():
        group.sort(key=lambda item: item[0].steps)
    return _large_budgets(pgd) + _more_iterations(by_eps, n) + _larger_budgets(by_eps, n) + _white_vs_black(done, n)


def _large_budgets(pgd: Done) -> list[SanityCheck]:
    """PGD with a large budget leaves (almost) nothing."""
    return [
        SanityCheck(f"large budget ({attack.label})", accuracy <= LARGE_BUDGET_MAX_ACCURACY,
                    f"accuracy {accuracy:.3f} (must be <= {LARGE_BUDGET_MAX_ACCURACY})")
        for attack, accuracy in pgd
        if attack.eps is not None and attack.eps >= LARGE_BUDGET_MIN_EPS
    ]  # fmt: skip


def _no_rise(name: str, before: float, after: float, n: int) -> SanityCheck:
    """A stronger attack (accuracy ``after``) leaves no more accuracy than a weaker one (``before``), beyond noise."""
    tolerance = _tolerance(before, n)
    return SanityCheck(name, after <= before + tolerance, f"{before:.3f} -> {after:.3f} (tolerance {tolerance:.3f})")


def _more_iterations(by_eps: dict[float, Done], n: int) -> list[SanityCheck]:
    """More PGD steps at one budget do not raise the accuracy (beyond sampling noise)."""
    return [
        _no_rise(f"iterations ({fewer.steps} -> {more.steps} steps at {fewer.label.split(' (')[0]})", accuracy_fewer,
                 accuracy_more, n)
        for _, group in sorted(by_eps.items())
        for (fewer, accuracy_fewer), (more, accuracy_more) in zip(group, group[1:])
    ]  # fmt: skip


def _larger_budgets(by_eps: dict[float, Done], n: int) -> list[SanityCheck]:
    """A larger budget (each budget's longest PGD) does not raise the accuracy."""
    budgets = [group[-1] for _, group in sorted(by_eps.items())]
    return [_no_rise(f"budget ({small.label} -> {big.label})", accuracy_small, accuracy_big, n)
            for (small, accuracy_small), (big, accuracy_big) in zip(budgets, budgets[1:])]  # fmt: skip


def _white_vs_black(done: Done, n: int) -> list[SanityCheck]:
    """The best gradient attack beats every gradient-free one at the same budget."""
    checks = []
    for black, black_accuracy in [(a, r) for a, r in done if a.gradient_free]:
        white = [(a, r) for a, r in done if a.kind in PURE_GRADIENT and a.eps == black.eps and a.norm == black.norm]
        if not white:
            continue
        best, best_accuracy = min(white, key=lambda item: item[1])
        tolerance = _tolerance(black_accuracy, n)
        checks.append(SanityCheck(
            f"white-box vs black-box ({best.label} vs {black.label})",
            best_accuracy <= black_accuracy + tolerance,
            f"white-box {best_accuracy:.3f}, black-box {black_accuracy:.3f} (tolerance {tolerance:.3f})",
        ))  # fmt: skip
    return checks
