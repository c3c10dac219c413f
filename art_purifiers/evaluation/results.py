"""
An evaluation's results as typed records, and the rules that read them: which attacks decide a headline cell, when a
cascade has converged, which threat models a defence's headline holds, and how runs merge (the per-image worst case
over every run's attacks). :mod:`~art_purifiers.evaluation.report` only renders.

The layout of ``results.json``::

    Results            config, invocations, environment, data, attacks: [AttackRecord], defences: {spec: ...}
      DefenceResult    info, randomized, clean, gradients, rows: {attack label: Row},
                       robust: {threat model: RobustFigures}, sanity: [SanityCheck], provenance
        Row            one attack's figures on the defence

Every record has one JSON round trip (:meth:`Record.from_json`, :meth:`Record.to_json`): the keys keep the order they
were read in and a key this code does not know is written back unchanged, so a file read and written again is the same
file. A results file carries :data:`SCHEMA_VERSION`; files written before it existed (no ``schema_version``) are
version 1 and read the same.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from art_purifiers.evaluation.specs import AttackKind

#: The layout of ``results.json`` that this code writes and reads.
SCHEMA_VERSION = 1

RecordT = TypeVar("RecordT", bound="Record")


@dataclass
class Record:
    """
    A JSON object with named fields. A record read from JSON writes back the keys it read (``null`` included), in
    their order, then any field set since. A record made in code writes its fields in their declared order: those
    without a default and those declared :func:`nullable` always (``null`` included), the others unless ``None``.
    A field without a default must be in the object read.
    """

    #: keys this code does not know, written back as they were read
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)
    #: the keys in the order they were read (a record made in code writes its fields in their declared order)
    order: tuple[str, ...] = field(default=(), kw_only=True, repr=False, compare=False)
    #: how a field holding records is read: field name -> reader of its JSON value
    READERS: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field[Any]]:
        """The record's own fields (``extra`` and ``order`` aside), by name."""
        return {f.name: f for f in dataclasses.fields(cls) if f.name not in ("extra", "order")}

    @classmethod
    def from_json(cls: type[RecordT], data: dict[str, Any]) -> RecordT:
        """
        The record of a JSON object.

        :raises TypeError: if ``data`` is not an object.
        :raises ValueError: naming the fields the object lacks.
        """
        if not isinstance(data, dict):
            raise TypeError(f"A {cls.__name__} is read from a JSON object, got {type(data).__name__}.")
        names = cls.fields()
        lacking = [name for name, f in names.items() if _required(f) and name not in data]
        if lacking:
            raise ValueError(f"This {cls.__name__} lacks {', '.join(lacking)} (keys: {', '.join(data)}).")
        known = {key: cls.READERS.get(key, _same)(value) for key, value in data.items() if key in names}
        unknown = {key: value for key, value in data.items() if key not in names}
        return cls(**known, extra=unknown, order=tuple(data))

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (records inside it converted too; NumPy scalars are left to the writer)."""
        written = {name: getattr(self, name) for name, f in self.fields().items() if self._writes(name, f)}
        written.update(self.extra)
        keys = [key for key in self.order if key in written] + [key for key in written if key not in self.order]
        return {key: _to_json(written[key]) for key in keys}

    def _writes(self, name: str, f: dataclasses.Field[Any]) -> bool:
        """Whether ``to_json`` writes the field (see the class docstring)."""
        value = getattr(self, name)
        if name in self.order:
            return True
        if self.order:  # read, and not among the keys read: written once set (an empty default stays out)
            return value is not None and not (f.default_factory is not dataclasses.MISSING and not value)
        return value is not None or _always(f)

    def discard(self, name: str) -> None:
        """Unset a field: ``None``, and left out of the JSON even if it was read (unless declared :func:`nullable`)."""
        setattr(self, name, None)
        self.order = tuple(key for key in self.order if key != name)


def nullable() -> Any:
    """A field that may be absent from the object read (``None``) but is always written, ``null`` included."""
    return field(default=None, metadata={"always_written": True})


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _always(f: dataclasses.Field[Any]) -> bool:
    return _required(f) or bool(f.metadata.get("always_written"))


def _same(value: Any) -> Any:
    return value


def _to_json(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    return value


def _records_by_key(kind: type[RecordT]) -> Callable[[dict[str, Any]], dict[str, RecordT]]:
    return lambda values: {key: kind.from_json(value) for key, value in values.items()}


def _records(kind: type[RecordT]) -> Callable[[list[dict[str, Any]]], list[RecordT]]:
    return lambda values: [kind.from_json(value) for value in values]


#: Attack kinds strong enough to decide a headline cell: the cascade, our APGD family and AutoAttack. A cell made only
#: of weaker attacks (PGD, transfer, noise, a paper's replay) is an upper bound and is shown as one.
STRONG_KINDS = (
    AttackKind.CASCADE,
    AttackKind.APGD,
    AttackKind.APGD_T,
    AttackKind.ORIGINAL_AUTOATTACK,
    AttackKind.AUTOATTACK,
)


@dataclass
class Row(Record):
    """
    One attack's figures on one defence. Every row has the attack's settings and, once measured, accuracy over the
    defence's draws (``accuracy``, ``std``, ``ci95``, ``per_draw``, ``n``), success rate and perturbation norms.
    The adaptive engine's rows add the per-image worst case (``robust``, ``robust_per_image``, ``expected``,
    ``majority``), the threat model (``norm``, ``budget``) and loss curves; a cascade's its ``controller``; the
    minimum-norm attacks ``accuracy_at_l2``.
    """

    #: the attack kind (absent from the rows of attacks that early versions skipped)
    kind: str | None = nullable()
    eps: float | None = nullable()
    steps: int | None = nullable()
    eot_requested: int | None = nullable()
    eot: int | None = nullable()
    norm: str | None = None
    budget: float | None = None
    eot_choice: dict[str, Any] | None = None
    controller: dict[str, Any] | None = None
    columns: list[str] | None = None
    attacked: list[int] | None = None
    targeted_success: dict[str, Any] | None = None
    targeted_success_mean: float | None = None
    accuracy_at_l2: dict[str, float] | None = None
    accuracy: float | None = None
    std: float | None = None
    ci95: list[float] | None = None
    per_draw: list[float] | None = None
    n: int | None = None
    robust: dict[str, Any] | None = None
    robust_per_image: list[int] | None = None
    expected: dict[str, Any] | None = None
    majority: dict[str, Any] | None = None
    success_rate: float | None = None
    mean_l2: float | None = None
    median_l2: float | None = None
    mean_linf: float | None = None
    max_linf: float | None = None
    seconds: float | None = None
    images_per_second: float | None = None
    wall_seconds: float | None = None
    notes: list[str] | None = None
    loss_curves: dict[str, list[float]] | None = None
    #: why an attack was not measured (rows of early versions)
    skipped: str | None = None

    @property
    def measured(self) -> bool:
        """Whether the row holds figures (rows of early versions may only say why the attack was skipped)."""
        return self.accuracy is not None

    def converged(self) -> bool:
        """
        Whether a cascade row's last level stopped falling, judged by today's criterion (runs made under the older,
        unpaired one are re-judged from their recorded levels).
        """
        from art_purifiers.evaluation.cascade import stopped_falling

        if self.controller is None or self.n is None:
            raise ValueError(f"A {self.kind} row without a cascade controller or an image count cannot be judged.")
        levels = self.controller["accuracy_by_level"]
        if levels[-1] == 0:
            return True
        if len(levels) < 2:
            return bool(self.controller["converged"])
        return stopped_falling(levels[-2], levels[-1], int(self.n))


@dataclass
class RobustFigures(Record):
    """A defence's robust accuracy under one threat model: the per-image worst case over ``attacks`` and draws."""

    robust: dict[str, Any]
    attacks: list[str]
    expected: dict[str, Any] | None = None
    majority: dict[str, Any] | None = None
    draws: int | None = None
    per_image: list[int] | None = None
    #: attacks of this threat model that the output holds but that have not run on the defence
    missing: list[str] | None = None
    note: str | None = None

    @property
    def accuracy(self) -> float:
        return float(self.robust["accuracy"])


