"""
Expectation over Transformation (EOT) for ART's gradient attacks on randomized defences.

Athalye, Carlini and Wagner (ICML 2018) attack a randomized defence t with the averaged gradient
E_t[grad_x loss(f(t(x)))], estimated from k independent draws. ART has no general EOT, so
:class:`EOTPyTorchClassifier` provides it: a ``PyTorchClassifier`` whose gradients average over ``eot_samples``
draws of its preprocessing defences, computed in one batch (each image repeated k times).

Where EOT lives, and why: the k-fold repetition is the first step of the preprocessing chain
(:class:`EOTRepeat`), active only while ART differentiates (the input requires grad), so ``predict`` stays a
single draw. Attacks that rebuild a plain ``PyTorchClassifier`` from ``estimator.preprocessing_defences`` (ART's
APGD with a ``loss_type``, hence AutoAttack) keep EOT, because the chain they copy contains it.

Scaling: with a mean-reduced loss (ART's default), ART's loss over the N*k rows already equals the mean over
draws of the per-image loss, so ``loss_gradient`` needs no correction; ``class_gradient`` sums the k copies and is
divided by k here. Consecutive ``class_gradient`` calls on an identical batch reuse the same k draws, so the two
calls that Carlini & Wagner's attack makes per step (target and runner-up logit) see one set of transformations.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from art.estimators.classification import PyTorchClassifier

from art_purifiers.base import needs_gradient


class EOTRepeat(PreprocessorPyTorch):
    """
    Repeat every image (and its label) ``samples`` times, so that the randomized defences after it in the chain
    draw independently for each copy. Active only when the input requires grad (ART's gradient paths).

    :param samples: Number of EOT draws k (1 disables it).
    """

    params = ["samples"]

    def __init__(self, samples: int, device_type: str = "gpu") -> None:
        super().__init__(device_type=device_type, apply_fit=False, apply_predict=True)
        self.samples = samples
        self._check_params()

    def active(self, x: torch.Tensor) -> bool:
        """Whether a batch is repeated: only on ART's gradient paths."""
        return self.samples > 1 and needs_gradient(x)

    def forward(self, x: torch.Tensor, y: Any | None = None) -> tuple[torch.Tensor, Any | None]:
        if not self.active(x):
            return x, y
        if y is not None:
            y = torch.as_tensor(y).to(x.device).repeat_interleave(self.samples, dim=0)
        return x.repeat_interleave(self.samples, dim=0), y

    def _check_params(self) -> None:
        if not isinstance(self.samples, (int, np.integer)) or isinstance(self.samples, bool) or self.samples < 1:
            raise ValueError(f"eot_samples must be a positive integer, got {self.samples!r}.")


class EOTPyTorchClassifier(PyTorchClassifier):
    """
    A ``PyTorchClassifier`` whose ``loss_gradient`` and ``class_gradient`` average over ``eot_samples`` draws of
    its (randomized) preprocessing defences. Takes every argument of ``PyTorchClassifier`` plus:

    :param eot_samples: Number of draws k averaged per gradient (batched: the gradient batch is k times larger).
    :param eot_predict: Also average ``predict`` over k draws (mean of the k model outputs); default: one draw.
    """

    def __init__(
        self, model: torch.nn.Module, *args: Any, eot_samples: int = 10, eot_predict: bool = False, **kwargs: Any
    ) -> None:
        defences = kwargs.pop("preprocessing_defences", None)
        if defences is None:
            defences = []
        elif not isinstance(defences, (list, tuple)):
            defences = [defences]
        self._eot = EOTRepeat(eot_samples, device_type=kwargs.get("device_type", "gpu"))
        super().__init__(model, *args, preprocessing_defences=[self._eot, *defences], **kwargs)
        self.eot_predict = eot_predict
        self._paired_draws: tuple[str, list[Any]] | None = None

    @property
    def eot_samples(self) -> int:
        """Number of draws k averaged per gradient."""
        return int(self._eot.samples)

    def set_eot_samples(self, samples: int) -> None:
        """Change k (validated)."""
        previous = self._eot.samples
        self._eot.samples = samples
        try:
            self._eot._check_params()
        except ValueError:
            self._eot.samples = previous
            raise

    def loss_gradient(
        self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, training_mode: bool = False, **kwargs: Any
    ) -> np.ndarray | torch.Tensor:
        gradient = super().loss_gradient(self._require_float(x), y, training_mode=training_mode, **kwargs)
        # A mean-reduced loss already averages the N*k rows; a summed one counts each image k times.
        if getattr(self._loss, "reduction", "mean") == "sum":
            gradient = gradient / self.eot_samples
        return gradient

    def class_gradient(
        self,
        x: np.ndarray,
        label: int | list[int] | np.ndarray | None = None,
        training_mode: bool = False,
        **kwargs: Any,
    ) -> np.ndarray:
        self._pair_draws(x)
        gradient = super().class_gradient(self._require_float(x), label=label, training_mode=training_mode, **kwargs)
        return gradient / self.eot_samples

    def predict(self, x: np.ndarray, batch_size: int = 128, training_mode: bool = False, **kwargs: Any) -> np.ndarray:
        if not self.eot_predict or self.eot_samples == 1:
            return super().predict(x, batch_size=batch_size, training_mode=training_mode, **kwargs)
        outputs = [
            super(EOTPyTorchClassifier, self).predict(x, batch_size, training_mode, **kwargs)
            for _ in range(self.eot_samples)
        ]
        return np.mean(outputs, axis=0)

    def _pair_draws(self, x: np.ndarray | torch.Tensor) -> None:
        """Replay the previous call's draws when the batch is identical (C&W's two calls per step)."""
        array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        key = hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest() + str(array.shape)
        # every defence with a public random state (ours, and wrappers such as LearnedBPDA that forward it)
        random = [d for d in self.preprocessing_defences if callable(getattr(d, "get_random_state", None))]
        if self._paired_draws is not None and self._paired_draws[0] == key:
            for defence, state in zip(random, self._paired_draws[1]):
                defence.set_random_state(state)
        else:
            self._paired_draws = (key, [defence.get_random_state() for defence in random])

    @staticmethod
    def _require_float(x: Any) -> Any:
        if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"EOT gradients need a floating-point input, got {x.dtype}.")
        return x
