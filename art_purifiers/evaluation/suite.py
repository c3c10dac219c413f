"""
The adaptive attack suite behind ``art-purifiers evaluate``.

Protocol (Carlini et al. 2019, "On Evaluating Adversarial Robustness"; Tramer et al. 2020): attack the first
``num_images`` test images (in a seeded random order) that the *undefended* classifier gets right, with every
attack through ART; report accuracy under attack (mean +- std over ``draws`` draws of a randomized defence, with a
Wilson 95% interval), attack success rate and perturbation norms, plus clean accuracy, image quality of purified
images, the defence's randomness, throughput and the sanity checks of :mod:`art_purifiers.evaluation.sanity`.

Runs are resumable: adversarial examples and per-image results go to ``output/state`` after every chunk of
images, and ``results.json`` after every attack; running the same command again continues where it stopped.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from tqdm.auto import tqdm

from art_purifiers.data import ImageDataset, load_cifar10, load_image_folder
from art_purifiers.evaluation import metrics, sanity
from art_purifiers.evaluation.specs import AttackSpec, parse_attack
from art_purifiers.evaluation.targets import (
    FitData,
    build_defences,
    identity_copy,
    learned_bpda_chain,
    load_classifier,
    make_attack,
    make_classifier,
    randomized,
    reseed,
)

#: The attacks of ``docs/results.md``.
DEFAULT_ATTACKS = (
    "pgd:eps=4/255,steps=50",
    "pgd:eps=8/255,steps=50",
    "pgd:eps=16/255,steps=50",
    "pgd-eot:eps=8/255,steps=20,k=10",
    "autoattack:eps=8/255",
    "square:eps=8/255,queries=500",
    "cw:steps=10",
)
#: Extra attacks the sanity checks need: fewer iterations, and a budget large enough to break any classifier.
SANITY_ATTACKS = ("pgd:eps=8/255,steps=10", "pgd:eps=8/255,steps=20", "pgd:eps=64/255,steps=20")
#: Shown next to every figure measured on the shared CIFAR-10 copy.
Q75_NOTE = (
    "The shared CIFAR-10 copy was re-encoded as JPEG quality 75: JPEG at q75 is nearly the identity on its clean "
    "images and snaps small perturbations back onto the q75 lattice, so q75 rows overstate robustness."
)


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
    device: str = "auto"
    command: str = ""
    verbose: bool = True


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
    order = np.random.default_rng(seed).permutation(len(labels))
    correct_order = order[predictions[order] == labels[order]]
    if len(correct_order) < count:
        raise ValueError(f"Only {len(correct_order)} test images are classified correctly; asked for {count}.")
    return np.sort(correct_order[:count])


def _predict_labels(classifier: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.asarray(classifier.predict(x, batch_size=batch_size)).argmax(1)


def _save_atomic(file: Path, **arrays: Any) -> None:
    temporary = file.with_name(file.name + ".tmp.npz")
    np.savez_compressed(temporary, **arrays)
    temporary.replace(file)


class Suite:
    """One evaluation run (see the module docstring); :func:`evaluate` is the entry point."""

    def __init__(self, config: EvaluationConfig, output: Path) -> None:
        self.config = config
        self.output = Path(output)
        self.state = self.output / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        device = config.device
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.attacks = [parse_attack(spec) for spec in config.attacks]
        if config.sanity_checks:
            self.attacks += [
                a for a in map(parse_attack, SANITY_ATTACKS) if a.slug not in {b.slug for b in self.attacks}
            ]
        self.results_file = self.output / "results.json"
        self.results: dict[str, Any] = json.loads(self.results_file.read_text()) if self.results_file.is_file() else {}
        previous = self.results.get("config")
        if previous and {
            k: v for k, v in previous.items() if k not in ("command", "verbose", "defences", "attacks")
        } != {k: v for k, v in asdict(config).items() if k not in ("command", "verbose", "defences", "attacks")}:
            raise ValueError(f"{self.output} holds a run with another configuration; use a new --output directory.")

    def run(self) -> dict[str, Any]:
        config = self.config
        torch.manual_seed(config.seed)
        self.model = load_classifier(config.classifier, self.device)
        test = load_dataset(config, "test")
        self.input_shape = tuple(test.images.shape[1:])
        with torch.no_grad():
            self.nb_classes = int(self.model(test.images[:1].float().div(255).to(self.device)).shape[1])
        undefended = make_classifier(self.model, [], self.input_shape, self.nb_classes, self.device)
        x_all = test.as_float()
        clean_predictions = _predict_labels(undefended, x_all, config.batch_size)
        self.indices = select_clean_correct(clean_predictions, test.labels.numpy(), config.num_images, config.seed)
        self.x, self.y = x_all[self.indices], test.labels.numpy()[self.indices]
        self.x_full, self.y_full = x_all, test.labels.numpy()
        train = load_dataset(config, "train")
        fit_indices = np.random.default_rng(config.seed + 1).permutation(len(train))[: config.fit_images]
        self.fit = FitData(
            train.as_float(fit_indices),
            train.labels.numpy()[fit_indices],
            undefended,
            self.state,
            config.seed,
            config.verbose,
        )
        requested = {parse_attack(spec).slug for spec in config.attacks}
        self.results.update(
            {
                "config": asdict(config),
                "environment": _environment(self.device),
                "data": {
                    "source": test.source,
                    "test_images": len(test),
                    "note": Q75_NOTE if "cifar10" in config.dataset else "",
                    "undefended_clean_accuracy": float((clean_predictions == self.y_full).mean()),
                    "selected_indices": self.indices.tolist(),
                },
                "attacks": [
                    {
                        "label": a.label,
                        "kind": a.kind,
                        "eps": a.eps,
                        "steps": a.steps,
                        "eot": a.eot,
                        "sanity_only": a.slug not in requested,
                    }
                    for a in self.attacks
                ],
            }
        )
        self.results.setdefault("defences", {})
        for spec in config.defences:
            self._evaluate_defence(spec)
        from art_purifiers.evaluation.report import write_reports

        write_reports(self.results, self.output)
        return self.results

    # --- one defence -------------------------------------------------------------------------------------------------
    def _evaluate_defence(self, spec: str) -> None:
        config = self.config
        entry = self.results["defences"].setdefault(spec, {"rows": {}})
        directory = self.state / "".join(c if c.isalnum() or c in "-_=." else "_" for c in spec)
        directory.mkdir(parents=True, exist_ok=True)
        defences, info = build_defences(spec, self.fit)
        entry["info"] = info
        is_random = randomized(defences)
        entry["randomized"] = is_random
        draws = config.draws if is_random else 1
        # per-draw correctness on the clean images: the clean row and every attack's success rate use it
        clean_correct = self._accuracy_over_draws(defences, self.x, self.y, draws)
        if "clean" not in entry:
            entry["clean"] = self._clean_metrics(defences, clean_correct)
            self._save()
        for attack in tqdm(self.attacks, desc=f"{spec}: attacks", disable=not config.verbose):
            if attack.label in entry["rows"]:
                continue
            row = self._run_attack(attack, defences, directory, clean_correct, is_random)
            if row is not None:
                entry["rows"][attack.label] = row
                self._save()
        entry["sanity"] = sanity.run_checks(entry, self.attacks, len(self.indices))
        for check in entry["sanity"]:
            if not check["passed"]:
                print(f"WARNING [{spec}] sanity check failed: {check['name']}: {check['detail']}", file=sys.stderr)
        self._save()

    def _classifier(self, defences: list[Any], eot: int = 1) -> Any:
        return make_classifier(self.model, defences, self.input_shape, self.nb_classes, self.device, eot)

    def _accuracy_over_draws(self, defences: list[Any], x: np.ndarray, y: np.ndarray, draws: int) -> np.ndarray:
        """Per-draw, per-image correctness (draws, n); draw d always uses the same defence seed."""
        classifier = self._classifier(defences)
        rows = []
        for draw in range(draws):
            reseed(defences, self.config.seed + 7919 * (draw + 1))
            rows.append(_predict_labels(classifier, x, self.config.batch_size) == y)
        return np.stack(rows)

    def _clean_metrics(self, defences: list[Any], clean_correct: np.ndarray) -> dict[str, Any]:
        config = self.config
        full = self._accuracy_over_draws(defences, self.x_full, self.y_full, 1)[0]
        result: dict[str, Any] = {
            "full_split_accuracy": float(full.mean()),
            "full_split_images": int(full.size),
            **_summary(clean_correct),
        }
        if defences:
            classifier = self._classifier(defences)
            reseed(defences, config.seed)
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
    ) -> dict[str, Any] | None:
        config = self.config
        notes = []
        eot = attack.eot
        if eot > 1 and not is_random:
            eot, notes = 1, ["deterministic defence: every EOT draw is the same, so k=1 was run"]
        if attack.kind == "autoattack" and is_random and eot == 1:
            notes.append("randomized defence attacked without EOT (add k=... for the EOT version)")
        if not defences and attack.kind in ("pgd-identity", "learned-bpda", "transfer", "pgd-eot"):
            return None  # identical to plain PGD without a defence
        if attack.kind == "pgd-identity":
            chain = identity_copy(defences)
        elif attack.kind == "transfer":
            chain = []
        elif attack.kind == "learned-bpda":
            chain = learned_bpda_chain(defences, self.fit, directory)
        else:
            chain = defences
        if eot > 1 and not all(isinstance(d, PreprocessorPyTorch) for d in chain):
            eot, notes = 1, notes + ["ART NumPy defence: EOT not available, k=1 was run"]
        classifier = self._classifier(chain, eot)
        file = directory / f"{attack.slug}.npz"
        n = len(self.x)
        x_adv, done, seconds = np.array(self.x, copy=True), 0, 0.0
        if file.is_file():
            saved = np.load(file)
            x_adv[: int(saved["done"])] = saved["x_adv"][: int(saved["done"])]
            done, seconds = int(saved["done"]), float(saved["seconds"])
        labels = np.eye(self.nb_classes)[self.y]
        with tqdm(total=n, initial=done, desc=attack.label, leave=False, disable=not config.verbose) as progress:
            while done < n:
                end = min(n, done + config.chunk_size)
                # Seeds per chunk: a resumed run draws what an uninterrupted one would have drawn.
                chunk_seed = config.seed * 1_000_003 + done
                np.random.seed(chunk_seed % 2**32)
                torch.manual_seed(chunk_seed)
                reseed(chain, chunk_seed)
                started = time.perf_counter()
                art_attack = make_attack(attack, classifier, config.batch_size)
                x_adv[done:end] = art_attack.generate(self.x[done:end], y=labels[done:end]).astype(np.float32)
                seconds += time.perf_counter() - started
                progress.update(end - done)
                done = end
                _save_atomic(file, x_adv=x_adv, done=done, seconds=seconds)
        correct = self._accuracy_over_draws(defences, x_adv, self.y, len(clean_correct))
        l2, linf = metrics.perturbation_norms(self.x, x_adv)
        _save_atomic(file, x_adv=x_adv, done=done, seconds=seconds, correct=correct, indices=self.indices)
        success = [(c & ~a).sum() / max(c.sum(), 1) for c, a in zip(clean_correct, correct)]
        return {
            "kind": attack.kind,
            "eps": attack.eps,
            "steps": attack.steps,
            "eot_requested": attack.eot,
            "eot": eot,
            **_summary(correct),
            "success_rate": float(np.mean(success)),
            "mean_l2": float(l2.mean()),
            "median_l2": float(np.median(l2)),
            "mean_linf": float(linf.mean()),
            "max_linf": float(linf.max()),
            "seconds": seconds,
            "images_per_second": n / max(seconds, 1e-9),
            "notes": notes,
        }

    def _save(self) -> None:
        temporary = self.results_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.results, indent=1, default=_jsonable))
        temporary.replace(self.results_file)


def _apply_chain(classifier: Any, x: np.ndarray) -> tuple[np.ndarray, Any]:
    """Run ART's preprocessing chain of a classifier (what the model sees)."""
    with torch.no_grad():
        return classifier._apply_preprocessing(x, y=None, fit=False)  # noqa: SLF001 - ART's own path


def _summary(correct: np.ndarray) -> dict[str, Any]:
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


def _environment(device: str) -> dict[str, Any]:
    import art

    import art_purifiers

    return {
        "art_purifiers": art_purifiers.__version__,
        "art": art.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


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

    :return: The results dict (what ``results.json`` holds).
    """
    return Suite(config, Path(output)).run()
