"""Defences built from specs (fitting the data-driven ones), the classifier under attack, and ART attacks."""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier

from art_purifiers.attacks.learned_bpda import Approximator, LearnedBPDA, train_approximator
from art_purifiers.base import PurifierPreprocessor
from art_purifiers.evaluation import seeds
from art_purifiers.evaluation.specs import CW_BINARY_SEARCH_STEPS, AttackKind, AttackSpec, parse_spec


@dataclass
class FitData:
    """
    What data-driven defence steps (table search, table learning, learned BPDA) fit on: held-out images, loaded by
    ``load`` on first use only (a run whose defences fit nothing never decodes the training split).
    """

    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    undefended: PyTorchClassifier
    state_dir: Path
    seed: int = 0
    verbose: bool = True
    cache: dict[str, Any] = field(default_factory=dict)

    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        if "data" not in self.cache:
            self.cache["data"] = self.load()
        return self.cache["data"]

    @property
    def x(self) -> np.ndarray:
        """The fit images (NCHW float32 in [0, 1])."""
        return np.asarray(self._data()[0])

    @property
    def y(self) -> np.ndarray:
        """Their labels."""
        return np.asarray(self._data()[1])

    def adversarial(self, kind: str) -> np.ndarray:
        """Adversarial versions of the fit images against the undefended model (cached on disk)."""
        from art.attacks.evasion import CarliniL2Method, ProjectedGradientDescent

        file = self.state_dir / f"fit-{kind}.npy"
        if file.is_file():
            return np.load(file)
        if kind == "cw":
            attack = CarliniL2Method(
                self.undefended,
                confidence=0.0,
                learning_rate=0.01,
                binary_search_steps=5,
                max_iter=20,
                initial_const=0.1,
                batch_size=128,
                verbose=self.verbose,
            )
        else:
            attack = ProjectedGradientDescent(
                self.undefended, eps=8 / 255, eps_step=1 / 255, max_iter=20, batch_size=128, verbose=self.verbose
            )
        seeds.seed_global_generators(self.seed, ("numpy",))  # ART's attacks draw from NumPy's global generator
        x_adv = attack.generate(self.x, y=np.eye(self.undefended.nb_classes)[self.y]).astype(np.float32)
        file.parent.mkdir(parents=True, exist_ok=True)
        np.save(file, x_adv)
        return x_adv


def build_defences(spec: str, fit: FitData | None) -> tuple[list[Any], dict[str, Any]]:
    """
    The preprocessing chain of a defence spec, and what was fitted (for the report).

    ``none``; ``jpeg:quality=Q`` (ART's ``JpegCompression``); ``NNFavoredJpeg[:table=search,...]`` (Algorithm 1 on
    PGD examples of the fit images); ``QuantizeDistort[:table=learned|default,...]`` (Algorithm 2 on C&W examples);
    ``CompressRestore[:qf_range=(40,40),n_iter=1,restorers={40:'none'},...]`` (its ablations);
    ``SuperResolution[:denoise=False,upsampler='bicubic',output_size='upscaled',...]`` (its ablations);
    ``NeuralRepresentationPurifier[:network='runs/nrp-light/cifar10-nrp-light.pt',dynamic=True]``.
    """
    from art_purifiers import JpegCompressionPyTorch

    if _USER_DEFENCE.fullmatch(spec.strip()):
        return user_defences(spec.strip()), {"spec": spec, "note": "user defence (module:attribute)"}
    key, options = _checked_names(spec)
    info: dict[str, Any] = {"spec": spec}
    if key == "none":
        return [], info
    if key == "jpeg":  # ART's JpegCompression, the same pixels on the run's device
        info["note"] = "ART's JpegCompression on tensors (truncates to 8 bits, BPDA = identity in backward)"
        return [JpegCompressionPyTorch(quality=options.get("quality", 75), device_type=fit_device(fit))], info
    table = options.pop("table", "default")
    defence = defence_class(key)(device_type=fit_device(fit), **options)
    if table == "search":
        params = _cached_fit(fit, spec, lambda f: _search_table(defence, f))
        defence.set_params(**{k: v for k, v in params.items() if k in defence.params})
        info["fitted"] = params
    elif table == "learned":
        learned = _cached_fit(fit, spec, lambda f: {"table": defence.learn_table(f.x, f.adversarial("cw")).tolist()})
        defence.set_params(table=np.asarray(learned["table"]))
        info["fitted"] = learned
    if key == "quantizedistort":
        info["table"] = np.asarray(defence.table).round(1).tolist()
    return [defence], info


