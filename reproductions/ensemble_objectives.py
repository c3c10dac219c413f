"""Robust accuracy of Zhang & Gao's ensemble, worst case per image over two attack objectives.

The suite attacks a classifier through its own output, so the two objectives of an adaptive attack on the ensemble
take two runs on the same images: ``--classifier ...:zhang2021_ensemble`` (cross-entropy on the averaged
probabilities, the paper's decision) and ``--classifier ...:zhang2021_ensemble_logit_gradient`` (the same prediction,
differentiated as the logit average). ``art-purifiers report`` merges only runs of one classifier, so this script
combines the two: per threat model, an image counts as robust only if it survived every attack of both runs. Both
runs score adversarial examples with the paper's decision rule, and the script checks that they attacked the same
images.

Run from the repository root:

    python -m reproductions.ensemble_objectives runs/v2-ensemble runs/v2-ensemble-logit \\
        --output reproductions/results/cpu-ensemble-objectives.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from art_purifiers.evaluation.robust import describe_difference, paired_comparison, proportion
from reproductions.restoration_quality import emit


def load(run: Path) -> dict[str, Any]:
    results = json.loads((run / "results.json").read_text())
    if list(results["defences"]) != ["none"]:
        raise ValueError(f"{run}: expected one classifier-side run (--defence none), got {list(results['defences'])}.")
    return results


def cell(values: np.ndarray) -> str:
    share = proportion(values)
    low, high = share["ci95"]
    return f"**{100 * share['accuracy']:.1f}** [{100 * low:.1f}, {100 * high:.1f}]"


def rows(runs: list[dict[str, Any]], names: list[str]) -> list[str]:
    groups = [set(run["defences"]["none"]["robust"]) for run in runs]
    lines = [f"| threat model | {' | '.join(names)} | worst case of all | survivors of each run broken by another |",
             "|---|" + "---|" * (len(names) + 2)]  # fmt: skip
    for group in sorted(set.intersection(*groups), key=lambda g: float(g.split()[-1].split("/")[0])):
        per_run = [np.asarray(run["defences"]["none"]["robust"][group]["per_image"]) for run in runs]
        worst = np.minimum.reduce(per_run)
        broken = ", ".join(str(int((values > worst).sum())) for values in per_run)
        lines.append(f"| {group} | {' | '.join(cell(values) for values in per_run)} | {cell(worst)} | {broken} |")
    return lines


def comparison_rows(runs: list[dict[str, Any]], others: list[dict[str, Any]], defence: str) -> list[str]:
    """
    The ensemble's worst case against another defence, paired on the test images both sides attacked; ``others`` are
    runs of that defence on the same images, combined per image (the worst case over all their attacks).
    """
    if any(other["data"]["selected_indices"] != others[0]["data"]["selected_indices"] for other in others):
        raise SystemExit(f"The runs of {defence} attacked different images.")
    theirs = {index: position for position, index in enumerate(others[0]["data"]["selected_indices"])}
    shared = [(position, theirs[index]) for position, index in enumerate(runs[0]["data"]["selected_indices"])
              if index in theirs]  # fmt: skip
    lines = []
    for group in others[0]["defences"][defence]["robust"]:
        if not all(group in run["defences"]["none"]["robust"] for run in runs):
            continue
        ours = worst_case([run["defences"]["none"] for run in runs], group)[[a for a, _ in shared]]
        their = worst_case([other["defences"][defence] for other in others], group)[[b for _, b in shared]]
        sentence = describe_difference(paired_comparison(ours, their), "the ensemble", f"`{defence}`")
        lines.append(f"- {group}, on the {len(shared)} test images both sides attacked: {cell(ours)} against "
                     f"{cell(their)}; {sentence}.")  # fmt: skip
    return lines


def worst_case(entries: list[dict[str, Any]], group: str) -> np.ndarray:
    """Per image, robust in every entry (one defence's results in several runs) that has the group."""
    return np.minimum.reduce([np.asarray(e["robust"][group]["per_image"]) for e in entries if group in e["robust"]])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="output directories of art-purifiers evaluate")
    parser.add_argument(
        "--compare",
        nargs=2,
        action="append",
        default=[],
        metavar=("RUNS", "DEFENCE"),
        help="other runs (comma-separated, the same images) and a defence spec in them, compared per image on the "
        "test images both sides attacked",
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    runs = [load(run) for run in args.runs]
    if any(run["data"]["selected_indices"] != runs[0]["data"]["selected_indices"] for run in runs):
        raise SystemExit("The runs attacked different images: their worst case per image is undefined.")
    names = [f"`{run['config']['classifier'].rpartition(':')[2]}`" for run in runs]
    lines = ["# Zhang & Gao's ensemble: robust accuracy over both attack objectives", "",
             f"`python -m reproductions.ensemble_objectives {shlex.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"{len(runs[0]['data']['selected_indices'])} CIFAR-10 test images (the JPEG q75 copy) that the ensemble "
             "classifies correctly, the same in every run. Cells: robust accuracy (%, correct under every attack of "
             "the threat model), Wilson 95% interval. Runs: " + ", ".join(f"`{run}`" for run in args.runs) + ".", "",
             *rows(runs, names)]  # fmt: skip
    for other_runs, defence in args.compare:
        others = [json.loads((Path(run) / "results.json").read_text()) for run in other_runs.split(",")]
        where = ", ".join(f"`{run}`" for run in other_runs.split(","))
        lines += ["", f"Against `{defence}` in {where} (its own attacks, worst case over those runs; paired):", ""]
        lines += comparison_rows(runs, others, defence)
    emit("\n".join(lines), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
