"""Reports of an evaluation: Markdown and CSV tables in the papers' style, and PNG plots."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from art_purifiers.evaluation.results import AttackRecord, DefenceResult, Results, RobustFigures, Row, as_results
from art_purifiers.evaluation.specs import AttackKind

CSV_FIELDS = (
    "defence",
    "attack",
    "kind",
    "eps",
    "steps",
    "eot",
    "accuracy",
    "std",
    "ci95_low",
    "ci95_high",
    "n",
    "success_rate",
    "mean_l2",
    "mean_linf",
    "seconds",
    "sanity_only",
    "threat_model",
    "robust_accuracy",
)


def _percent(accuracy: float, std: float, randomized: bool) -> str:
    text = f"{100 * accuracy:.1f}"
    if randomized:
        text += f" ± {100 * std:.1f}"
    return text


def _row_percent(row: Row, entry: DefenceResult) -> str:
    return _percent(row.accuracy or 0.0, row.std or 0.0, bool(entry.randomized))


def _cell(label: str, entry: DefenceResult, kind: str) -> str:
    row = entry.rows.get(label)
    if row is None:
        return "n/a"
    if not row.measured:
        return row.skipped or "n/a"
    text = _row_percent(row, entry)
    if kind in (AttackKind.CW, AttackKind.DEEPFOOL):
        fixed = "".join(
            f"; {100 * value:.1f} at L2 <= {radius}" for radius, value in (row.accuracy_at_l2 or {}).items()
        )
        text += f" (median L2 {row.median_l2 if row.median_l2 is not None else row.mean_l2:.2f}{fixed})"
    if row.notes:
        text += " †"
    return text


def _v2_details(entry: DefenceResult) -> list[str]:
    """The gradient report, and per v2 row its controller, EOT choice and targeted success (bullet lines)."""
    lines = []
    report = entry.gradients
    if report:
        consistency = ", ".join(f"k={k}: {v:.3f}" for k, v in report["consistency"].items())
        lines.append(
            f"- gradients ({report['images']} images): zero entries {100 * report['zero_fraction']:.2f}%, mean L2 norm "
            f"{report['mean_l2']:.3g}; EOT consistency (cosine of two k-draw estimates) {consistency}; "
            f"EOT k={report['eot_choice']['k']} ({report['eot_choice']['reason']})"
        )
    for label, row in entry.rows.items():
        if row.robust is None or row.expected is None:
            continue
        parts = [f"robust {100 * row.robust['accuracy']:.1f}%", f"expected {100 * row.expected['accuracy']:.1f}%"]
        if row.controller is not None:
            levels = " -> ".join(f"{100 * a:.1f}" for a in row.controller["accuracy_by_level"])
            state = "converged" if row.converged() else "‡ still falling when the levels ran out (capped)"
            parts.append(f"controller levels {levels}: {state}; images attacked per step {row.attacked}")
        if row.targeted_success is not None:
            mean = row.targeted_success_mean if row.targeted_success_mean is not None else float("nan")
            parts.append(
                f"targeted success {100 * row.targeted_success['accuracy']:.1f}% in at least one draw, "
                f"{100 * mean:.1f}% on average over draws"
            )
        lines.append(f"- {label}: " + "; ".join(parts))
    return lines


def paired_lines(results: Results | dict[str, Any], baseline: str = "none") -> list[str]:
    """Per defence and threat model, robust accuracy compared with the undefended row on the same images (McNemar)."""
    from art_purifiers.evaluation.robust import describe_difference, paired_comparison

    results = as_results(results).with_headline()
    undefended = results.defences.get(baseline)
    reference = (undefended.robust if undefended is not None else None) or {}
    lines = []
    for spec, entry in results.defences.items():
        for group, figures in (entry.robust or {}).items():
            other = reference.get(group)
            if spec == baseline or figures.per_image is None or other is None or other.per_image is None:
                continue
            comparison = paired_comparison(np.asarray(figures.per_image), np.asarray(other.per_image))
            line = f"- {group}: " + describe_difference(comparison, f"`{spec}`", f"`{baseline}`")
            if entry.upper_bound_only(figures):  # a gain over a worst case measured against an upper bound
                line += f" (≤: no strong attack ran for `{spec}` here, so this difference is not a measured gain)"
            lines.append(line)
    return ["## Paired comparisons with the undefended classifier", "", *lines, ""] if lines else []


def _cross_checks(entry: DefenceResult) -> list[str]:
    """
    The original AutoAttack against the worst case of our attacks of the same threat model that ran before it (later
    ones may run on its survivors), on the same images (paired).
    """
    from art_purifiers.evaluation.robust import describe_difference, paired_comparison

    lines = []
    rows = [(label, row) for label, row in entry.rows.items() if row.robust_per_image is not None]
    for position, (label, row) in enumerate(rows):
        if row.kind != AttackKind.ORIGINAL_AUTOATTACK:
            continue
        ours = [
            (other, np.asarray(other_row.robust_per_image))
            for other, other_row in rows[:position]
            if other_row.kind != AttackKind.ORIGINAL_AUTOATTACK
            and other_row.eps == row.eps
            and other_row.norm == row.norm
        ]
        if ours:
            worst = np.minimum.reduce([per_image for _, per_image in ours])
            name = (
                ours[0][0] if len(ours) == 1 else f"our {len(ours)} attacks before it ({', '.join(o for o, _ in ours)})"
            )
            comparison = paired_comparison(worst, np.asarray(row.robust_per_image))
            lines.append("- cross-check: " + describe_difference(comparison, name, label))
    return lines


def _group_order(group: str) -> tuple[str, float]:
    """Threat models by norm, then budget (``Linf 4/255`` before ``Linf 16/255``)."""
    norm, _, budget = group.partition(" ")
    numerator, _, denominator = budget.partition("/")
    try:
        return norm, float(numerator) / float(denominator or 1)
    except ValueError:
        return norm, 0.0


def _sanity_groups(results: Results) -> list[str]:
    """Bullet lines of the threat models only the sanity checks reached, per defence."""
    lines = []
    for spec, entry in results.defences.items():
        for group, figures in (entry.robust or {}).items():
            if group not in results.headline(entry):
                low, high = (100 * v for v in figures.robust["ci95"])
                lines.append(f"- `{spec}`, {group}: {100 * figures.accuracy:.1f}% [{low:.1f}, "
                             f"{high:.1f}] robust ({'; '.join(figures.attacks)})")  # fmt: skip
    return lines


def _headline_cell(entry: DefenceResult, figures: RobustFigures | None, marks: set[str]) -> str:
    """
    One cell of the headline table: robust accuracy and its interval, ‡ when capped, ≤ when only an upper bound
    (``marks`` collects which upper-bound reasons occurred: ``weak`` or ``missing``).
    """
    if figures is None:
        return "n/a"
    low, high = (100 * v for v in figures.robust["ci95"])
    reasons = {"weak"} if entry.upper_bound_only(figures) else set()
    reasons |= {"missing"} if figures.missing else set()
    marks |= reasons
    cell = f"**{100 * figures.accuracy:.1f}** [{low:.1f}, {high:.1f}]"
    return "≤ " * bool(reasons) + cell + " ‡" * entry.capped(figures)


def robust_table(results: Results | dict[str, Any]) -> list[str]:
    """
    The headline: per defence and threat model, robust accuracy (correct under every attack of that norm and budget
    in every draw) with its Wilson 95% interval; ‡ marks a cell whose convergence check ran out of budget, ≤ a cell
    that no strong attack decided (an upper bound). Threat models that only sanity attacks reached stay out.
    """
    results = as_results(results).with_headline()
    groups = sorted(
        dict.fromkeys(g for entry in results.defences.values() for g in entry.robust or {}), key=_group_order
    )
    if not groups:
        stopped = [f"`{spec}`" for spec, entry in results.defences.items() if entry.rows]
        return (
            [f"No robust accuracy yet: the evaluation of {', '.join(stopped)} stopped before every attack had run; "
             "the per-attack figures below are upper bounds.", ""]
            if stopped else []
        )  # fmt: skip
    lines = [
        "## Robust accuracy (%): worst case per image over every attack and draw",
        "",
        "| Defence | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    unfinished = [spec for spec, entry in results.defences.items() if not entry.robust]
    marks: set[str] = set()
    for spec, entry in results.defences.items():
        if spec not in unfinished:
            cells = [_headline_cell(entry, (entry.robust or {}).get(group), marks) for group in groups]
            lines.append(f"| `{spec}` | " + " | ".join(cells) + " |")
    if marks:
        lines += [
            "",
            "≤: no strong attack (the cascade, APGD, APGD-T or AutoAttack) ran for this threat model, so the cell is "
            "only an upper bound from the weaker attacks listed below, not a worst case."
            + (" The same mark: an attack of this threat model that this output holds has not run on the defence "
               "(listed below)." if "missing" in marks else ""),
        ]  # fmt: skip
    if unfinished:
        lines += [
            "",
            "Not in this table: "
            + ", ".join(f"`{spec}`" for spec in unfinished)
            + ": the evaluation stopped before every attack had run, so no cell holds a worst case; the per-attack "
            "figures that were measured are upper bounds.",
        ]
    lines += ["", "Attacks behind each cell (run in this order; cascades run only on the images still robust):", ""]
    for spec, entry in results.defences.items():
        for group, figures in (entry.robust or {}).items():
            missing = f" (not run on it: {'; '.join(figures.missing)})" if figures.missing else ""
            lines.append(f"- `{spec}`, {group}: " + "; ".join(figures.attacks) + missing)
    return lines + [""]


def markdown(results: Results | dict[str, Any], prefix: str = "") -> str:
    """The Markdown report: the headline table, then details, sanity checks and provenance per defence."""
    results = as_results(results)
    config, data = results.config or {}, results.data or {}
    lines = _introduction(results) + robust_table(results) + _per_attack_table(results)
    lines += ["", f"![accuracy vs budget]({prefix}accuracy_vs_budget.png) "
              f"![accuracy vs iterations]({prefix}accuracy_vs_iterations.png)"]  # fmt: skip
    lines += _sanity_summary(results)
    for spec, entry in results.defences.items():
        if entry.clean is not None:
            lines += _defence_details(spec, entry, results.attacks)
    lines += ["", "## Provenance", "", *_provenance_lines(results)]
    lines += [
        f"- seed {config['seed']}, {config['draws']} draws, fit images {config['fit_images']}, "
        f"batch {config['batch_size']}",
        f"- data: {data['source']}",
    ]
    return "\n".join(lines) + "\n"


def _introduction(results: Results) -> list[str]:
    """The title, what was measured on which images, the data note and the runs merged."""
    config, data = results.config or {}, results.data or {}
    lines = [
        "# Robust accuracy (%) under adaptive attacks",
        "",
        f"Classifier `{config['classifier']}` on {config['num_images']} {config['dataset']} test images it classifies "
        f"correctly (undefended clean accuracy on {_clean_sample(data)} test images: "
        f"{100 * data['undefended_clean_accuracy']:.2f}%). Randomized defences: mean ± std over {config['draws']} "
        "defence draws. C&W and DeepFool cells give accuracy, the median L2 norm of the perturbations and the accuracy "
        "when only perturbations within a fixed L2 radius count. "
        "† marks a cell with a note in the details below.",
        "",
    ]
    if data.get("note"):
        lines += [f"**Data:** {data['note']}", ""]
    if results.merged_from:
        lines += [
            f"Merged from the runs in {', '.join(f'`{p}`' for p in results.merged_from)} (same classifier, "
            "images and seeds).",
            "",
        ]
    return lines


def _per_attack_table(results: Results) -> list[str]:
    """Accuracy under every attack (sanity-only attacks left out), a row per defence."""
    attacks = [a for a in results.attacks if not a.sanity_only]
    data, n = results.data or {}, (results.config or {})["num_images"]
    header = ["Defence", f"Clean ({_clean_sample(data)})", f"Clean ({n})"] + [a.label for a in attacks]
    lines = ["## Accuracy (%) per attack", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for spec, entry in results.defences.items():
        if entry.clean is None:
            continue
        clean = entry.clean
        cells = [
            f"`{spec}`",
            f"{100 * clean['full_split_accuracy']:.1f}",
            _percent(clean["accuracy"], clean["std"], bool(entry.randomized)),
        ]
        cells += [_cell(a.label, entry, a.kind or "") for a in attacks]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _defence_details(spec: str, entry: DefenceResult, attacks: list[AttackRecord]) -> list[str]:
    """A defence's section: what was fitted, clean quality, speed and randomness, every attack's row, its checks."""
    lines = ["", f"## `{spec}`", ""]
    info = entry.info or {}
    lines += [f"- {key}: `{json.dumps(info[key])}`" for key in ("note", "fitted", "table") if key in info]
    lines += _clean_details(entry.clean or {})
    lines += _v2_details(entry) + _cross_checks(entry)
    lines += [
        "",
        "| Attack | Accuracy (%) | 95% CI | Success rate (%) | mean L2 | mean Linf | seconds | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for attack in attacks:
        row = entry.rows.get(attack.label)
        if row is None or not row.measured:
            continue
        lines.append(_detail_row(attack, row, entry))
    lines += ["", "Sanity checks:", ""]
    lines += [f"- {'✅' if c.passed else '⚠️ FAILED'} {c.name}: {c.detail}" for c in entry.sanity or []]
    return lines


def _detail_row(attack: AttackRecord, row: Row, entry: DefenceResult) -> str:
    """An attack's line of a defence's table."""
    name = attack.label + (" (sanity)" if attack.sanity_only else "")
    low, high = row.ci95 or [float("nan")] * 2
    return (
        f"| {name} | {_row_percent(row, entry)} | {100 * low:.1f}–{100 * high:.1f} | "
        f"{100 * (row.success_rate or 0):.1f} | {row.mean_l2:.3f} | {row.mean_linf:.4f} | {row.seconds:.0f} | "
        f"{'; '.join(row.notes or [])} |"
    )


def _clean_details(clean: dict[str, Any]) -> list[str]:
    """Purified clean images against the originals, the defence's throughput and its randomness."""
    lines = []
    if "quality" in clean:
        q = clean["quality"]
        lines.append(f"- purified clean images vs clean: PSNR {q['psnr_db']:.2f} dB, SSIM {q['ssim']:.4f}")
        lines.append(
            f"- throughput: defence {clean['defence_images_per_second']:.0f} images/s, "
            f"defended loss gradient {clean['gradient_images_per_second']:.0f} images/s"
        )
    if "randomness" in clean:
        r = clean["randomness"]
        lines.append(
            f"- randomness (two purifications of one image, Qiu et al. Table 1): "
            f"L2 (RMS) {r['l2_rms']:.4f}, SSIM {r['ssim']:.4f}"
        )
    return lines


