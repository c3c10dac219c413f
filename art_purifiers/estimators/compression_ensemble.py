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
the vote of the members as an option. ``backward="mean_logits"`` keeps the paper's prediction (the forward returns
the averaged probabilities) and gives attacks the gradient of the logit average instead: an adaptive attack scored
on the defence's own decision. Gradients through each compression follow its ``bpda`` setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_purifiers.defences.nn_favored_jpeg import (
    NUM_DIAGONALS,
    NNFavoredJpeg,
    TableSearchResult,
    search_nn_favored_table,
)

OUTPUTS = ("log_mean_softmax", "mean_logits")

#: The paper's ensemble (section 3.5): the original model M uncompressed, then the members fine-tuned at 90, 70, 50
#: and 30, as zoo names (``None``: no compression).
ZHANG2021_MEMBERS: tuple[tuple[str, int | None], ...] = (
    ("cifar10-reference", None),
    ("cifar10-noisy-q90", 90),
    ("cifar10-noisy-q70", 70),
    ("cifar10-noisy-q50", 50),
    ("cifar10-noisy-q30", 30),
)

#: The NN-favored table Algorithm 1 picked with the whole shipped ensemble as the classifier: 2 favoured
#: anti-diagonals, QS_AF 61 (``reproductions/results/cpu-nnfj-ensemble-table-search.md``: 7.8% on its PGD examples
#: against 4.7% for the default table k=4, QS_AF=50, which the members were trained with; 96.9% clean against 97.3%).
ZHANG2021_TABLE: dict[str, Any] = {"favored_diagonals": 2, "qs_af": 61.0}


class CompressionEnsemble(nn.Module):
    """Members ``(model, quality)``; the input is compressed at each member's quality, then the outputs are averaged."""

    def __init__(
        self,
        members: Sequence[tuple[nn.Module, int | None]],
        output: str = "log_mean_softmax",
        bpda: str = "straight_through",
        backward: str | None = None,
        **compression_options: Any,
    ) -> None:
        """
        :param members: ``(model, quality)`` pairs. A model maps [0, 1] NCHW images to logits. ``quality=None`` feeds
            that member the uncompressed input, like the paper's original model M.
        :param output: ``"log_mean_softmax"`` (the paper's averaged probabilities, as log-probabilities) or
            ``"mean_logits"``.
        :param bpda: Backward of each compression (see :class:`~art_purifiers.NNFavoredJpeg`).
        :param backward: ``None`` (the output's own gradient) or one of the outputs whose gradient replaces it: the
            forward value stays ``output``, so predictions do not change.
        :param compression_options: Further :class:`~art_purifiers.NNFavoredJpeg` options (``favored_diagonals``, ...).
        """
        super().__init__()
        if not members:
            raise ValueError("members must hold at least one (model, quality) pair.")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}.")
        if backward is not None and backward not in OUTPUTS:
            raise ValueError(f"backward must be None or one of {OUTPUTS}, got {backward!r}.")
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
        self.backward = backward

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
        value = _combine(logits, self.output)
        if self.backward is None or self.backward == self.output:
            return value
        surrogate = _combine(logits, self.backward)
        return value.detach() + (surrogate - surrogate.detach())  # the value of one, the gradient of the other

    def set_table(self, favored_diagonals: int, qs_af: float) -> None:
        """Use the NN-favored table ``(k, QS_AF)`` in every member's compression (each scaled to its own quality)."""
        for compression in self.compressions:
            if compression is not None:
                compression.set_params(favored_diagonals=favored_diagonals, qs_af=qs_af)

    @property
    def table_params(self) -> dict[str, Any]:
        """``{"favored_diagonals": k, "qs_af": QS_AF}`` of the members' compressions."""
        compression = next((c for c in self.compressions if c is not None), None)
        if compression is None:
            return {}
        return {"favored_diagonals": compression.favored_diagonals, "qs_af": compression.qs_af}

    @torch.no_grad()
    def majority_vote(self, x: torch.Tensor) -> torch.Tensor:
        """The class most members predict (ties go to the lowest class index), ``(N,)``."""
        logits = self.member_logits(x)  # (members, N, classes)
        counts = nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).sum(0)
        return counts.argmax(-1)


def _combine(logits: torch.Tensor, output: str) -> torch.Tensor:
    """Members' logits ``(members, N, classes)`` -> the ensemble output ``(N, classes)`` named by ``output``."""
    if output == "mean_logits":
        return logits.mean(0)
    # log of the mean probability, computed stably: logsumexp of the members' log-softmax, minus log(members)
    count = torch.tensor(float(logits.shape[0]), dtype=logits.dtype, device=logits.device)
    return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - torch.log(count)


def compression_ensemble_classifier(
    ensemble: CompressionEnsemble, input_shape: tuple[int, ...], nb_classes: int, device_type: str = "cpu"
) -> PyTorchClassifier:
    """
    The ensemble as an ART ``PyTorchClassifier`` with cross-entropy loss. With the default output, that loss is the
    negative log of the ensemble's averaged probability of the label. ART's attacks, ``EOTPyTorchClassifier``-style
    wrappers and the evaluation suite (``--classifier module:attr``) then treat the ensemble as one model.
    """
    from art_purifiers.classifiers import make_classifier

    return make_classifier(ensemble, [], input_shape, nb_classes, "cuda" if device_type == "gpu" else "cpu")


