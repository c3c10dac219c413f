"""Every seed of an evaluation, named, and derived from the run's seed alone.

A seed depends on the run seed and on *where* it is used (which chunk, draw, cascade level, attack or batch), never on
which process runs the work or on what ran before: so a resumed or sharded run draws what an uninterrupted one would
have drawn. The arithmetic is that of every run made so far (their state files resume with it); the large odd
multipliers keep the seeds of different chunks, draws and levels apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_DRAW_STRIDE = 7919
_CHUNK_STRIDE = 1_000_003
_LEVEL_STRIDE = 1_000_000_007
_ADAPTIVE_OFFSET = 17
_GRADIENT_REPORT_OFFSET = 101
_DEFENCES_PER_CHAIN = 1000


@dataclass(frozen=True)
class RunSeeds:
    """The seeds of one run, from its ``run`` seed (``EvaluationConfig.seed``)."""

    run: int

    @property
    def image_order(self) -> int:
        """The random order in which test images are examined (clean-correct selection, clean-accuracy sample)."""
        return self.run

    @property
    def fit_image_order(self) -> int:
        """The random order of the training images that fitting steps (table searches, Algorithm 2) use."""
        return self.run + 1

    @property
    def fitting(self) -> int:
        """The defences' draws while fitted steps and the clean quality and speed are measured."""
        return self.run

    @property
    def gradient_report(self) -> int:
        """The defences' draws in the gradient report that picks EOT k."""
        return self.run + _GRADIENT_REPORT_OFFSET

    def draw(self, draw: int, chunk_start: int) -> int:
        """Draw ``draw`` of a randomized defence when the images of the chunk at ``chunk_start`` are scored."""
        return self.run + _DRAW_STRIDE * (draw + 1) + _CHUNK_STRIDE * chunk_start

    def art_chunk(self, chunk_start: int) -> int:
        """An ART attack on the chunk at ``chunk_start``: NumPy's and torch's global generators and the defences."""
        return self.run * _CHUNK_STRIDE + chunk_start

    def adaptive_chunk(self, chunk_start: int) -> int:
        """An adaptive-engine attack on the chunk at ``chunk_start`` (its first batch; see :func:`batch`)."""
        return self.run * _CHUNK_STRIDE + _ADAPTIVE_OFFSET + chunk_start

    def cascade_level(self, level: int, chunk_start: int) -> int:
        """Level ``level`` of a cascade on the chunk at ``chunk_start`` (its first attack: :func:`cascade_attack`)."""
        return self.adaptive_chunk(chunk_start) + _LEVEL_STRIDE * level


def cascade_attack(level_seed: int, number: int) -> int:
    """Attack ``number`` of a cascade level seeded ``level_seed``."""
    return level_seed + _CHUNK_STRIDE * number


def batch(seed: int, first_image: int) -> int:
    """The batch starting at image ``first_image`` of a pass seeded ``seed`` (as one pass over all images would)."""
    return seed + first_image


def defence_in_chain(seed: int, index: int) -> int:
    """Defence ``index`` of a chain re-seeded with ``seed``."""
    return seed * _DEFENCES_PER_CHAIN + index


def seed_global_generators(seed: int, generators: tuple[str, ...] = ("numpy", "torch")) -> None:
    """
    Seed NumPy's and/or torch's global generators (torch's seeds its CUDA generators too). ART's attacks draw from
    them, and so may a user's defence or model: a run seeds torch's at its start (:attr:`RunSeeds.run`), each ART
    attack chunk both (:meth:`RunSeeds.art_chunk`) and the fitting examples NumPy's, so that a run is reproducible
    whatever draws from them. They are not restored afterwards, as in every earlier run (whose figures this keeps).
    """
    if "numpy" in generators:
        np.random.seed(seed % 2**32)
    if "torch" in generators:
        torch.manual_seed(seed)
