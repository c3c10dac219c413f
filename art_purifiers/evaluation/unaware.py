"""
The attack-unaware ("gray-box") protocol of the purification papers: adversarial examples computed on the
undefended classifier, then purified and classified.

This is how Mustafa et al. (2019, Table 1) and Zhang & Gao (2021, Table 2) report their defences. It measures whether
a defence undoes perturbations made without knowledge of it, not robustness: an attacker who knows the defence
attacks through it (:mod:`art_purifiers.evaluation.suite`). Reports show both.

:func:`paper_attacks` gives Mustafa et al.'s attack list: FGSM at 2, 5 and 10 of 255, I-FGSM and MI-FGSM at 16 of 255,
DeepFool and C&W L2; :func:`zhang2021_attacks` gives Zhang & Gao's (Table 2), gray-box or black-box (transfer).
:func:`attack_unaware` computes each attack's examples once, and the accuracy of every defence on them, per image, so
that the worst case over the attacks ("correct under every attack") is reported too.
"""

from __future__ import annotations

import math
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


def _fgsm(eps: float, batch_size: int) -> Callable[[Any], Any]:
    from art.attacks.evasion import FastGradientMethod

    return lambda model: FastGradientMethod(model, eps=eps, batch_size=batch_size)


def _iterative(eps: float, step: float, steps: int, batch_size: int, decay: float | None = None) -> Callable:
    """I-FGSM (``decay=None``) or MI-FGSM (momentum ``decay``), ART's implementations."""
    from art.attacks.evasion import BasicIterativeMethod, MomentumIterativeMethod

    options = dict(eps=eps, eps_step=step, max_iter=steps, batch_size=batch_size, verbose=False)
    if decay is None:
        return lambda model: BasicIterativeMethod(model, **options)
    return lambda model: MomentumIterativeMethod(model, decay=decay, **options)


def _deepfool(batch_size: int) -> Callable[[Any], Any]:
    from art.attacks.evasion import DeepFool

    return lambda model: DeepFool(model, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=batch_size, verbose=False)


def _carlini_wagner(batch_size: int, steps: int, search_steps: int) -> Callable[[Any], Any]:
    from art.attacks.evasion import CarliniL2Method

    return lambda model: CarliniL2Method(
        model,
        confidence=0.0,
        learning_rate=0.01,
        binary_search_steps=search_steps,
        max_iter=steps,
        initial_const=0.1,
        batch_size=batch_size,
        verbose=False,
    )


class _DiverseInputFgsm:
    """DI-FGSM (Xie et al. 2019: input diversity with p = 0.5, no momentum) with ART's ``generate`` signature."""

    def __init__(self, model: Any, eps: float, steps: int, batch_size: int) -> None:
        self.model, self.eps, self.steps, self.batch_size = model, eps, steps, batch_size

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from art_purifiers.attacks.transfer import momentum_iterative

        network = self.model.model.eval()
        device = next(network.parameters()).device
        batches = []
        for start in range(0, len(x), self.batch_size):
            images = torch.from_numpy(x[start : start + self.batch_size]).to(device)
            labels = torch.from_numpy(np.argmax(y[start : start + self.batch_size], axis=1)).to(device)
            batch = momentum_iterative(network, images, labels, self.eps, self.steps, decay=0.0, diversity=0.5)
            batches.append(batch.cpu().numpy())
        return np.concatenate(batches)


def _diverse_input(eps: float, batch_size: int) -> Callable[[Any], Any]:
    return lambda model: _DiverseInputFgsm(model, eps, kurakin_steps(eps), batch_size)


def kurakin_steps(eps: float) -> int:
    """Kurakin et al.'s iteration count for I-FGSM with steps of 1/255: ``ceil(min(eps + 4, 1.25 eps))``, eps in
    1/255 units."""
    return math.ceil(min(eps * 255 + 4, 1.25 * eps * 255) - 1e-9)


