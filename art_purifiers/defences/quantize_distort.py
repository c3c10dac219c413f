"""DCT quantization followed by random grid distortion (Qiu et al., 2021).

H. Qiu, Y. Zeng, Q. Zheng, S. Guo, T. Zhang and H. Li, "An Efficient Preprocessing-based Approach to Mitigate
Advanced Adversarial Attacks", IEEE Transactions on Computers, 2021.

Step 1 (Algorithm 1, lines 4-9): 8x8 DCT quantization of every RGB channel with a table ``Q``.
Step 2 (Algorithm 3): random grid distortion from a random corner, cells scaled by ``1 + U(-delta, delta)``,
nearest-pixel remap, crop or reflect-pad back to the input size (see :mod:`art_purifiers.ops.distort`).

Which table: the paper learns ``Q`` from clean and C&W images with Algorithm 2 (:meth:`QuantizeDistort.learn_table`,
``Q = 80 * counts / max(counts) + 20``: the coefficients that attacks change most get the coarsest steps). The
authors' released code does not use such a table: it uses Feature Distillation's (30 everywhere, 25 on the top-left
4x4), which quantizes the low frequencies *finer*, the opposite shape. Until a table learned on our data ships, the
default is that released-code table, :data:`FEATURE_DISTILLATION_TABLE`.

Distortion defaults follow the paper (``delta = 0.15``) and the authors' code (10 cells per axis; the code used
``delta = 0.25`` for the combined defence). ``cell_size=(low, high)`` draws the paper's random grid size instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from art_purifiers.base import PurifierPreprocessor, Randomness
from art_purifiers.ops.dct import BLOCK_SIZE, block_dct
from art_purifiers.ops.distort import remap, sample_grid_distortion
from art_purifiers.ops.jpeg import check_codec, quantize_with_table
from art_purifiers.ops.quantize import check_table


def _feature_distillation_table() -> np.ndarray:
    table = np.full((BLOCK_SIZE, BLOCK_SIZE), 30.0)
    table[:4, :4] = 25.0
    return table


#: The table of the authors' released code (Feature Distillation's), in 8-bit units.
FEATURE_DISTILLATION_TABLE = _feature_distillation_table()


class QuantizeDistort(PurifierPreprocessor):
    """
    DCT quantization with table ``Q``, then random grid distortion (Qiu et al., 2021). Randomized.

    In ``bpda="straight_through"`` mode the rounding is the identity in backward and the remap keeps its exact
    gradient (a gather); ``"surrogate"`` uses the cubic soft-rounding gradient for the rounding instead.
    """

    params = PurifierPreprocessor.params + [
        "table",
        "distortion_limit",
        "num_cells",
        "cell_size",
        "quantize",
        "distort",
        "codec",
    ]

    def __init__(
        self,
        table: np.ndarray | None = None,
        distortion_limit: float = 0.15,
        num_cells: int = 10,
        cell_size: tuple[int, int] | None = None,
        quantize: bool = True,
        distort: bool = True,
        codec: str = "dct",
        **kwargs: Any,
    ) -> None:
        """
        :param table: ``(8, 8)`` quantization table in 8-bit units; ``None`` uses :data:`FEATURE_DISTILLATION_TABLE`
                      (the authors' released code), pass the result of :meth:`learn_table` for the paper's Algorithm 2.
        :param distortion_limit: ``delta`` in ``[0, 1)`` (paper: 0.15).
        :param num_cells: Grid cells per axis (authors' code: 10); ignored when ``cell_size`` is given.
        :param cell_size: ``(low, high)`` cell length in pixels drawn per image (the paper's random grid size ``d``).
        :param quantize: Run step 1 (turn off for ablations).
        :param distort: Run step 2 (turn off for ablations).
        :param codec: How step 1 applies the table: ``"dct"`` (each RGB channel's DCT, float output, the authors'
                      released code) or ``"jpeg"`` (a real JPEG file with the table, rounded to integer steps, for
                      every component: exactly Pillow's ``qtables=[table]``), see
                      :func:`~art_purifiers.ops.jpeg.quantize_with_table`.
        :param kwargs: Arguments of :class:`~art_purifiers.base.PurifierPreprocessor`.
        """
        super().__init__(**kwargs)
        self.table = FEATURE_DISTILLATION_TABLE.copy() if table is None else table
        self.distortion_limit = distortion_limit
        self.num_cells = num_cells
        self.cell_size = cell_size
        self.quantize = quantize
        self.distort = distort
        self.codec = codec

    def _is_randomized(self) -> bool:
        """Random unless the distortion is off or ``distortion_limit`` is 0."""
        return bool(self.distort) and self.distortion_limit > 0

    def _check_params(self) -> None:
        super()._check_params()
        source = self.table.detach().cpu().numpy() if isinstance(self.table, torch.Tensor) else self.table
        table = np.array(source, dtype=np.float64)  # a copy: later changes to the caller's array do not leak in
        check_table(torch.from_numpy(table))
        self.table = table
        limit = self.distortion_limit
        if isinstance(limit, bool) or not isinstance(limit, (int, float, np.number)) or not 0 <= limit < 1:
            raise ValueError(f"distortion_limit must be in [0, 1), got {limit!r}.")
        if isinstance(self.num_cells, bool) or not isinstance(self.num_cells, (int, np.integer)) or self.num_cells < 1:
            raise ValueError(f"num_cells must be a positive integer, got {self.num_cells!r}.")
        if self.cell_size is not None:
            size = self.cell_size
            if (
                not isinstance(size, (tuple, list))
                or len(size) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
                or not 1 <= size[0] <= size[1]
            ):
                raise ValueError(f"cell_size must be None or integers (low, high) with 1 <= low <= high, got {size!r}.")
            self.cell_size = (int(size[0]), int(size[1]))
        check_codec(self.codec)
        for name in ("quantize", "distort"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}.")

    def _draw(self, num_images: int, height: int, width: int) -> Randomness:
        if not self.distort:
            return None
        grid = sample_grid_distortion(
            num_images, height, width, float(self.distortion_limit), self._generator, self.num_cells, self.cell_size
        )
        return {"grid": grid}

    def _purify(self, x: torch.Tensor, randomness: Randomness) -> torch.Tensor:
        if self.quantize:
            x = quantize_with_table(x, torch.from_numpy(self.table), self.rounding, self.codec)
        if self.distort:
            assert randomness is not None
            x = remap(x, randomness["grid"].to(x.device))
        return x

    def learn_table(self, x_clean: np.ndarray, x_adv: np.ndarray) -> np.ndarray:
        """
        Algorithm 2 of the paper: for every 8x8 block of every channel, find the DCT coefficient that changes most
        between the clean and the adversarial image and count it; ``Q = 80 * counts / max(counts) + 20``.

        Blocks that the attack left unchanged are skipped (as written, the algorithm would count them for the DC
        coefficient, the arg-max of an all-zero difference). The defence itself is not changed: use
        ``defence.set_params(table=table)``.

        :param x_clean: Clean images in this defence's layout and ``clip_values``.
        :param x_adv: Adversarial images of the same shape (the paper uses C&W L2).
        :return: The learned ``(8, 8)`` table in 8-bit units (float values in ``[20, 100]``).
        """
        clean = self._numpy_to_tensor(x_clean, "x_clean")
        adversarial = self._numpy_to_tensor(x_adv, "x_adv")
        if clean.shape != adversarial.shape:
            raise ValueError(f"x_clean {tuple(clean.shape)} and x_adv {tuple(adversarial.shape)} differ in shape.")
        self._check_values(clean)
        self._check_values(adversarial)
        low, high = self.clip_values
        counts = torch.zeros(BLOCK_SIZE * BLOCK_SIZE, dtype=torch.float64)
        for start in range(0, clean.shape[0], self.batch_size):
            pair = torch.stack([clean[start : start + self.batch_size], adversarial[start : start + self.batch_size]])
            pair = pair.double() * (255.0 / (high - low))
            if not self.channels_first:
                pair = pair.permute(0, 1, 4, 2, 3)
            coefficients = block_dct(pair.flatten(0, 1)).unflatten(0, (2, -1))
            difference = (coefficients[0] - coefficients[1]).abs().flatten(-2).reshape(-1, BLOCK_SIZE * BLOCK_SIZE)
            changed = difference.amax(dim=1) > 0
            counts += torch.bincount(difference[changed].argmax(dim=1), minlength=BLOCK_SIZE * BLOCK_SIZE).cpu()
        if counts.max() == 0:
            raise ValueError("x_adv equals x_clean: no block changed, so no table can be learned.")
        return (counts / counts.max() * 80.0 + 20.0).reshape(BLOCK_SIZE, BLOCK_SIZE).numpy()
