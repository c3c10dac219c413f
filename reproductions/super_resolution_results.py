"""Tables and the plot of ``docs/results/v1/super_resolution.md`` from the runs that measured them.

Inputs (run from the repository root, in this order):

    python -m reproductions.super_resolution_paper_protocol --data-dir path/to/cifar10 --num-images 200 \\
        --output runs/sr-paper-protocol
    art-purifiers evaluate ... --output runs/sr-eval        # the adaptive attacks on the default defence
    art-purifiers evaluate ... --output runs/sr-ablation    # PGD on the paper's ablations
    python -m reproductions.super_resolution_results --protocol runs/sr-paper-protocol --adaptive runs/sr-eval \\
        --ablation runs/sr-ablation --plot docs/results/v1/super_resolution.png

(the exact ``evaluate`` commands are in ``docs/results/v1/super_resolution.md``). Prints the Markdown tables: the
adaptive attacks with the per-image worst case over attacks of the same budget, and the ablation under PGD beside the
attack-unaware protocol.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from art_purifiers import metrics


def cell(correct: np.ndarray) -> str:
    """Accuracy (%) with its Wilson 95% interval."""
    accuracy = float(correct.mean())
    low, high = metrics.wilson_interval(accuracy, len(correct))
    return f"{100 * accuracy:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def suite_rows(run: Path) -> dict[str, dict[str, dict]]:
    """Per defence spec: per attack label, the per-image correctness (first draw) and its spec."""
    results = json.loads((run / "results.json").read_text())
    rows: dict[str, dict[str, dict]] = {}
    for spec in results["defences"]:
        directory = run / "state" / "".join(c if c.isalnum() or c in "-_=." else "_" for c in spec)
        rows[spec] = {}
        for file in sorted(directory.glob("*.npz")):
            data = np.load(file)
            if "correct" in data and bool(np.asarray(data["done"]).all()):
                rows[spec][file.stem] = {"correct": data["correct"][0], "indices": data["indices"]}
        rows[spec]["clean"] = {"accuracy": results["defences"][spec]["clean"]["accuracy"]}
    return rows


def budget_of(slug: str) -> str:
    """``8/255`` from an attack slug such as ``pgd-eps0.0313725-s50-k1``."""
    eps = float(slug.split("-eps")[1].split("-")[0])
    return f"{round(eps * 255)}/255"


KINDS = {
    "pgd": "PGD-{steps} through the defence, exact gradient",
    "pgd-identity": "PGD-{steps}, BPDA-identity (the resize's gradient)",
    "transfer": "PGD-{steps} on the undefended model, transferred",
}


def describe(slug: str) -> str:
    """``PGD-50 through the defence, exact gradient, 8/255`` from ``pgd-eps0.0313725-s50-k1``."""
    kind = slug.split("-eps")[0]
    steps = slug.split("-s")[-1].split("-")[0]
    return KINDS[kind].format(steps=steps) + f", {budget_of(slug)}"


def adaptive_table(adaptive: dict[str, dict], protocol: dict[str, np.ndarray], indices: np.ndarray) -> list[str]:
    """Each adaptive attack, then the worst case per image over every attack of the same Linf budget (the
    attack-unaware I-FGSM and MI-FGSM examples count at 16/255)."""
    lines = ["| attack (Linf, 200 images) | accuracy % [95% interval] |", "|---|---|"]
    by_budget: dict[str, list[np.ndarray]] = {}
    for slug, entry in adaptive.items():
        if slug == "clean":
            continue
        assert np.array_equal(entry["indices"], indices), "the runs attacked different images"
        lines.append(f"| {describe(slug)} | {cell(entry['correct'])} |")
        by_budget.setdefault(budget_of(slug), []).append(entry["correct"])
    for label, correct in protocol.items():
        lines.append(f"| attack-unaware {label} (16/255) | {cell(correct)} |")
        by_budget.setdefault("16/255", []).append(correct)
    for budget, rows in sorted(by_budget.items(), key=lambda item: int(item[0].split("/")[0])):
        lines.append(f"| **every attack at {budget}** ({len(rows)} attacks) | **{cell(np.all(rows, axis=0))}** |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", type=Path, required=True)
    parser.add_argument("--adaptive", type=Path, required=True)
    parser.add_argument("--ablation", type=Path, required=True)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    protocol = np.load(args.protocol / "paper-protocol.npz")
    attacks = list(protocol["attacks"])
    indices = protocol["indices"]
    default = "WD + EDSR, resized back (our default)"
    iterative = {label: protocol[default][attacks.index(label)] for label in ("I-FGSM", "MI-FGSM")}
    adaptive = suite_rows(args.adaptive)["SuperResolution"]
    print("\n".join(adaptive_table(adaptive, iterative, indices)))
    ablation = suite_rows(args.ablation)
    names = {
        "none": "no defence",
        "SuperResolution:upsampler=none": "WD only",
        "SuperResolution:upsampler=bicubic": "WD + bicubic",
        "SuperResolution:upsampler=bilinear": "WD + bilinear",
        "SuperResolution:upsampler=nearest": "WD + nearest",
        "SuperResolution:denoise=False": "EDSR only",
    }
    rows = [("SuperResolution", default, adaptive)] + [(s, names[s], r) for s, r in ablation.items()]
    print("\n| defence | clean % | attack-unaware, every attack % | adaptive PGD-50 Linf 8/255 % |\n|---|---|---|---|")
    bars = []
    for _, name, entry in rows:
        pgd = next(e["correct"] for slug, e in entry.items() if slug.startswith("pgd-eps0.0313725-s50"))
        unaware = protocol[name].all(axis=0)
        print(f"| {name} | {100 * entry['clean']['accuracy']:.1f} | {cell(unaware)} | {cell(pgd)} |")
        bars.append((name, entry["clean"]["accuracy"], unaware.mean(), pgd.mean()))
    if args.plot:
        plot(bars, len(indices), args.plot)
    return 0


def plot(bars: list[tuple[str, float, float, float]], count: int, file: Path) -> None:
    """Grouped bars: clean, attack-unaware (every attack) and adaptive PGD accuracy per defence setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 4.5))
    positions = np.arange(len(bars))
    for offset, (index, label) in zip((-0.27, 0, 0.27), enumerate(("clean", "attack-unaware: every attack (paper's",
                                                                    "adaptive PGD-50 Linf 8/255"))):  # fmt: skip
        values = [100 * bar[index + 1] for bar in bars]
        errors = np.array([[100 * (v / 100 - metrics.wilson_interval(v / 100, count)[0]) for v in values],
                           [100 * (metrics.wilson_interval(v / 100, count)[1] - v / 100) for v in values]])  # fmt: skip
        label = label + " protocol)" if index == 1 else label
        axis.bar(positions + offset, values, 0.27, yerr=errors, capsize=2, label=label)
    axis.set_xticks(positions, [bar[0] for bar in bars], rotation=20, ha="right", fontsize=8)
    axis.set_ylabel("accuracy (%)")
    axis.set_title(f"SuperResolution on CIFAR-10 (JPEG q75 copy), {count} clean-correct test images; 95% Wilson bars")
    axis.legend(fontsize=8)
    figure.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(file, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
