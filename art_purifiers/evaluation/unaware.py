"""
The attack-unaware ("gray-box") protocol of the purification papers: adversarial examples computed on the
undefended classifier, then purified and classified.

This is how Mustafa et al. (2019, Table 1) and Zhang & Gao (2021, Table 2) report their defences. It measures whether
a defence undoes perturbations made without knowledge of it, not robustness: an attacker who knows the defence
attacks through it (:mod:`art_purifiers.evaluation.suite`). Reports show both.

:func:`paper_attacks` gives Mustafa et al.'s attack list: FGSM at 2, 5 and 10 of 255, I-FGSM and MI-FGSM at 16 of 255,
DeepFool and C&W L2. :func:`attack_unaware` computes each attack's examples once, and the accuracy of every defence
on them, per image, so that the worst case over the attacks ("correct under every attack") is reported too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from art_purifiers.evaluation.cascade import check_budget
from art_purifiers.evaluation.robust import proportion

#: A function from images (NCHW float32 in [0, 1]) to predicted labels.
Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class UnawareAttack:
    """
    An attack run on the undefended classifier.

    :param label: Name in reports, e.g. ``"FGSM-2"``.
    :param build: Builds the ART attack from the undefended ART classifier.
    :param eps: Linf budget in [0, 1] units, or ``None`` for minimum-norm attacks (DeepFool, C&W).
    """

    label: str
    build: Callable[[Any], Any]
    eps: float | None = None


def paper_attacks(batch_size: int = 100, cw_steps: int = 100, cw_search_steps: int = 5) -> list[UnawareAttack]:
    """
    Mustafa et al.'s attacks (their Table 1): FGSM with eps 2, 5, 10 (of 255); I-FGSM and MI-FGSM with eps 16 (Kurakin
    et al.'s 20 steps of 1/255; Dong et al.'s 10 steps of eps/10, decay 1); DeepFool (50 iterations, overshoot 0.02);
    C&W L2 (confidence 0, ``cw_steps`` iterations for each of ``cw_search_steps`` binary-search steps).
    """
    from art.attacks.evasion import (
        BasicIterativeMethod,
        CarliniL2Method,
        DeepFool,
        FastGradientMethod,
        MomentumIterativeMethod,
    )

    def fgsm(eps: float) -> Callable[[Any], Any]:
        return lambda model: FastGradientMethod(model, eps=eps, batch_size=batch_size)

    def i_fgsm(model: Any) -> Any:
        return BasicIterativeMethod(
            model, eps=16 / 255, eps_step=1 / 255, max_iter=20, batch_size=batch_size, verbose=False
        )

    def mi_fgsm(model: Any) -> Any:
        return MomentumIterativeMethod(
            model, eps=16 / 255, eps_step=1.6 / 255, max_iter=10, decay=1.0, batch_size=batch_size, verbose=False
        )

    def deepfool(model: Any) -> Any:
        return DeepFool(model, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=batch_size, verbose=False)

    def carlini_wagner(model: Any) -> Any:
        return CarliniL2Method(
            model,
            confidence=0.0,
            learning_rate=0.01,
            binary_search_steps=cw_search_steps,
            max_iter=cw_steps,
            initial_const=0.1,
            batch_size=batch_size,
            verbose=False,
        )

    attacks = [UnawareAttack(f"FGSM-{k}", fgsm(k / 255), k / 255) for k in (2, 5, 10)]
    attacks += [
        UnawareAttack("I-FGSM", i_fgsm, 16 / 255),
        UnawareAttack("MI-FGSM", mi_fgsm, 16 / 255),
        UnawareAttack("DeepFool", deepfool),
        UnawareAttack("C&W", carlini_wagner),
    ]
    return attacks


def attack_unaware(
    undefended: Any,
    x: np.ndarray,
    y: np.ndarray,
    attacks: list[UnawareAttack],
    defences: Mapping[str, Predictor],
    cache: Path | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """
    Run each attack once on the undefended ART classifier and classify its examples behind every defence.

    :param undefended: ART classifier of the model without defence.
    :param x: Clean images (NCHW float32 in [0, 1]).
    :param y: Integer labels.
    :param attacks: The attacks (see :func:`paper_attacks`).
    :param defences: Name -> predictor of the defended model (e.g. ``"none"`` -> the undefended predictions).
    :param cache: A directory where each attack's examples are saved (``unaware-<label>.npz``) and reused when the
                  same images are evaluated again, e.g. behind other defences.
    :return: ``{"correct": {defence: (len(attacks), n) bool array}, "attacks": [...], "rows": {defence: {attack:
             summary}}}``, where a summary holds accuracy with its Wilson interval; the extra attack
             ``"every attack"`` is the per-image worst case.
    """
    one_hot = np.eye(undefended.nb_classes, dtype=np.float32)[y]
    adversarials: dict[str, np.ndarray] = {}
    for attack in tqdm(attacks, desc="attack-unaware examples", disable=not verbose):
        file = (
            None if cache is None else cache / ("unaware-" + "".join(c if c.isalnum() else "_" for c in attack.label))
        )
        if file is not None and file.with_suffix(".npz").is_file():
            saved = np.load(file.with_suffix(".npz"))
            if np.array_equal(saved["x"], x):
                adversarials[attack.label] = saved["x_adv"]
                continue
        x_adv = attack.build(undefended).generate(x, y=one_hot).astype(np.float32)
        check_budget(torch.from_numpy(x), torch.from_numpy(x_adv), "Linf", attack.eps, attack.label)
        adversarials[attack.label] = x_adv
        if file is not None:
            np.savez_compressed(file.with_suffix(".npz"), x=x, x_adv=x_adv)
    correct = {
        name: np.stack([predict(adversarials[attack.label]) == y for attack in attacks])
        for name, predict in tqdm(defences.items(), desc="defences", disable=not verbose)
    }
    rows = {name: summarise(per_attack, [attack.label for attack in attacks]) for name, per_attack in correct.items()}
    return {"correct": correct, "attacks": [attack.label for attack in attacks], "rows": rows}


def summarise(correct: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    """Accuracy and Wilson 95% interval per attack (rows of ``correct``), and under every attack at once."""
    table = {}
    for label, row in [*zip(labels, correct), ("every attack", correct.all(axis=0))]:
        share = proportion(row)
        table[label] = {
            "accuracy": share["accuracy"],
            "low": share["ci95"][0],
            "high": share["ci95"][1],
            "n": share["n"],
        }
    return table
