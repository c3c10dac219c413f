"""
The v2 attack cascade: attacks run one after another, each only on the images every earlier one failed to break
(as AutoAttack does, Croce & Hein 2020), with every example rounded to 8 bits, checked against its budget and scored
over the same fixed draws of the defence; a convergence controller that strengthens the attacks until robust
accuracy stops falling; and the gradient report that picks the EOT draw count.

An image counts as broken once one draw of the defence misclassifies one of its examples (the robust-accuracy
definition of :mod:`art_purifiers.evaluation.robust`), so attacking it further cannot change the headline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from torch import nn
from tqdm.auto import tqdm

from art_purifiers.evaluation import seeds
from art_purifiers.evaluation.robust import NOT_RUN, robust_correct

#: One attack of a cascade: (images, labels, seed) -> adversarial images, all on the images' device.
AttackFunction = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


class DefendedModel(nn.Module):
    """
    The classifier behind its preprocessing defences as one ``nn.Module`` (images in [0, 1] -> logits), for our
    attacks and Croce & Hein's original AutoAttack. Defences of ours run their own ``forward`` (and so their
    ``bpda`` mode); ART's NumPy defences run on the CPU with the identity as their gradient.

    :param model: The classifier.
    :param defences: The preprocessing chain, in order.
    """

    def __init__(self, model: nn.Module, defences: Sequence[Any] = ()) -> None:
        super().__init__()
        self.model = model
        self.defences = list(defences)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for defence in self.defences:
            if isinstance(defence, PreprocessorPyTorch):
                x, _ = defence.forward(x)
            else:
                x = _NumpyIdentityGradient.apply(x, defence)
        return self.model(x)


class _NumpyIdentityGradient(torch.autograd.Function):
    """An ART NumPy defence in the forward pass, the identity in the backward pass (BPDA)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, defence: Any) -> torch.Tensor:  # type: ignore[override]
        purified, _ = defence(x.detach().cpu().numpy())
        return torch.as_tensor(np.asarray(purified, dtype=np.float32), device=x.device)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


# --- budgets ----------------------------------------------------------------------------------------------------------
def on_8bit_grid(x: torch.Tensor) -> bool:
    """Whether every value of ``x`` is a multiple of 1/255 (float32 slack)."""
    return bool(((x * 255 - (x * 255).round()).abs() < 1e-3).all())


