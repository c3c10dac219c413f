"""
The adaptive attack suite behind ``art-purifiers evaluate``.

Protocol (Carlini et al. 2019, "On Evaluating Adversarial Robustness"; Tramer et al. 2020): attack the first
``num_images`` test images (in a seeded random order) that the *undefended* classifier gets right, with every
attack through ART; report accuracy under attack (mean +- std over ``draws`` draws of a randomized defence, with a
Wilson 95% interval), attack success rate and perturbation norms, plus clean accuracy, image quality of purified
images, the defence's randomness, throughput and the sanity checks of :mod:`art_purifiers.evaluation.sanity`.

Runs are resumable: every attack works through the images in chunks of ``chunk_size``, and each chunk's examples
and per-image results go to ``output/state`` as soon as it is done (``results.json`` after every attack); running the
same command again continues where it stopped. Everything random is seeded per chunk, and every batch lies within
one chunk, so a chunk's results do not depend on which process ran it: under ``torchrun`` the processes share the
chunks (:mod:`art_purifiers.evaluation.distributed`), and a run may resume with another number of processes.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from art_purifiers import metrics
from art_purifiers.classifiers import load_classifier, make_classifier
from art_purifiers.data import ImageDataset, load_cifar10, load_image_folder
from art_purifiers.evaluation import cascade, robust, sanity
from art_purifiers.evaluation.chunks import (
    ChunkStore,
    gathered,
    load_state,
    save_atomic,
)
from art_purifiers.evaluation.distributed import World, chunk_bounds, init_world
from art_purifiers.evaluation.engines import ENGINES, accuracy_summary
from art_purifiers.evaluation.results import (
    SCHEMA_VERSION,
    AttackRecord,
    DefenceResult,
    Results,
    RobustFigures,
    Row,
    load_results,
)
from art_purifiers.evaluation.seeds import RunSeeds, seed_global_generators
from art_purifiers.evaluation.specs import AttackSpec, Engine, check_l2_budget, parse_attack
from art_purifiers.evaluation.targets import (
    FitData,
    build_defences,
    check_defence_spec,
    randomized,
    reseed,
)

#: The attacks of a default run: floors (random noise, a transfer attack from the surrogate), ART's PGD-BPDA at three
#: budgets, the v2 cascade (APGD-CE, APGD-DLR, Square 5000, convergence check) and APGD-T (9 targets) at the same
#: budgets on the images the earlier attacks left, and the minimum-norm attacks. Robust accuracy per budget is the
#: worst case over all of them.
DEFAULT_ATTACKS = (
    "noise:eps=8/255",
    "transfer:eps=8/255,method=dim,steps=10",
    "pgd:eps=4/255,steps=50",
    "pgd:eps=8/255,steps=50",
    "pgd:eps=16/255,steps=50",
    "cascade:eps=4/255",
    "apgd-t:eps=4/255",
    "cascade:eps=8/255",
    "apgd-t:eps=8/255",
    "cascade:eps=16/255",
    "apgd-t:eps=16/255",
    "cw:steps=100",
    "deepfool",
)
#: Extra attacks the sanity checks need: fewer iterations, and a budget large enough to break any classifier.
SANITY_ATTACKS = ("pgd:eps=8/255,steps=10", "pgd:eps=8/255,steps=20", "pgd:eps=64/255,steps=20")


@dataclass
class EvaluationConfig:
    """
    Everything a run depends on (recorded in ``results.json``).

    :param defences: Defence specs (see :func:`~art_purifiers.evaluation.targets.build_defences`).
    :param attacks: Attack specs (see :func:`~art_purifiers.evaluation.specs.parse_attack`).
    :param classifier: Zoo name, zoo-format weight file, or ``module:attribute``.
    :param dataset: ``cifar10`` or ``imagefolder:PATH``.
    :param data_dir: CIFAR-10 directory (default ``$ART_PURIFIERS_DATA``).
    :param num_images: Clean-correct test images to attack.
    :param draws: Defence draws to average over for randomized defences.
    :param fit_images: Held-out training images for the data-driven steps (table search and learning, learned BPDA).
    :param sanity_checks: Also run :data:`SANITY_ATTACKS` and the checks.
    :param surrogate: The transfer attacks' source model (zoo name, weight file or ``module:attribute``).
    :param eot_cap: Largest EOT k chosen automatically while the gradient consistency reaches 0.9 (10 on a CPU).
    :param consistency_images: Images of the gradient report that measures EOT consistency.
    :param chunk_size: Images per chunk: the unit of saved progress, of seeding and of sharing work among processes.
    :param clean_images: At least this many test images (in the seeded order) are classified, and clean accuracy
        with and without each defence is measured on all the images classified (at least those needed to find
        ``num_images`` correct ones; more when the last step of the search overshoots); 0: the whole split.
    :param extend: Let this run add defences or attacks to a run already in the output directory (each command keeps
        its own provenance); without it that is refused.
    """

    defences: list[str]
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    classifier: str = "cifar10-reference"
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    num_images: int = 500
    draws: int = 5
    seed: int = 0
    batch_size: int = 100
    chunk_size: int = 100
    fit_images: int = 256
    sanity_checks: bool = True
    surrogate: str = "cifar10-surrogate"
    eot_cap: int = 10
    consistency_images: int = 32
    device: str = "auto"
    clean_images: int | None = None
    extend: bool = False
    command: str = ""
    verbose: bool = True

    def attack_specs(self) -> list[AttackSpec]:
        """The attacks asked for, parsed (budgets in [0, 1] units)."""
        return [parse_attack(spec) for spec in self.attacks]


#: Options that may differ between the commands of one output directory: they do not change any figure (``attacks``
#: and ``defences`` are compared on their own).
RESUMABLE_OPTIONS = ("command", "verbose", "defences", "attacks", "extend")


def load_dataset(config: EvaluationConfig, split: str) -> ImageDataset:
    """The evaluation (``test``) or fitting (``train``) split named by the config."""
    if config.dataset == "cifar10":
        return load_cifar10(config.data_dir, split, download=config.download)
    if config.dataset.startswith("imagefolder:"):
        root = Path(config.dataset.partition(":")[2])
        return load_image_folder(root / split if (root / split).is_dir() else root, size=config.image_size)
    raise ValueError(f"dataset must be 'cifar10' or 'imagefolder:PATH', got {config.dataset!r}.")


def select_clean_correct(predictions: np.ndarray, labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """
    The evaluated images: the first ``count`` test images, in a seeded random order, that the undefended classifier
    gets right (sorted indices; every protocol of a report uses the same images).

    :raises ValueError: if fewer than ``count`` images are classified correctly.
    """
    order = np.random.default_rng(RunSeeds(seed).image_order).permutation(len(labels))
    correct_order = order[predictions[order] == labels[order]]
    if len(correct_order) < count:
        raise ValueError(f"Only {len(correct_order)} test images are classified correctly; asked for {count}.")
    return np.sort(correct_order[:count])


def fit_image_indices(train_size: int, count: int, seed: int) -> np.ndarray:
    """The training images that table searches and other fitting steps use: ``count`` of them in a seeded order."""
    return np.random.default_rng(RunSeeds(seed).fit_image_order).permutation(train_size)[:count]


def _predict_labels(classifier: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.asarray(classifier.predict(x, batch_size=batch_size)).argmax(1)


class Suite:
    """
    One evaluation run (see the module docstring); :func:`evaluate` is the entry point.

    :param world: This process's place in a ``torchrun`` launch (a single process by default). Every process runs the
        same steps on its share of the chunks; rank 0 alone writes ``results.json``, merged state and reports.
    """

    def __init__(self, config: EvaluationConfig, output: Path, world: World | None = None) -> None:
        self.config = config
        self.world = world if world is not None else World()
        self.verbose = config.verbose and self.world.is_main
        self.output = Path(output)
        self.state = self.output / "state"
        self.device = self.world.device(config.device)
        self.seeds = RunSeeds(config.seed)
        self.store = ChunkStore(self.world, self.verbose)
        self.engines = {engine: runner(self) for engine, runner in ENGINES.items()}
        requested = config.attack_specs()  # every spec is checked before anything is loaded or written
        for spec in config.defences:
            check_defence_spec(spec)
        self.results_file = self.output / "results.json"
        self.results = load_results(self.results_file) if self.results_file.is_file() else Results()
        held = self._check_output_reuse(requested)
        self.requested = _union(held, requested)  # what the tables stand on: this command's and earlier commands'
        #: every attack of this output (sanity attacks added): each defence of this command runs all of them
        self.recorded = self._with_sanity(self.requested)

    def _with_sanity(self, attacks: list[AttackSpec]) -> list[AttackSpec]:
        if not self.config.sanity_checks:
            return attacks
        return _union(attacks, [parse_attack(spec) for spec in SANITY_ATTACKS])

    def _check_output_reuse(self, requested: list[AttackSpec]) -> list[AttackSpec]:
        """
        The attacks of the run already in the output directory. A run with other settings is refused; one with other
        defences or attacks too, unless the config says ``extend``.

        :raises ValueError: naming the differing settings.
        """
        previous = self.results.config or {}
        differing = _differing_options(previous, asdict(self.config), RESUMABLE_OPTIONS)
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

    def _invocations(self) -> list[dict[str, Any]]:
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
        entry["environment"] = _environment(self.device, entry.get("environment"), self.world.size)
        return invocations

    def run(self) -> dict[str, Any]:
        config = self.config
        if self.device.startswith("cuda:"):  # ART's estimators and preprocessors (and NCCL) use the current device
            torch.cuda.set_device(self.device)
        self._check_same_config()
        seed_global_generators(self.seeds.run, ("torch",))  # for models built with random weights, user defences
        self.model = load_classifier(config.classifier, self.device)
        test = self.world.main_first(lambda: load_dataset(config, "test"))  # rank 0 decodes and caches, others read
        self.input_shape = tuple(test.images.shape[1:])
        for attack in self.recorded:
            check_l2_budget(attack, int(np.prod(self.input_shape)))
        self.state.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            self.nb_classes = int(self.model(test.images[:1].float().div(255).to(self.device)).shape[1])
        undefended = make_classifier(self.model, [], self.input_shape, self.nb_classes, self.device)
        self.test = test
        self.y_full = test.labels.numpy()
        clean_predictions = self._undefended_predictions(undefended)
        self.indices = select_clean_correct(clean_predictions, self.y_full, config.num_images, config.seed)
        self.examined = np.sort(np.flatnonzero(clean_predictions >= 0))  # the clean-accuracy sample
        self.x, self.y = test.as_float(self.indices), self.y_full[self.indices]  # the selection only, not the split
        self.chunks = chunk_bounds(len(self.indices), config.chunk_size)
        self.fit = FitData(self._load_fit_images, undefended, self.state, config.seed, self.verbose)
        self._record_run(test, clean_predictions)
        for spec in config.defences:
            self._evaluate_defence(spec)
        if self.world.is_main:
            from art_purifiers.evaluation.report import write_reports

            self._mark_missing_attacks()
            self._save()
            write_reports(self.results, self.output)
        self.world.barrier()
        return self.results.to_json()

    def _record_run(self, test: ImageDataset, clean_predictions: np.ndarray) -> None:
        """What ``results.json`` says of the whole run: configuration, commands, environment, data and attacks."""
        config = self.config
        requested = {a.slug for a in self.requested}
        examined = clean_predictions[self.examined]
        results = self.results
        results.config = {
            **asdict(config),
            "defences": list(dict.fromkeys([*(results.config or {}).get("defences", []), *config.defences])),
            "attacks": [a.spec for a in self.requested],
        }
        results.invocations = self._invocations()
        results.environment = _environment(self.device, results.environment, self.world.size)
        results.data = {
            "source": test.source,
            "test_images": len(test),
            "examined_images": len(self.examined),
            "note": test.note,
            "undefended_clean_accuracy": float((examined == self.y_full[self.examined]).mean()),
            "selected_indices": self.indices.tolist(),
        }
        results.attacks = [
            AttackRecord(a.label, a.kind, a.eps, a.steps, a.eot, sanity_only=a.slug not in requested, group=a.group)
            for a in self.recorded
        ]

    def _mark_missing_attacks(self) -> None:
        """
        Per defence and threat model, the attacks of this output (of any of its commands) that have not run on the
        defence (``missing``): its cell is then only an upper bound, and the report says so.
        """
        for entry in self.results.defences.values():
            for group, figures in (entry.robust or {}).items():
                missing = [a.label for a in self.requested if a.group == group and a.label not in entry.rows]
                figures.missing = missing or None

    def _check_same_config(self) -> None:
        """
        :raises ValueError: if the processes of a launch were given different configurations (rank 0's is shown).
        """
        mine = asdict(self.config)
        first = self.world.broadcast(mine if self.world.is_main else None)
        differing = _differing_options(first, mine, ("command", "verbose"))
        if differing:
            details = ", ".join(f"{key}: {first.get(key)!r} on rank 0, {mine[key]!r} here" for key in differing)
            raise ValueError(f"Rank {self.world.rank} was given another configuration than rank 0 ({details}).")

    def _undefended_predictions(self, undefended: Any) -> np.ndarray:
        """
        The undefended classifier's labels of the test images, -1 where none is needed: the images are classified in
        their seeded order, chunk by chunk (shared among the processes), until ``num_images`` correct ones are found
        and ``clean_images`` were classified. Cached in the state directory for resumed runs.
        """
        file = self.state / "undefended-predictions.npy"
        cached = self.world.broadcast(np.load(file) if self.world.is_main and file.is_file() else None)
        size = len(self.test)
        predictions = cached if cached is not None and cached.shape == (size,) else np.full(size, -1)
        order = np.random.default_rng(self.seeds.image_order).permutation(size)
        wanted = size if self.config.clean_images == 0 else min(self.config.clean_images or 0, size)
        done = int(np.argmin(predictions[order] >= 0)) if (predictions < 0).any() else size
        while done < size:
            correct = int((predictions[order[:done]] == self.y_full[order[:done]]).sum())
            if correct >= self.config.num_images and done >= wanted:
                break
            # enough for the images still missing at the accuracy seen so far, and at least a chunk
            rate = max(correct / done if done else 0.9, 0.05)
            step = max(wanted - done, int(1.1 * (self.config.num_images - correct) / rate) + 1)
            end = min(size, done + max(step, self.config.chunk_size))  # not the process count: the same on any
            chunks = self._chunked(None, lambda start, stop: {"values": _predict_labels(
                undefended, self.test.as_float(order[start:stop]), self.config.batch_size)},
                "clean predictions", chunk_bounds(end - done, self.config.chunk_size, offset=done))  # fmt: skip
            predictions[order[done:end]] = gathered(chunks, "values")
            done = end
        if self.world.is_main:
            np.save(file, predictions)
        return predictions

    def _over_examined(self, compute: Callable[[np.ndarray, int, int], np.ndarray], desc: str) -> np.ndarray:
        """
        ``compute(images, start, end)`` over the examined test images (positions ``[start, end)`` of
        ``self.examined``), chunk by chunk (shared among the processes).
        """
        chunks = self._chunked(
            None,
            lambda start, end: {"values": compute(self.test.as_float(self.examined[start:end]), start, end)},
            desc,
            chunk_bounds(len(self.examined), self.config.chunk_size),
        )
        return gathered(chunks, "values")

    def _chunked(
        self,
        folder: Path | None,
        compute: Callable[[int, int], dict[str, Any]],
        desc: str,
        chunks: Sequence[tuple[int, int]] | None = None,
        costs: dict[int, float] | None = None,
    ) -> list[dict[str, Any]]:
        """:meth:`.ChunkStore.run` over the selected images' chunks unless ``chunks`` are given."""
        return self.store.run(folder, compute, desc, self.chunks if chunks is None else chunks, costs)

    def _load_fit_images(self) -> tuple[np.ndarray, np.ndarray]:
        train = load_dataset(self.config, "train")
        fit_indices = fit_image_indices(len(train), self.config.fit_images, self.config.seed)
        return train.as_float(fit_indices), train.labels.numpy()[fit_indices]

    # --- one defence -------------------------------------------------------------------------------------------------
    def _evaluate_defence(self, spec: str) -> None:
        config = self.config
        entry = self.results.defences.setdefault(spec, DefenceResult())
        directory = self.state / "".join(c if c.isalnum() or c in "-_=." else "_" for c in spec)
        directory.mkdir(parents=True, exist_ok=True)
        defences, info = self.world.main_first(lambda: build_defences(spec, self.fit))  # rank 0 fits, others read
        entry.info = info
        is_random = randomized(defences)
        entry.randomized = is_random
        draws = config.draws if is_random else 1
        # per-draw correctness on the clean images: the clean row and every attack's success rate use it
        clean_correct = gathered(self._chunked(None, lambda start, end: {
            "correct": self._correct_over_draws(defences, self.x[start:end], self.y[start:end], draws, start).T
        }, "clean"), "correct", axis=1).astype(bool)  # fmt: skip
        self._clean_columns = clean_correct.T[:, None, :].astype(np.int8)
        if entry.clean is None:
            entry.clean = self._clean_metrics(defences, clean_correct)
            self._save()
        if entry.gradients is None:
            report = self._gradient_report(defences, is_random) if self.world.is_main else None
            entry.gradients = self.world.broadcast(report)
            self._save()
        self._gradients = entry.gradients
        for attack in tqdm(self.recorded, desc=f"{spec}: attacks", disable=not self.verbose):
            # v2 rows refresh from their saved state; a finished ART row is kept while its per-image state is there
            # (without it the worst case would silently leave the attack out)
            finished = attack.label in entry.rows and attack.engine is Engine.ART
            if finished and self.world.broadcast(self._read(directory / f"{attack.slug}.npz") is not None):
                continue
            row = self._run_attack(attack, defences, directory, clean_correct, is_random)
            self.world.barrier()  # rank 0 has written the attack's merged state: later attacks read it
            if row is not None:
                entry.rows[attack.label] = row
                self._save()
        if not self.world.is_main:
            return
        entry.robust = self._robust_by_group(directory)
        entry.sanity = sanity.run_checks(entry, self.recorded, len(self.indices))
        for check in entry.sanity:
            if not check.passed:
                print(f"WARNING [{spec}] sanity check failed: {check.name}: {check.detail}", file=sys.stderr)
        self._save()

    def _predict_draws(self, chain: list[Any], x: torch.Tensor, draws: int, start: int) -> np.ndarray:
        """
        (images, draws) labels predicted through ``chain`` for images of the chunk at ``start``: draw ``d`` re-seeds
        the defence from the draw's seed and the chunk, so a chunk's draws do not depend on the other chunks.
        """
        defended = cascade.DefendedModel(self.model, chain)
        draw_seeds = [self.seeds.draw(draw, start) for draw in range(draws)]
        return cascade.predict_draws(defended, lambda seed: reseed(chain, seed), x, draw_seeds, self.config.batch_size)

    def _correct_over_draws(self, chain: list[Any], x: np.ndarray | torch.Tensor, y: np.ndarray, draws: int,
                            start: int) -> np.ndarray:  # fmt: skip
        """(images, draws) int8 correctness of ``x`` (images of the chunk at ``start``) through ``chain``."""
        labels = self._predict_draws(chain, torch.as_tensor(x, device=self.device), draws, start)
        return (labels == np.asarray(y)[:, None]).astype(np.int8)

    def _read(self, file: Path) -> dict[str, np.ndarray] | None:
        """A state file's arrays (:func:`.chunks.load_state`); only rank 0 sets an unreadable file aside."""
        return load_state(file, set_aside=self.world.is_main)

    def _classifier(self, defences: list[Any], eot: int = 1) -> Any:
        return make_classifier(self.model, defences, self.input_shape, self.nb_classes, self.device, eot)

    def _clean_metrics(self, defences: list[Any], clean_correct: np.ndarray) -> dict[str, Any]:
        """
        Accuracy on the examined test images (``full_split_accuracy``, a key kept from when they were always the whole
        split; shared among the processes), image quality and speed (rank 0, broadcast).
        """

        labels = self.y_full[self.examined]
        full = self._over_examined(
            lambda images, start, end: self._correct_over_draws(defences, images, labels[start:end], 1, start)[:, 0],
            "clean accuracy",
        )
        return self.world.broadcast(
            self._quality_and_speed(defences, clean_correct, full) if self.world.is_main else None
        )

    def _quality_and_speed(self, defences: list[Any], clean_correct: np.ndarray, full: np.ndarray) -> dict[str, Any]:
        config = self.config
        result: dict[str, Any] = {
            "full_split_accuracy": float(full.mean()),
            "full_split_images": int(full.size),
            **accuracy_summary(clean_correct),
        }
        if defences:
            classifier = self._classifier(defences)
            reseed(defences, self.seeds.fitting)
            purified, _ = _apply_chain(classifier, self.x)
            result["quality"] = metrics.image_quality(self.x, purified)
            started = time.perf_counter()  # a second, warm pass for the throughput
            _apply_chain(classifier, self.x)
            result["defence_images_per_second"] = len(self.x) / (time.perf_counter() - started)
            batch = self.x[: config.batch_size]
            labels = np.eye(self.nb_classes)[self.y[: config.batch_size]]
            started = time.perf_counter()
            classifier.loss_gradient(batch, labels)
            result["gradient_images_per_second"] = len(batch) / (time.perf_counter() - started)
            if randomized(defences):
                second, _ = _apply_chain(classifier, self.x)
                result["randomness"] = metrics.randomness(purified, second)
        return result

    def _run_attack(
        self, attack: AttackSpec, defences: list[Any], directory: Path, clean_correct: np.ndarray, is_random: bool
    ) -> Row | None:
        """One attack's row for a defence, from the engine of its kind (``None``: the attack is not run)."""
        return self.engines[attack.engine].run(attack, defences, directory, clean_correct, is_random)

    def _robust_by_group(self, directory: Path) -> dict[str, RobustFigures]:
        """
        The headline per threat model: robust accuracy over every attack of the group in every draw, with the
        per-image tensor saved to ``correctness-<group>.npz`` (columns: clean, then the attacks in run order).
        """
        groups: dict[str, Any] = {}
        for group in dict.fromkeys(a.group for a in self.recorded if a.group != "minimum-norm L2"):
            found = self._columns(directory, group)
            if len(found) < 2:
                continue
            tensor = np.concatenate([columns for _, columns in found], axis=1)
            labels = [label for label, columns in found for _ in range(columns.shape[1])]
            file = directory / ("correctness-" + "".join(c if c.isalnum() else "_" for c in group) + ".npz")
            saved = load_state(file)
            if saved is None or not np.array_equal(saved["correct"], tensor):
                save_atomic(file, correct=tensor, columns=np.array(labels), indices=self.indices)
            per_image = robust.robust_correct(tensor).astype(int).tolist()
            groups[group] = RobustFigures.from_json(
                {**robust.summarise(tensor), "attacks": [label for label, _ in found[1:]], "per_image": per_image}
            )
        return groups

    # --- v2 attacks --------------------------------------------------------------------------------------------------
    def _gradient_report(self, defences: list[Any], is_random: bool) -> dict[str, Any]:
        """Zero-gradient share, norms and EOT consistency of the defended model (:func:`.cascade.gradient_report`)."""
        count = self.config.consistency_images
        x = torch.as_tensor(self.x[:count], device=self.device)
        y = torch.as_tensor(self.y[:count], device=self.device)
        draws = tuple(k for k in (1, 2, 5, 10, 20, 30) if k <= max(30, self.config.eot_cap)) if is_random else (1,)
        reseed(defences, self.seeds.gradient_report)
        report = cascade.gradient_report(cascade.DefendedModel(self.model, defences), x, y, draws)
        report["eot_choice"] = cascade.choose_eot(report["consistency"], cap=self.config.eot_cap)
        return report

    def _group_columns(self, group: str, directory: Path) -> np.ndarray:
        """(images, columns, draws) correctness of the attacks of ``group`` that ran before, with the clean column."""
        return np.concatenate([c for _, c in self._columns(directory, group)], axis=1)

    def _columns(self, directory: Path, group: str | None = None) -> list[tuple[str, np.ndarray]]:
        """Per attack (label, (images, columns, draws) correctness), the clean column first; one group or all."""
        draws = self._clean_columns.shape[2]
        found = [("clean", self._clean_columns)]
        for attack in self.recorded:
            file = directory / f"{attack.slug}.npz"
            saved = None if group is not None and attack.group != group else self._read(file)
            if saved is None:
                continue
            if "columns" in saved:
                found.append((attack.label, saved["columns"]))
            elif "correct" in saved and saved["correct"].shape[0] == draws:
                found.append((attack.label, saved["correct"].T[:, None, :].astype(np.int8)))
        return found

    def _save(self) -> None:
        if not self.world.is_main:  # rank 0 alone writes results.json
            return
        temporary = self.results_file.with_suffix(".tmp")
        self.results.schema_version = SCHEMA_VERSION
        temporary.write_text(json.dumps(self.results.to_json(), indent=1, default=_jsonable))
        temporary.replace(self.results_file)


def _union(first: Sequence[AttackSpec], second: Sequence[AttackSpec]) -> list[AttackSpec]:
    """The attacks of ``first``, then those of ``second`` that ``first`` lacks (by their state file's name)."""
    slugs = {attack.slug for attack in first}
    return [*first, *(attack for attack in second if attack.slug not in slugs)]


def _differing_options(reference: dict[str, Any], config: dict[str, Any], ignored: Sequence[str]) -> list[str]:
    """The options of ``config`` that ``reference`` holds with another value, ``ignored`` aside."""
    return sorted(
        key for key, value in config.items() if key not in ignored and key in reference and reference[key] != value
    )


def _apply_chain(classifier: Any, x: np.ndarray) -> tuple[np.ndarray, Any]:
    """Run ART's preprocessing chain of a classifier (what the model sees)."""
    with torch.no_grad():
        return classifier._apply_preprocessing(x, y=None, fit=False)  # noqa: SLF001 - ART's own path


def _environment(device: str, previous: dict[str, Any] | None = None, processes: int = 1) -> dict[str, Any]:
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


def evaluate(config: EvaluationConfig, output: str | Path) -> dict[str, Any]:
    """
    Run (or resume) an evaluation and write ``output/results.json``, ``results.md``, ``results.csv`` and plots.

    Under ``torchrun`` every process calls this with the same arguments: they join a gloo process group, share the
    chunks of images, and rank 0 writes the outputs and returns the whole results dict (the others return theirs
    without the robust-accuracy summaries and sanity checks).

    :return: The results dict (what ``results.json`` holds).
    """
    world, created = init_world()
    try:
        return Suite(config, Path(output), world).run()
    finally:
        if created:
            torch.distributed.destroy_process_group()
