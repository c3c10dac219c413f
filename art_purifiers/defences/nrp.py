"""Neural Representation Purifier (Naseer et al., 2020).

M. Naseer, S. Khan, M. Hayat, F. S. Khan and F. Porikli, "A Self-supervised Approach for Adversarial Robustness",
CVPR 2020.

A purifier network (:mod:`art_purifiers.nets.nrp`), trained to undo self-supervised perturbations
(:mod:`art_purifiers.attacks.ssp`) by matching the clean image's features (:mod:`art_purifiers.training.nrp`),
re-synthesises each input image. With ``dynamic=True`` (the authors' code, against white-box attackers), the input
first gets Gaussian noise of standard deviation 0.05, projected back to within 16/255 of the input and clamped to the
valid range, so every call purifies a different neighbour of the input.

Backward (``bpda``): the purifier is a network and the noise step is differentiable, so ``"straight_through"`` (and
``"surrogate"``, the same here) gives the exact gradient; the final clip passes gradients straight through.
``"identity"`` makes the whole defence the identity in backward, the bypass the paper's section on BPDA considers.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from art_purifiers import zoo
from art_purifiers.base import PurifierPreprocessor, Randomness
from art_purifiers.nets import run_image_network
from art_purifiers.nets.nrp import load_reference_state_dict
from art_purifiers.ops.quantize import clamp_straight_through

#: The purifier used when none is given: the light variant trained on CIFAR-10 by our CPU recipe.
DEFAULT_NETWORK = "cifar10-nrp-light"
TRAIN_COMMAND = "python -m art_purifiers.training.nrp"


def load_purifier(source: str | Path | nn.Module) -> nn.Module:
    """
    A purifier named by a user: a zoo name, a weight file in the zoo format, the authors' released ``NRP.pth`` or
    ``NRP_resG.pth`` (their state dicts; :func:`~art_purifiers.nets.nrp.load_reference_state_dict`), or a module.

    :raises ValueError: for anything else, naming the command that trains a purifier.
    """
    if isinstance(source, (str, Path)) and Path(source).is_file():
        try:
            return zoo.load_file(source)
        except ValueError as zoo_error:
            state = torch.load(source, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "conv_first.weight" not in {k.removeprefix("module.") for k in state}:
                raise zoo_error
            return load_reference_state_dict(state)
    return zoo.resolve(source, train_command=TRAIN_COMMAND)


class NeuralRepresentationPurifier(PurifierPreprocessor):
    """
    Purify images with an NRP network; randomized only with ``dynamic=True``. Fully convolutional: any image size.
    Grey images go through a colour purifier as three equal channels and come back as their luma.
    """

    params = PurifierPreprocessor.params + ["network", "dynamic", "noise_std", "dynamic_eps"]

    def __init__(
        self,
        network: str | Path | nn.Module = DEFAULT_NETWORK,
        dynamic: bool = False,
        noise_std: float = 0.05,
        dynamic_eps: float = 16 / 255,
        **kwargs: Any,
    ) -> None:
        """
        :param network: The purifier: a zoo name, a weight file (ours or the authors' ``NRP.pth``/``NRP_resG.pth``),
                        or a module (copied).
        :param dynamic: Dynamic inference (the authors' code): purify a noisy neighbour of the input.
        :param noise_std: Standard deviation of the dynamic noise, on the [0, 1] scale (authors: 0.05).
        :param dynamic_eps: Linf radius the noisy input is projected to, on the [0, 1] scale (authors: 16/255).
        :param kwargs: Arguments of :class:`~art_purifiers.base.PurifierPreprocessor`.
        """
        super().__init__(**kwargs)
        self.network = network
        self.dynamic = dynamic
        self.noise_std = noise_std
        self.dynamic_eps = dynamic_eps

    def _check_params(self) -> None:
        super()._check_params()
        if not isinstance(self.dynamic, bool):
            raise TypeError(f"dynamic must be a bool, got {self.dynamic!r}.")
        for name in ("noise_std", "dynamic_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a non-negative finite number, got {value!r}.")

    def _network_sources(self) -> dict[Hashable, Any]:
        return {"purifier": self.network}

    def _load_network(self, key: Hashable, source: Any) -> nn.Module:
        return load_purifier(source)

    def _is_randomized(self) -> bool:
        return self.dynamic and self.noise_std > 0 and self.dynamic_eps > 0

    def _chunk_size(self, x: torch.Tensor) -> int:
        return self._network_chunk_size(x)

    # ------------------------------------------------------------------ dynamic inference, then purification

    def _draw(self, num_images: int, height: int, width: int) -> Randomness:
        if not self._is_randomized():
            return None
        # three channels whatever the input has, so a grey batch draws what a colour one would (its first channel)
        return {"noise": torch.randn((num_images, 3, height, width), generator=self._generator)}

    def _purify(self, x: torch.Tensor, randomness: Randomness) -> torch.Tensor:
        if randomness is not None:
            x = self._noisy_neighbour(x, randomness["noise"][:, : x.shape[1]].to(x.device, x.dtype))
        return run_image_network(self._network("purifier", x.device, x.dtype), x)

    def _noisy_neighbour(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x`` plus scaled noise, projected to the ``dynamic_eps`` ball around ``x`` and to [0, 1]."""
        noisy = x + self.noise_std * noise
        noisy = torch.minimum(torch.maximum(noisy, x - self.dynamic_eps), x + self.dynamic_eps)
        return clamp_straight_through(noisy, 0.0, 1.0)  # like every clip here: saturation masks no gradient
