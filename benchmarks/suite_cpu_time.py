"""
CPU time of an evaluation per defence, split into the v2 attacks (without the original AutoAttack and the paper
replays), the replays and the original AutoAttack, against the old (v1) full column set of the same defence::

    python -m benchmarks.suite_cpu_time runs/v2-dct/results.json --baseline docs/results/v1/results.json

Seconds are the attacks' own wall time as recorded in ``results.json`` (generation only: scoring, clean metrics and
table fitting are not included); runs that shared the machine with other runs took longer than they would alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from art_purifiers.evaluation.specs import PROTOCOLS, parse_attack

REPLAYS = {parse_attack(spec).label for protocol in PROTOCOLS.values() for spec in protocol["attacks"]}


def seconds_by_part(entry: dict) -> dict[str, float]:
    """Seconds of a defence's rows: ``suite`` (everything but the next two), ``replays``, ``original AutoAttack``."""
    parts = {"suite": 0.0, "replays": 0.0, "original AutoAttack": 0.0}
    for label, row in entry.get("rows", {}).items():
        part = (
            "replays"
            if label in REPLAYS
            else "original AutoAttack" if row["kind"] == "original-autoattack" else "suite"
        )
        parts[part] += float(row.get("seconds", 0.0))
    return parts


def table(results: dict, baseline: dict | None) -> list[str]:
    """One Markdown row per defence."""
    lines = [
        "| defence | images | v2 suite (s) | replays (s) | original AutoAttack (s) | v1 full column set (s, 500 "
        "images) | ratio per image |",
        "|---|---|---|---|---|---|---|",
    ]
    n = results["config"]["num_images"]
    for spec, entry in results["defences"].items():
        parts = seconds_by_part(entry)
        old = baseline["defences"].get(spec) if baseline else None
        old_seconds = sum(float(row.get("seconds", 0.0)) for row in old["rows"].values()) if old else None
        ratio = (
            f"{(parts['suite'] / n) / (old_seconds / baseline['config']['num_images']):.2f}"
            if old_seconds and baseline
            else "n/a"
        )
        old_text = f"{old_seconds:.0f}" if old_seconds else "n/a"
        lines.append(
            f"| `{spec}` | {n} | {parts['suite']:.0f} | {parts['replays']:.0f} | {parts['original AutoAttack']:.0f} | "
            f"{old_text} | {ratio} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="results.json files of v2 runs")
    parser.add_argument("--baseline", type=Path, help="a v1 results.json with the same defences")
    args = parser.parse_args(argv)
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    for file in args.results:
        print("\n".join(table(json.loads(file.read_text()), baseline)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
