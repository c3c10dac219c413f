"""(Compress and Restore)^N (Ferrari et al., 2022).

C. Ferrari, F. Becattini, L. Galteri and A. Del Bimbo, "(Compress and Restore)^N: a Robust Defense Against
Adversarial Attacks on Image Classification", ACM Transactions on Multimedia Computing, Communications and
Applications, 2022.

For each of ``n_iter`` iterations and each image: draw an integer JPEG quality uniformly in ``qf_range``, compress
with the real codec (:func:`art_purifiers.ops.jpeg.jpeg_round_trip`), then restore with the generator trained for
the nearest quality (ties go to the lower quality; :mod:`art_purifiers.nets.argan`).

Backward (``bpda``): ``"straight_through"`` makes each JPEG the identity and keeps the generators' exact
gradients (the paper's BPDA); ``"identity"`` makes the whole defence the identity (the paper's BPDA-ID);
``"surrogate"`` differentiates through :func:`~art_purifiers.ops.jpeg.jpeg_differentiable` instead of the
identity. The forward is always the real codec.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from art_purifiers import zoo
from art_purifiers.base import PurifierPreprocessor, Randomness
from art_purifiers.ops.jpeg import jpeg_differentiable, jpeg_round_trip

#: The shipped restorers, by the quality they were trained for.
DEFAULT_RESTORERS: dict[int, str] = {20: "cifar10-restorer-q20", 40: "cifar10-restorer-q40", 60: "cifar10-restorer-q60"}
#: Images this many times larger than the training resolution (32 px) trigger a warning.
_LARGE_IMAGE_FACTOR = 4
_TRAINING_SIZE = 32


def nearest_quality(quality: int, available: list[int]) -> int:
    """The available quality closest to ``quality``; ties go to the lower one (the paper's rule)."""
    return min(sorted(available), key=lambda q: abs(q - quality))


def _load_restorer(source: str | Path | nn.Module) -> nn.Module:
    if isinstance(source, nn.Module):
        module = source
    elif source == "none":  # JPEG without restoration, for the paper's ablations
        module = nn.Identity()
    elif isinstance(source, str) and source in zoo.REGISTRY:
        module = zoo.load(source)
    elif Path(source).is_file():
        module = zoo.load_file(source)
    else:
        raise ValueError(
            f"Restorer {source!r} is neither a shipped artifact ({zoo.names()}), a weight file, nor an nn.Module. "
            "Train restorers with `python -m art_purifiers.training.restorer`."
        )
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class CompressRestore(PurifierPreprocessor):
    """
    (Compress and Restore)^N: random-quality JPEG then GAN restoration, ``n_iter`` times. Randomized when
    ``qf_range`` spans more than one quality.
    """

    params = PurifierPreprocessor.params + ["qf_range", "n_iter", "restorers"]

    def __init__(
        self,
        qf_range: tuple[int, int] = (20, 60),
        n_iter: int = 3,
        restorers: Mapping[int, str | Path | nn.Module] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        :param qf_range: ``(low, high)`` integer JPEG qualities, both included (paper: 20..60).
        :param n_iter: Number of compress-and-restore iterations N (paper: 3).
        :param restorers: Quality -> restorer (zoo name, weight file, module, or ``"none"`` for JPEG without
                          restoration); default: the shipped generators for 20, 40 and 60 (trained on CIFAR-10).
        :param kwargs: Arguments of :class:`~art_purifiers.base.PurifierPreprocessor`.
        """
        self.qf_range = qf_range
        self.n_iter = n_iter
        self.restorers = dict(DEFAULT_RESTORERS if restorers is None else restorers)
        self._modules: dict[int, nn.Module] = {}
        super().__init__(**kwargs)
        self._warned_size = False

    @property
    def randomized(self) -> bool:  # type: ignore[override]
        return self.qf_range[0] != self.qf_range[1]

    def _check_params(self) -> None:
        super()._check_params()
        low_high = tuple(self.qf_range) if isinstance(self.qf_range, (tuple, list)) else ()
        if len(low_high) != 2 or not all(isinstance(q, int) and not isinstance(q, bool) for q in low_high):
            raise ValueError(f"qf_range must be a pair of integers (low, high), got {self.qf_range!r}.")
        low, high = low_high
        if not 1 <= low <= high <= 100:
            raise ValueError(f"qf_range must satisfy 1 <= low <= high <= 100, got {self.qf_range!r}.")
        self.qf_range = (low, high)
        if not isinstance(self.n_iter, int) or isinstance(self.n_iter, bool) or self.n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {self.n_iter!r}.")
        if not self.restorers or not all(isinstance(q, int) and 1 <= q <= 100 for q in self.restorers):
            raise ValueError(f"restorers must map integer qualities in [1, 100] to restorers, got {self.restorers!r}.")
        if getattr(self, "_sources", None) != self.restorers:  # load only what changed (set_params re-checks)
            self._modules = {quality: _load_restorer(source) for quality, source in sorted(self.restorers.items())}
            self._sources = dict(self.restorers)

    def _draw(self, num_images: int, height: int, width: int) -> Randomness:
        low, high = self.qf_range
        qualities = torch.randint(low, high + 1, (num_images, self.n_iter), generator=self._generator)
        return {"quality": qualities}

    def _jpeg(self, x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        compressed = jpeg_round_trip(x, quality)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return compressed
        approximation = jpeg_differentiable(x, quality) if self.bpda == "surrogate" else x
        return approximation + (compressed.to(x.dtype) - approximation).detach()

    def _restore(self, x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        available = list(self._modules)
        chosen = torch.tensor([nearest_quality(int(q), available) for q in quality])
        pieces, order = [], []
        for restorer_quality in chosen.unique().tolist():
            indices = (chosen == restorer_quality).nonzero().flatten()
            module = self._modules[restorer_quality].to(x.device)
            pieces.append(module(x[indices.to(x.device)].float()).to(x.dtype))
            order.append(indices)
        inverse = torch.argsort(torch.cat(order)).to(x.device)
        return torch.cat(pieces)[inverse]

    def _purify(self, x: torch.Tensor, randomness: Randomness) -> torch.Tensor:
        assert randomness is not None
        if not self._warned_size and max(x.shape[-2:]) > _LARGE_IMAGE_FACTOR * _TRAINING_SIZE:
            warnings.warn(
                f"CompressRestore's restorers were trained on {_TRAINING_SIZE}x{_TRAINING_SIZE} CIFAR-10 images; "
                f"{x.shape[-2]}x{x.shape[-1]} images are far from that. Train restorers on your data for best results.",
                stacklevel=4,
            )
            self._warned_size = True
        for iteration in range(self.n_iter):
            quality = randomness["quality"][:, iteration]
            x = self._restore(self._jpeg(x.clamp(0, 1), quality), quality)
        return x