@dataclass
class SanityCheck(Record):
    """One sanity check of a defence's rows (:mod:`~art_purifiers.evaluation.sanity`)."""

    name: str
    passed: bool
    detail: str


@dataclass
class AttackRecord(Record):
    """An attack of the run as the results list it (``sanity_only``: run for the sanity checks alone)."""

    label: str
    kind: str | None = nullable()
    eps: float | None = nullable()
    steps: int | None = nullable()
    eot: int | None = nullable()
    sanity_only: bool = False
    group: str | None = None


@dataclass
class DefenceResult(Record):
    """Everything measured on one defence: clean figures, the gradient report, a row per attack, the headline."""

    rows: dict[str, Row] = field(default_factory=dict)
    info: dict[str, Any] | None = None
    randomized: bool | None = None
    clean: dict[str, Any] | None = None
    gradients: dict[str, Any] | None = None
    robust: dict[str, RobustFigures] | None = None
    sanity: list[SanityCheck] | None = None
    #: the commands and machines behind the figures (after a merge: each run's)
    provenance: list[dict[str, Any]] | None = None

    READERS: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "rows": _records_by_key(Row),
        "robust": _records_by_key(RobustFigures),
        "sanity": _records(SanityCheck),
    }

    def upper_bound_only(self, figures: RobustFigures) -> bool:
        """Whether a cell above 0% comes from weak attacks alone (no kind of :data:`STRONG_KINDS` ran for it)."""
        kinds = {self.rows[label].kind for label in figures.attacks if label in self.rows}
        return figures.accuracy > 0 and not kinds & set(STRONG_KINDS)

    def capped(self, figures: RobustFigures) -> bool:
        """
        Whether a cell above 0% rests on cascades none of which converged (after a merge, any run's cascade that
        converged decides).
        """
        controlled = [self.rows[label] for label in figures.attacks if label in self.rows]
        controlled = [row for row in controlled if row.controller is not None]
        return figures.accuracy > 0 and bool(controlled) and not any(row.converged() for row in controlled)

    def worst_over_runs(self, later: DefenceResult, source: str) -> DefenceResult:
        """
        This defence's results combined with those of a later run on the same images: every row (the later run's
        where two share a label), and per threat model the images robust in both.

        :raises ValueError: if a threat model of both runs lacks per-image results.
        """
        groups = {**(self.robust or {}), **(later.robust or {})}
        for group in set(self.robust or {}) & set(later.robust or {}):
            groups[group] = _worst_case(self.robust[group], later.robust[group], f"{source}: {group}")  # type: ignore[index]
        return dataclasses.replace(
            later,
            rows={**self.rows, **later.rows},
            sanity=later.sanity or self.sanity or [],  # a run without sanity checks keeps the other's
            provenance=[*(self.provenance or []), *(later.provenance or [])],
            robust=groups,
        )


