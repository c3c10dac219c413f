"""
The v2 attacks of ``art-purifiers evaluate`` as functions (images, labels, seed) -> examples on a
:class:`~art_purifiers.evaluation.cascade.DefendedModel`:

* ``apgd``: our APGD with EOT (:mod:`art_purifiers.attacks.apgd`), untargeted or targeted, Linf, L2 or RMS-L2;
* ``cascade``: APGD-CE, APGD-DLR, then Croce & Hein's Square (5,000 queries) on the survivors, repeated with
  doubled steps and restarts by the convergence controller (:mod:`art_purifiers.evaluation.cascade`);
* ``original-autoattack``: Croce & Hein's own AutoAttack (the ``pyautoattack`` package, their code as released),
  version ``standard`` for deterministic defences and ``rand`` (EOT 20) for randomized ones;
* ``transfer``: PGD, MI-FGSM or input-diversity MI-FGSM on the independently trained surrogate ``cifar10-surrogate``,
  or on the attack's own ``source`` model (e.g. an attacker's own purifier before its classifier);
* ``noise``: uniformly random signs at the budget (a floor every attack must beat).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from art_purifiers.attacks.apgd import apgd
from art_purifiers.attacks.transfer import momentum_iterative
from art_purifiers.evaluation.cascade import AttackFunction, CascadeAttack
from art_purifiers.evaluation.specs import AttackSpec


def l2_or_linf(spec: AttackSpec, values_per_image: int) -> tuple[str, float]:
    """The attack's norm for the optimiser (``Linf`` or ``L2``) and its radius (RMS budgets become L2 radii)."""
    eps = float(spec.eps or 0.0)
    if spec.norm == "RMS":
        return "L2", eps * math.sqrt(values_per_image)
    return spec.norm, eps


def random_targets(y: torch.Tensor, nb_classes: int, seed: int) -> torch.Tensor:
    """A uniformly random target label per image, never its true label."""
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, nb_classes, y.shape, generator=generator).to(y.device)
    return (y + shift) % nb_classes


