"""
Auto-PGD with Expectation over Transformation, for randomized and deterministic purifiers.

The step-size schedule is Croce & Hein's (ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", Algorithm 1): start at 2 eps, momentum 0.75, and at checkpoints
p_0 = 0, p_1 = 0.22, p_(j+1) = p_j + max(p_j - p_(j-1) - 0.03, 0.06) halve the step of an image whose loss rose in
fewer than rho = 75% of the steps since the last checkpoint (or whose step and best loss did not change), restarting
it from its best-loss point.

What differs from ART's ``AutoProjectedGradientDescent`` and the reason this module exists:

* the loss and its gradient average over ``eot`` independent draws of the defence (one batch of N * eot rows);
* the **success check averages over the same draws**: an iterate's score is the share of draws that classify it
  correctly (untargeted) or not as the target (targeted), so a lucky single draw never ends the attack;
* the returned example is the **best iterate** (lowest share, then highest loss) over steps and restarts, and never
  the clean image: an attack that fails returns its strongest attempt;
* an image stops being attacked as soon as every draw is fooled (the others go on, in smaller batches).

Functions take ``model``, any callable from an NCHW batch to logits (a defended model draws fresh randomness on
every call), so the attack runs on whatever device the images are on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Model = Callable[[torch.Tensor], torch.Tensor]

LOSSES = ("ce", "dlr", "margin")
NORMS = ("Linf", "L2")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """
    Croce & Hein's difference-of-logits ratio, per row (higher = closer to the attacker's goal).

    Untargeted: -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3); targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2),
    with z_pi the sorted logits. Both are invariant to shifting and scaling the logits.
    """
    if logits.shape[1] < (3 if target is None else 4):
        raise ValueError(f"The DLR loss needs at least {3 if target is None else 4} classes; use the margin loss.")
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None])[:, 0]
    if target is None:
        other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
        return -(true - other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    aimed = logits.gather(1, target[:, None])[:, 0]
    return -(true - aimed) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


def margin_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Carlini & Wagner's logit margin, per row: max_{j != y} z_j - z_y (untargeted) or z_t - max_{j != t} z_j."""
    if target is None:
        return logits.scatter(1, y[:, None], float("-inf")).amax(dim=1) - logits.gather(1, y[:, None])[:, 0]
    return logits.gather(1, target[:, None])[:, 0] - logits.scatter(1, target[:, None], float("-inf")).amax(dim=1)


def attack_loss(name: str, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The per-row objective the attacker maximises: ``ce``, ``dlr`` or ``margin``; targeted when ``target`` is set."""
    if name == "ce":
        return (
            -F.cross_entropy(logits, target, reduction="none")
            if target is not None
            else F.cross_entropy(logits, y, reduction="none")
        )
    if name == "dlr":
        return dlr_loss(logits, y, target)
    if name == "margin":
        return margin_loss(logits, y, target)
    raise ValueError(f"loss must be one of {LOSSES}, got {name!r}.")


def checkpoints(steps: int) -> list[int]:
    """
    The iterations at which APGD may halve its step: Croce & Hein's schedule in the integer form of their code (first
    interval 22% of the steps, each next one 3% shorter, at least 6%).
    """
    interval, shrink, shortest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks = [interval]
    while True:
        interval = max(interval - shrink, shortest)
        if marks[-1] + interval > steps:
            return marks
        marks.append(marks[-1] + interval)


def project(
    x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float, bounds: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """``x_adv`` moved into the ``norm`` ball of radius ``eps`` around ``x``, then into ``bounds`` (the pixel range)."""
    delta = x_adv - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        length = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        delta = delta * (eps / length).clamp(max=1.0)
    return (x + delta).clamp(*bounds)


def ascent_direction(gradient: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit ``norm``: the sign (Linf) or the normalised gradient (L2)."""
    if norm == "Linf":
        return gradient.sign()
    length = gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (gradient.dim() - 1))
    return gradient / length