def _worst_case(first: RobustFigures, second: RobustFigures, where: str) -> RobustFigures:
    """One threat model's figures of two runs on the same images: robust per image = robust in both."""
    from art_purifiers.evaluation.robust import proportion

    if first.per_image is None or second.per_image is None:
        raise ValueError(f"{where} has no per-image results to combine with the other run's.")
    per_image = np.minimum(np.asarray(first.per_image), np.asarray(second.per_image))
    return RobustFigures.from_json(
        {
            "robust": proportion(per_image),
            "per_image": per_image.astype(int).tolist(),
            "attacks": list(dict.fromkeys([*first.attacks, *second.attacks])),
            "draws": max(first.draws or 1, second.draws or 1),
            "note": "worst case per image over the attacks of several runs; expected and majority figures stay "
            "per run",
        }
    )


@dataclass
class Results(Record):
    """A results file: what was run, on which images, and every defence's results (see the module docstring)."""

    schema_version: int | None = None
    #: the options of the run (:class:`~art_purifiers.evaluation.config.EvaluationConfig`, as recorded)
    config: dict[str, Any] | None = None
    #: each command behind this output with its defences, attacks and environment
    invocations: list[dict[str, Any]] | None = None
    environment: dict[str, Any] | None = None
    #: the data: its source and note, test images examined, undefended clean accuracy, the selected indices
    data: dict[str, Any] | None = None
    attacks: list[AttackRecord] = field(default_factory=list)
    defences: dict[str, DefenceResult] = field(default_factory=dict)
    #: the runs this file was merged from
    merged_from: list[str] | None = None

    READERS: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "attacks": _records(AttackRecord),
        "defences": _records_by_key(DefenceResult),
    }

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object; its layout version, when set, comes first."""
        written = super().to_json()
        if "schema_version" not in written:
            return written
        return {"schema_version": written.pop("schema_version"), **written}

    def check_version(self) -> int:
        """
        The layout version (1 for files written before versions were recorded).

        :raises ValueError: for a file written by a newer layout than this code reads.
        """
        return _checked_version(self.schema_version)

    def sanity_only_labels(self) -> set[str]:
        """The attacks run for the sanity checks alone."""
        return {attack.label for attack in self.attacks if attack.sanity_only}

    def headline(self, entry: DefenceResult) -> dict[str, RobustFigures]:
        """
        A defence's robust accuracy per threat model that the user asked for: a threat model that only the sanity
        checks' attacks reached (the large-budget PGD) stays out of the tables and plots (it is reported with the
        checks).
        """
        sanity_only = self.sanity_only_labels()
        return {group: figures for group, figures in (entry.robust or {}).items()
                if set(figures.attacks) - sanity_only}  # fmt: skip

    def with_headline(self) -> Results:
        """These results with every defence's ``robust`` reduced to :meth:`headline`."""
        defences = {spec: dataclasses.replace(entry, robust=self.headline(entry)) if entry.robust is not None else entry
                    for spec, entry in self.defences.items()}  # fmt: skip
        return dataclasses.replace(self, defences=defences)

    def same_run_as(self, other: Results) -> bool:
        """
        Whether two results come from the same classifier, data, images and seeds: they may differ in their defences,
        attacks or sanity checks (which only add attacks), and in options one version did not record yet.
        """
        ignored = {"command", "verbose", "defences", "attacks", "sanity_checks", "extend"}
        mine, theirs = self.config or {}, other.config or {}
        shared = set(mine) & set(theirs) - ignored
        return self.selected_indices() == other.selected_indices() and all(mine[key] == theirs[key] for key in shared)

    def selected_indices(self) -> list[int]:
        """
        The test images the attacks ran on.

        :raises ValueError: if the file does not record them.
        """
        indices = (self.data or {}).get("selected_indices")
        if indices is None:
            raise ValueError("These results do not record which test images were attacked (data.selected_indices).")
        return list(indices)

    def stamps(self, source: str, spec: str) -> list[dict[str, Any]]:
        """The commands of this run that evaluated ``spec`` (every command of it, for runs that did not record them)."""
        invocations = [entry for entry in self.invocations or [] if spec in entry.get("defences", [])]
        if not invocations:
            invocations = [{"command": (self.config or {}).get("command", ""), "environment": self.environment or {}}]
        return [{"source": source, "command": entry["command"], "environment": entry.get("environment") or {}}
                for entry in invocations]  # fmt: skip


