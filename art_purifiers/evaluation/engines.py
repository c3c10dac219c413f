"""The two engines that run an evaluation's attacks, behind one interface (:class:`AttackEngine`): made from the
run's context, ``run(attack, target)`` gives the attack's :class:`~art_purifiers.evaluation.results.Row` on a defence
under test (``None`` when the attack does not apply).

* :class:`ArtEngine`: ART's evasion attacks on a ``PyTorchClassifier`` (BPDA through the defences' backward),
  chunk by chunk, scored over the draws of the defence.
* :class:`AdaptiveEngine`: our APGD with EOT, the cascade with its convergence control, the original AutoAttack and
  the noise and transfer floors, on the model behind the defences.

:data:`ENGINES` picks the engine of each :class:`~art_purifiers.evaluation.specs.Engine` (the kind of every attack
spec names one). An engine reads the run's state (images, seeds, chunk store, classifiers) from its
:class:`~art_purifiers.evaluation.context.RunContext`, and the defence's from the
:class:`~art_purifiers.evaluation.defended.DefenceUnderTest` it attacks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch

from art_purifiers import metrics
from art_purifiers.classifiers import load_classifier
from art_purifiers.evaluation import adaptive, cascade, robust, seeds
from art_purifiers.evaluation.chunks import (
    gathered,
    save_atomic,
    total_seconds,
)
from art_purifiers.evaluation.results import Row
from art_purifiers.evaluation.seeds import seed_global_generators
from art_purifiers.evaluation.specs import AUTOMATIC_EOT, AttackKind, AttackSpec, Engine
from art_purifiers.evaluation.targets import (
    identity_copy,
    learned_bpda_chain,
    make_attack,
    randomized,
    reseed,
    with_bpda,
)

if TYPE_CHECKING:
    from art_purifiers.evaluation.context import RunContext
    from art_purifiers.evaluation.defended import DefenceUnderTest

#: The L2 radius at which minimum-norm attacks (C&W, DeepFool) are also scored, as a fixed-budget accuracy.
FIXED_L2 = 0.5


class ArtEngine:
    """ART's attacks (see the module docstring)."""

    def __init__(self, context: RunContext) -> None:
        self.context = context

    def _art_chain(
        self, attack: AttackSpec, defences: list[Any], directory: Path, is_random: bool
    ) -> tuple[list[Any], int, list[str]] | None:
        """The chain an ART attack differentiates, its EOT k and the notes on both (``None``: not run)."""
        notes = []
        eot = attack.eot
        if eot > 1 and not is_random:
            eot, notes = 1, ["deterministic defence: every EOT draw is the same, so k=1 was run"]
        if attack.kind == AttackKind.AUTOATTACK and is_random and eot == 1:
            notes.append("randomized defence attacked without EOT (add k=... for the EOT version)")
        if not defences and attack.kind in (AttackKind.PGD_IDENTITY, AttackKind.LEARNED_BPDA, AttackKind.PGD_EOT):
            return None  # identical to plain PGD without a defence
        if attack.kind == AttackKind.PGD_IDENTITY:
            chain = identity_copy(defences)
        elif attack.kind == AttackKind.LEARNED_BPDA:
            chain = self.context.world.main_first(lambda: learned_bpda_chain(defences, self.context.fit, directory))
        else:
            chain = defences
        if eot > 1 and not all(isinstance(d, PreprocessorPyTorch) for d in chain):
            eot, notes = 1, notes + ["ART NumPy defence: EOT not available, k=1 was run"]
        return chain, eot, notes

    def run(self, attack: AttackSpec, target: DefenceUnderTest) -> Row | None:
        """An attack of ART's engine, chunk by chunk, scored over the draws of the defence."""
        defences, directory, clean_correct = target.defences, target.directory, target.clean_correct
        setup = self._art_chain(attack, defences, directory, target.is_random)
        if setup is None:
            return None
        chain, eot, notes = setup
        classifier = self.context.classifier(chain, eot)
        file = directory / f"{attack.slug}.npz"
        earlier = self._single_file_progress(file)
        labels = np.eye(self.context.nb_classes)[self.context.y]

        def attack_chunk(start: int, end: int) -> dict[str, Any]:
            started = time.perf_counter()
            if earlier is not None and end <= int(earlier["done"]):
                x_adv = earlier["x_adv"][start:end]  # made before state was saved per chunk
            else:
                # Seeds per chunk: a resumed or sharded run draws what an uninterrupted one would have drawn.
                chunk_seed = self.context.seeds.art_chunk(start)
                seed_global_generators(chunk_seed)  # ART's attacks draw from the global generators
                reseed(chain, chunk_seed)
                art_attack = make_attack(attack, classifier, self.context.config.batch_size)
                x_adv = art_attack.generate(self.context.x[start:end], y=labels[start:end]).astype(np.float32)
            seconds = time.perf_counter() - started
            x_adv = self._rounded_within_budget(attack, self.context.x[start:end], x_adv)
            correct = self.context.correct_over_draws(
                defences, x_adv, self.context.y[start:end], len(clean_correct), start
            ).T
            l2, linf = metrics.perturbation_norms(self.context.x[start:end], x_adv)
            return {"x_adv": x_adv, "correct": correct, "l2": l2, "linf": linf, "seconds": seconds}

        wall_started = time.perf_counter()
        chunks = self.context.chunked(directory / f"{attack.slug}.chunks", attack_chunk, attack.label)
        correct = gathered(chunks, "correct", axis=1).astype(bool)
        l2, linf = gathered(chunks, "l2"), gathered(chunks, "linf")
        seconds = total_seconds(chunks) + (0.0 if earlier is None else float(earlier["seconds"]))
        if self.context.world.is_main:
            save_atomic(
                file,
                done=len(self.context.x),
                seconds=seconds,
                correct=correct,
                l2=l2,
                linf=linf,
                indices=self.context.indices,
            )
        row = _art_row(attack, eot, correct, l2, linf, clean_correct, notes)
        speed = {"seconds": seconds, "wall_seconds": time.perf_counter() - wall_started,
                 "images_per_second": len(self.context.x) / max(seconds, 1e-9)}  # fmt: skip
        return Row.from_json({**row, **speed, "notes": notes})

    def _single_file_progress(self, file: Path) -> dict[str, np.ndarray] | None:
        """
        The examples an unfinished ART attack saved in one file (``x_adv`` and the ``done`` count), as runs made
        before state was saved per chunk did; those chunks are scored, not attacked again.
        """
        saved = self.context.read(file)
        if saved is None or "correct" in saved or "x_adv" not in saved:
            return None
        return saved

    def _rounded_within_budget(self, attack: AttackSpec, x_clean: np.ndarray, x_adv: np.ndarray) -> np.ndarray:
        """An ART attack's examples rounded to 8 bits (within the budget) and checked against it before scoring."""
        x = torch.as_tensor(x_clean)
        eps = float("inf") if attack.eps is None else float(attack.eps)
        rounded = cascade.round_to_8bit(x, torch.as_tensor(x_adv), attack.norm, eps)
        if attack.eps is not None:
            cascade.check_budget(x, rounded, attack.norm, eps, attack.label)
        return rounded.numpy()