def random_start(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random point of the Linf ball, or a random direction at a random radius of the L2 ball."""
    if norm == "Linf":
        return project(x, x + eps * (torch.rand(x.shape, generator=generator).to(x.device) * 2 - 1), norm, eps)
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    radius = torch.rand(len(x), generator=generator).to(x.device).view(-1, *[1] * (x.dim() - 1))
    noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(radius) * radius
    return project(x, x + eps * noise, norm, eps)


@dataclass
class Evaluation:
    """One evaluation of a batch of iterates over ``eot`` draws."""

    loss: torch.Tensor  # (N,) mean over draws
    gradient: torch.Tensor  # (N, C, H, W) gradient of the mean loss
    unfooled: torch.Tensor  # (N,) share of draws that still resist (correct, or not the target)


def evaluate(
    model: Model, x: torch.Tensor, y: torch.Tensor, loss: str, eot: int, target: torch.Tensor | None
) -> Evaluation:
    """Loss, gradient and success share of ``x`` averaged over ``eot`` draws of the model, in one batch."""
    x = x.detach().requires_grad_(True)
    logits = model(x.repeat_interleave(eot, dim=0))
    rows_y = y.repeat_interleave(eot)
    rows_target = None if target is None else target.repeat_interleave(eot)
    per_row = attack_loss(loss, logits, rows_y, rows_target).view(len(x), eot)
    (gradient,) = torch.autograd.grad(per_row.sum(), x)
    predicted = logits.detach().argmax(dim=1).view(len(x), eot)
    resists = predicted.eq(y[:, None]) if target is None else predicted.ne(target[:, None])
    return Evaluation(per_row.detach().mean(dim=1), gradient / eot, resists.float().mean(dim=1))


@dataclass
class APGDResult:
    """
    :param x_adv: The best iterate per image (lowest resisting share over the draws, then highest loss).
    :param unfooled: Its share of draws that resisted (0 = every draw fooled).
    :param loss_curve: Mean over images of the best loss so far, per iteration and restart: (restarts, steps + 1).
    """

    x_adv: torch.Tensor
    unfooled: torch.Tensor
    loss_curve: torch.Tensor


class _Best:
    """Keeps, per image, the iterate that resists the fewest draws (ties: the highest loss)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.clone()
        self.unfooled = torch.full((len(x),), float("inf"), device=x.device)
        self.loss = torch.full((len(x),), float("-inf"), device=x.device)

    def update(self, index: torch.Tensor, x: torch.Tensor, result: Evaluation) -> None:
        better = (result.unfooled < self.unfooled[index]) | (
            (result.unfooled == self.unfooled[index]) & (result.loss > self.loss[index])
        )
        chosen = index[better]
        self.x[chosen] = x[better].detach()
        self.unfooled[chosen] = result.unfooled[better]
        self.loss[chosen] = result.loss[better]


def apgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str = "Linf",
    steps: int = 100,
    restarts: int = 1,
    loss: str = "ce",
    eot: int = 1,
    target: torch.Tensor | None = None,
    rho: float = 0.75,
    seed: int = 0,
) -> APGDResult:
    """
    Run APGD (see the module docstring) on the batch ``x`` with labels ``y``.

    :param model: Images -> logits; may be randomized (every call a fresh draw).
    :param eps: Budget in [0, 1] pixel units (the L2 radius for ``norm="L2"``).
    :param steps: Iterations per restart.
    :param restarts: Random starts; the best iterate over all of them is kept.
    :param loss: ``ce``, ``dlr`` or ``margin``.
    :param eot: Draws averaged per gradient and per success check.
    :param target: Target labels for a targeted attack (``None``: untargeted).
    :param seed: Seeds the random starts.
    :return: The best iterates, their resisting shares and loss curves.
    """
    _check_arguments(x, y, eps, norm, steps, restarts, loss, eot, target)
    generator = torch.Generator().manual_seed(seed)
    best = _Best(x)
    curves = torch.zeros(restarts, steps + 1)
    for restart in range(restarts):
        active = torch.nonzero(best.unfooled > 0).flatten()
        if len(active) == 0:
            curves[restart:] = curves[restart - 1, -1]
            break
        start = random_start(x[active], norm, eps, generator)
        curves[restart] = _run_one(model, x[active], y[active], start, active, best, eps, norm, steps, loss, eot,
                                   None if target is None else target[active], rho)  # fmt: skip
    return APGDResult(best.x, best.unfooled, curves)


