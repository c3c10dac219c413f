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
from torch import nn

from art_purifiers import zoo
from art_purifiers.attacks.eot import EOTPyTorchClassifier
from art_purifiers.attacks.learned_bpda import Approximator, LearnedBPDA, train_approximator
from art_purifiers.base import PurifierPreprocessor
from art_purifiers.evaluation.specs import CW_BINARY_SEARCH_STEPS, AttackSpec, parse_spec


def load_classifier(spec: str, device: str | torch.device = "cpu") -> nn.Module:
    """
    The model to defend: a zoo name (``cifar10-reference``), a weight file in the zoo format, or
    ``package.module:attribute`` naming an ``nn.Module`` or a function returning one (input NCHW in [0, 1]). A chain
    ``first+second`` of such specs applies them in order, clamping each output but the last to [0, 1] as a defence
    does: e.g. an attacker's own purifier before its surrogate, ``runs/nrp-attacker/purifier.pt+cifar10-surrogate``.
    """
    if "+" in spec and not Path(spec).is_file():
        stages: list[nn.Module] = []
        for part in spec.split("+"):
            stages += [load_classifier(part, device), nn.Hardtanh(0.0, 1.0)]
        return nn.Sequential(*stages[:-1]).to(device).eval()
    if spec in zoo.names():
        return zoo.load(spec, device=device)
    if Path(spec).is_file():
        return zoo.load_file(spec, device=device)
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
        model = target() if not isinstance(target, nn.Module) and callable(target) else target
        if not isinstance(model, nn.Module):
            raise TypeError(f"{spec} gave a {type(model).__name__}, not a torch.nn.Module.")
        return model.to(device).eval()
    raise ValueError(f"Classifier {spec!r} is neither a zoo name ({zoo.names()}), a weight file, nor module:attribute.")


def make_classifier(
    model: nn.Module, defences: list[Any], input_shape: tuple[int, ...], nb_classes: int, device: str, eot: int = 1
) -> PyTorchClassifier:
    """An ART classifier on [0, 1] NCHW inputs; an :class:`EOTPyTorchClassifier` when ``eot > 1``."""
    kwargs: dict[str, Any] = dict(
        loss=nn.CrossEntropyLoss(),
        input_shape=input_shape,
        nb_classes=nb_classes,
        clip_values=(0.0, 1.0),
        preprocessing_defences=defences or None,
        device_type="gpu" if device.startswith("cuda") else "cpu",
    )
    if eot > 1:
        return EOTPyTorchClassifier(model, eot_samples=eot, **kwargs)
    return PyTorchClassifier(model, **kwargs)


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
        np.random.seed(self.seed)
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
    from art.defences.preprocessor import JpegCompression

    from art_purifiers import NNFavoredJpeg, QuantizeDistort

    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec.strip()):
        return user_defences(spec.strip()), {"spec": spec, "note": "user defence (module:attribute)"}
    name, options = parse_spec(spec)
    key = name.lower()
    info: dict[str, Any] = {"spec": spec}
    if key == "none":
        return [], info
    if key == "jpeg":
        quality = int(options.pop("quality", 75))
        _reject_unknown(spec, options)
        info["note"] = "ART JpegCompression (PIL, truncates to 8 bits, BPDA = identity in backward)"
        return [JpegCompression(clip_values=(0.0, 1.0), quality=quality, channels_first=True)], info
    if key == "nnfavoredjpeg":
        table = options.pop("table", "default")
        defence = NNFavoredJpeg(device_type=fit_device(fit), **options)
        if table == "search":
            params = _cached_fit(fit, spec, lambda f: _search_table(defence, f))
            defence.set_params(**{k: v for k, v in params.items() if k in defence.params})
            info["fitted"] = params
        elif table != "default":
            raise ValueError(f"NNFavoredJpeg table must be 'search' or 'default', got {table!r}.")
        return [defence], info
    if key == "quantizedistort":
        table = options.pop("table", "default")
        defence = QuantizeDistort(device_type=fit_device(fit), **options)
        if table == "learned":
            learned = _cached_fit(
                fit, spec, lambda f: {"table": defence.learn_table(f.x, f.adversarial("cw")).tolist()}
            )
            defence.set_params(table=np.asarray(learned["table"]))
            info["fitted"] = learned
        elif table != "default":
            raise ValueError(f"QuantizeDistort table must be 'learned' or 'default', got {table!r}.")
        info["table"] = np.asarray(defence.table).round(1).tolist()
        return [defence], info
    if key in _NO_FIT_DEFENCES:
        import art_purifiers

        return [getattr(art_purifiers, _NO_FIT_DEFENCES[key])(device_type=fit_device(fit), **options)], info
    known = ", ".join(["none", "jpeg", "NNFavoredJpeg", "QuantizeDistort", *_NO_FIT_DEFENCES.values()])
    raise ValueError(f"Unknown defence {name!r}; known: {known}.")


