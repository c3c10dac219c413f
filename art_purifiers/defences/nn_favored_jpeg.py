"""NN-favored JPEG-style quantization (Zhang & Gao, ICCVW 2021).

C. Zhang and P. Gao, "Countering Adversarial Examples: Combining Input Transformation and Noisy Training",
ICCV Workshops 2021.

The defence skips JPEG's colour transform and chroma subsampling: every RGB channel is cut into 8x8 blocks, DCT
transformed (orthonormal, in 8-bit units with JPEG's level shift of 128), and quantized with one table for all
channels. The table has a fine step ``QS_OF = 16`` on the first ``k`` low-frequency anti-diagonals (the
"original-favored" bands, ``u + v < k``) and a coarse step ``QS_AF = 50`` elsewhere (the "adversarial-favored"
bands). Algorithm 1 of the paper (:meth:`NNFavoredJpeg.search_table`) chooses ``k`` and ``QS_AF`` on a given
classifier. The output is float (no 8-bit rounding), clipped to ``clip_values``, as in Feature Distillation.

The paper never states its ``k``. :data:`DEFAULT_FAVORED_DIAGONALS` = 4 is the ``k`` that Algorithm 1 chose for
the reference classifier ``cifar10-reference`` on 256 CIFAR-10 training images and their PGD (Linf 8/255, 20 steps)
adversarial versions (``art-purifiers evaluate ... --defence NNFavoredJpeg:table=search``; the same search chose
``QS_AF = 36``, while the default keeps the paper's 50). Run :meth:`NNFavoredJpeg.search_table` on your own
classifier and data to choose both.

The paper's noisy training of fine-tuned models and their ensemble (a classifier-side method, not a preprocessor) are
:mod:`art_purifiers.training.noisy_compression` and :mod:`art_purifiers.estimators.compression_ensemble`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from art_purifiers.base import PurifierPreprocessor, Randomness
from art_purifiers.ops.dct import BLOCK_SIZE
from art_purifiers.ops.jpeg import check_codec, quantize_with_table
from art_purifiers.ops.quantize import check_table, scale_quantization_table

DEFAULT_FAVORED_DIAGONALS = 4
NUM_DIAGONALS = 2 * BLOCK_SIZE - 1


def nn_favored_table(
    favored_diagonals: int = DEFAULT_FAVORED_DIAGONALS,
    qs_of: float = 16.0,
    qs_af: float = 50.0,
    quality: int | None = None,
) -> np.ndarray:
    """
    The NN-favored quantization table.

    :param favored_diagonals: ``k``: anti-diagonals ``u + v < k`` get step ``qs_of`` (0 gives a flat ``qs_af`` table,
                              15 a flat ``qs_of`` table).
    :param qs_of: Step of the original-favored (low-frequency) bands; the paper uses 16.
    :param qs_af: Step of the adversarial-favored bands; the paper's search gave 50.
    :param quality: Optional JPEG-style quality (1-100) to scale the table with the IJG formula, as the paper does
                    for its compression levels 90..30; ``None`` (or 50) keeps the table as is.
    :return: ``(8, 8)`` float64 array, ``[u, v]`` = vertical, horizontal frequency.
    """
    if isinstance(favored_diagonals, bool) or not isinstance(favored_diagonals, (int, np.integer)):
        raise TypeError(f"favored_diagonals must be an integer, got {favored_diagonals!r}.")
    if not 0 <= favored_diagonals <= NUM_DIAGONALS:
        raise ValueError(f"favored_diagonals must be in [0, {NUM_DIAGONALS}], got {favored_diagonals}.")
    for name, value in (("qs_of", qs_of), ("qs_af", qs_af)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < value < np.inf:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    u, v = np.indices((BLOCK_SIZE, BLOCK_SIZE))
    table = np.where(u + v < favored_diagonals, float(qs_of), float(qs_af))
    if quality is not None:
        table = scale_quantization_table(torch.from_numpy(table), quality).numpy()
    return table


@dataclass
class TableSearchResult:
    """
    Outcome of :meth:`NNFavoredJpeg.search_table` (the paper's Algorithm 1).

    :param favored_diagonals: Chosen ``k``.
    :param qs_af: Chosen step of the adversarial-favored bands.
    :param table: The chosen table.
    :param clean_accuracy_undefended: Accuracy on the clean images without the defence.
    :param clean_accuracy: Accuracy on the purified clean images with the chosen table.
    :param adversarial_accuracy: Accuracy on the purified adversarial images with the chosen table.
    :param feasible: ``False`` when no candidate kept the clean-accuracy loss within the limit (the result is then
                     the candidate with the smallest loss).
    :param rows: One dict per candidate: ``favored_diagonals``, ``qs_af``, ``clean_accuracy``,
                 ``adversarial_accuracy``, ``clean_accuracy_loss``.
    """

    favored_diagonals: int
    qs_af: float
    table: np.ndarray
    clean_accuracy_undefended: float
    clean_accuracy: float
    adversarial_accuracy: float
    feasible: bool
    rows: list[dict[str, float]] = field(default_factory=list)

    @property
    def params(self) -> dict[str, Any]:
        """Keyword arguments for ``NNFavoredJpeg.set_params`` that select the chosen table."""
        return {"favored_diagonals": self.favored_diagonals, "qs_af": self.qs_af}


class NNFavoredJpeg(PurifierPreprocessor):
    """
    RGB-domain 8x8 DCT quantization with the NN-favored table of Zhang & Gao (2021). Deterministic.

    ``bpda="straight_through"`` makes the rounding the identity in backward (the transforms are linear, so the
    defence's backward is the identity up to clipping); ``"surrogate"`` uses the cubic soft-rounding gradient.
    """

    params = PurifierPreprocessor.params + ["favored_diagonals", "qs_of", "qs_af", "quality", "codec"]

    def __init__(
        self,
        favored_diagonals: int = DEFAULT_FAVORED_DIAGONALS,
        qs_of: float = 16.0,
        qs_af: float = 50.0,
        quality: int | None = None,
        codec: str = "dct",
        **kwargs: Any,
    ) -> None:
        """
        :param favored_diagonals: ``k``, the number of low-frequency anti-diagonals quantized with ``qs_of``
                                  (default 4, chosen by Algorithm 1 on CIFAR-10, see the module docstring).
        :param qs_of: Step of the original-favored bands (paper: 16).
        :param qs_af: Step of the adversarial-favored bands (paper: 50).
        :param quality: Optional IJG quality scaling of the table (the paper's levels 90..30); ``None`` = unscaled.
        :param codec: ``"dct"`` (each RGB channel's DCT quantized, float output) or ``"jpeg"`` (a real JPEG file with
                      the table for every component, exactly Pillow's ``qtables=[table]``: YCbCr, 4:2:0, 8-bit
                      output), see :func:`~art_purifiers.ops.jpeg.quantize_with_table`.
        :param kwargs: Arguments of :class:`~art_purifiers.base.PurifierPreprocessor` (``clip_values``,
                       ``channels_first``, ``bpda``, ``batch_size``, ...).
        """
        super().__init__(**kwargs)
        self.favored_diagonals = favored_diagonals
        self.qs_of = qs_of
        self.qs_af = qs_af
        self.quality = quality
        self.codec = codec

    @property
    def table(self) -> np.ndarray:
        """The quantization table in use, ``(8, 8)``, in 8-bit units."""
        return nn_favored_table(self.favored_diagonals, self.qs_of, self.qs_af, self.quality)

    def _check_params(self) -> None:
        super()._check_params()
        check_table(torch.from_numpy(self.table))
        check_codec(self.codec)

    def _purify(self, x: torch.Tensor, randomness: Randomness) -> torch.Tensor:
        return quantize_with_table(x, torch.from_numpy(self.table), self.rounding, self.codec)

    def search_table(
        self,
        classifier: Any,
        x_clean: np.ndarray,
        y_clean: np.ndarray,
        x_adv: np.ndarray,
        y_adv: np.ndarray | None = None,
        favored_diagonals: Sequence[int] = tuple(range(1, NUM_DIAGONALS)),
        qs_af_values: Sequence[float] = tuple(range(1, 121, 5)),
        max_accuracy_loss: float = 0.01,
        batch_size: int = 128,
        verbose: bool = True,
    ) -> TableSearchResult:
        """
        Algorithm 1 of the paper on one classifier (:func:`search_nn_favored_table` with this defence in front of
        ``classifier``; ``QS_OF`` and ``quality`` are this defence's). The defence itself is not changed: apply the
        result with ``defence.set_params(**result.params)``. The images, labels, grid and constraint are those of
        :func:`search_nn_favored_table`; the images are in this defence's layout and ``clip_values``.

        :param classifier: An ART classifier *without* this defence in its preprocessing (the search applies it).
        :param batch_size: Batch size for ``classifier.predict``.
        """
        candidate = copy.deepcopy(self)

        def predict(images: np.ndarray, params: dict[str, Any] | None) -> np.ndarray:
            if params is not None:
                candidate.set_params(**params)
                images = candidate(images)[0]
            return classifier.predict(images, batch_size=batch_size)

        return search_nn_favored_table(
            predict,
            x_clean,
            y_clean,
            x_adv,
            y_adv,
            favored_diagonals=favored_diagonals,
            qs_af_values=qs_af_values,
            max_accuracy_loss=max_accuracy_loss,
            qs_of=self.qs_of,
            quality=self.quality,
            verbose=verbose,
        )


def search_nn_favored_table(
    predict: Callable[[np.ndarray, dict[str, Any] | None], np.ndarray],
    x_clean: np.ndarray,
    y_clean: np.ndarray,
    x_adv: np.ndarray,
    y_adv: np.ndarray | None = None,
    favored_diagonals: Sequence[int] = tuple(range(1, NUM_DIAGONALS)),
    qs_af_values: Sequence[float] = tuple(range(1, 121, 5)),
    max_accuracy_loss: float = 0.01,
    qs_of: float = 16.0,
    quality: int | None = None,
    verbose: bool = True,
) -> TableSearchResult:
    """
    Algorithm 1 of the paper for any model that compresses with the NN-favored table: grid search over ``k`` and
    ``QS_AF`` (``QS_OF`` fixed) for the highest accuracy on compressed adversarial images among the candidates whose
    clean accuracy is at most ``max_accuracy_loss`` below the undefended one. Ties go to the higher clean accuracy,
    then to the smaller ``QS_AF``, then to the larger ``k``.

    :param predict: ``predict(images, params)``: class scores of ``images`` with the table
                    ``params = {"favored_diagonals": k, "qs_af": q}`` in use, or undefended when ``params`` is
                    ``None`` (the baseline of the clean-accuracy constraint).
    :param x_clean: Clean images (the paper: 1,000).
    :param y_clean: Their labels (indices or one-hot).
    :param x_adv: Adversarial images made from correctly classified clean images (the paper: 200).
    :param y_adv: Their true labels; defaults to ``y_clean`` when ``x_adv`` has as many images as ``x_clean``.
    :param favored_diagonals: Candidate ``k`` values (paper: 1..14).
    :param qs_af_values: Candidate ``QS_AF`` values (paper: 1, 6, ..., 116).
    :param max_accuracy_loss: Allowed clean-accuracy loss as a fraction (paper: 1 point = 0.01).
    :param qs_of: ``QS_OF`` of the returned table.
    :param quality: Quality scaling of the returned table.
    :param verbose: Show a progress bar.
    :return: The chosen configuration and the full table of results.
    """
    if not favored_diagonals or not qs_af_values:
        raise ValueError("favored_diagonals and qs_af_values must not be empty.")
    y_clean_idx, y_adv_idx = _search_labels(x_clean, y_clean, x_adv, y_adv, max_accuracy_loss)

    def accuracy(images: np.ndarray, labels: np.ndarray, params: dict[str, Any] | None) -> float:
        return float(np.mean(np.argmax(predict(images, params), axis=1) == labels))

    baseline = accuracy(x_clean, y_clean_idx, None)
    rows: list[dict[str, float]] = []
    grid = [(int(k), float(q)) for k in favored_diagonals for q in qs_af_values]
    for k, qs_af in tqdm(grid, desc="NN-favored table search", disable=not verbose):
        params = {"favored_diagonals": k, "qs_af": qs_af}
        clean, adversarial = accuracy(x_clean, y_clean_idx, params), accuracy(x_adv, y_adv_idx, params)
        rows.append({**params, "clean_accuracy": clean, "adversarial_accuracy": adversarial,
                     "clean_accuracy_loss": baseline - clean})  # fmt: skip
    best, feasible = _choose_candidate(rows, max_accuracy_loss)
    return TableSearchResult(
        favored_diagonals=int(best["favored_diagonals"]),
        qs_af=float(best["qs_af"]),
        table=nn_favored_table(int(best["favored_diagonals"]), qs_of, best["qs_af"], quality),
        clean_accuracy_undefended=baseline,
        clean_accuracy=best["clean_accuracy"],
        adversarial_accuracy=best["adversarial_accuracy"],
        feasible=feasible,
        rows=rows,
    )


def _search_labels(
    x_clean: np.ndarray, y_clean: np.ndarray, x_adv: np.ndarray, y_adv: np.ndarray | None, max_accuracy_loss: float
) -> tuple[np.ndarray, np.ndarray]:
    """
    The class indices of the clean and adversarial images of a table search (``y_adv`` defaults to ``y_clean``), its
    accuracy-loss limit checked.
    """
    if not 0 <= max_accuracy_loss < 1:
        raise ValueError(f"max_accuracy_loss must be in [0, 1), got {max_accuracy_loss}.")
    y_clean_idx = _label_indices(y_clean, len(x_clean), "y_clean")
    if y_adv is not None:
        return y_clean_idx, _label_indices(y_adv, len(x_adv), "y_adv")
    if len(x_adv) != len(x_clean):
        raise ValueError("y_adv is required when x_adv and x_clean hold different numbers of images.")
    return y_clean_idx, y_clean_idx


def _choose_candidate(rows: list[dict[str, float]], max_accuracy_loss: float) -> tuple[dict[str, float], bool]:
    """Algorithm 1's choice among the searched rows, and whether any row met the clean-accuracy constraint."""
    # tolerance for float noise in "loss <= limit"
    admissible = [r for r in rows if r["clean_accuracy_loss"] <= max_accuracy_loss + 1e-9]
    if admissible:
        best = max(
            admissible,
            key=lambda r: (r["adversarial_accuracy"], r["clean_accuracy"], -r["qs_af"], r["favored_diagonals"]),
        )
        return best, True
    best = max(rows, key=lambda r: (r["clean_accuracy"], r["adversarial_accuracy"]))
    warnings.warn(
        f"No candidate kept the clean-accuracy loss within {max_accuracy_loss:.3f}; returning the one with the "
        f"smallest loss ({best['clean_accuracy_loss']:.3f}).",
        stacklevel=3,
    )
    return best, False


def _label_indices(labels: np.ndarray, count: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = np.argmax(labels, axis=1)
    if labels.ndim != 1 or len(labels) != count:
        raise ValueError(f"{name} must hold {count} labels (indices or one-hot), got shape {labels.shape}.")
    return labels