def as_results(results: Results | dict[str, Any]) -> Results:
    """``results`` as a :class:`Results` (a JSON object is read)."""
    return results if isinstance(results, Results) else Results.from_json(results)


def load_results(file: Path) -> Results:
    """
    A ``results.json``, its layout version checked before it is read (see :meth:`Results.check_version`).

    :raises ValueError: for a file of a newer layout, or one that is not a results file.
    """
    data = json.loads(Path(file).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{file} does not hold a results file (a JSON object).")
    _checked_version(data.get("schema_version"))
    return Results.from_json(data)


def _checked_version(version: int | None) -> int:
    checked = int(version or 1)
    if checked > SCHEMA_VERSION:
        raise ValueError(f"This results file has layout version {checked}; this art-purifiers reads up to "
                         f"{SCHEMA_VERSION}: update the package.")  # fmt: skip
    return checked


def merge(runs: Sequence[Results | dict[str, Any]], sources: Sequence[str]) -> Results:
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
    typed = [as_results(run) for run in runs]
    first = typed[0]
    attacks, defences = list(first.attacks), dict[str, DefenceResult]()
    for source, run in zip(sources, typed):
        if not run.same_run_as(first):
            raise ValueError(f"{source} was run with another configuration or other images than {sources[0]}.")
        known = {a.label for a in attacks}
        attacks += [a for a in run.attacks if a.label not in known]
        for spec, entry in run.defences.items():
            entry = dataclasses.replace(entry, provenance=entry.provenance or run.stamps(source, spec))
            earlier = defences.get(spec)
            defences[spec] = entry if earlier is None else earlier.worst_over_runs(entry, source)
    # each command once: a page's JSON already holds its group's commands (re-rendering merges pages again)
    commands = (part for run in typed for part in (run.config or {}).get("command", "").split(" ; "))
    config = {**(first.config or {}), "defences": list(defences), "command": " ; ".join(dict.fromkeys(commands))}
    return dataclasses.replace(first, config=config, attacks=attacks, defences=defences, merged_from=list(sources))