def _run_one(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    start: torch.Tensor,
    index: torch.Tensor,
    best: _Best,
    eps: float,
    norm: str,
    steps: int,
    loss: str,
    eot: int,
    target: torch.Tensor | None,
    rho: float,
) -> torch.Tensor:
    """One restart of APGD on the images ``index``; returns the curve of the mean best loss."""
    shape = (-1, *[1] * (x.dim() - 1))
    step = torch.full((len(x),), 2.0 * eps, device=x.device)
    current = evaluate(model, start, y, loss, eot, target)
    best.update(index, start, current)
    x_now, x_previous = start, start
    loss_max, x_max, gradient_max = current.loss.clone(), start.clone(), current.gradient.clone()
    gradient = current.gradient
    marks = checkpoints(steps)
    increases = torch.zeros(len(x), device=x.device)
    last_loss, last_step, last_mark = current.loss.clone(), step.clone(), 0
    loss_before = current.loss
    curve = [float(loss_max.mean())]
    for iteration in range(steps):
        # images fooled in every draw are done: only the others are evaluated (their state is frozen)
        live = best.unfooled[index] > 0
        if not bool(live.any()):
            curve.extend([curve[-1]] * (steps - iteration))
            break
        z = project(x, x_now + step.view(shape) * ascent_direction(gradient, norm), norm, eps)
        momentum = 0.75 if iteration > 0 else 1.0
        x_next = project(x, x_now + momentum * (z - x_now) + (1 - momentum) * (x_now - x_previous), norm, eps)
        result = evaluate(model, x_next[live], y[live], loss, eot, None if target is None else target[live])
        best.update(index[live], x_next[live], result)
        new_loss, new_gradient = loss_before.clone(), gradient.clone()
        new_loss[live], new_gradient[live] = result.loss, result.gradient
        increases += (new_loss > loss_before).float()
        improved = new_loss > loss_max
        loss_max = torch.where(improved, new_loss, loss_max)
        x_max[improved], gradient_max[improved] = x_next[improved].detach(), new_gradient[improved]
        alive = live.view(shape)
        x_previous, x_now = torch.where(alive, x_now, x_previous), torch.where(alive, x_next.detach(), x_now)
        gradient, loss_before = new_gradient, new_loss
        curve.append(float(loss_max.mean()))
        if iteration + 1 in marks:
            since = iteration + 1 - last_mark
            stalled = (increases < rho * since) | ((last_step == step) & (last_loss == loss_max))
            last_step, last_loss, last_mark = step.clone(), loss_max.clone(), iteration + 1
            step = torch.where(stalled, step / 2, step)
            x_now = torch.where(stalled.view(shape), x_max, x_now)
            gradient = torch.where(stalled.view(shape), gradient_max, gradient)
            increases.zero_()
    return torch.tensor(curve)


def _check_arguments(
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str,
    steps: int,
    restarts: int,
    loss: str,
    eot: int,
    target: torch.Tensor | None,
) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor of images (N, ...), got {type(x).__name__}.")
    if not isinstance(y, torch.Tensor) or y.shape != (len(x),):
        raise ValueError(f"y must be a tensor of {len(x)} labels.")
    if target is not None and (target.shape != y.shape or bool((target == y).any())):
        raise ValueError("target must hold one label per image, each different from the image's true label.")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}.")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}.")
    for name, value in (("steps", steps), ("restarts", restarts), ("eot", eot)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
