"""
Per-image robustness figures from a correctness tensor, and paired comparisons of two rows on the same images.

The evaluation stores ``correct[image, attack, draw]`` (int8): 1 when draw ``draw`` of the defence classifies the
example of ``attack`` correctly, 0 when it does not, and -1 when the attack did not run on the image because an
earlier attack of its cascade had already broken it. Column 0 is the clean image (the "attack" that does nothing).

Figures (Carlini et al. 2019; Croce & Hein 2020 for the worst case per image):

* **robust accuracy** (the headline): the share of images correct under every attack in every draw;
* expected accuracy: the mean over draws, on each image's worst attack (the lowest mean over draws);
* majority vote: the share of images whose worst attack is still classified correctly by most draws;

each with a Wilson 95% interval on the number of images.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from art_purifiers.metrics import wilson_interval

NOT_RUN = -1


def check_correctness(correct: np.ndarray) -> np.ndarray:
    """
    :return: ``correct`` as int8 after checking its shape (images, attacks, draws) and values {-1, 0, 1}.
    :raises ValueError: on another shape or value.
    """
    correct = np.asarray(correct)
    if correct.ndim != 3 or 0 in correct.shape:
        raise ValueError(f"correct must have shape (images, attacks, draws), got {correct.shape}.")
    if not np.isin(correct, (NOT_RUN, 0, 1)).all():
        raise ValueError("correct may only hold 1 (correct), 0 (wrong) and -1 (not run).")
    return correct.astype(np.int8)


def worst_case_share(correct: np.ndarray) -> np.ndarray:
    """Per image, the lowest share of draws classifying an attack's example correctly (attacks that ran)."""
    correct = check_correctness(correct)
    ran = correct != NOT_RUN
    if not ran.any(axis=(1, 2)).all():
        raise ValueError("Every image needs at least one attack (or the clean column) that ran.")
    share = np.where(ran, correct, 0).sum(axis=2) / np.maximum(ran.sum(axis=2), 1)
    return np.where(ran.any(axis=2), share, np.inf).min(axis=1)


def robust_correct(correct: np.ndarray) -> np.ndarray:
    """Per image: correct under every attack that ran, in every draw."""
    return np.asarray(worst_case_share(correct) == 1.0)


def proportion(values: np.ndarray) -> dict[str, Any]:
    """A share with its Wilson 95% interval: ``{"accuracy", "ci95", "n"}``."""
    values = np.asarray(values, dtype=float)
    accuracy = float(values.mean())
    return {"accuracy": accuracy, "ci95": list(wilson_interval(accuracy, len(values))), "n": int(len(values))}


def summarise(correct: np.ndarray) -> dict[str, Any]:
    """Robust, expected and majority-vote accuracy of a correctness tensor (see the module docstring)."""
    worst = worst_case_share(correct)
    expected = proportion(worst)
    return {
        "robust": proportion(worst == 1.0),
        "expected": {**expected, "ci95": _bootstrap_mean(worst)},
        "majority": proportion(worst > 0.5),
        "draws": int(np.asarray(correct).shape[2]),
    }


def _bootstrap_mean(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> list[float]:
    """A percentile bootstrap 95% interval of a mean over images (the expected accuracy is not a proportion)."""
    if np.all(values == values[0]):
        return list(wilson_interval(float(values[0]), len(values))) if values[0] in (0.0, 1.0) else [values[0]] * 2
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def paired_comparison(first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """
    Compare two per-image correctness vectors measured on the same images: the difference ``first - second`` in
    accuracy, its 95% interval (Newcombe's method 10 for paired proportions) and McNemar's exact p-value.

    When the test cannot tell the rows apart, report "no difference larger than ``bound`` points" with ``bound`` the
    largest absolute value in the interval (:func:`describe_difference`).
    """
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if first.shape != second.shape or first.ndim != 1 or len(first) == 0:
        raise ValueError("paired_comparison needs two non-empty 1-D vectors of the same images.")
    n = len(first)
    only_first, only_second = int((first & ~second).sum()), int((~first & second).sum())
    discordant = only_first + only_second
    p_value = 1.0 if discordant == 0 else float(stats.binomtest(only_first, discordant, 0.5).pvalue)
    low, high = _newcombe_paired(first, second)
    difference = (only_first - only_second) / n
    return {
        "difference": difference,
        "ci95": [low, high],
        "p_value": p_value,
        "discordant": [only_first, only_second],
        "n": n,
        "bound": max(abs(low), abs(high)),
        "significant": p_value < 0.05,
    }


def _newcombe_paired(first: np.ndarray, second: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Newcombe's (1998) method 10: Wilson intervals of both proportions combined with their correlation."""
    n = len(first)
    p1, p2 = float(first.mean()), float(second.mean())
    l1, u1 = wilson_interval(p1, n, z)
    l2, u2 = wilson_interval(p2, n, z)
    a, b = float((first & second).sum()), float((first & ~second).sum())
    c, d = float((~first & second).sum()), float((~first & ~second).sum())
    denominator = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0 if denominator == 0 else (a * d - b * c) / math.sqrt(denominator)
    delta = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    epsilon = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return (max(-1.0, p1 - p2 - delta), min(1.0, p1 - p2 + epsilon))


def describe_difference(comparison: dict[str, Any], first: str, second: str) -> str:
    """A sentence for reports: a significant difference with its interval, or the largest difference not excluded."""
    low, high = (100 * value for value in comparison["ci95"])
    if comparison["significant"]:
        return (
            f"{first} is {100 * comparison['difference']:+.1f} points against {second} "
            f"(95% interval {low:+.1f} to {high:+.1f}, McNemar p = {comparison['p_value']:.3g})"
        )
    return (
        f"{first} and {second} cannot be told apart on these {comparison['n']} images: no difference larger than "
        f"{100 * comparison['bound']:.1f} points (McNemar p = {comparison['p_value']:.2f})"
    )
