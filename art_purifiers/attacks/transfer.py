"""
Transfer attacks: examples crafted on a surrogate model, then given to the defended one.

* MI-FGSM (Dong et al., CVPR 2018, "Boosting Adversarial Attacks with Momentum"): sign steps on an accumulated,
  L1-normalised gradient, ``g <- mu * g + grad / ||grad||_1``.
* Input diversity (Xie et al., CVPR 2019, "Improving Transferability of Adversarial Examples with Input Diversity",
  DI-FGSM / M-DI2-FGSM): with probability ``p`` per step, the gradient is taken through a random resize to
  ``[size, size * 1.1)`` and a random zero padding back to a fixed size, so the perturbation does not overfit the
  surrogate's exact pixel grid.

Both take a surrogate (images -> logits) and return examples in the Linf ball of ``eps`` around ``x``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Model = Callable[[torch.Tensor], torch.Tensor]


def diverse_input(x: torch.Tensor, probability: float, generator: torch.Generator, scale: float = 1.1) -> torch.Tensor:
    """Xie et al.'s transformation: a random resize up to ``scale`` and a random padding, applied with a probability."""
    if float(torch.rand(1, generator=generator)) >= probability:
        return x
    height, width = x.shape[-2:]
    padded = int(round(height * scale)), int(round(width * scale))
    size = (
        int(torch.randint(height, padded[0], (1,), generator=generator)),
        int(torch.randint(width, padded[1], (1,), generator=generator)),
    )
    resized = F.interpolate(x, size=size, mode="nearest")
    top = int(torch.randint(0, padded[0] - size[0] + 1, (1,), generator=generator))
    left = int(torch.randint(0, padded[1] - size[1] + 1, (1,), generator=generator))
    return F.pad(resized, (left, padded[1] - size[1] - left, top, padded[0] - size[0] - top))


def momentum_iterative(
    surrogate: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    decay: float = 1.0,
    diversity: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """
    MI-FGSM with ``steps`` steps of ``eps / steps``; with ``diversity > 0``, M-DI2-FGSM (input diversity applied with
    that probability per step).

    :param surrogate: Images -> logits of the model the examples are crafted on.
    :param decay: Momentum mu (1.0 in both papers).
    :param diversity: Probability p of the input-diversity transformation (0.5 in Xie et al.).
    """
    if not 0 <= diversity <= 1:
        raise ValueError(f"diversity must be a probability in [0, 1], got {diversity}.")
    if steps < 1 or not eps > 0:
        raise ValueError(f"steps must be positive and eps > 0, got steps={steps}, eps={eps}.")
    generator = torch.Generator().manual_seed(seed)
    momentum = torch.zeros_like(x)
    x_adv = x.clone()
    for _ in range(steps):
        images = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(surrogate(diverse_input(images, diversity, generator)), y, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, images)
        momentum = decay * momentum + gradient / gradient.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = x_adv + (eps / steps) * momentum.sign()
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return x_adv