#: A user's own defence: ``package.module:attribute``.
_USER_DEFENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
#: The defences a spec names (lower-case name -> class name in :mod:`art_purifiers`).
DEFENCES = {
    "nnfavoredjpeg": "NNFavoredJpeg",
    "quantizedistort": "QuantizeDistort",
    "compressrestore": "CompressRestore",
    "superresolution": "SuperResolution",
    "neuralrepresentationpurifier": "NeuralRepresentationPurifier",
}
#: The ``table=`` choices of the data-driven defences (the first is the default; the others are fitted).
TABLE_CHOICES = {"nnfavoredjpeg": ("default", "search"), "quantizedistort": ("default", "learned")}


def defence_class(key: str) -> Any:
    """The class of a defence named in a spec (its lower-case name, a key of :data:`DEFENCES`)."""
    import art_purifiers

    return getattr(art_purifiers, DEFENCES[key])


def defence_options(key: str) -> list[str]:
    """
    The options a spec may give a defence: ``table`` where it is fitted, its own parameters, then those every defence
    of ours shares (:class:`~art_purifiers.base.PurifierPreprocessor`'s ``params``) but :data:`SUITE_SETS`.
    """
    if key == "none":
        return []
    if key == "jpeg":
        return ["quality"]
    own = [name for name in defence_class(key).params if name not in PurifierPreprocessor.params]
    shared = [name for name in PurifierPreprocessor.params if name not in SUITE_SETS]
    return list(dict.fromkeys([*(["table"] if key in TABLE_CHOICES else []), *own, *shared]))


#: Defence parameters the suite sets itself (its images are NCHW in [0, 1] on the run's device).
SUITE_SETS = ("clip_values", "channels_first", "device_type")


def _checked_names(spec: str) -> tuple[str, dict[str, Any]]:
    """The spec's lower-case defence name and options, with the name, the option names and ``table`` checked."""
    name, options = parse_spec(spec)
    key = name.lower()
    if key not in ("none", "jpeg", *DEFENCES):
        known = ", ".join(["none", "jpeg", *DEFENCES.values()])
        raise ValueError(
            f"Unknown defence {name!r}; known: {known}, or package.module:attribute (art-purifiers list shows them)."
        )
    allowed = defence_options(key)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {', '.join(unknown)} for defence {name!r}; it takes: {', '.join(allowed) or 'none'}."
        )
    choices = TABLE_CHOICES.get(key, ())
    if "table" in options and options["table"] not in choices:
        raise ValueError(f"Defence {name!r}: table must be one of {', '.join(choices)}, got {options['table']!r}.")
    quality = options.get("quality", 75)
    if key == "jpeg" and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100):
        raise ValueError(f"Defence 'jpeg': quality must be an integer from 1 to 100, got {quality!r}.")
    return key, options


def check_defence_spec(spec: str) -> None:
    """
    Check a defence spec before anything is loaded: its name, its option names and ``table``, and the values of its
    other options (the defence is built once on the CPU when options are given; its defaults are valid). A user's
    ``module:attribute`` is imported and looked up.

    :raises ValueError: naming the spec and the problem.
    """
    if _USER_DEFENCE.fullmatch(spec.strip()):
        module_name, _, attribute = spec.strip().partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(f"Defence {spec!r}: cannot import {module_name!r} ({error}).") from None
        if not hasattr(module, attribute):
            raise ValueError(f"Defence {spec!r}: module {module_name!r} has no attribute {attribute!r}.")
        return
    key, options = _checked_names(spec)
    options.pop("table", None)
    if key in DEFENCES and options:
        try:
            defence_class(key)(device_type="cpu", **options)
        except (ValueError, TypeError) as error:
            raise ValueError(f"Defence {spec!r}: {error}") from None


