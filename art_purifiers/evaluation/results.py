"""The rules of a results file, apart from how it is shown: which attacks decide a headline cell, when a cascade has
converged, which threat models a defence's headline holds, and how runs merge (the per-image worst case over every
run's attacks). :mod:`~art_purifiers.evaluation.report` only renders.

A results file carries :data:`SCHEMA_VERSION`; files written before it existed (no ``schema_version``) are version 1
and read the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from art_purifiers.evaluation.specs import AttackKind

#: The layout of ``results.json`` that this code writes and reads.
SCHEMA_VERSION = 1


def schema_version(results: dict[str, Any]) -> int:
    """The layout version of a results file (1 for files written before versions were recorded).

    :raises ValueError: for a file written by a newer layout than this code reads.
    """
    version = int(results.get("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise ValueError(f"This results file has layout version {version}; this art-purifiers reads up to "
                         f"{SCHEMA_VERSION}: update the package.")  # fmt: skip
    return version


def load_results(file: Path) -> dict[str, Any]:
    """A ``results.json``, its layout version checked (see :func:`schema_version`)."""
    results = json.loads(Path(file).read_text())
    schema_version(results)
    return results


#: Attack kinds strong enough to decide a headline cell: the cascade, our APGD family and AutoAttack. A cell made only
#: of weaker attacks (PGD, transfer, noise, a paper's replay) is an upper bound and is shown as one.
STRONG_KINDS = (
    AttackKind.CASCADE,
    AttackKind.APGD,
    AttackKind.APGD_T,
    AttackKind.ORIGINAL_AUTOATTACK,
    AttackKind.AUTOATTACK,
)


def converged(row: dict[str, Any]) -> bool:
    """
    Whether a cascade row's last level stopped falling, judged by today's criterion (runs made under the older,
    unpaired one are re-judged from their recorded levels).
    """
    from art_purifiers.evaluation.cascade import stopped_falling

    levels = row["controller"]["accuracy_by_level"]
    if levels[-1] == 0:
        return True
    if len(levels) < 2:
        return bool(row["controller"]["converged"])
    return stopped_falling(levels[-2], levels[-1], int(row["n"]))


def upper_bound_only(entry: dict[str, Any], figures: dict[str, Any]) -> bool:
    """Whether a cell above 0% comes from weak attacks alone (no kind of :data:`STRONG_KINDS` ran for it)."""
    kinds = {entry["rows"].get(label, {}).get("kind") for label in figures["attacks"]}
    return figures["robust"]["accuracy"] > 0 and not kinds & set(STRONG_KINDS)


def sanity_only_labels(results: dict[str, Any]) -> set[str]:
    return {attack["label"] for attack in results["attacks"] if attack.get("sanity_only")}


def headline(results: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """
    A defence's robust accuracy per threat model that the user asked for: a threat model that only the sanity checks'
    attacks reached (the large-budget PGD) stays out of the tables and plots (it is reported with the checks).
    """
    sanity_only = sanity_only_labels(results)
    return {group: figures for group, figures in entry.get("robust", {}).items()
            if set(figures["attacks"]) - sanity_only}  # fmt: skip


def with_headline(results: dict[str, Any]) -> dict[str, Any]:
    """The results with every defence's ``robust`` reduced to :func:`headline`."""
    defences = {spec: {**entry, "robust": headline(results, entry)} for spec, entry in results["defences"].items()}
    return {**results, "defences": defences}


def merge(runs: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    """
    Combine the results of runs that differ only in their defences, attacks or sanity checks (e.g. run in parallel)
    into one.
    Attacks a defence was not run with show as n/a. A defence in several runs keeps every run's rows (the last run's
    row where two share a label), and its robust accuracy per threat model becomes the per-image worst case over all
    of those runs' attacks: the strongest attack decides, whichever run it was in.

    :raises ValueError: if the runs used different classifiers, data, images or seeds.
    """
    if not runs:
        raise ValueError("Nothing to merge.")
    # sanity checks only add attacks (and their checks), like a longer attack list; options a version did not record
    # yet (absent from one side) are not compared
    ignored = ("command", "verbose", "defences", "attacks", "sanity_checks", "extend")
    first = runs[0]
    merged = {**first, "defences": {}, "merged_from": sources, "attacks": list(first["attacks"])}
    for source, run in zip(sources, runs):
        shared = set(run["config"]) & set(first["config"]) - set(ignored)
        same_config = all(run["config"][key] == first["config"][key] for key in shared)
        if not same_config or run["data"]["selected_indices"] != first["data"]["selected_indices"]:
            raise ValueError(f"{source} was run with another configuration or other images than {sources[0]}.")
        known = {a["label"] for a in merged["attacks"]}
        merged["attacks"] = merged["attacks"] + [a for a in run["attacks"] if a["label"] not in known]
        for spec, entry in run["defences"].items():
            entry = {**entry, "provenance": entry.get("provenance") or _stamps(run, source, spec)}
            earlier = merged["defences"].get(spec)
            merged["defences"][spec] = entry if earlier is None else _worst_over_runs(earlier, entry, source)
    merged["config"] = {
        **first["config"],
        "defences": list(merged["defences"]),
        # each command once: a page's JSON already holds its group's commands (re-rendering merges pages again)
        "command": " ; ".join(
            dict.fromkeys(part for run in runs for part in run["config"].get("command", "").split(" ; "))
        ),
    }
    return merged


def _stamps(run: dict[str, Any], source: str, spec: str) -> list[dict[str, Any]]:
    """The commands of a run that evaluated ``spec`` (every command of it, for runs that did not record them)."""
    invocations = [entry for entry in run.get("invocations", []) if spec in entry.get("defences", [])]
    if not invocations:
        invocations = [{"command": run["config"].get("command", ""), "environment": run.get("environment", {})}]
    return [{"source": source, "command": entry["command"], "environment": entry.get("environment") or {}}
            for entry in invocations]  # fmt: skip


def _worst_over_runs(earlier: dict[str, Any], later: dict[str, Any], source: str) -> dict[str, Any]:
    """One defence's results from two runs on the same images: all rows, robust per image = correct in both."""
    from art_purifiers.evaluation.robust import proportion

    combined = {**later, "rows": {**earlier.get("rows", {}), **later.get("rows", {})}}
    # a run without sanity checks keeps the other's
    combined["sanity"] = later.get("sanity") or earlier.get("sanity", [])
    combined["provenance"] = [*earlier.get("provenance", []), *later.get("provenance", [])]
    groups: dict[str, Any] = {**earlier.get("robust", {}), **later.get("robust", {})}
    for group in set(earlier.get("robust", {})) & set(later.get("robust", {})):
        first, second = earlier["robust"][group], later["robust"][group]
        if "per_image" not in first or "per_image" not in second:
            raise ValueError(f"{source}: {group} has no per-image results to combine with the other run's.")
        per_image = np.minimum(np.asarray(first["per_image"]), np.asarray(second["per_image"]))
        groups[group] = {
            "robust": proportion(per_image),
            "per_image": per_image.astype(int).tolist(),
            "attacks": list(dict.fromkeys([*first["attacks"], *second["attacks"]])),
            "draws": max(first.get("draws", 1), second.get("draws", 1)),
            "note": "worst case per image over the attacks of several runs; expected and majority figures stay "
            "per run",
        }
    combined["robust"] = groups
    return combined
