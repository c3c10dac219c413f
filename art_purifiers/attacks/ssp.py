"""
Self-supervised perturbation (SSP), the label-free attack of Naseer et al., "A Self-supervised Approach for
Adversarial Robustness" (CVPR 2020), Algorithm 1.

SSP needs no labels and no classifier head: it pushes the mid-level features of a network away from those of the
clean image. After a random first step inside the Linf ball, every iteration takes a sign step of ``eps_step`` up the
gradient of the mean squared difference between the features of the perturbed and the clean image, and projects back
onto the ball (and the valid pixel range). The paper's settings are the defaults: eps 16/255, step 0.01, 100
iterations; it attacks VGG16's conv3.3 features because mid-level features transfer best to unseen models.

:func:`layer_features` turns a network and a layer name into a feature function, :func:`self_supervised_perturbation`
is the algorithm on tensors, and :class:`SelfSupervisedPerturbation` is the ART attack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from torch import nn
from tqdm.auto import tqdm

from art_purifiers.attacks.apgd import project

Features = Callable[[torch.Tensor], torch.Tensor]


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the wanted layer has run."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output


def layer_features(model: nn.Module, layer: str | None = None) -> Features:
    """
    The function ``x -> output of model's submodule named layer`` (``None``: the whole model). The forward pass
    stops at that layer, so the layers after it cost nothing.

    :param model: The network.
    :param layer: A name from ``dict(model.named_modules())``, e.g. ``"features.4"``.
    :raises ValueError: if the model has no submodule of that name (the message lists some that exist).
    """
    if layer is None:
        return model
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        names = [name for name in modules if name]
        raise ValueError(f"The model has no layer named {layer!r}; some of its layers: {names[:20]}.")

    def capture(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        raise _Captured(output)

    def features(x: torch.Tensor) -> torch.Tensor:
        handle = modules[layer].register_forward_hook(capture)
        try:
            model(x)
        except _Captured as captured:
            return captured.output
        finally:
            handle.remove()
        raise RuntimeError(f"The forward pass did not run layer {layer!r}.")

    return features


def self_supervised_perturbation(
    features: Features,
    x: torch.Tensor,
    eps: float = 16 / 255,
    eps_step: float = 0.01,
    steps: int = 100,
    clip_values: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """
    Algorithm 1 on a batch: a uniform random start in the Linf ball (the paper's random first step ``R``; the
    authors' code starts from pure Gaussian noise, which the projection sends to near the ball's corners), then
    ``steps`` sign steps maximising ``MSE(features(x'), features(x))`` per image, each projected onto the ball and
    ``clip_values``.

    :param features: Images -> feature maps (e.g. :func:`layer_features`).
    :param x: Clean images ``(N, C, H, W)``.
    :param generator: CPU generator drawing the random start (reproducible on any device).
    :return: Perturbed images, detached, with ``|x' - x| <= eps``.
    """
    with torch.no_grad():
        clean = features(x).detach()
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) * 2 - 1
        x_adv = project(x, x + eps * noise, "Linf", eps, clip_values)
    for _ in range(steps):
        images = x_adv.detach().requires_grad_(True)
        # the sum over images of each image's MSE: a batch does not change any image's gradient
        loss = (features(images) - clean).pow(2).flatten(1).mean(1).sum()
        (gradient,) = torch.autograd.grad(loss, images)
        x_adv = project(x, x_adv + eps_step * gradient.sign(), "Linf", eps, clip_values).detach()
    return x_adv


class SelfSupervisedPerturbation(EvasionAttack):
    """
    SSP as an ART evasion attack. The target is either an ART PyTorch estimator plus the name of one of its model's
    layers (the estimator's preprocessing, defences included, runs before the model), or a plain ``torch.nn.Module``
    whose output (or whose ``layer``) gives the features. Labels are ignored: the attack is self-supervised.

    :param estimator: An ART PyTorch estimator (``PyTorchClassifier``, ...) or a torch feature network.
    :param layer: Name of the feature layer in ``dict(model.named_modules())``; required with an ART estimator.
    :param eps: Linf budget (paper: 16/255).
    :param eps_step: Size of each sign step (paper: 0.01, on [0, 1] images).
    :param max_iter: Iterations (paper: 100).
    :param batch_size: Images per batch.
    :param seed: Seed of the random start (``None``: a fresh one per call).
    :param clip_values: Valid pixel range; defaults to the estimator's ``clip_values``, else (0, 1).
    :param verbose: Show a progress bar over batches.
    """

    attack_params = EvasionAttack.attack_params + [
        "layer",
        "eps",
        "eps_step",
        "max_iter",
        "batch_size",
        "seed",
        "clip_values",
        "verbose",
    ]
    _estimator_requirements = ()  # checked in __init__: an ART PyTorch estimator or an nn.Module

    def __init__(
        self,
        estimator: Any,
        layer: str | None = None,
        eps: float = 16 / 255,
        eps_step: float = 0.01,
        max_iter: int = 100,
        batch_size: int = 32,
        seed: int | None = None,
        clip_values: tuple[float, float] | None = None,
        verbose: bool = True,
    ) -> None:
        super().__init__(estimator=estimator)
        self.layer = layer
        self.eps = eps
        self.eps_step = eps_step
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.seed = seed
        self.clip_values = clip_values
        self.verbose = verbose
        self._check_params()
        self._features = self._build_features()

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """
        Perturb ``x`` (NCHW float); ``y`` is ignored.

        :return: Adversarial examples of ``x``'s shape and dtype.
        """
        if not isinstance(x, np.ndarray) or x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"x must be a float NCHW numpy array, got {type(x).__name__} {getattr(x, 'shape', '')}.")
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence(self.seed).generate_state(1)[0]))
        device = self._device()
        batches = range(0, len(x), self.batch_size)
        result = np.empty_like(x)
        for start in tqdm(batches, desc="SSP", disable=not self.verbose, leave=False):
            images = torch.as_tensor(x[start : start + self.batch_size], dtype=torch.float32, device=device)
            adversarial = self_supervised_perturbation(
                self._features, images, self.eps, self.eps_step, self.max_iter, self._clip_values(), generator
            )
            result[start : start + len(images)] = adversarial.cpu().numpy()
        return result

    def _build_features(self) -> Features:
        if isinstance(self.estimator, nn.Module):
            self.estimator.eval()
            return layer_features(self.estimator, self.layer)
        extract = layer_features(self.estimator.model, self.layer)

        def features(x: torch.Tensor) -> torch.Tensor:
            # preprocessing (defences, normalisation) with gradients, as ART's own loss_gradient does for tensors
            preprocessed, _ = self.estimator._apply_preprocessing(x, y=None, fit=False, no_grad=False)  # noqa: SLF001
            return extract(preprocessed)

        self.estimator.model.eval()
        return features

    def _device(self) -> torch.device:
        if isinstance(self.estimator, nn.Module):
            return next((p.device for p in self.estimator.parameters()), torch.device("cpu"))
        return torch.device(self.estimator.device)

    def _clip_values(self) -> tuple[float, float]:
        if self.clip_values is not None:
            return self.clip_values
        clip = getattr(self.estimator, "clip_values", None)
        return (float(clip[0]), float(clip[1])) if clip is not None else (0.0, 1.0)

    def _check_params(self) -> None:
        if not isinstance(self.estimator, nn.Module):
            if not (hasattr(self.estimator, "model") and hasattr(self.estimator, "_apply_preprocessing")):
                raise TypeError(
                    f"estimator must be an ART PyTorch estimator or a torch.nn.Module, got {type(self.estimator)}."
                )
            if self.layer is None:
                raise ValueError("SSP on an ART estimator needs layer=<name of a feature layer of its model>.")
        if not self.eps > 0 or not self.eps_step > 0:
            raise ValueError(f"eps and eps_step must be positive, got eps={self.eps}, eps_step={self.eps_step}.")
        for name in ("max_iter", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.clip_values is not None and not self.clip_values[0] < self.clip_values[1]:
            raise ValueError(f"clip_values must be (low, high) with low < high, got {self.clip_values}.")