def user_defences(spec: str) -> list[Any]:
    """
    A user's own defence, ``package.module:attribute``: an ART preprocessor, a list of them, or a function or class
    returning one (called without arguments).

    :raises TypeError: if the attribute gives something else.
    """
    from art.defences.preprocessor.preprocessor import Preprocessor

    module_name, _, attribute = spec.partition(":")
    target = getattr(importlib.import_module(module_name), attribute)
    if callable(target) and not isinstance(target, Preprocessor):
        target = target()
    chain = list(target) if isinstance(target, (list, tuple)) else [target]
    if not chain or not all(isinstance(defence, Preprocessor) for defence in chain):
        raise TypeError(f"{spec} gave {type(target).__name__}; expected an ART Preprocessor or a list of them.")
    return chain


def fit_device(fit: FitData | None) -> str:
    """ART's ``device_type`` of the run ("gpu" when its undefended classifier is on CUDA)."""
    return "gpu" if fit is not None and str(fit.undefended.device).startswith("cuda") else "cpu"


def _cached_fit(fit: FitData | None, spec: str, compute: Callable[[FitData], dict[str, Any]]) -> dict[str, Any]:
    if fit is None:
        raise ValueError(f"Defence {spec!r} must be fitted on data, and no fit data was given.")
    file = fit.state_dir / ("fit-" + "".join(c if c.isalnum() else "_" for c in spec) + ".json")
    if file.is_file():
        return dict(json.loads(file.read_text()))
    result = compute(fit)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(result, indent=1))
    return result


def _search_table(defence: Any, fit: FitData) -> dict[str, Any]:
    x_adv = fit.adversarial("pgd")
    result = defence.search_table(fit.undefended, fit.x, fit.y, x_adv, fit.y, verbose=fit.verbose)
    chosen = {
        key: (float(value) if isinstance(value, (float, np.floating)) else value)
        for key, value in result.params.items()
        if not isinstance(value, np.ndarray)
    }
    return {**chosen, "search_rows": len(result.rows), "adversarial": "PGD Linf 8/255, 20 steps, undefended model"}


def randomized(defences: list[Any]) -> bool:
    """Whether two passes through the chain may differ."""
    return any(getattr(defence, "randomized", False) for defence in defences)


def reseed(defences: list[Any], seed: int) -> None:
    """Re-seed every randomized defence of the chain, also inside a learned-BPDA wrapper (reproducible runs)."""
    for index, defence in enumerate(defences):
        defence = defence.defence if isinstance(defence, LearnedBPDA) else defence
        if isinstance(defence, PurifierPreprocessor):
            defence.set_params(seed=seeds.defence_in_chain(seed, index))


def with_bpda(defences: list[Any], mode: str) -> list[Any]:
    """A copy of the chain with every defence of ours switched to ``bpda=mode`` (ART's NumPy defences: identity)."""
    chain = copy.deepcopy(defences)
    for defence in chain:
        if isinstance(defence, PurifierPreprocessor):
            defence.set_params(bpda=mode)
    return chain


def identity_copy(defences: list[Any]) -> list[Any]:
    """The chain with every defence of ours switched to ``bpda="identity"`` (ART's NumPy defences already are)."""
    return with_bpda(defences, "identity")


def _pgd(spec: AttackSpec, classifier: PyTorchClassifier, batch_size: int) -> Any:
    from art.attacks.evasion import ProjectedGradientDescent

    eps = float(spec.eps or 0.0)
    return ProjectedGradientDescent(
        classifier,
        norm=2 if spec.kind == AttackKind.PGD_L2 else np.inf,
        eps=eps,
        # Madry et al.'s step: 2.5 * eps / steps lets PGD travel the ball's diameter within the budget
        eps_step=float(spec.options.get("eps_step", 2.5 * eps / spec.steps)),
        max_iter=spec.steps,
        num_random_init=int(spec.options.get("restarts", 1)),
        batch_size=batch_size,
        verbose=False,
    )