#: Defences built from their spec's options alone (nothing fitted), by lower-case name.
_NO_FIT_DEFENCES = {
    "compressrestore": "CompressRestore",
    "superresolution": "SuperResolution",
    "neuralrepresentationpurifier": "NeuralRepresentationPurifier",
}


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


def _reject_unknown(spec: str, options: dict[str, Any]) -> None:
    if options:
        raise ValueError(f"Unknown options {sorted(options)} in defence spec {spec!r}.")


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
            defence.set_params(seed=seed * 1000 + index)


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


def make_attack(spec: AttackSpec, classifier: PyTorchClassifier, batch_size: int) -> Any:
    """The ART attack of a spec, with its budget resolved to ART's parameters."""
    from art.attacks.evasion import (
        AutoAttack,
        AutoProjectedGradientDescent,
        CarliniL2Method,
        DeepFool,
        ProjectedGradientDescent,
        SquareAttack,
    )

    options = dict(spec.options)
    eps = float(spec.eps) if spec.eps is not None else 0.0
    if spec.kind in ("pgd", "pgd-l2", "pgd-eot", "pgd-identity", "transfer", "learned-bpda"):
        # Madry et al.'s step: 2.5 * eps / steps lets PGD travel the ball's diameter within the budget
        eps_step = float(options.pop("eps_step", 2.5 * eps / spec.steps))
        return ProjectedGradientDescent(
            classifier,
            norm=2 if spec.kind == "pgd-l2" else np.inf,
            eps=eps,
            eps_step=eps_step,
            max_iter=spec.steps,
            num_random_init=int(options.pop("restarts", 1)),
            batch_size=batch_size,
            verbose=False,
        )
    if spec.kind == "autoattack":
        queries = int(options.pop("queries", 1000))
        apgd = [
            AutoProjectedGradientDescent(
                classifier,
                norm=np.inf,
                eps=eps,
                eps_step=2 * eps,
                max_iter=spec.steps,
                nb_random_init=1,
                batch_size=batch_size,
                loss_type=loss,
                verbose=False,
            )
            for loss in ("cross_entropy", "difference_logits_ratio")
        ]
        square = SquareAttack(
            classifier,
            norm=np.inf,
            eps=eps,
            max_iter=queries,
            p_init=0.8,
            nb_restarts=1,
            batch_size=batch_size,
            verbose=False,
        )
        return AutoAttack(
            classifier, norm=np.inf, eps=eps, eps_step=2 * eps, attacks=[*apgd, square], batch_size=batch_size
        )
    if spec.kind == "cw":
        return CarliniL2Method(
            classifier,
            confidence=0.0,
            learning_rate=float(options.pop("lr", 0.01)),
            binary_search_steps=int(options.pop("binary_search_steps", CW_BINARY_SEARCH_STEPS)),
            max_iter=spec.steps,
            initial_const=float(options.pop("initial_const", 0.1)),
            batch_size=batch_size,
            verbose=False,
        )
    if spec.kind == "deepfool":
        return DeepFool(
            classifier, max_iter=spec.steps, epsilon=0.02, nb_grads=10, batch_size=batch_size, verbose=False
        )
    if spec.kind == "square":
        return SquareAttack(
            classifier,
            norm=np.inf,
            eps=eps,
            max_iter=spec.steps,
            p_init=0.8,
            nb_restarts=int(options.pop("restarts", 1)),
            batch_size=batch_size,
            verbose=False,
        )
    raise ValueError(f"No ART attack for {spec.kind!r}.")


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