def _sanity_summary(results: Results) -> list[str]:
    """The report's sanity-check section: failures first, then what ran, then the sanity-only threat models."""
    failed = [(spec, c) for spec, e in results.defences.items() for c in e.sanity or [] if not c.passed]
    unchecked = [spec for spec, e in results.defences.items() if not e.sanity]
    lines = ["", "## Sanity checks", ""]
    if failed:
        lines += [f"- ⚠️ **FAILED** `{spec}`: {c.name}: {c.detail}" for spec, c in failed]
    elif len(unchecked) < len(results.defences):
        lines.append("All sanity checks that ran passed (details per defence below).")
    if unchecked:
        lines.append("No sanity checks ran for " + ", ".join(f"`{spec}`" for spec in unchecked) + ".")
    sanity_groups = _sanity_groups(results)
    if sanity_groups:
        lines += ["", "Threat models only the sanity checks attacked (not in the tables above):", "", *sanity_groups]
    return lines


def _clean_sample(data: dict[str, Any]) -> str:
    """The images of the clean accuracy: all of the split, or the first ones of the seeded order."""
    examined, total = data.get("examined_images", data["test_images"]), data["test_images"]
    return f"all {total}" if examined >= total else f"{examined} of {total}"


def _environment_line(env: dict[str, Any]) -> str:
    if not env:
        return "environment not recorded"
    line = (
        f"art-purifiers {env['art_purifiers']}, ART {env['art']}, torch {env['torch']}, numpy {env['numpy']}, "
        f"Python {env['python']}, {env['platform']}, device {env['device']} ({env['cpu_threads']} threads)"
        + (f", {env['gpu']}" if env.get("gpu") else "")
        + (f", {env['processes']} processes (torchrun)" if env.get("processes", 1) > 1 else "")
    )
    # a resumed run: the attacks finished before the last resume ran there
    return "; ".join([line, *(f"resumed from a run begun on: {_environment_line(e)}" for e in env.get("earlier", []))])


