"""(Compress and Restore)^N (Ferrari et al., 2022).

C. Ferrari, F. Becattini, L. Galteri and A. Del Bimbo, "(Compress and Restore)^N: a Robust Defense Against
Adversarial Attacks on Image Classification", ACM Transactions on Multimedia Computing, Communications and
Applications, 2022.

For each of ``n_iter`` iterations and each image: draw an integer JPEG quality uniformly in ``qf_range``, compress
with the real codec (:func:`art_purifiers.ops.jpeg.jpeg_round_trip`), then restore with the generator trained for
the nearest quality (ties go to the lower quality; :mod:`art_purifiers.nets.argan`).

Backward (``bpda``): ``"straight_through"`` makes each JPEG the identity and keeps the generators' exact
gradients (the paper's BPDA), except that their output clamp passes gradients straight through, so pixels a
restorer pushes past white or black are not masked; ``"identity"`` makes the whole defence the identity (the
paper's BPDA-ID); ``"surrogate"`` differentiates through :func:`~art_purifiers.ops.jpeg.jpeg_differentiable`
instead of the identity. The forward is always the real codec.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from art_purifiers import zoo
from art_purifiers.base import PurifierPreprocessor, Randomness, needs_gradient
from art_purifiers.nets import run_image_network
from art_purifiers.ops.codec import BACKENDS
from art_purifiers.ops.groups import map_groups
from art_purifiers.ops.jpeg import jpeg_differentiable, jpeg_round_trip
from art_purifiers.ops.quantize import replace_gradient, straight_through_clamps

#: The shipped restorers, by the quality they were trained for.
DEFAULT_RESTORERS: dict[int, str] = {20: "cifar10-restorer-q20", 40: "cifar10-restorer-q40", 60: "cifar10-restorer-q60"}
#: The restorer name that means "JPEG without restoration" (the paper's ablations).
NO_RESTORER = "none"
#: Images this many times larger than the training resolution (32 px) trigger a warning.
_LARGE_IMAGE_FACTOR = 4
_TRAINING_SIZE = 32


def nearest_quality(quality: int, available: list[int]) -> int:
    """The available quality closest to ``quality``; ties go to the lower one (the paper's rule)."""
    return min(sorted(available), key=lambda q: abs(q - quality))


def _load_restorer(source: str | Path | nn.Module) -> nn.Module:
    if isinstance(source, str) and source == NO_RESTORER:
        return nn.Identity()
    return zoo.resolve(source, train_command="python -m art_purifiers.training.restorer")


class CompressRestore(PurifierPreprocessor):
    """
    (Compress and Restore)^N: random-quality JPEG then GAN restoration, ``n_iter`` times. Randomized when
    ``qf_range`` spans more than one quality.

    Grey (1-channel) images are compressed as grey JPEGs; a colour restorer restores them as colour images with
    three equal channels and the result is turned back into grey by its luma (what JPEG and PIL do).
    """

    params = PurifierPreprocessor.params + ["qf_range", "n_iter", "restorers", "jpeg_backend"]

    def __init__(
        self,
        qf_range: tuple[int, int] = (20, 60),
        n_iter: int = 3,
        restorers: Mapping[int, str | Path | nn.Module] | None = None,
        jpeg_backend: str = "auto",
        **kwargs: Any,
    ) -> None:
        """
        :param qf_range: ``(low, high)`` integer JPEG qualities, both included (paper: 20..60).
        :param n_iter: Number of compress-and-restore iterations N (paper: 3).
        :param restorers: Quality -> restorer (zoo name, weight file, module, or ``"none"`` for JPEG without
                          restoration); default: the shipped generators for 20, 40 and 60 (trained on CIFAR-10).
                          Modules are copied (yours is never moved to another device or frozen in place).
        :param jpeg_backend: The JPEG codec (:mod:`art_purifiers.ops.codec`): ``"auto"`` gives libjpeg's pixels on
                             every device (CUDA images coded on the GPU by the tensor codec, CPU images by
                             TorchCodec); ``"libjpeg-compiled"`` the same pixels from the tensor codec under
                             ``torch.compile`` (faster on small images once compiled; 20-100 s of compilation
                             per image size on first use); ``"nvjpeg"`` codes on the GPU with nvJPEG (inexact).
        :param kwargs: Arguments of :class:`~art_purifiers.base.PurifierPreprocessor`.
        """
        super().__init__(**kwargs)
        self.qf_range = qf_range
        self.n_iter = n_iter
        self.restorers = dict(DEFAULT_RESTORERS if restorers is None else restorers)
        self.jpeg_backend = jpeg_backend
        self._warned_size = False

    def _is_randomized(self) -> bool:
        return self.qf_range[0] != self.qf_range[1]

    def _chunk_size(self, x: torch.Tensor) -> int:
        return self._network_chunk_size(x)

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
        if self.jpeg_backend not in BACKENDS:
            raise ValueError(f"jpeg_backend must be one of {BACKENDS}, got {self.jpeg_backend!r}.")
        if not self.restorers or not all(isinstance(q, int) and 1 <= q <= 100 for q in self.restorers):
            raise ValueError(f"restorers must map integer qualities in [1, 100] to restorers, got {self.restorers!r}.")

    def _network_sources(self) -> dict[Hashable, Any]:
        return {quality: source for quality, source in self.restorers.items()}  # one restorer per JPEG quality

    def _load_network(self, key: Hashable, source: Any) -> nn.Module:
        return _load_restorer(source)

    def _draw(self, num_images: int, height: int, width: int) -> Randomness:
        low, high = self.qf_range
        qualities = torch.randint(low, high + 1, (num_images, self.n_iter), generator=self._generator)
        return {"quality": qualities}

    def _purify(self, x: torch.Tensor, randomness: Randomness) -> torch.Tensor:
        assert randomness is not None
        self._warn_on_large_images(x)
        for iteration in range(self.n_iter):
            quality = randomness["quality"][:, iteration]
            x = self._restore(self._jpeg(x.clamp(0, 1), quality), quality)
        return x

    def _jpeg(self, x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        compressed = jpeg_round_trip(x, quality, backend=self.jpeg_backend)
        if not needs_gradient(x):
            return compressed
        return replace_gradient(compressed, jpeg_differentiable(x, quality) if self.bpda == "surrogate" else x)

    def _restore(self, x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        available = sorted(self.restorers)
        chosen = [nearest_quality(int(q), available) for q in quality]
        return map_groups(self._run_restorer, x, chosen)

    def _run_restorer(self, x: torch.Tensor, quality: int) -> torch.Tensor:
        network = self._network(quality, x.device)
        # in straight-through mode every clamp, the restorer's output clamp included, passes gradients through, so a
        # pixel the restorer pushes past white or black keeps its gradient (saturation masks nothing)
        try:
            with straight_through_clamps(self.bpda == "straight_through"):
                return run_image_network(network, x)
        except ValueError as error:
            raise ValueError(f"The restorer for quality {quality}: {error}") from error

    def _warn_on_large_images(self, x: torch.Tensor) -> None:
        if not self._warned_size and max(x.shape[-2:]) > _LARGE_IMAGE_FACTOR * _TRAINING_SIZE:
            warnings.warn(
                f"CompressRestore's restorers were trained on {_TRAINING_SIZE}x{_TRAINING_SIZE} CIFAR-10 images; "
                f"{x.shape[-2]}x{x.shape[-1]} images are far from that. Train restorers on your data for best results.",
                stacklevel=5,
            )
            self._warned_size = True
