"""
One defence under evaluation: its chain built from the spec, its correctness on the clean images over its draws, the
clean figures (accuracy, image quality, speed, randomness), the gradient report that picks EOT k, and robust accuracy
per threat model from the per-image correctness of every attack that ran on it (``correct[image, attack, draw]``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from art_purifiers import metrics
from art_purifiers.evaluation import cascade, robust
from art_purifiers.evaluation.chunks import gathered, load_state, save_atomic
from art_purifiers.evaluation.context import RunContext
from art_purifiers.evaluation.engines import AttackEngine, accuracy_summary
from art_purifiers.evaluation.results import RobustFigures, Row
from art_purifiers.evaluation.specs import AttackSpec
from art_purifiers.evaluation.targets import build_defences, randomized, reseed


@dataclass
class DefenceUnderTest:
    """
    A defence spec's chain and what the attacks on it share (see the module docstring); :meth:`build` makes one.

    :param attacks: Every attack of the run, in run order (their state files hold the per-image results).
    :param clean_correct: (draws, images) correctness of the selected clean images through the chain.
    :param directory: Its state directory (one state file per attack).
    """

    context: RunContext
    attacks: list[AttackSpec]
    spec: str
    defences: list[Any]
    info: dict[str, Any]
    is_random: bool
    directory: Path
    clean_correct: np.ndarray
    #: the gradient report of the defended model (set once measured or read back)
    gradients: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, context: RunContext, attacks: list[AttackSpec], spec: str) -> DefenceUnderTest:
        """The chain of ``spec`` (rank 0 fits data-driven steps, the others read them) and its clean correctness."""
        directory = context.state / "".join(c if c.isalnum() or c in "-_=." else "_" for c in spec)
        directory.mkdir(parents=True, exist_ok=True)
        defences, info = context.world.main_first(lambda: build_defences(spec, context.fit))
        is_random = randomized(defences)
        draws = context.config.draws if is_random else 1
        # per-draw correctness on the clean images: the clean row and every attack's success rate use it
        clean_correct = gathered(context.chunked(None, lambda start, end: {
            "correct": context.correct_over_draws(defences, context.x[start:end], context.y[start:end], draws, start).T
        }, "clean"), "correct", axis=1).astype(bool)  # fmt: skip
        return cls(context, attacks, spec, defences, info, is_random, directory, clean_correct)

    def clean_metrics(self) -> dict[str, Any]:
        """
        Accuracy on the examined test images (``full_split_accuracy``, a key kept from when they were always the whole
        split; shared among the processes), image quality and speed (rank 0, broadcast).
        """
        context = self.context
        labels = context.y_full[context.examined]
        full = context.over_examined(
            lambda images, start, end: context.correct_over_draws(self.defences, images, labels[start:end], 1, start)[
                :, 0
            ],
            "clean accuracy",
        )
        return context.world.broadcast(self._quality_and_speed(full) if context.world.is_main else None)

    def _quality_and_speed(self, full: np.ndarray) -> dict[str, Any]:
        context, defences = self.context, self.defences
        result: dict[str, Any] = {
            "full_split_accuracy": float(full.mean()),
            "full_split_images": int(full.size),
            **accuracy_summary(self.clean_correct),
        }
        if defences:
            classifier = context.classifier(defences)
            reseed(defences, context.seeds.fitting)
            purified, _ = _apply_chain(classifier, context.x)
            result["quality"] = metrics.image_quality(context.x, purified)
            started = time.perf_counter()  # a second, warm pass for the throughput
            _apply_chain(classifier, context.x)
            result["defence_images_per_second"] = len(context.x) / (time.perf_counter() - started)
            batch = context.x[: context.config.batch_size]
            labels = np.eye(context.nb_classes)[context.y[: context.config.batch_size]]
            started = time.perf_counter()
            classifier.loss_gradient(batch, labels)
            result["gradient_images_per_second"] = len(batch) / (time.perf_counter() - started)
            if self.is_random:
                second, _ = _apply_chain(classifier, context.x)
                result["randomness"] = metrics.randomness(purified, second)
        return result

    def gradient_report(self) -> dict[str, Any]:
        """
        Zero-gradient share, norms and EOT consistency of the defended model (:func:`.cascade.gradient_report`),
        measured by rank 0 and sent to the others.
        """
        world = self.context.world
        return world.broadcast(self._measure_gradients() if world.is_main else None)

    def _measure_gradients(self) -> dict[str, Any]:
        context = self.context
        count, cap = context.config.consistency_images, context.config.eot_cap
        x = torch.as_tensor(context.x[:count], device=context.device)
        y = torch.as_tensor(context.y[:count], device=context.device)
        draws = tuple(k for k in (1, 2, 5, 10, 20, 30) if k <= max(30, cap)) if self.is_random else (1,)
        reseed(self.defences, context.seeds.gradient_report)
        report = cascade.gradient_report(cascade.DefendedModel(context.model, self.defences), x, y, draws)
        report["eot_choice"] = cascade.choose_eot(report["consistency"], cap=cap)
        return report

    def columns(self, group: str | None = None) -> list[tuple[str, np.ndarray]]:
        """
        Per attack that ran (label, (images, columns, draws) correctness), the clean column first; one threat model or
        all.
        """
        clean_columns = self.clean_correct.T[:, None, :].astype(np.int8)
        found = [("clean", clean_columns)]
        for attack in self.attacks:
            saved = None if group is not None and attack.group != group else self.context.read(self.state_file(attack))
            if saved is None:
                continue
            if "columns" in saved:
                found.append((attack.label, saved["columns"]))
            elif "correct" in saved and saved["correct"].shape[0] == clean_columns.shape[2]:
                found.append((attack.label, saved["correct"].T[:, None, :].astype(np.int8)))
        return found

    def group_columns(self, group: str) -> np.ndarray:
        """(images, columns, draws) correctness of the attacks of ``group`` that ran before, with the clean column."""
        return np.concatenate([c for _, c in self.columns(group)], axis=1)

    def state_file(self, attack: AttackSpec) -> Path:
        """The file of an attack's per-image results on this defence."""
        return self.directory / f"{attack.slug}.npz"

    def has_results(self, attack: AttackSpec) -> bool:
        """Whether the attack's per-image results on this defence are saved and readable (rank 0's reading)."""
        world = self.context.world
        return bool(world.broadcast(self.context.read(self.state_file(attack)) is not None if world.is_main else None))

    def attacked_by(self, engine: AttackEngine, attack: AttackSpec) -> Row | None:
        """
        ``engine``'s row of ``attack`` on this defence (``None``: not run); every process then waits until rank 0
        has written the attack's merged state, which later attacks read.
        """
        row = engine.run(attack, self)
        self.context.world.barrier()
        return row

    def robust_by_group(self) -> dict[str, RobustFigures]:
        """
        The headline per threat model: robust accuracy over every attack of the group in every draw, with the
        per-image tensor saved to ``correctness-<group>.npz`` (columns: clean, then the attacks in run order).
        """
        groups: dict[str, RobustFigures] = {}
        for group in dict.fromkeys(a.group for a in self.attacks if a.group != "minimum-norm L2"):
            found = self.columns(group)
            if len(found) < 2:
                continue
            tensor = np.concatenate([columns for _, columns in found], axis=1)
            labels = [label for label, columns in found for _ in range(columns.shape[1])]
            file = self.directory / ("correctness-" + "".join(c if c.isalnum() else "_" for c in group) + ".npz")
            saved = load_state(file)
            if saved is None or not np.array_equal(saved["correct"], tensor):
                save_atomic(file, correct=tensor, columns=np.array(labels), indices=self.context.indices)
            per_image = robust.robust_correct(tensor).astype(int).tolist()
            groups[group] = RobustFigures.from_json(
                {**robust.summarise(tensor), "attacks": [label for label, _ in found[1:]], "per_image": per_image}
            )
        return groups


def _apply_chain(classifier: Any, x: np.ndarray) -> tuple[np.ndarray, Any]:
    """Run ART's preprocessing chain of a classifier (what the model sees)."""
    with torch.no_grad():
        return classifier._apply_preprocessing(x, y=None, fit=False)  # noqa: SLF001 - ART's own path
