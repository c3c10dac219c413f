"""
What every step of an evaluation run reads: the configuration, the processes, the device, the named seeds, the chunk
store, the classifier and the evaluated images. :meth:`RunContext.load` selects the images (Carlini et al. 2019):
the first ``num_images`` test images, in a seeded random order, that the undefended classifier gets right.
The engines and each defence under test work through a context, never through the suite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from art_purifiers.classifiers import load_classifier, make_classifier
from art_purifiers.data import ImageDataset
from art_purifiers.evaluation import cascade
from art_purifiers.evaluation.chunks import ChunkStore, gathered, load_state
from art_purifiers.evaluation.config import EvaluationConfig, check_same_config, load_dataset
from art_purifiers.evaluation.distributed import World, chunk_bounds
from art_purifiers.evaluation.seeds import RunSeeds, seed_global_generators
from art_purifiers.evaluation.specs import AttackSpec, check_l2_budget
from art_purifiers.evaluation.targets import FitData, reseed


def select_clean_correct(predictions: np.ndarray, labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """
    The evaluated images: the first ``count`` test images, in a seeded random order, that the undefended classifier
    gets right (sorted indices; every protocol of a report uses the same images).

    :raises ValueError: if fewer than ``count`` images are classified correctly.
    """
    order = np.random.default_rng(RunSeeds(seed).image_order).permutation(len(labels))
    correct_order = order[predictions[order] == labels[order]]
    if len(correct_order) < count:
        raise ValueError(f"Only {len(correct_order)} test images are classified correctly; asked for {count}.")
    return np.sort(correct_order[:count])


def fit_image_indices(train_size: int, count: int, seed: int) -> np.ndarray:
    """The training images that table searches and other fitting steps use: ``count`` of them in a seeded order."""
    return np.random.default_rng(RunSeeds(seed).fit_image_order).permutation(train_size)[:count]


class RunContext:
    """
    The shared state of one run (see the module docstring); the images and the classifier once :meth:`load` ran.

    :param state: The run's state directory (chunk files, cached predictions, fitted tables).
    """

    model: torch.nn.Module
    test: ImageDataset
    input_shape: tuple[int, ...]
    nb_classes: int
    #: test labels of the whole split, the selected images' indices, images and labels, and their chunks
    y_full: np.ndarray
    indices: np.ndarray
    x: np.ndarray
    y: np.ndarray
    chunks: list[tuple[int, int]]
    #: the test images classified by the undefended model (the clean-accuracy sample), and its predictions
    examined: np.ndarray
    clean_predictions: np.ndarray
    fit: FitData

    def __init__(self, config: EvaluationConfig, world: World, state: Path) -> None:
        self.config = config
        self.world = world
        self.state = state
        self.verbose = config.verbose and world.is_main  # one progress bar per launch
        self.device = world.device(config.device)
        self.seeds = RunSeeds(config.seed)
        self.store = ChunkStore(world, self.verbose)

    def load(self, attacks: Sequence[AttackSpec]) -> None:
        """
        Load the classifier and the test split, check the L2 budgets of ``attacks`` against the image size, and select
        the evaluated images (the undefended predictions are cached in the state directory).

        :raises ValueError: if the processes of a launch were given different configurations (checked first).
        """
        config = self.config
        if self.device.startswith("cuda:"):  # ART's estimators and preprocessors (and NCCL) use the current device
            torch.cuda.set_device(self.device)
        check_same_config(config, self.world)
        seed_global_generators(self.seeds.run, ("torch",))  # for models built with random weights, user defences
        self.model = load_classifier(config.classifier, self.device)
        self.test = self.world.main_first(lambda: load_dataset(config, "test"))  # rank 0 decodes and caches
        self.input_shape = tuple(self.test.images.shape[1:])
        for attack in attacks:
            check_l2_budget(attack, int(np.prod(self.input_shape)))
        self.state.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            self.nb_classes = int(self.model(self.test.images[:1].float().div(255).to(self.device)).shape[1])
        undefended = self.classifier([])
        self.y_full = self.test.labels.numpy()
        self.clean_predictions = self._undefended_predictions(undefended)
        self.indices = select_clean_correct(self.clean_predictions, self.y_full, config.num_images, config.seed)
        self.examined = np.sort(np.flatnonzero(self.clean_predictions >= 0))  # the clean-accuracy sample
        self.x, self.y = self.test.as_float(self.indices), self.y_full[self.indices]  # the selection, not the split
        self.chunks = chunk_bounds(len(self.indices), config.chunk_size)
        self.fit = FitData(self._load_fit_images, undefended, self.state, config.seed, self.verbose)

    def data_record(self) -> dict[str, Any]:
        """What ``results.json`` says of the data: source, note, images examined and selected."""
        examined = self.clean_predictions[self.examined]
        return {
            "source": self.test.source,
            "test_images": len(self.test),
            "examined_images": len(self.examined),
            "note": self.test.note,
            "undefended_clean_accuracy": float((examined == self.y_full[self.examined]).mean()),
            "selected_indices": self.indices.tolist(),
        }

    def _undefended_predictions(self, undefended: Any) -> np.ndarray:
        """
        The undefended classifier's labels of the test images, -1 where none is needed: the images are classified in
        their seeded order, chunk by chunk (shared among the processes), until ``num_images`` correct ones are found
        and ``clean_images`` were classified. Cached in the state directory for resumed runs.
        """
        file = self.state / "undefended-predictions.npy"
        cached = self.world.broadcast(np.load(file) if self.world.is_main and file.is_file() else None)
        size, config = len(self.test), self.config
        predictions = cached if cached is not None and cached.shape == (size,) else np.full(size, -1)
        order = np.random.default_rng(self.seeds.image_order).permutation(size)
        wanted = size if config.clean_images == 0 else min(config.clean_images or 0, size)
        done = int(np.argmin(predictions[order] >= 0)) if (predictions < 0).any() else size
        while done < size:
            correct = int((predictions[order[:done]] == self.y_full[order[:done]]).sum())
            if correct >= config.num_images and done >= wanted:
                break
            # enough for the images still missing at the accuracy seen so far, and at least a chunk
            rate = max(correct / done if done else 0.9, 0.05)
            step = max(wanted - done, int(1.1 * (config.num_images - correct) / rate) + 1)
            end = min(size, done + max(step, config.chunk_size))  # not the process count: the same on any
            chunks = self.chunked(None, lambda start, stop: {"values": _predict_labels(
                undefended, self.test.as_float(order[start:stop]), config.batch_size)},
                "clean predictions", chunk_bounds(end - done, config.chunk_size, offset=done))  # fmt: skip
            predictions[order[done:end]] = gathered(chunks, "values")
            done = end
        if self.world.is_main:
            np.save(file, predictions)
        return predictions

    def over_examined(self, compute: Callable[[np.ndarray, int, int], np.ndarray], desc: str) -> np.ndarray:
        """
        ``compute(images, start, end)`` over the examined test images (positions ``[start, end)`` of
        ``examined``), chunk by chunk (shared among the processes).
        """
        chunks = self.chunked(
            None,
            lambda start, end: {"values": compute(self.test.as_float(self.examined[start:end]), start, end)},
            desc,
            chunk_bounds(len(self.examined), self.config.chunk_size),
        )
        return gathered(chunks, "values")

    def chunked(
        self,
        folder: Path | None,
        compute: Callable[[int, int], dict[str, Any]],
        desc: str,
        chunks: Sequence[tuple[int, int]] | None = None,
        costs: dict[int, float] | None = None,
    ) -> list[dict[str, Any]]:
        """:meth:`.ChunkStore.run` over the selected images' chunks unless ``chunks`` are given."""
        return self.store.run(folder, compute, desc, self.chunks if chunks is None else chunks, costs)

    def _load_fit_images(self) -> tuple[np.ndarray, np.ndarray]:
        train = load_dataset(self.config, "train")
        fit_indices = fit_image_indices(len(train), self.config.fit_images, self.config.seed)
        return train.as_float(fit_indices), train.labels.numpy()[fit_indices]

    def predict_draws(self, chain: list[Any], x: torch.Tensor, draws: int, start: int) -> np.ndarray:
        """
        (images, draws) labels predicted through ``chain`` for images of the chunk at ``start``: draw ``d`` re-seeds
        the defence from the draw's seed and the chunk, so a chunk's draws do not depend on the other chunks.
        """
        defended = cascade.DefendedModel(self.model, chain)
        draw_seeds = [self.seeds.draw(draw, start) for draw in range(draws)]
        return cascade.predict_draws(defended, lambda seed: reseed(chain, seed), x, draw_seeds, self.config.batch_size)

    def correct_over_draws(self, chain: list[Any], x: np.ndarray | torch.Tensor, y: np.ndarray, draws: int,
                           start: int) -> np.ndarray:  # fmt: skip
        """(images, draws) int8 correctness of ``x`` (images of the chunk at ``start``) through ``chain``."""
        labels = self.predict_draws(chain, torch.as_tensor(x, device=self.device), draws, start)
        return (labels == np.asarray(y)[:, None]).astype(np.int8)

    def read(self, file: Path) -> dict[str, np.ndarray] | None:
        """A state file's arrays (:func:`.chunks.load_state`); only rank 0 sets an unreadable file aside."""
        return load_state(file, set_aside=self.world.is_main)

    def classifier(self, defences: list[Any], eot: int = 1) -> Any:
        """The ART classifier of the model behind ``defences`` (EOT over ``eot`` draws)."""
        return make_classifier(self.model, defences, self.input_shape, self.nb_classes, self.device, eot)


def _predict_labels(classifier: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.asarray(classifier.predict(x, batch_size=batch_size)).argmax(1)
