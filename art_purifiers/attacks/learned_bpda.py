"""
Learned-approximator BPDA: the adaptive attack of Qiu et al. (2021, section 6.4), after Athalye et al. (2018).

A small convolutional network g is trained to mimic a defence t (mean squared error between g(x) and t(x) on clean
and randomly perturbed images); :class:`LearnedBPDA` then wraps the defence so that its forward is the defence's
true output and its backward is the exact gradient of g. Put it in a classifier's ``preprocessing_defences`` in
place of the defence to attack it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from torch import nn
from tqdm.auto import tqdm

from art_purifiers.base import NetworkCache, needs_gradient
from art_purifiers.ops.device import full_precision
from art_purifiers.ops.quantize import replace_gradient


class Approximator(nn.Module):
    """A residual conv net x + h(x): 3x3 convs with ReLU, ``width`` channels, ``depth`` layers."""

    def __init__(self, channels: int = 3, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(depth - 1):
            layers += [nn.Conv2d(channels if index == 0 else width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def train_approximator(
    defence: PreprocessorPyTorch,
    images: np.ndarray,
    steps: int = 400,
    batch_size: int = 64,
    noise: float = 16 / 255,
    lr: float = 2e-3,
    seed: int = 0,
    width: int = 32,
    depth: int = 4,
    verbose: bool = True,
    device: str | torch.device | None = None,
) -> Approximator:
    """
    Fit an :class:`Approximator` to ``defence`` on ``images`` (NCHW float in the defence's clip range).

    Half of each batch gets uniform noise in [-noise, noise] (clipped), so the network also learns the defence
    near the data, where attacks move. The batches are drawn on the CPU (so the same seed gives the same batches on
    every device) and trained on ``device``.

    :param device: Where the approximator trains and the defence runs; default: the defence's ``device`` (ART's
                   ``device_type``), else the CPU.
    :return: The trained approximator in eval mode, on ``device``; its final training MSE is in
             ``approximator.final_mse``.
    """
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty NCHW batch, got shape {images.shape}.")
    generator = torch.Generator().manual_seed(seed)
    target_device = torch.device(device if device is not None else getattr(defence, "device", "cpu"))
    torch.manual_seed(seed)  # the initial weights (and what draws from torch's generator next) from the seed
    approximator = Approximator(images.shape[1], width, depth).to(target_device)
    optimizer = torch.optim.Adam(approximator.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    data = torch.from_numpy(np.asarray(images, dtype=np.float32))
    low, high = (float(v) for v in getattr(defence, "clip_values", (0.0, 1.0)) or (0.0, 1.0))
    progress = tqdm(range(steps), desc="learned BPDA: fitting approximator", disable=not verbose, leave=False)
    loss = torch.tensor(float("nan"))
    for _ in progress:
        batch = data[torch.randint(0, len(data), (batch_size,), generator=generator)]
        noisy = torch.rand(batch_size, generator=generator) < 0.5
        perturbation = (torch.rand(batch.shape, generator=generator) * 2 - 1) * noise * (high - low)
        batch = torch.where(noisy[:, None, None, None], (batch + perturbation).clamp(low, high), batch)
        batch = batch.to(target_device)
        with torch.no_grad():
            target, _ = defence.forward(batch)
        loss = nn.functional.mse_loss(approximator(batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        progress.set_postfix(mse=float(loss.detach()))
    approximator.final_mse = float(loss.detach())  # type: ignore[assignment]
    return approximator.eval()


class LearnedBPDA(PreprocessorPyTorch):
    """
    The defence's true output in forward, the approximator's gradient in backward.

    :param defence: The defence under attack (a ``PreprocessorPyTorch``).
    :param approximator: A network trained by :func:`train_approximator` to mimic it (copied, frozen, and moved to
                         each input's device).
    """

    def __init__(self, defence: PreprocessorPyTorch, approximator: nn.Module, device_type: str = "gpu") -> None:
        super().__init__(device_type=device_type, apply_fit=False, apply_predict=True)
        self.defence = defence
        self._networks = NetworkCache()
        self._networks.set("approximator", approximator)

    @property
    def approximator(self) -> nn.Module:
        """The (frozen) approximator."""
        return self._networks.get("approximator", torch.device("cpu"))

    def forward(self, x: torch.Tensor, y: Any | None = None) -> tuple[torch.Tensor, Any | None]:
        with torch.no_grad():
            purified, y = self.defence.forward(x, y)
        if not needs_gradient(x):
            return purified, y
        with full_precision(x.device):
            approximation = self._networks.get("approximator", x.device)(x.float()).to(x.dtype)
        return replace_gradient(purified, approximation), y

    def get_random_state(self) -> Any:
        """The wrapped defence's random state (``None`` if it has none), for EOT's paired draws."""
        getter = getattr(self.defence, "get_random_state", None)
        return getter() if callable(getter) else None

    def set_random_state(self, state: Any) -> None:
        """Restore the wrapped defence's random state."""
        if state is not None:
            self.defence.set_random_state(state)