def round_to_8bit(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """
    ``x_adv`` rounded to 8 bits, as a saved PNG would be, without leaving the budget: Linf budgets are rounded down
    to the 8-bit grid, and an L2 example that rounding pushed outside its ball is rounded towards ``x`` instead.
    Images of ``x`` not on the 8-bit grid (not 8-bit data) are returned unchanged.
    """
    if not on_8bit_grid(x):
        return x_adv
    levels = (x * 255).round()
    delta = (x_adv * 255).round() - levels
    if norm == "Linf":
        limit = 255 if math.isinf(eps) else math.floor(eps * 255 + 1e-6)
        return ((levels + delta.clamp(-limit, limit)).clamp(0, 255) / 255).to(x_adv.dtype)
    towards_clean = ((x_adv - x) * 255).trunc()
    outside = (delta / 255).flatten(1).norm(dim=1) > eps
    delta = torch.where(outside.view(-1, *[1] * (x.dim() - 1)), towards_clean, delta)
    return ((levels + delta).clamp(0, 255) / 255).to(x_adv.dtype)


def check_budget(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float | None, label: str) -> None:
    """
    :param eps: The budget; ``None`` checks only the range (attacks without a budget, e.g. C&W).
    :raises AssertionError: if an example leaves [0, 1] or its budget (float32 slack), or is not finite.
    """
    if not torch.isfinite(x_adv).all() or x_adv.min() < 0 or x_adv.max() > 1:
        raise AssertionError(f"{label}: adversarial examples leave [0, 1] or are not finite.")
    if eps is None:
        return
    delta = (x_adv.double() - x.double()).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "Linf" else delta.norm(dim=1)
    if len(size) and float(size.max()) > eps + 1e-5:
        raise AssertionError(f"{label}: a perturbation of {float(size.max()):.6f} exceeds the {norm} budget {eps:.6f}.")


# --- the cascade -----------------------------------------------------------------------------------------------------
@dataclass
class CascadeAttack:
    """
    :param label: Name in reports.
    :param run: (images, labels, seed) -> adversarial images.
    """

    label: str
    run: AttackFunction


@dataclass
class CascadeResult:
    """
    :param correct: (images, 1 + attacks, draws) int8; column 0 is the clean image, -1 marks attacks not run.
    :param x_worst: Per image, the example with the lowest share of correct draws so far (the clean image where
        nothing beat it).
    :param labels: Column names.
    :param attacked: Images each attack ran on.
    """

    correct: np.ndarray
    x_worst: torch.Tensor
    labels: list[str]
    attacked: list[int] = field(default_factory=list)


def predict_draws(model: Callable[[torch.Tensor], torch.Tensor], reseed: Callable[[int], None], x: torch.Tensor,
                  draw_seeds: Sequence[int], batch_size: int) -> np.ndarray:  # fmt: skip
    """(images, draws) predicted labels of ``x``, draw ``d`` re-seeding the defence with ``draw_seeds[d]``."""
    columns = []
    with torch.no_grad():
        for seed in draw_seeds:
            reseed(seed)
            predicted = [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
            columns.append(torch.cat(predicted).cpu().numpy() if predicted else np.zeros(0, np.int64))
    return np.stack(columns, axis=1)


def extend(
    result: CascadeResult,
    attack: CascadeAttack,
    x: torch.Tensor,
    y: torch.Tensor,
    score_fn: Callable[[torch.Tensor, torch.Tensor], np.ndarray],
    norm: str,
    eps: float,
    seed: int,
    batch_size: int,
    verbose: bool = False,
) -> CascadeResult:
    """
    Run one more attack on the images still robust in ``result``, in batches; add its column.

    :param score_fn: (examples, labels) -> (images, draws) correctness over the fixed draws.
    """
    survivors = np.flatnonzero(robust_correct(result.correct))
    column = np.full((len(x), 1, result.correct.shape[2]), NOT_RUN, dtype=np.int8)
    x_worst = result.x_worst.clone()
    if len(survivors):
        index = torch.as_tensor(survivors, device=x.device)
        x_adv = run_batched(attack, x[index], y[index], norm, eps, seed, batch_size, verbose)
        column[survivors, 0] = score_fn(x_adv, y[index])
        x_worst[index] = x_adv  # a survivor's examples were all correct so far: any new one is at least as bad
    correct = np.concatenate([result.correct, column], axis=1)
    return CascadeResult(correct, x_worst, [*result.labels, attack.label], [*result.attacked, len(survivors)])


def run_batched(attack: CascadeAttack, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, seed: int,
                batch_size: int, verbose: bool = False) -> torch.Tensor:  # fmt: skip
    """
    Run an attack on all of ``x`` in batches (batch ``b`` gets seed ``seed + b * batch_size``); round every example
    to 8 bits (:func:`round_to_8bit`) and check its budget.
    """
    examples = []
    with tqdm(total=len(x), desc=attack.label, leave=False, disable=not verbose) as progress:
        for begin in range(0, len(x), batch_size):
            batch, labels = x[begin : begin + batch_size], y[begin : begin + batch_size]
            x_adv = round_to_8bit(batch, attack.run(batch, labels, seeds.batch(seed, begin)).detach(), norm, eps)
            check_budget(batch, x_adv, norm, eps, attack.label)
            examples.append(x_adv)
            progress.update(len(batch))
    return torch.cat(examples) if examples else x.clone()


def start(x: torch.Tensor, clean_correct: np.ndarray) -> CascadeResult:
    """A cascade with only the clean column."""
    return CascadeResult(np.asarray(clean_correct, dtype=np.int8)[:, None, :], x.clone(), ["clean"], [len(x)])


def run_cascade(
    attacks: Sequence[CascadeAttack],
    x: torch.Tensor,
    y: torch.Tensor,
    score_fn: Callable[[torch.Tensor, torch.Tensor], np.ndarray],
    norm: str,
    eps: float,
    seed: int = 0,
    batch_size: int = 100,
    result: CascadeResult | None = None,
    verbose: bool = False,
) -> CascadeResult:
    """Run ``attacks`` in order, each on the survivors of the previous ones (see :func:`extend`)."""
    result = result if result is not None else start(x, score_fn(x, y))
    for number, attack in enumerate(attacks):
        result = extend(
            result, attack, x, y, score_fn, norm, eps, seeds.cascade_attack(seed, number), batch_size, verbose
        )
    return result


# --- convergence -----------------------------------------------------------------------------------------------------
#: The most newly broken images McNemar's exact two-sided test (5%) attributes to chance when every discordant image
#: goes one way, as between nested cascade levels: p = 2 * 0.5**b is 0.0625 at b = 5 and 0.031 at b = 6.
CHANCE_BREAKS = 5


def stopped_falling(previous: float, current: float, n: int, tolerance: float = 0.005) -> bool:
    """
    Whether a stronger cascade level's drop in robust accuracy is negligible (paired, on the same images).

    Each level runs on the images the previous one left, so the only discordant images are the ``b`` it newly broke.
    The drop counts as noise when ``b`` is within what McNemar's exact test attributes to chance
    (:data:`CHANCE_BREAKS`), or below ``tolerance`` of the images, which matters only for large ``n``. An unpaired
    Wilson interval would accept a drop of about 17 images out of 500.
    """
    newly_broken = round((previous - current) * n)
    return newly_broken <= max(CHANCE_BREAKS, tolerance * n)


def converge(run_level: Callable[[int], float], n: int, max_level: int) -> dict[str, Any]:
    """
    The convergence controller: run level 0, then stronger levels (1, 2, ...) until robust accuracy stops falling
    (:func:`stopped_falling`, a paired criterion), or ``max_level`` is reached while it still falls (the cell is then
    marked as capped).

    :param run_level: Runs the cascade at a level (on the survivors of the previous levels); returns robust accuracy.
    :param n: Number of images.
    :param max_level: Strongest level allowed (0: no check possible).
    :return: ``{"accuracy_by_level", "levels_run", "converged", "capped"}``.
    """
    history = [run_level(0)]
    for level in range(1, max_level + 1):
        history.append(run_level(level))
        if history[-1] == 0 or stopped_falling(history[-2], history[-1], n):  # at 0 there is nothing left to fall
            return {"accuracy_by_level": history, "levels_run": level + 1, "converged": True, "capped": False}
    return {"accuracy_by_level": history, "levels_run": len(history), "converged": False, "capped": True}


# --- gradients and EOT -----------------------------------------------------------------------------------------------
def gradient_report(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    draws: Sequence[int] = (1, 2, 5, 10, 20, 30),
) -> dict[str, Any]:
    """
    How usable the defended model's cross-entropy gradients are: the share of exactly zero entries, the mean L2 norm,
    and the EOT consistency per draw count k, the mean cosine between two independent k-draw averages.

    :param model: The defended model (randomized or not: a deterministic one gives consistency 1).
    :param draws: The k to measure (``2 * max(draws)`` single-draw gradients are computed).
    """
    singles = []
    for _ in range(2 * max(draws)):
        images = x.detach().clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(images), y, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, images)
        singles.append(gradient.flatten(1).double())
    stacked = torch.stack(singles)  # (2K, N, D)
    half = len(stacked) // 2
    consistency = {}
    for k in draws:
        first, second = stacked[:k].mean(0), stacked[half : half + k].mean(0)
        consistency[int(k)] = float(nn.functional.cosine_similarity(first, second, dim=1, eps=1e-30).mean())
    return {
        "zero_fraction": float((stacked == 0).double().mean()),
        "mean_l2": float(stacked.norm(dim=2).mean()),
        "consistency": consistency,
        "images": int(len(x)),
    }


def choose_eot(consistency: dict[int, float], target: float = 0.9, cap: int = 10) -> dict[str, Any]:
    """
    The EOT draw count: the smallest measured k whose consistency reaches ``target``, at most ``cap`` unless even
    ``cap`` draws stay below ``target`` (then the smallest larger k that reaches it, else the largest measured).
    """
    ordered = sorted(consistency.items())
    within = [k for k, value in ordered if k <= cap and value >= target]
    if within:
        return {"k": within[0], "reason": f"consistency {consistency[within[0]]:.3f} >= {target}"}
    beyond = [k for k, value in ordered if k > cap and value >= target]
    k = beyond[0] if beyond else ordered[-1][0]
    return {"k": k, "reason": f"consistency below {target} at k <= {cap}; k={k} gives {consistency[k]:.3f}"}