class AdaptiveEngine:
    """The adaptive engine (see the module docstring)."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self._sources: dict[str, Any] = {}  # transfer attacks' source models, by attack

    def run(self, attack: AttackSpec, target: DefenceUnderTest) -> Row | None:
        """Our APGD, the cascade, the original AutoAttack, transfer and noise (see :mod:`.adaptive`)."""
        defences, directory = target.defences, target.directory
        if (
            not defences
            and attack.kind == AttackKind.TRANSFER
            and self.context.config.classifier == self._transfer_source(attack)
        ):
            return None
        file = directory / f"{attack.slug}.npz"
        saved = self.context.read(file)
        if saved is not None and "columns" in saved:  # done: the figures are recomputed from the saved results
            done = json.loads(str(saved["row"]))
            l2, linf = self._saved_norms(saved)
            return Row.from_json({**done, **self._v2_summary(saved["columns"], l2, linf, done["seconds"])})
        chain = with_bpda(defences, attack.options["bpda"]) if "bpda" in attack.options else defences
        defended = cascade.DefendedModel(self.context.model, chain).eval()
        norm, eps = adaptive.l2_or_linf(attack, int(np.prod(self.context.input_shape)))
        row: dict[str, Any] = {"kind": attack.kind, "eps": attack.eps, "norm": norm, "budget": eps}
        eot = self._eot(attack, target, row)
        row.update({"steps": attack.steps, "eot_requested": attack.eot, "eot": eot})
        run = _V2Run(attack, chain, defended, norm, eps, eot, len(target.clean_correct))
        folder = directory / f"{attack.slug}.chunks"
        wall_started = time.perf_counter()
        if attack.kind in (AttackKind.CASCADE, AttackKind.APGD_T):
            prior = target.group_columns(attack.group)  # the attacks of its threat model so far
            chunks = self._run_cascade(run, prior, folder, row)
        else:
            chunks = self.context.chunked(folder, lambda start, end: self._v2_chunk(run, start, end), attack.label)
            row["columns"] = [attack.label]
            if attack.options.get("targeted"):
                hits = gathered(chunks, "target_hits")
                # the target in at least one draw
                row["targeted_success"] = robust.proportion(np.asarray(hits.any(axis=1)))
                row["targeted_success_mean"] = float(hits.mean())  # over draws, as a single-draw attack rate
        columns, l2, linf = (gathered(chunks, name) for name in ("columns", "l2", "linf"))
        row.update(self._v2_summary(columns, l2, linf, total_seconds(chunks)))
        # per APGD run, the mean over batches of the best loss so far at every iteration (weighted equally per batch)
        curves = json.loads(_merge_curves([str(chunk["curves"]) for chunk in chunks]))
        row["loss_curves"] = {label: np.mean(runs, axis=0).tolist() for label, runs in curves.items()}
        row["wall_seconds"] = time.perf_counter() - wall_started
        if self.context.world.is_main:
            save_atomic(file, columns=columns, l2=l2, linf=linf, indices=self.context.indices, row=json.dumps(row))
        return Row.from_json(row)

    def _chunk_tensors(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.as_tensor(self.context.x[start:end], device=self.context.device),
                torch.as_tensor(self.context.y[start:end], device=self.context.device))  # fmt: skip

    def _v2_chunk(self, run: _V2Run, start: int, end: int) -> dict[str, Any]:
        """One chunk of a v2 attack that is not a cascade: its examples, their correctness over the draws, norms."""
        x, y = self._chunk_tensors(start, end)
        curves: dict[str, list[torch.Tensor]] = {}
        function = self._v2_function(run, curves)
        seed = self.context.seeds.adaptive_chunk(start)
        reseed(run.chain, seed)  # the defence's draws during the attack: the chunk's own
        started = time.perf_counter()
        x_adv = cascade.run_batched(cascade.CascadeAttack(run.attack.label, function), x, y, run.norm, run.eps, seed,
                                    self.context.config.batch_size)  # fmt: skip
        examples = x_adv.cpu().numpy()
        l2, linf = metrics.perturbation_norms(self.context.x[start:end], examples)
        arrays: dict[str, Any] = {
            "x_adv": examples,
            "columns": self.context.correct_over_draws(run.chain, x_adv, self.context.y[start:end], run.draws, start)[
                :, None, :
            ],
            "seconds": time.perf_counter() - started,
            "curves": _curves_json(curves),
            "l2": l2,
            "linf": linf,
        }
        if run.attack.options.get("targeted"):
            batch = self.context.config.batch_size
            targets = torch.cat([adaptive.random_targets(y[i : i + batch], self.context.nb_classes,
                                                            seeds.batch(self.context.seeds.adaptive_chunk(start), i))
                                 for i in range(0, len(y), batch)])  # fmt: skip
            predicted = self.context.predict_draws(run.chain, x_adv, run.draws, start)
            arrays["target_hits"] = predicted == targets.cpu().numpy()[:, None]
        return arrays

    def _run_cascade(self, run: _V2Run, prior: np.ndarray, folder: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
        """
        The cascade (with its convergence controller) or APGD-T, level by level. Each level runs chunk by chunk on
        the chunk's survivors of the earlier levels (saved per level and chunk); the controller decides on the robust
        accuracy of all chunks, so every process takes the same decision.
        """
        attack = run.attack
        levels: list[list[dict[str, Any]]] = []

        def run_level(level: int) -> float:
            survivors = robust.robust_correct(prior) if not levels else _survivors(levels[-1])
            costs = {
                start: 1.0 + float(survivors[start:end].sum()) for start, end in self.context.chunks
            }  # only they are attacked
            chunks = self.context.chunked(folder / f"level{level}",
                                   lambda start, end: self._cascade_chunk(run, prior, folder, level, start, end),
                                   f"{attack.label} (level {level})", costs=costs)  # fmt: skip
            levels.append(chunks)
            return float(_survivors(chunks).mean())

        if attack.kind == AttackKind.CASCADE:
            row["controller"] = cascade.converge(run_level, len(self.context.x), int(attack.options.get("levels", 1)))
        else:
            run_level(0)
        chunks = []
        for index, last in enumerate(levels[-1]):  # the last level's results, with every level's time and curves
            per_level = [level[index] for level in levels]
            curves = _merge_curves([str(chunk["curves"]) for chunk in per_level])
            # the cascade's own columns follow the prior the chunk was attacked after, which a resumed run with
            # attacks added since (evaluate --extend) may have widened: each chunk is cut at its own prior
            chunks.append({**last, "columns": last["correct"][:, _prior_width(last) :, :], "curves": curves,
                           "seconds": total_seconds(per_level)})  # fmt: skip
        labels = [str(label) for label in levels[-1][0]["labels"]]
        attacked = np.sum([chunk["attacked"] for chunk in chunks], axis=0)
        row["columns"], row["attacked"] = labels[_prior_width(levels[-1][0]) :], [int(count) for count in attacked]
        return chunks

    def _cascade_chunk(self, run: _V2Run, prior: np.ndarray, folder: Path, level: int, start: int,
                       end: int) -> dict[str, Any]:  # fmt: skip
        """One chunk of one cascade level, continuing from the chunk's state after the level before."""
        attack, config = run.attack, self.context.config
        x, y = self._chunk_tensors(start, end)
        if level == 0:
            result = cascade.CascadeResult(prior[start:end], x.clone(), ["prior"] * prior.shape[1])
        else:
            before = self.context.read(folder / f"level{level - 1}" / f"{start:08d}.npz")
            if before is None:
                raise RuntimeError(f"The state of level {level - 1} of {attack.label} at image {start} is missing.")
            x_worst = torch.as_tensor(before["x_worst"], device=self.context.device)
            result = cascade.CascadeResult(before["correct"], x_worst, [str(label) for label in before["labels"]],
                                           [int(count) for count in before["attacked"]])  # fmt: skip
        curves: dict[str, list[torch.Tensor]] = {}
        restarts = int(attack.options.get("restarts", 1))
        if attack.kind == AttackKind.APGD_T:
            targets = min(int(attack.options.get("targets", 9)), self.context.nb_classes - 1)
            attacks = adaptive.targeted_attacks(run.defended, run.norm, run.eps, attack.steps, restarts, run.eot,
                                                targets, curves)  # fmt: skip
        else:
            attacks = adaptive.cascade_level(run.defended, run.norm, run.eps, level=level, curves=curves,
                                             nb_classes=self.context.nb_classes, steps=attack.steps, restarts=restarts,
                                             eot=run.eot, square=int(attack.options.get("square", 5000)))  # fmt: skip

        def score(images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
            return self.context.correct_over_draws(run.chain, images, labels.cpu().numpy(), run.draws, start)

        started = time.perf_counter()
        seed = self.context.seeds.cascade_level(level, start)
        reseed(run.chain, seed)
        result = cascade.run_cascade(attacks, x, y, score, run.norm, run.eps, seed, config.batch_size, result)
        l2, linf = metrics.perturbation_norms(self.context.x[start:end], result.x_worst.cpu().numpy())
        return {
            "correct": result.correct,
            "x_worst": result.x_worst.cpu().numpy(),
            "labels": np.array(result.labels),
            "attacked": np.array(result.attacked, dtype=np.int64),
            "l2": l2,
            "linf": linf,
            "seconds": time.perf_counter() - started,
            "curves": _curves_json(curves),
        }

    def _eot(self, attack: AttackSpec, target: DefenceUnderTest, row: dict[str, Any]) -> int:
        """The EOT draws of a v2 attack: 1 on deterministic defences, as given, or from the gradient report (auto)."""
        if attack.kind not in AUTOMATIC_EOT or not target.is_random:
            return 1
        if attack.eot > 0:
            return attack.eot
        row["eot_choice"] = target.gradients["eot_choice"]
        return int(row["eot_choice"]["k"])

    def _v2_function(self, run: _V2Run, curves: dict[str, list[torch.Tensor]]) -> cascade.AttackFunction:
        attack, defended, norm, eps, eot = run.attack, run.defended, run.norm, run.eps, run.eot
        options = attack.options
        if attack.kind == AttackKind.APGD:
            classes = self.context.nb_classes if options.get("targeted") else None
            return adaptive.apgd_attack(defended, norm, eps, attack.steps, int(options.get("restarts", 1)),
                                        str(options.get("loss", "ce")), eot, classes, curves, attack.label)  # fmt: skip
        if attack.kind == AttackKind.ORIGINAL_AUTOATTACK:
            version = str(options.get("version", "auto"))
            if version == "auto":
                version = "rand" if randomized(defended.defences) else "standard"
            return adaptive.original_autoattack(
                defended, norm, eps, version, self.context.config.batch_size, self.context.nb_classes
            )
        if attack.kind == AttackKind.TRANSFER:
            if attack.slug not in self._sources:  # loaded once per attack, not once per chunk
                self._sources[attack.slug] = load_classifier(self._transfer_source(attack), self.context.device)
            return adaptive.transfer_attack(
                self._sources[attack.slug], eps, attack.steps, str(options.get("method", "pgd"))
            )
        return adaptive.noise_attack(norm, eps)

    def _transfer_source(self, attack: AttackSpec) -> str:
        """The model a transfer attack runs on: its own ``source`` option, else the run's surrogate."""
        return str(attack.options.get("source", self.context.config.surrogate))

    def _saved_norms(self, saved: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per-image L2 and Linf norms of a finished v2 attack (runs made before this version saved the examples)."""
        if "l2" in saved:
            return saved["l2"], saved["linf"]
        return metrics.perturbation_norms(self.context.x, saved["x_adv"])

    def _v2_summary(self, columns: np.ndarray, l2: np.ndarray, linf: np.ndarray, seconds: float) -> dict[str, Any]:
        # an image a cascade did not attack was broken by an earlier attack of its group: wrong from here on
        broken_before = np.where(columns == robust.NOT_RUN, 0, columns)
        figures = robust.summarise(broken_before)
        attacked = (columns != robust.NOT_RUN).any(axis=(1, 2))  # norms of the examples this row made
        attacked = attacked if attacked.any() else np.ones_like(attacked)
        l2, linf = l2[attacked], linf[attacked]
        return {
            **accuracy_summary(broken_before.min(axis=1).T.astype(bool)),
            "robust": figures["robust"],
            "robust_per_image": robust.robust_correct(broken_before).astype(int).tolist(),
            "expected": figures["expected"],
            "majority": figures["majority"],
            "mean_l2": float(l2.mean()),
            "median_l2": float(np.median(l2)),
            "mean_linf": float(linf.mean()),
            "max_linf": float(linf.max()),
            "seconds": seconds,
            "images_per_second": len(self.context.x) / max(seconds, 1e-9),
            "success_rate": float(1 - figures["robust"]["accuracy"]),
            "notes": [],
        }


class AttackEngine(Protocol):
    """The interface of an engine: made from the run context, it gives an attack's row on a defence under test."""

    def __init__(self, context: RunContext) -> None: ...

    def run(self, attack: AttackSpec, target: DefenceUnderTest) -> Row | None: ...


#: The engine class of each kind of engine.
ENGINES: dict[Engine, type[AttackEngine]] = {Engine.ART: ArtEngine, Engine.ADAPTIVE: AdaptiveEngine}


@dataclass
class _V2Run:
    """What every chunk of a v2 attack shares: the spec, the attacked chain as a module, the budget and EOT."""

    attack: AttackSpec
    chain: list[Any]
    defended: cascade.DefendedModel
    norm: str
    eps: float
    eot: int
    draws: int


def _art_row(attack: AttackSpec, eot: int, correct: np.ndarray, l2: np.ndarray, linf: np.ndarray,
             clean_correct: np.ndarray, notes: list[str]) -> dict[str, Any]:  # fmt: skip
    """The figures of an ART attack's row (``correct[draw, image]``); a minimum-norm attack adds a note to ``notes``."""
    success = [(c & ~a).sum() / max(c.sum(), 1) for c, a in zip(clean_correct, correct)]
    within_l2 = float((correct | (l2 > FIXED_L2)).mean())  # minimum-norm attacks: only examples within a fixed L2 count
    if attack.eps is None:
        notes.append(f"accuracy at L2 <= {FIXED_L2}: {100 * within_l2:.1f}%")
    return {
        "accuracy_at_l2": {str(FIXED_L2): within_l2} if attack.eps is None else {},
        "kind": attack.kind,
        "eps": attack.eps,
        "steps": attack.steps,
        "eot_requested": attack.eot,
        "eot": eot,
        **accuracy_summary(correct),
        "success_rate": float(np.mean(success)),
        "mean_l2": float(l2.mean()),
        "median_l2": float(np.median(l2)),
        "mean_linf": float(linf.mean()),
        "max_linf": float(linf.max()),
    }


def _curves_json(curves: dict[str, list[torch.Tensor]]) -> str:
    """APGD loss curves (per label, one curve per batch) as JSON, for a chunk's state file."""
    return json.dumps({label: [curve.tolist() for curve in runs] for label, runs in curves.items()})


def _merge_curves(parts: Sequence[str]) -> str:
    """Several :func:`_curves_json` strings as one."""
    merged: dict[str, list[Any]] = {}
    for part in parts:
        for label, runs in json.loads(part).items():
            merged.setdefault(label, []).extend(runs)
    return json.dumps(merged)


def _prior_width(chunk: dict[str, Any]) -> int:
    """The prior columns a saved cascade chunk started from (labelled ``prior``)."""
    return sum(str(label) == "prior" for label in chunk["labels"])


def _survivors(chunks: Sequence[dict[str, Any]]) -> np.ndarray:
    """Per image, robust over every column of its chunk (chunks may differ in their number of prior columns)."""
    return np.concatenate([robust.robust_correct(chunk["correct"]) for chunk in chunks])


def accuracy_summary(correct: np.ndarray) -> dict[str, Any]:
    """Accuracy over draws: mean, std, Wilson interval of the mean on n images, and the per-draw values."""
    per_draw = correct.mean(axis=1)
    mean = float(per_draw.mean())
    low, high = metrics.wilson_interval(mean, correct.shape[1])
    return {
        "accuracy": mean,
        "std": float(per_draw.std(ddof=1)) if len(per_draw) > 1 else 0.0,
        "ci95": [low, high],
        "per_draw": per_draw.tolist(),
        "n": int(correct.shape[1]),
    }