def _provenance_lines(results: Results) -> list[str]:
    """The command and machine of every run behind these results (each defence's own runs after a merge)."""
    stamps = [stamp for entry in results.defences.values() for stamp in entry.provenance or []]
    invocations = results.invocations or []
    if not stamps and len(invocations) > 1:  # one output directory, several commands (evaluate --extend)
        return [
            f"- command {number}: `{entry['command'] or '(Python API)'}`; {_environment_line(entry['environment'])}"
            for number, entry in enumerate(invocations, 1)
        ]
    if not stamps:
        command = (results.config or {}).get("command")
        return [f"- command: `{command}`" if command else "- command: (Python API)"] + (
            [f"- {_environment_line(results.environment)}"] if results.environment else []
        )
    unique = list({stamp["source"]: stamp for stamp in stamps}.values())
    return [
        f"- `{stamp['source']}`: `{stamp['command'] or '(Python API)'}`; {_environment_line(stamp['environment'])}"
        for stamp in unique
    ]


def csv_rows(results: Results | dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (defence, attack), long format."""
    results = as_results(results)
    attacks = {a.label: a for a in results.attacks}
    return [
        _csv_row(spec, label, row, attacks.get(label))
        for spec, entry in results.defences.items()
        for label, row in entry.rows.items()
        if row.measured
    ]


def _csv_row(spec: str, label: str, row: Row, attack: AttackRecord | None) -> dict[str, Any]:
    low, high = row.ci95 if row.ci95 is not None else ("", "")
    return {
        "defence": spec,
        "attack": label,
        **{name: getattr(row, name) for name in ("kind", "eps", "steps", "eot", "accuracy", "std")},
        "ci95_low": low,
        "ci95_high": high,
        **{name: getattr(row, name) for name in ("n", "success_rate", "mean_l2", "mean_linf", "seconds")},
        "sanity_only": attack.sanity_only if attack is not None else False,
        "threat_model": (attack.group or "") if attack is not None else "",
        "robust_accuracy": (row.robust or {}).get("accuracy", ""),
    }


def _budget_points(entry: DefenceResult) -> list[tuple[float, ...]]:
    """(eps x 255, accuracy, low, high): the clean point, then robust accuracy per Linf group (PGD rows without v2)."""
    clean = entry.clean or {}
    points = [(0.0, clean["accuracy"], *clean["ci95"])]
    groups = {g: f for g, f in (entry.robust or {}).items() if g.startswith("Linf ")}
    if groups:
        for group, figures in groups.items():
            numerator, _, denominator = group.split()[1].partition("/")
            eps = float(numerator) * (255 / float(denominator) if denominator else 255)
            points.append((eps, figures.accuracy, *figures.robust["ci95"]))
        return sorted(points)
    best: dict[float, Row] = {}
    for eps, row in _pgd_rows(entry):
        if eps not in best or (row.steps or 0) > (best[eps].steps or 0):
            best[eps] = row
    return sorted(points + [_point(eps * 255, row) for eps, row in best.items()])


def _pgd_rows(entry: DefenceResult) -> list[tuple[float, Row]]:
    """The measured PGD rows (of a fixed Linf budget), each with its budget."""
    return [(row.eps, row) for row in entry.rows.values() if row.kind == AttackKind.PGD and row.measured
            and row.eps is not None]  # fmt: skip


def _point(x: float, row: Row) -> tuple[float, ...]:
    """A plot's point of a row: ``x``, accuracy and its interval."""
    return (x, float(row.accuracy or 0.0), *(row.ci95 or [float("nan")] * 2))


def _iteration_points(entry: DefenceResult) -> list[tuple[float, ...]]:
    """(steps, accuracy, low, high) of PGD at the Linf budget with the most iteration counts."""
    counts: dict[float, list[Row]] = {}
    for eps, row in _pgd_rows(entry):
        counts.setdefault(eps, []).append(row)
    series = max(counts.values(), key=len, default=[])
    return sorted(_point(row.steps or 0, row) for row in series) if len(series) > 1 else []


def plot(results: Results | dict[str, Any], output: Path, prefix: str = "") -> list[Path]:
    """
    ``accuracy_vs_budget.png`` (robust accuracy per Linf budget, the clean point at 0) and
    ``accuracy_vs_iterations.png`` (PGD accuracy per iteration count), one line per defence, Wilson 95% intervals.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = as_results(results).with_headline()
    n = (results.config or {})["num_images"]
    files = []
    for name, points_of, xlabel, title in (
        ("accuracy_vs_budget.png", _budget_points, "Linf budget (x/255; 0 = clean)",
         f"Robust accuracy (worst case over attacks and draws), {n} images"),
        ("accuracy_vs_iterations.png", _iteration_points, "PGD iterations",
         f"PGD-BPDA accuracy vs iterations, {n} images"),
    ):  # fmt: skip
        figure, axes = plt.subplots(figsize=(6.5, 4.2))
        for spec, entry in results.defences.items():
            points = points_of(entry) if entry.clean is not None else []
            if not points:
                continue
            xs, ys, lows, highs = (np.asarray(v) for v in zip(*points))
            errors = [100 * np.maximum(ys - lows, 0), 100 * np.maximum(highs - ys, 0)]  # round-off at 0 and 1
            axes.errorbar(xs, 100 * ys, yerr=errors, marker="o", capsize=3, label=spec)
        axes.set_title(title, fontsize=9)
        axes.set_xlabel(xlabel)
        axes.set_ylabel("accuracy (%), 95% Wilson interval")
        axes.set_ylim(-2, 102)
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(output / (prefix + name), dpi=120)
        plt.close(figure)
        files.append(output / (prefix + name))
    return files


def write_reports(results: Results | dict[str, Any], output: Path, stem: str = "results", notes: str = "") -> None:
    """
    Write ``<stem>.md`` (followed by ``notes``), ``<stem>.csv`` and the plots (named ``<stem>-...png`` unless the
    stem is ``results``) next to ``results.json``.
    """
    prefix = "" if stem == "results" else f"{stem}-"
    results = as_results(results)
    (output / f"{stem}.md").write_text(markdown(results, prefix) + (f"\n{notes}" if notes else ""))
    with open(output / f"{stem}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(results))
    plot(results, output, prefix)


def page_name(spec: str) -> str:
    """A defence spec as a file stem: ``NNFavoredJpeg:table=search`` -> ``nnfavoredjpeg-table-search``."""
    return "-".join("".join(c if c.isalnum() else " " for c in spec.lower()).split()) or "defence"


def write_pages(groups: list[Results], output: Path, notes_dir: Path | None = None) -> list[Path]:
    """
    One page per defence (``<page_name>.md`` with its CSV, JSON and plots; ``notes_dir/<page_name>.md`` appended when
    it exists) and ``summary.md``: per group of merged runs, the robust-accuracy headline across its defences and
    their paired comparisons with the undefended row (``notes_dir/summary.md`` appended).
    """
    pages, summary = [], ["# Robust accuracy across defences", ""]
    used: set[str] = set()
    for results in groups:
        stems = _page_stems(results, used)
        for spec, entry in results.defences.items():
            stem = stems[spec]
            sources = list(dict.fromkeys(stamp["source"] for stamp in entry.provenance or []))
            single = dataclasses.replace(
                results,
                defences={spec: entry},
                attacks=[a for a in results.attacks if a.label in entry.rows],
                merged_from=sources if len(sources) > 1 else [],  # only the runs behind this defence
            )
            note_file = notes_dir / f"{stem}.md" if notes_dir is not None else None
            notes = note_file.read_text() if note_file is not None and note_file.is_file() else ""
            write_reports(single, output, stem, notes)
            (output / f"{stem}.json").write_text(json.dumps(single.to_json(), indent=1))
            pages.append(output / f"{stem}.md")
        summary += _summary_section(results, stems)
    summary_notes = notes_dir / "summary.md" if notes_dir is not None else None
    if summary_notes is not None and summary_notes.is_file():
        summary += [summary_notes.read_text()]
    (output / "summary.md").write_text("\n".join(summary) + "\n")
    return pages


def _page_stems(results: Results, used: set[str]) -> dict[str, str]:
    """
    Each defence's page name; a defence already paged for another group of runs gets its image count appended. The
    undefended row of another classifier than the reference (a classifier-side defence such as an ensemble) is named
    after that classifier: ``package.module:zhang2021_ensemble`` -> ``zhang2021-ensemble``.
    """
    stems = {}
    config = results.config or {}
    classifier = str(config.get("classifier", "cifar10-reference"))
    for spec in results.defences:
        stem = page_name(spec)
        if spec == "none" and classifier != "cifar10-reference":  # a classifier-side defence: the page is the model's
            stem = page_name(Path(classifier.rpartition(":")[2]).stem)
        if stem in used:
            stem = f"{stem}-{config['num_images']}-images"
        while stem in used:
            stem += "-again"
        used.add(stem)
        stems[spec] = stem
    return stems


def _summary_section(results: Results, stems: dict[str, str]) -> list[str]:
    config, data = results.config or {}, results.data or {}
    # the runs behind the defences (their provenance survives a re-rendering from the pages' JSON files)
    stamps = [stamp["source"] for entry in results.defences.values() for stamp in entry.provenance or []]
    runs = list(dict.fromkeys(stamps)) or results.merged_from or []
    lines = [
        f"Classifier `{config['classifier']}`, {config['num_images']} test images it classifies correctly, "
        f"{config['draws']} draws for randomized defences (runs: {', '.join(f'`{s}`' for s in runs)})"
        ". Each cell: robust accuracy (correct under every attack of that threat model in every draw) with its "
        "Wilson 95% interval. Pages: " + ", ".join(f"[`{spec}`]({stems[spec]}.md)" for spec in results.defences),
        "",
    ]
    if data.get("note"):
        lines += [f"**Data:** {data['note']}", ""]
    return lines + robust_table(results) + paired_lines(results)