def paper_attacks(batch_size: int = 100, cw_steps: int = 100, cw_search_steps: int = 5) -> list[UnawareAttack]:
    """
    Mustafa et al.'s attacks (their Table 1): FGSM with eps 2, 5, 10 (of 255); I-FGSM and MI-FGSM with eps 16 (Kurakin
    et al.'s 20 steps of 1/255; Dong et al.'s 10 steps of eps/10, decay 1); DeepFool (50 iterations, overshoot 0.02);
    C&W L2 (confidence 0, ``cw_steps`` iterations for each of ``cw_search_steps`` binary-search steps).
    """
    attacks = [UnawareAttack(f"FGSM-{k}", _fgsm(k / 255, batch_size), k / 255) for k in (2, 5, 10)]
    attacks += [
        UnawareAttack("I-FGSM", _iterative(16 / 255, 1 / 255, 20, batch_size), 16 / 255),
        UnawareAttack("MI-FGSM", _iterative(16 / 255, 1.6 / 255, 10, batch_size, decay=1.0), 16 / 255),
        UnawareAttack("DeepFool", _deepfool(batch_size)),
        UnawareAttack("C&W", _carlini_wagner(batch_size, cw_steps, cw_search_steps)),
    ]
    return attacks


def zhang2021_attacks(
    transfer: bool = False, batch_size: int = 100, cw_steps: int = 100, cw_search_steps: int = 5
) -> list[UnawareAttack]:
    """
    Zhang & Gao's attacks (their Table 2): FGSM with eps 2, 4, 8 and I-FGSM with eps 2, 3, 4 (of 255; steps of 1/255,
    :func:`kurakin_steps` iterations, since the paper gives none); then DeepFool and C&W L2 in the gray-box setting
    (``transfer=False``), or DI-FGSM with eps 2 and 4 in the black-box one (``transfer=True``: the examples are meant
    to be made on another model). The paper's TI-FGSM column is not included.
    """
    attacks = [UnawareAttack(f"FGSM-{k}", _fgsm(k / 255, batch_size), k / 255) for k in (2, 4, 8)]
    attacks += [
        UnawareAttack(f"I-FGSM-{k}", _iterative(k / 255, 1 / 255, kurakin_steps(k / 255), batch_size), k / 255)
        for k in (2, 3, 4)
    ]
    if transfer:
        return attacks + [UnawareAttack(f"DI-FGSM-{k}", _diverse_input(k / 255, batch_size), k / 255) for k in (2, 4)]
    return attacks + [
        UnawareAttack("DeepFool", _deepfool(batch_size)),
        UnawareAttack("C&W", _carlini_wagner(batch_size, cw_steps, cw_search_steps)),
    ]


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

    :param undefended: ART classifier of the model the attacks are computed on: the model without defence
                       (gray-box), or another model (black-box transfer).
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
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
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


def predictor(
    model: torch.nn.Module, transform: Callable[[np.ndarray], np.ndarray] | None = None, batch_size: int = 100
) -> Predictor:
    """
    Labels predicted by ``model`` (images -> logits, on the CPU) after ``transform`` (e.g. ``lambda x: defence(x)[0]``),
    or undefended when ``transform`` is ``None``, in batches.
    """

    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:
        labels = []
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            purified = batch if transform is None else transform(batch)
            labels.append(model(torch.from_numpy(np.asarray(purified, dtype=np.float32))).argmax(1).numpy())
        return np.concatenate(labels)

    return predict


def markdown(result: dict[str, Any], intro: str, command: str) -> str:
    """A Markdown table of :func:`attack_unaware`'s result: accuracy (%) per defence and attack, then the share
    correct under every attack with its Wilson interval, under ``intro`` and the ``command`` that made it."""
    attacks = [*result["attacks"], "every attack"]
    lines = [
        intro,
        "",
        f"`{command}`",
        "",
        "| defence | " + " | ".join(attacks) + " |",
        "|---" * (len(attacks) + 1) + "|",
    ]
    for name, row in result["rows"].items():
        cells = [f"{100 * row[a]['accuracy']:.1f}" for a in attacks[:-1]]
        worst = row["every attack"]
        cells.append(f"{100 * worst['accuracy']:.1f} [{100 * worst['low']:.1f}, {100 * worst['high']:.1f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