def _autoattack(spec: AttackSpec, classifier: PyTorchClassifier, batch_size: int) -> Any:
    """ART's AutoAttack with the standard version's attacks: APGD-CE, APGD-DLR and Square."""
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent

    eps = float(spec.eps or 0.0)
    apgd = [
        AutoProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=spec.steps,
                                     nb_random_init=1, batch_size=batch_size, loss_type=loss, verbose=False)
        for loss in ("cross_entropy", "difference_logits_ratio")
    ]  # fmt: skip
    square = _square(AttackSpec(AttackKind.SQUARE, eps, int(spec.options.get("queries", 1000))), classifier, batch_size)
    return AutoAttack(classifier, norm=np.inf, eps=eps, eps_step=2 * eps, attacks=[*apgd, square],
                      batch_size=batch_size)  # fmt: skip


def _carlini_wagner(spec: AttackSpec, classifier: PyTorchClassifier, batch_size: int) -> Any:
    from art.attacks.evasion import CarliniL2Method

    return CarliniL2Method(
        classifier,
        confidence=0.0,
        learning_rate=float(spec.options.get("lr", 0.01)),
        binary_search_steps=int(spec.options.get("binary_search_steps", CW_BINARY_SEARCH_STEPS)),
        max_iter=spec.steps,
        initial_const=float(spec.options.get("initial_const", 0.1)),
        batch_size=batch_size,
        verbose=False,
    )


def _deepfool(spec: AttackSpec, classifier: PyTorchClassifier, batch_size: int) -> Any:
    from art.attacks.evasion import DeepFool

    return DeepFool(classifier, max_iter=spec.steps, epsilon=0.02, nb_grads=10, batch_size=batch_size, verbose=False)


def _square(spec: AttackSpec, classifier: PyTorchClassifier, batch_size: int) -> Any:
    from art.attacks.evasion import SquareAttack

    restarts = int(spec.options.get("restarts", 1))
    return SquareAttack(classifier, norm=np.inf, eps=float(spec.eps or 0.0), max_iter=spec.steps, p_init=0.8,
                        nb_restarts=restarts, batch_size=batch_size, verbose=False)  # fmt: skip


#: The ART attack of every kind that ART's engine runs (:data:`~.specs.ENGINES`): the one place where such a spec
#: becomes an attack. The PGD variants differ in the chain they attack (see ``Suite``), not in the attack.
ART_ATTACKS: dict[AttackKind, Callable[[AttackSpec, PyTorchClassifier, int], Any]] = {
    AttackKind.PGD: _pgd,
    AttackKind.PGD_L2: _pgd,
    AttackKind.PGD_EOT: _pgd,
    AttackKind.PGD_IDENTITY: _pgd,
    AttackKind.LEARNED_BPDA: _pgd,
    AttackKind.AUTOATTACK: _autoattack,
    AttackKind.CW: _carlini_wagner,
    AttackKind.DEEPFOOL: _deepfool,
    AttackKind.SQUARE: _square,
}


def make_attack(spec: AttackSpec, classifier: PyTorchClassifier, batch_size: int) -> Any:
    """The ART attack of a spec, with its budget resolved to ART's parameters."""
    if spec.kind not in ART_ATTACKS:
        raise ValueError(f"No ART attack for {spec.kind!r}: the adaptive engine runs it.")
    return ART_ATTACKS[spec.kind](spec, classifier, batch_size)


def learned_bpda_chain(defences: list[Any], fit: FitData, directory: Path, steps: int = 400) -> list[Any]:
    """
    The chain wrapped so its backward is a trained approximator's gradient.

    :param directory: The defence's own state directory, where the approximator is cached.
    """
    if len(defences) != 1:
        raise ValueError("Learned BPDA wraps exactly one defence.")
    defence = defences[0]
    file = directory / "learned-bpda-approximator.pt"
    if file.is_file():
        approximator = Approximator()
        approximator.load_state_dict(torch.load(file, weights_only=True))
        approximator.eval()
    else:
        approximator = train_approximator(
            defence, fit.x, steps=steps, seed=fit.seed, verbose=fit.verbose, device=fit.undefended.device
        )
        file.parent.mkdir(parents=True, exist_ok=True)
        torch.save({key: value.cpu() for key, value in approximator.state_dict().items()}, file)
    return [LearnedBPDA(defence, approximator, device_type=fit_device(fit))]