def search_ensemble_table(
    ensemble: CompressionEnsemble,
    x_clean: np.ndarray,
    y_clean: np.ndarray,
    x_adv: np.ndarray,
    y_adv: np.ndarray | None = None,
    reference: nn.Module | None = None,
    favored_diagonals: Sequence[int] = tuple(range(1, NUM_DIAGONALS)),
    qs_af_values: Sequence[float] = tuple(range(1, 121, 5)),
    max_accuracy_loss: float = 0.01,
    batch_size: int = 256,
    verbose: bool = True,
) -> TableSearchResult:
    """
    Algorithm 1 of the paper with the whole ensemble as the classifier: every candidate table is put in every
    member's compression at once, and the ensemble's prediction is scored. The clean-accuracy constraint is measured
    against ``reference`` on the uncompressed images, by default the ensemble's uncompressed member (the paper's M).
    The ensemble's own table is restored afterwards: apply the result with ``ensemble.set_table(**result.params)``.
    The images (NCHW in [0, 1]), labels, grid and constraint are those of
    :func:`~art_purifiers.defences.nn_favored_jpeg.search_nn_favored_table`.

    :param ensemble: The ensemble (its ``output`` decides the prediction).
    :param reference: The undefended model of the constraint; default: the member with quality ``None``.
    :param batch_size: Images per forward pass.
    :raises ValueError: when there is no ``reference`` and no uncompressed member.
    """
    if reference is None:
        uncompressed = [model for model, quality in zip(ensemble.models, ensemble.qualities) if quality is None]
        if not uncompressed:
            raise ValueError("The ensemble has no uncompressed member: pass reference= (the undefended model).")
        reference = uncompressed[0]
    if all(quality is None for quality in ensemble.qualities):
        raise ValueError("The ensemble compresses nothing: there is no table to search.")
    device = next(ensemble.parameters()).device
    saved = ensemble.table_params

    @torch.no_grad()
    def predict(images: np.ndarray, params: dict[str, Any] | None) -> np.ndarray:
        model = reference if params is None else ensemble
        if params is not None:
            ensemble.set_table(**params)
        batches = torch.from_numpy(np.asarray(images, dtype=np.float32)).split(batch_size)
        return torch.cat([model(batch.to(device)).cpu() for batch in batches]).numpy()

    was_training = ensemble.training
    ensemble.eval()
    try:
        return search_nn_favored_table(
            predict, x_clean, y_clean, x_adv, y_adv, favored_diagonals, qs_af_values, max_accuracy_loss,
            verbose=verbose,
        )  # fmt: skip
    finally:
        ensemble.set_table(**saved)
        ensemble.train(was_training)


def zhang2021_ensemble(
    output: str = "log_mean_softmax",
    bpda: str = "straight_through",
    device: str | torch.device = "cpu",
    members: str | Path | None = None,
    backward: str | None = None,
    table: dict[str, Any] | None = None,
) -> CompressionEnsemble:
    """
    The paper's five-model ensemble from the shipped CIFAR-10 weights (:data:`ZHANG2021_MEMBERS`): M on the
    uncompressed input and the noisy-trained members at qualities 90, 70, 50 and 30, each on the input compressed
    with the ensemble's searched NN-favored table (:data:`ZHANG2021_TABLE`) scaled to its quality. For the suite:
    ``--classifier art_purifiers.estimators.compression_ensemble:zhang2021_ensemble`` (or
    ``:zhang2021_ensemble_mean_logits``, ``:zhang2021_ensemble_logit_gradient``).

    :param output: ``"log_mean_softmax"`` or ``"mean_logits"`` (see :class:`CompressionEnsemble`).
    :param bpda: Backward of the compressions.
    :param device: Device of the members.
    :param members: Optional directory of a model set trained with ``python -m
        art_purifiers.training.noisy_compression`` (its ``cifar10-noisy-q<q>.pt`` files) instead of the shipped one.
    :param backward: The objective attacks differentiate, if not the output (see :class:`CompressionEnsemble`).
    :param table: ``{"favored_diagonals": k, "qs_af": QS_AF}``; default :data:`ZHANG2021_TABLE`. Pass
        ``NNFavoredJpeg``'s defaults (k 4, QS_AF 50) for the table the members were trained with.
    """
    from art_purifiers import zoo

    def load(name: str) -> nn.Module:
        if members is None or name == "cifar10-reference":  # M is the shipped reference either way
            return zoo.load(name, device=device)
        return zoo.load_file(Path(members) / f"{name}.pt", device=device)

    pairs = [(load(name), quality) for name, quality in ZHANG2021_MEMBERS]
    ensemble = CompressionEnsemble(pairs, output=output, bpda=bpda, backward=backward)
    ensemble.set_table(**(ZHANG2021_TABLE if table is None else table))
    return ensemble.eval()


def zhang2021_ensemble_mean_logits() -> CompressionEnsemble:
    """:func:`zhang2021_ensemble` with the logit-average output (prediction and gradient), the other objective."""
    return zhang2021_ensemble(output="mean_logits")


def zhang2021_ensemble_logit_gradient() -> CompressionEnsemble:
    """
    :func:`zhang2021_ensemble` predicting by the averaged probabilities (the paper's rule) but differentiated as the
    logit average: attacks on the logit objective, scored on the paper's decision and the same clean images.
    """
    return zhang2021_ensemble(backward="mean_logits")
