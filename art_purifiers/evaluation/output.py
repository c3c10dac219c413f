"""
The output directory of an evaluation as a record: ``results.json`` (read, checked against this command, written
atomically), the attacks its tables stand on, and the provenance of every command behind it. Several commands may
share one output directory: a rerun of the same command resumes it; another command may add defences or attacks with
``extend``; one with other settings is refused.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from art_purifiers.evaluation.config import RESUMABLE_OPTIONS, SANITY_ATTACKS, EvaluationConfig, differing_options
from art_purifiers.evaluation.distributed import World
from art_purifiers.evaluation.results import SCHEMA_VERSION, AttackRecord, Results, load_results
from art_purifiers.evaluation.specs import AttackSpec, parse_attack


class RunOutput:
    """
    ``results.json`` of an output directory and what it says of the run.

    :param config: This command's configuration (its attack and defence specs already checked).
    :param output: The output directory.
    :param world: The processes of the run: rank 0 alone writes the file and the reports.
    :raises ValueError: if the directory holds a run that this command may not continue (see :meth:`_held_attacks`).
    """

    def __init__(self, config: EvaluationConfig, output: Path, world: World) -> None:
        self.config = config
        self.output = Path(output)
        self.world = world
        #: whether this process writes ``results.json`` and the reports (and computes what only they show)
        self.writer = world.is_main
        self.file = self.output / "results.json"
        self.results = load_results(self.file) if self.file.is_file() else Results()
        #: what the tables stand on: this command's attacks and earlier commands'
        self.requested = union(self._held_attacks(config.attack_specs()), config.attack_specs())
        #: every attack of this output, the sanity attacks added: each defence of this command runs all of them
        self.recorded = self.requested
        if config.sanity_checks:
            self.recorded = union(self.requested, [parse_attack(spec) for spec in SANITY_ATTACKS])

    def _held_attacks(self, requested: list[AttackSpec]) -> list[AttackSpec]:
        """
        The attacks of the run already in the output directory. A run with other settings is refused; one with other
        defences or attacks too, unless the config says ``extend``.

        :raises ValueError: naming the differing settings.
        """
        previous = self.results.config or {}
        differing = differing_options(previous, asdict(self.config), RESUMABLE_OPTIONS)
        if differing:
            details = ", ".join(f"{k}: {previous[k]!r} there, {getattr(self.config, k)!r} now" for k in differing)
            raise ValueError(f"{self.output} holds a run with another configuration ({details}); use a new --output.")
        held = [parse_attack(spec) for spec in previous.get("attacks", [])]
        held_defences = [*previous.get("defences", []), *self.results.defences]
        new_defences = [spec for spec in self.config.defences if spec not in held_defences]
        new_attacks = [a.label for a in requested if a.slug not in {b.slug for b in held}]
        if previous and (new_defences or new_attacks) and not self.config.extend:
            added = [f"defence(s) {', '.join(new_defences)}"] * bool(new_defences)
            added += [f"attack(s) {'; '.join(new_attacks)}"] * bool(new_attacks)
            raise ValueError(
                f"{self.output} holds a run of {', '.join(previous.get('defences', []))} with other attacks or "
                f"defences; this command would add {' and '.join(added)}. Pass --extend to add them to that run (its "
                "report then lists each command with its own provenance), or use a new --output."
            )
        return held

    def record_run(self, data: dict[str, Any], device: str) -> None:
        """What ``results.json`` says of the whole run: configuration, commands, environment, data and attacks."""
        results, config = self.results, self.config
        requested = {a.slug for a in self.requested}
        results.schema_version = SCHEMA_VERSION
        results.config = {
            **asdict(config),
            "defences": list(dict.fromkeys([*(results.config or {}).get("defences", []), *config.defences])),
            "attacks": [a.spec for a in self.requested],
        }
        results.invocations = self._invocations(device)
        results.environment = environment(device, results.environment, self.world.size)
        results.data = data
        results.attacks = [
            AttackRecord(a.label, a.kind, a.eps, a.steps, a.eot, sanity_only=a.slug not in requested, group=a.group)
            for a in self.recorded
        ]

    def _invocations(self, device: str) -> list[dict[str, Any]]:
        """
        The commands behind this output, each with its defences, attacks and environment: this one is added, or
        updates the entry of an earlier command with the same defences and attacks (a resumed run).
        """
        previous = self.results.config
        invocations = [dict(entry) for entry in self.results.invocations or []]
        if previous and not invocations:  # results written before invocations were recorded
            invocations = [
                {
                    "command": previous.get("command", ""),
                    "defences": previous.get("defences", []),
                    "attacks": [parse_attack(spec).spec for spec in previous.get("attacks", [])],
                    "environment": self.results.environment,
                }
            ]
        mine: dict[str, Any] = {"defences": list(self.config.defences),
                                "attacks": [a.spec for a in self.config.attack_specs()]}  # fmt: skip
        same = [entry for entry in invocations if {k: entry.get(k) for k in mine} == mine]
        entry: dict[str, Any] = same[0] if same else {**mine, "environment": None}
        if not same:
            invocations.append(entry)
        entry["command"] = self.config.command
        entry["environment"] = environment(device, entry.get("environment"), self.world.size)
        return invocations

    def mark_missing_attacks(self) -> None:
        """
        Per defence and threat model, the attacks of this output (of any of its commands) that have not run on the
        defence (``missing``): its cell is then only an upper bound, and the report says so.
        """
        for entry in self.results.defences.values():
            for group, figures in (entry.robust or {}).items():
                missing = [a.label for a in self.requested if a.group == group and a.label not in entry.rows]
                if missing:
                    figures.missing = missing
                else:
                    figures.discard("missing")

    def finish(self) -> None:
        """
        The last write of a run: which attacks each defence lacks, ``results.json`` and the reports; every process
        waits for it.
        """
        if self.writer:
            from art_purifiers.evaluation.report import write_reports

            self.mark_missing_attacks()
            self.save()
            write_reports(self.results, self.output)
        self.world.barrier()

    def save(self) -> None:
        """Write ``results.json`` atomically (the writing process only), with the layout version first."""
        if not self.writer:
            return
        temporary = self.file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.results.to_json(), indent=1, default=_jsonable))
        temporary.replace(self.file)


def union(first: Sequence[AttackSpec], second: Sequence[AttackSpec]) -> list[AttackSpec]:
    """The attacks of ``first``, then those of ``second`` that ``first`` lacks (by their state file's name)."""
    slugs = {attack.slug for attack in first}
    return [*first, *(attack for attack in second if attack.slug not in slugs)]


def environment(device: str, previous: dict[str, Any] | None = None, processes: int = 1) -> dict[str, Any]:
    """
    The software and machine of this run. When it resumes a run begun elsewhere (another machine, device or version),
    the earlier environments stay under ``earlier``: their attacks' results are in the same file.
    """
    import art

    import art_purifiers

    current = {
        "art_purifiers": art_purifiers.__version__,
        "art": art.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "processes": processes,
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if not previous:
        return current
    earlier = list(previous.get("earlier", []))
    last = {k: v for k, v in previous.items() if k != "earlier"}
    if {k: v for k, v in last.items() if k != "started"} != {k: v for k, v in current.items() if k != "started"}:
        earlier.append(last)
    return {**current, "earlier": earlier} if earlier else current


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Not JSON serialisable: {type(value).__name__}")
