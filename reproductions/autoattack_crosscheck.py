"""
Cross-check of the v2 cascade against Croce & Hein's original AutoAttack on the undefended reference classifier.

Both attacks run on the same clean-correct test images (same seed), in two ``art-purifiers evaluate`` runs (the
original AutoAttack with its own batch size, which changes nothing but speed)::

    art-purifiers evaluate --defence none --attack cascade:eps=2/255 --attack apgd-t:eps=2/255 \\
        --num-images 500 --no-sanity --data-dir path/to/cifar10 --output runs/v2-undefended
    # 4/255: the undefended row of the DCT defences' run (PGD-50, the cascade and APGD-T; same images)
    art-purifiers evaluate --defence none --attack original-autoattack:eps=4/255 \\
        --attack original-autoattack:eps=2/255 --num-images 500 --batch-size 500 --no-sanity \\
        --data-dir path/to/cifar10 --output runs/v2-autoattack
    python -m reproductions.autoattack_crosscheck runs/v2-autoattack runs/v2-undefended runs/v2-dct \\
        --output reproductions/results/cpu-autoattack-crosscheck.md

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


def ours_by_budget(results: dict) -> dict[float, tuple[np.ndarray, float, list[str]]]:
    """Per Linf budget: the per-image robust vector over all our attacks of the run, their seconds and labels."""
    entry = results["defences"]["none"]
    found: dict[float, tuple[np.ndarray, float, list[str]]] = {}
    for label, row in entry["rows"].items():
        group = f"Linf {format_budget(row['eps'])}" if row.get("eps") else None
        if group in entry.get("robust", {}) and row["kind"] != "original-autoattack":
            per_image, seconds, labels = found.get(row["eps"], (np.asarray(entry["robust"][group]["per_image"]), 0, []))
            found[row["eps"]] = (per_image, seconds + row["seconds"], [*labels, label])
    return found


def autoattack_by_budget(results: dict) -> dict[float, tuple[np.ndarray, float]]:
    """Per budget, the original AutoAttack's per-image robust vector and its seconds."""
    rows = results["defences"]["none"]["rows"].values()
    return {
        row["eps"]: (np.asarray(row["robust_per_image"]), row["seconds"])
        for row in rows
        if row["kind"] == "original-autoattack"
    }


def compare(our_runs: list[Path], autoattack_run: Path) -> list[str]:
    """The Markdown lines of the comparison (a budget found in several of our runs: the worst case over them)."""
    second = json.loads((autoattack_run / "results.json").read_text())
    ours: dict[float, tuple[np.ndarray, float, list[str]]] = {}
    for run in our_runs:
        first = json.loads((run / "results.json").read_text())
        if first["data"]["selected_indices"] != second["data"]["selected_indices"]:
            raise ValueError(f"{run} attacked other images than {autoattack_run}; use the same seed and --num-images.")
        for eps, (per_image, seconds, labels) in ours_by_budget(first).items():
            if eps in ours:  # the worst case per image over every run, as the report's headline does
                earlier = ours[eps]
                per_image, seconds, labels = (
                    np.minimum(earlier[0], per_image),
                    earlier[1] + seconds,
                    [*earlier[2], *labels],
                )
            ours[eps] = (per_image, seconds, labels)
    theirs = autoattack_by_budget(second)
    n = len(second["data"]["selected_indices"])
    lines = [
        "# The v2 cascade against the original AutoAttack (undefended `cifar10-reference`)",
        "",
        f"{n} clean-correct CIFAR-10 test images (a copy re-encoded as JPEG q75), Linf. Ours: every attack "
        "of our runs at the budget, in order (below); the cascade is APGD-CE, APGD-DLR (100 steps, 1 restart), Square "
        "(5,000 queries), then APGD-CE/DLR with 200 steps and 2 restarts on the survivors; APGD-T has 9 targets and "
        "100 steps. AutoAttack: `pyautoattack` 0.2.0 (Croce & "
        "Hein's code), version standard (APGD-CE, APGD-T, FAB-T, Square). Both round their examples to 8 bits "
        "within the budget before scoring.",
        "",
        "| budget | ours robust (%) | AutoAttack robust (%) | difference (points, 95% CI) | McNemar p | broken "
        "only by ours / only by AutoAttack | seconds (ours / AutoAttack) |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for eps in sorted(set(ours) & set(theirs)):
        (a, our_seconds, our_attacks), (b, their_seconds) = ours[eps], theirs[eps]
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
        notes.append(f"- {round(eps * 255)}/255: " + describe_difference(comparison, "ours", "AutoAttack"))
        notes.append(f"  (ours: {'; '.join(our_attacks)})")
    footer = ["Seconds: attack wall time on 2 CPU cores shared with other runs (one thread each).", ""]
    return lines + [""] + notes + ["", *footer]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("autoattack_run", type=Path, help="the run with the original AutoAttack")
    parser.add_argument("our_runs", type=Path, nargs="+", help="runs with our attacks on the same images")
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    text = "\n".join(compare(args.our_runs, args.autoattack_run))
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
