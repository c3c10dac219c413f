"""The model ensemble of Zhang & Gao (ICCVW 2021, section 3.5) as one differentiable model for ART.

C. Zhang and P. Gao, "Countering Adversarial Examples: Combining Input Transformation and Noisy Training",
ICCV Workshops 2021.

Each member is a classifier fine-tuned at a compression quality (see
:mod:`art_purifiers.training.noisy_compression`). It sees the input compressed at its own quality by
:class:`~art_purifiers.NNFavoredJpeg`, and the ensemble averages the members' softmax outputs (the paper's rule).
An ensemble outputs class scores, not images, so it cannot be an ART preprocessor. ART's ``EnsembleClassifier``
sums the members' loss gradients, which is not the gradient of the ensemble's own decision. Instead,
:class:`CompressionEnsemble` is one ``nn.Module``, so a ``PyTorchClassifier`` around it
(:func:`compression_ensemble_classifier`) is attacked through every member at once.

Its output, the attack objective:

- ``"log_mean_softmax"`` (default) returns ``log(mean_i softmax(f_i(c_i(x))))``. Cross-entropy on these "logits" is
  exactly ``-log`` of the ensemble's averaged probability of the label, the paper's decision rule. It is not the sum
  of member losses.
- ``"mean_logits"`` returns ``mean_i f_i(c_i(x))``: the logit average that adaptive attacks on ensembles also use.

Both argmax to the same class only approximately. Prediction follows the chosen output; :meth:`majority_vote` gives
the vote of the members as an option. Gradients through each compression follow its ``bpda`` setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_purifiers.defences.nn_favored_jpeg import NNFavoredJpeg

OUTPUTS = ("log_mean_softmax", "mean_logits")


class CompressionEnsemble(nn.Module):
    """Members ``(model, quality)``; the input is compressed at each member's quality, then the outputs are averaged."""

    def __init__(
        self,
        members: Sequence[tuple[nn.Module, int | None]],
        output: str = "log_mean_softmax",
        bpda: str = "straight_through",
        **compression_options: Any,
    ) -> None:
        """
        :param members: ``(model, quality)`` pairs. A model maps [0, 1] NCHW images to logits. ``quality=None`` feeds
            that member the uncompressed input, like the paper's original model M.
        :param output: ``"log_mean_softmax"`` (the paper's averaged probabilities, as log-probabilities) or
            ``"mean_logits"``.
        :param bpda: Backward of each compression (see :class:`~art_purifiers.NNFavoredJpeg`).
        :param compression_options: Further :class:`~art_purifiers.NNFavoredJpeg` options (``favored_diagonals``, ...).
        """
        super().__init__()
        if not members:
            raise ValueError("members must hold at least one (model, quality) pair.")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}.")
        for index, member in enumerate(members):
            if not (isinstance(member, tuple) and len(member) == 2 and isinstance(member[0], nn.Module)):
                raise TypeError(f"members[{index}] must be a (torch.nn.Module, quality) pair, got {member!r:.80}.")
        self.models = nn.ModuleList(model for model, _ in members)
        self.qualities = [quality for _, quality in members]
        self.compressions = [
            None if quality is None else NNFavoredJpeg(quality=quality, bpda=bpda, **compression_options)
            for quality in self.qualities
        ]
        self.output = output

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits on its own compressed input, ``(members, N, classes)``."""
        outputs = []
        for model, compression in zip(self.models, self.compressions):
            inputs = x if compression is None else compression.forward(x)[0]
            outputs.append(model(inputs))
        shapes = {tuple(output.shape) for output in outputs}
        if len(shapes) != 1:
            raise ValueError(f"The members disagree on their output shape: {sorted(shapes)}.")
        return torch.stack(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.member_logits(x)
        if self.output == "mean_logits":
            return logits.mean(0)
        # log of the mean probability, computed stably: logsumexp of the members' log-softmax, minus log(members)
        return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - torch.log(
            torch.tensor(float(len(self.models)), dtype=logits.dtype, device=logits.device)
        )

    @torch.no_grad()
    def majority_vote(self, x: torch.Tensor) -> torch.Tensor:
        """The class most members predict (ties go to the lowest class index), ``(N,)``."""
        logits = self.member_logits(x)  # (members, N, classes)
        counts = nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).sum(0)
        return counts.argmax(-1)


def compression_ensemble_classifier(
    ensemble: CompressionEnsemble, input_shape: tuple[int, ...], nb_classes: int, device_type: str = "cpu"
) -> PyTorchClassifier:
    """
    The ensemble as an ART ``PyTorchClassifier`` with cross-entropy loss. With the default output, that loss is the
    negative log of the ensemble's averaged probability of the label. ART's attacks, ``EOTPyTorchClassifier``-style
    wrappers and the evaluation suite (``--classifier module:attr``) then treat the ensemble as one model.
    """
    from art_purifiers.evaluation.targets import make_classifier

    return make_classifier(ensemble, [], input_shape, nb_classes, "cuda" if device_type == "gpu" else "cpu")
