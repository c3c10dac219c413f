"""
Cross-check of the v2 cascade against Croce & Hein's original AutoAttack on the undefended reference classifier.

Both attacks run on the same clean-correct test images (same seed), in two ``art-purifiers evaluate`` runs (the
original AutoAttack with its own batch size, which changes nothing but speed)::

    art-purifiers evaluate --defence none --attack cascade:eps=2/255 --attack apgd-t:eps=2/255 \\
        --attack cascade:eps=4/255 --attack apgd-t:eps=4/255 \\
        --num-images 500 --no-sanity --data-dir ../shared/data/cifar10 --output runs/v2-undefended
    art-purifiers evaluate --defence none --attack original-autoattack:eps=4/255 \\
        --attack original-autoattack:eps=2/255 --num-images 500 --batch-size 500 --no-sanity \\
        --data-dir ../shared/data/cifar10 --output runs/v2-autoattack
    python -m benchmarks.autoattack_crosscheck runs/v2-undefended runs/v2-autoattack \\
        --output benchmarks/results/cpu-autoattack-crosscheck.md

prints, per budget, robust accuracy under each, the paired difference (Newcombe interval, McNemar p) and the images
only one of them breaks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from art_purifiers.evaluation.robust import describe_difference, paired_comparison
from art_purifiers.evaluation.specs import format_budget


def ours_by_budget(results: dict) -> dict[float, tuple[np.ndarray, float]]:
    """Per Linf budget, the per-image robust vector over all our attacks of the run, and their seconds."""
    entry = results["defences"]["none"]
    found = {}
    for row in entry["rows"].values():
        group = f"Linf {format_budget(row['eps'])}" if row.get("eps") else None
        if group in entry.get("robust", {}) and row["kind"] != "original-autoattack":
            per_image, seconds = found.get(row["eps"], (np.asarray(entry["robust"][group]["per_image"]), 0.0))
            found[row["eps"]] = (per_image, seconds + row["seconds"])
    return found


def autoattack_by_budget(results: dict) -> dict[float, tuple[np.ndarray, float]]:
    """Per budget, the original AutoAttack's per-image robust vector and its seconds."""
    rows = results["defences"]["none"]["rows"].values()
    return {
        row["eps"]: (np.asarray(row["robust_per_image"]), row["seconds"])
        for row in rows
        if row["kind"] == "original-autoattack"
    }


def compare(cascade_run: Path, autoattack_run: Path) -> list[str]:
    """The Markdown lines of the comparison."""
    first = json.loads((cascade_run / "results.json").read_text())
    second = json.loads((autoattack_run / "results.json").read_text())
    if first["data"]["selected_indices"] != second["data"]["selected_indices"]:
        raise ValueError("The two runs attacked different images; use the same seed and --num-images.")
    ours, theirs = ours_by_budget(first), autoattack_by_budget(second)
    n = len(first["data"]["selected_indices"])
    lines = [
        "# The v2 cascade against the original AutoAttack (undefended `cifar10-reference`)",
        "",
        f"{n} clean-correct CIFAR-10 test images (the shared copy, re-encoded as JPEG q75), Linf. Ours: APGD-CE, "
        "APGD-DLR (100 steps, 1 restart), Square (5,000 queries), APGD-CE/DLR with 200 steps and 2 restarts on the "
        "survivors, then APGD-T (9 targets, 100 steps) on what is left. AutoAttack: `pyautoattack` 0.2.0 (Croce & "
        "Hein's code), version standard (APGD-CE, APGD-T, FAB-T, Square). Both round their examples to 8 bits "
        "within the budget before scoring.",
        "",
        "| budget | cascade robust (%) | AutoAttack robust (%) | difference (points, 95% CI) | McNemar p | broken "
        "only by the cascade / only by AutoAttack | seconds (cascade / AutoAttack) |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for eps in sorted(set(ours) & set(theirs)):
        (a, our_seconds), (b, their_seconds) = ours[eps], theirs[eps]
        comparison = paired_comparison(a, b)
        low, high = (100 * v for v in comparison["ci95"])
        only_ours, only_theirs = int((~a.astype(bool) & b.astype(bool)).sum()), int(
            (a.astype(bool) & ~b.astype(bool)).sum()
        )
        lines.append(
            f"| {round(eps * 255)}/255 | {100 * a.mean():.1f} | {100 * b.mean():.1f} | "
            f"{100 * comparison['difference']:+.1f} [{low:+.1f}, {high:+.1f}] | {comparison['p_value']:.3g} | "
            f"{only_ours} / {only_theirs} | {our_seconds:.0f} / {their_seconds:.0f} |"
        )
        notes.append(f"- {round(eps * 255)}/255: " + describe_difference(comparison, "the cascade", "AutoAttack"))
    return lines + [""] + notes + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cascade_run", type=Path)
    parser.add_argument("autoattack_run", type=Path)
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    text = "\n".join(compare(args.cascade_run, args.autoattack_run))
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