def apgd_attack(model: nn.Module, norm: str, eps: float, steps: int, restarts: int, loss: str, eot: int,
                nb_classes: int | None = None, curves: dict[str, list[torch.Tensor]] | None = None,
                label: str = "APGD") -> AttackFunction:  # fmt: skip
    """
    APGD as a cascade function; targeted when ``nb_classes`` is given, each image aiming at
    :func:`random_targets` ``(y, nb_classes, seed)``. Each batch's loss curve (mean best loss per iteration, averaged
    over restarts) is appended to ``curves[label]``.
    """

    def run(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        target = None if nb_classes is None else random_targets(y, nb_classes, seed)
        result = apgd(model, x, y, eps, norm=norm, steps=steps, restarts=restarts, loss=loss, eot=eot, target=target,
                      seed=seed)  # fmt: skip
        if curves is not None:
            curves.setdefault(label, []).append(result.loss_curve.mean(0))
        return result.x_adv

    return run


def targeted_attacks(model: nn.Module, norm: str, eps: float, steps: int, restarts: int, eot: int, targets: int,
                     curves: dict[str, list[torch.Tensor]] | None = None) -> list[CascadeAttack]:  # fmt: skip
    """
    Croce & Hein's APGD-T: targeted APGD on the DLR loss, once per target, the target of round ``r`` being the class
    with the ``r``-th highest logit on the clean image after the true one (``targets`` rounds).
    """
    if targets < 1:
        raise ValueError(f"APGD-T needs at least one target class, got {targets}.")

    def run_round(rank: int) -> AttackFunction:
        def run(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
            with torch.no_grad():
                logits = model(x).scatter(1, y[:, None], float("-inf"))
            target = logits.argsort(dim=1, descending=True)[:, rank - 1]
            result = apgd(model, x, y, eps, norm=norm, steps=steps, restarts=restarts, loss="dlr" if logits.shape[1]
                          >= 4 else "margin", eot=eot, target=target, seed=seed)  # fmt: skip
            if curves is not None:
                curves.setdefault(f"APGD-T target {rank}", []).append(result.loss_curve.mean(0))
            return result.x_adv

        return run

    label = f"({steps} steps, {restarts} restarts, EOT {eot})"
    return [CascadeAttack(f"APGD-T target {rank} {label}", run_round(rank)) for rank in range(1, targets + 1)]


def square_attack(model: nn.Module, norm: str, eps: float, queries: int) -> AttackFunction:
    """Croce & Hein's Square attack (``pyautoattack``), p_init 0.8, one restart, as in AutoAttack."""
    from pyautoattack.square import SquareAttack

    def run(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        attack = SquareAttack(model, p_init=0.8, n_queries=queries, eps=eps, norm=norm, n_restarts=1, seed=seed,
                              verbose=False, device=x.device, resc_schedule=False)  # fmt: skip
        with torch.no_grad():
            return attack.perturb(x, y)

    return run


def original_autoattack(model: nn.Module, norm: str, eps: float, version: str, batch_size: int,
                        nb_classes: int) -> AttackFunction:  # fmt: skip
    """
    Croce & Hein's AutoAttack (``pyautoattack``, their released code) on the defended model.

    :raises ValueError: for an unknown version, or too few classes (its DLR losses need 3, the targeted ones 4).
    """
    from pyautoattack import AutoAttack

    if version not in ("standard", "rand"):
        raise ValueError(f"AutoAttack version must be standard, rand or auto, got {version!r}.")
    if nb_classes < (4 if version == "standard" else 3):
        raise ValueError(f"The original AutoAttack ({version}) needs at least 4 classes, the model has {nb_classes}.")

    def run(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        logging.getLogger("auto-attack").setLevel(logging.WARNING)
        attack = AutoAttack(model, norm=norm, eps=eps, version=version, seed=seed, device=x.device)
        x_adv, _ = attack.run_standard_evaluation(x, y, batch_size=batch_size)
        return x_adv

    return run


def noise_attack(norm: str, eps: float) -> AttackFunction:
    """Random signs at the Linf budget, or a random direction on the L2 sphere."""

    def run(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        if norm == "Linf":
            delta = eps * (torch.randint(0, 2, x.shape, generator=generator).float() * 2 - 1)
        else:
            delta = torch.randn(x.shape, generator=generator)
            delta = eps * delta / delta.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
        return (x + delta.to(x.device)).clamp(0, 1)

    return run


def transfer_attack(surrogate: nn.Module, eps: float, steps: int, method: str) -> AttackFunction:
    """Examples from the surrogate: ``pgd`` (APGD-CE), ``mi`` (MI-FGSM) or ``dim`` (MI-FGSM with input diversity)."""
    if method not in ("pgd", "mi", "dim"):
        raise ValueError(f"transfer method must be pgd, mi or dim, got {method!r}.")

    def run(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        if method == "pgd":
            return apgd(surrogate, x, y, eps, steps=steps, loss="ce", seed=seed).x_adv
        return momentum_iterative(surrogate, x, y, eps, steps=steps, diversity=0.5 if method == "dim" else 0.0,
                                  seed=seed)  # fmt: skip

    return run


def cascade_level(model: nn.Module, norm: str, eps: float, steps: int, restarts: int, eot: int, square: int,
                  level: int, curves: dict[str, list[torch.Tensor]] | None = None, nb_classes: int = 10,
                  ) -> list[CascadeAttack]:  # fmt: skip
    """
    The attacks of one controller level: APGD-CE and APGD-DLR with ``steps * 2**level`` steps and
    ``restarts * 2**level`` restarts, then (level 0 only) Square with ``square`` queries (0: none). With fewer than 3
    classes, where DLR is undefined, the margin loss replaces it.
    """
    scale = 2**level
    attacks = []
    for loss in ("ce", "dlr" if nb_classes >= 3 else "margin"):
        label = f"APGD-{loss.upper()} ({steps * scale} steps, {restarts * scale} restarts, EOT {eot})"
        attacks.append(CascadeAttack(label, apgd_attack(model, norm, eps, steps * scale, restarts * scale, loss, eot,
                                                        curves=curves, label=label)))  # fmt: skip
    if level == 0 and square > 0:
        attacks.append(CascadeAttack(f"Square ({square} queries)", square_attack(model, norm, eps, square)))
    return attacks
