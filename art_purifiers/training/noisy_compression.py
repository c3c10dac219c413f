"""Noisy compression training (Zhang & Gao, ICCVW 2021, section 3.4), as an ART ``Trainer``.

C. Zhang and P. Gao, "Countering Adversarial Examples: Combining Input Transformation and Noisy Training",
ICCV Workshops 2021.

A classifier is fine-tuned on the loss ``xi * CE(f(x), y) + (1 - xi) * CE(f(x_q), y)``, where ``x_q`` is ``x``
compressed at quality ``q`` by :class:`~art_purifiers.NNFavoredJpeg`, plus Gaussian noise (the paper's Figure 1:
compression, then noise). The paper uses ``xi = 0.9`` and SGD with learning rate 0.005 decayed by 6% per epoch. It
does not give the noise level: ``noise_std`` is this module's parameter, in units of the [0, 1] pixel range, and the
noisy image is clipped back to the classifier's ``clip_values``. The default of 0.03 is the largest level tried that
costs under half a point of clean accuracy (``reproductions/results/cpu-noisy-training-noise-level.md``). The
compression is preprocessing only: training needs no gradient through it.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from art.defences.trainer.trainer import Trainer
from art.estimators.classification import PyTorchClassifier
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from art_purifiers.classifiers import load_classifier, make_classifier
from art_purifiers.defences.nn_favored_jpeg import NNFavoredJpeg
from art_purifiers.training.common import load_checkpoint, save_checkpoint


class NoisyCompressionTrainer(Trainer):
    """
    Fine-tune an ART ``PyTorchClassifier`` with Zhang & Gao's noisy compression loss (see the module docstring). The
    classifier's own model is trained in place, on the classifier's device.
    """

    def __init__(
        self,
        classifier: PyTorchClassifier,
        quality: int,
        noise_std: float = 0.03,
        xi: float = 0.9,
        nb_epochs: int = 10,
        batch_size: int = 128,
        learning_rate: float = 0.005,
        lr_decay: float = 0.94,
        compression: NNFavoredJpeg | None = None,
        checkpoint: str | Path | None = None,
        seed: int = 0,
        verbose: bool = True,
    ) -> None:
        """
        :param classifier: The classifier to fine-tune (``PyTorchClassifier``, logits output).
        :param quality: ``q``, the compression quality (1-100) of :class:`~art_purifiers.NNFavoredJpeg`.
        :param noise_std: Standard deviation of the Gaussian noise added to compressed images, in [0, 1] pixel units.
        :param xi: Weight of the clean loss (the paper: 0.9).
        :param nb_epochs: Epochs over ``x``.
        :param batch_size: Images per SGD step.
        :param learning_rate: SGD learning rate of the first epoch (the paper: 0.005, momentum 0.9).
        :param lr_decay: Factor applied to the learning rate after every epoch (the paper: 0.94).
        :param compression: The compression to use; default ``NNFavoredJpeg(quality=quality)``.
        :param checkpoint: File written after every epoch (model, optimizer, random state); ``fit(..., resume=True)``
            continues from it.
        :param seed: Seed of the shuffling and the noise.
        :param verbose: Show a progress bar.
        """
        if not isinstance(classifier, PyTorchClassifier):
            raise TypeError(f"classifier must be an ART PyTorchClassifier, got {type(classifier).__name__}.")
        super().__init__(classifier)
        self.quality = quality
        self.noise_std = noise_std
        self.xi = xi
        self.nb_epochs = nb_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lr_decay = lr_decay
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.seed = seed
        self.verbose = verbose
        self._check_params()
        self.compression = compression if compression is not None else NNFavoredJpeg(quality=quality)
        self.history: list[dict[str, float]] = []

    def _check_params(self) -> None:
        if isinstance(self.quality, bool) or not isinstance(self.quality, (int, np.integer)):
            raise TypeError(f"quality must be an integer, got {type(self.quality).__name__}.")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}.")
        if not 0.0 <= self.xi <= 1.0:
            raise ValueError(f"xi must be in [0, 1], got {self.xi}.")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {self.noise_std}.")
        for name in ("nb_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not self.learning_rate > 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(
                f"need learning_rate > 0 and 0 < lr_decay <= 1, got {self.learning_rate}, {self.lr_decay}."
            )

    # --- the loss of section 3.4 -------------------------------------------------------------------------------------
    def noisy_compressed(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``x_q``: ``x`` compressed at the trainer's quality, plus Gaussian noise, clipped to the valid range."""
        low, high = self._clip_values()
        with torch.no_grad():
            compressed, _ = self.compression.forward(x)
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            return (compressed + self.noise_std * noise).clamp(low, high)

    def loss(self, x: torch.Tensor, x_q: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``xi * CE(f(x), y) + (1 - xi) * CE(f(x_q), y)`` through the classifier's own preprocessing."""
        return self.xi * F.cross_entropy(self._logits(x), y) + (1 - self.xi) * F.cross_entropy(self._logits(x_q), y)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x_preprocessed, _ = self._classifier._apply_preprocessing(x, y=None, fit=True)
        return self._classifier.model(x_preprocessed)

    def _clip_values(self) -> tuple[float, float]:
        clip = self._classifier.clip_values
        return (0.0, 1.0) if clip is None else (float(np.min(clip[0])), float(np.max(clip[1])))

    # --- training ----------------------------------------------------------------------------------------------------
    def fit(  # pylint: disable=arguments-differ
        self,
        x: np.ndarray,
        y: np.ndarray,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        resume: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Fine-tune on ``(x, y)``; after every epoch record the mean loss (and, with ``validation_data``, the accuracy
        on clean and on compressed validation images) in :attr:`history` and write the checkpoint.

        :param x: Training images, the classifier's input shape, in its ``clip_values``.
        :param y: Labels, as indices or one-hot.
        :param validation_data: Optional ``(x_val, y_val)``.
        :param resume: Continue from :attr:`checkpoint` when it exists.
        """
        images, labels = self._as_tensors(x, y)
        model, device = self._classifier.model, self._classifier.device
        optimizer = torch.optim.SGD(model.parameters(), lr=self.learning_rate, momentum=0.9)
        generator = torch.Generator().manual_seed(self.seed)
        start = self._resume(optimizer, generator) if resume else 0
        steps = math.ceil(len(images) / self.batch_size)
        for epoch in range(start, self.nb_epochs):
            for group in optimizer.param_groups:
                group["lr"] = self.learning_rate * self.lr_decay**epoch
            model.train()
            order, total = torch.randperm(len(images), generator=generator), 0.0
            for step in tqdm(range(steps), desc=f"noisy training q{self.quality}, epoch {epoch + 1}",
                             disable=not self.verbose, leave=False):  # fmt: skip
                batch = order[step * self.batch_size : (step + 1) * self.batch_size]
                x_batch, y_batch = images[batch].to(device), labels[batch].to(device)
                loss = self.loss(x_batch, self.noisy_compressed(x_batch, generator), y_batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            model.eval()
            self.history.append({"epoch": epoch + 1, "loss": total / len(images), **self._validate(validation_data)})
            self._save(optimizer, generator, epoch + 1)

    def _as_tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype.kind != "f":
            raise TypeError(f"x must be floating point images in the classifier's clip_values, got dtype {x.dtype}.")
        if tuple(x.shape[1:]) != tuple(self._classifier.input_shape):
            raise ValueError(
                f"x has images of shape {x.shape[1:]}, the classifier takes {self._classifier.input_shape}."
            )
        labels = y.argmax(1) if y.ndim == 2 else y
        if labels.ndim != 1 or len(labels) != len(x) or len(x) == 0:
            raise ValueError(f"need as many labels as images (at least one), got {len(labels)} for {len(x)} images.")
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))

    def _validate(self, validation_data: tuple[np.ndarray, np.ndarray] | None) -> dict[str, float]:
        if validation_data is None:
            return {}
        x_val, y_val = self._as_tensors(*validation_data)
        compressed = self.compression(x_val.numpy())[0]
        predict = self._classifier.predict
        return {
            "val_accuracy": float((predict(x_val.numpy()).argmax(1) == y_val.numpy()).mean()),
            f"val_accuracy_q{self.quality}": float((predict(compressed).argmax(1) == y_val.numpy()).mean()),
        }

    def _save(self, optimizer: torch.optim.Optimizer, generator: torch.Generator, epoch: int) -> None:
        if self.checkpoint is not None:
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.checkpoint, self._parts(optimizer), generator, epoch, self.history)

    def _resume(self, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> int:
        if self.checkpoint is None or not self.checkpoint.is_file():
            return 0
        epoch, self.history = load_checkpoint(self.checkpoint, self._parts(optimizer), generator)
        return epoch

    def _parts(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return {"model": self._classifier.model, "optimizer": optimizer}


# --- the model set of section 3.4 ------------------------------------------------------------------------------------
#: The paper's qualities: M90 is fine-tuned from the original model M, each next member from the previous one.
PAPER_QUALITIES = (90, 80, 70, 60, 50, 40, 30)


def train_model_set(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    output: str | Path,
    qualities: Sequence[int] = PAPER_QUALITIES,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    device_type: str = "cpu",
    **trainer_options: Any,
) -> dict[int, list[dict[str, float]]]:
    """
    Zhang & Gao's chain of noisy-trained models: ``model`` (M) is fine-tuned at ``qualities[0]``, that result at
    ``qualities[1]``, and so on. Each member's weights go to ``output/m<q>.pt`` (a state dict) and its history to
    ``output/m<q>.json``. Resumable: a finished member is loaded instead of retrained, and an interrupted one
    continues from its checkpoint. ``model`` ends with the last member's weights.

    :param model: The starting classifier (logits output, [0, 1] input), trained in place.
    :param x: Training images (NCHW float in [0, 1]).
    :param y: Their labels.
    :param output: Directory of the members.
    :param qualities: Compression qualities in training order.
    :param validation_data: Optional held-out ``(x_val, y_val)`` scored after every epoch.
    :param device_type: ``"cpu"`` or ``"gpu"``.
    :param trainer_options: Options of :class:`NoisyCompressionTrainer` (``noise_std``, ``nb_epochs``, ...).
    :return: The history of every member, by quality.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        probe = torch.from_numpy(np.asarray(x[:1], dtype=np.float32)).to(next(model.parameters()).device)
        nb_classes = int(model(probe).shape[1])
    histories = {}
    for quality in qualities:
        final, log = output / f"m{quality}.pt", output / f"m{quality}.json"
        if final.is_file() and log.is_file():
            model.load_state_dict(torch.load(final, weights_only=True, map_location="cpu"))
            histories[quality] = json.loads(log.read_text())
            continue
        device = "cuda" if device_type == "gpu" else "cpu"
        classifier = make_classifier(model, [], tuple(x.shape[1:]), nb_classes, device)
        trainer = NoisyCompressionTrainer(
            classifier, quality, checkpoint=output / f"m{quality}-checkpoint.pt", **trainer_options
        )
        trainer.fit(x, y, validation_data=validation_data, resume=True)
        temporary = final.with_name(final.name + ".tmp")
        torch.save({name: tensor.cpu() for name, tensor in model.state_dict().items()}, temporary)
        temporary.replace(final)
        log.write_text(json.dumps(trainer.history, indent=1))
        histories[quality] = trainer.history
    return histories


def export_members(
    directory: str | Path,
    architecture: str,
    config: dict[str, Any],
    card: dict[str, Any],
    qualities: Sequence[int] = PAPER_QUALITIES,
    test_data: tuple[np.ndarray, np.ndarray] | None = None,
    prefix: str = "cifar10-noisy",
) -> dict[int, str]:
    """
    Write every trained member ``directory/m<q>.pt`` of a model set as a zoo weight file ``<prefix>-q<q>.pt`` with
    its model card: ``card`` plus the member's quality, training history and metrics (last validation epoch, and
    accuracy on ``test_data`` uncompressed and compressed at the member's quality).

    :param directory: Directory of the model set (:func:`train_model_set`'s ``output``).
    :param architecture: Registered architecture of the members (that of the starting classifier).
    :param config: Its constructor config.
    :param card: Card fields shared by the members (``data``, ``resolution``, ``command``, ...).
    :param qualities: Members to export.
    :param test_data: Optional ``(x, y)`` test images scored into the card.
    :param prefix: File (and zoo) name prefix.
    :return: The sha256 of every written file, by quality.
    """
    from art_purifiers import zoo
    from art_purifiers.nets import ARCHITECTURES

    directory = Path(directory)
    digests = {}
    for quality in qualities:
        model = ARCHITECTURES[architecture](**config)
        model.load_state_dict(torch.load(directory / f"m{quality}.pt", weights_only=True, map_location="cpu"))
        history = json.loads((directory / f"m{quality}.json").read_text())
        metrics: dict[str, Any] = {"validation_last_epoch": history[-1] if history else {}}
        if test_data is not None:
            metrics.update(_test_accuracy(model.eval(), quality, *test_data))
        member_card = {**card, "quality": quality, "metrics": metrics, "history": history}
        digests[quality] = zoo.save(directory / f"{prefix}-q{quality}.pt", model, architecture, config, member_card)
    return digests


@torch.no_grad()
def _test_accuracy(model: nn.Module, quality: int, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    def accuracy(images: np.ndarray) -> float:
        batches = torch.from_numpy(np.asarray(images, dtype=np.float32)).split(500)
        predictions = torch.cat([model(batch).argmax(1) for batch in batches]).numpy()
        return float((predictions == y).mean())

    return {
        "test_images": len(y),
        "test_top1": accuracy(x),
        f"test_top1_q{quality}": accuracy(NNFavoredJpeg(quality=quality)(x)[0]),
    }


def held_out_split(count: int, validation: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(validation, training)`` of a seeded split of ``count`` training images (the command's split)."""
    order = np.random.default_rng(seed).permutation(count)
    return order[:validation], order[validation:]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m art_purifiers.training.noisy_compression``: the model set from a zoo classifier on CIFAR-10."""
    from art_purifiers import zoo
    from art_purifiers.data import load_cifar10

    parser = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", help="CIFAR-10 directory (default: $ART_PURIFIERS_DATA)")
    parser.add_argument("--download", action="store_true", help="download the original CIFAR-10 via torchvision")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--classifier", default="cifar10-reference", help="zoo name, weight file or module:attr")
    parser.add_argument("--qualities", type=int, nargs="+", default=list(PAPER_QUALITIES))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--noise-std", type=float, default=0.03)
    parser.add_argument("--xi", type=float, default=0.9)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--validation-images", type=int, default=5000, help="training images held out for validation")
    parser.add_argument(
        "--train-images", type=int, help="train on the first N of the remaining training images (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="gpu" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.train_images is not None and args.train_images < 1:
        parser.error("--train-images must be a positive integer")
    train = load_cifar10(args.data_dir, "train", download=args.download)
    held_out, kept = held_out_split(len(train), args.validation_images, args.seed)
    kept = kept[: args.train_images]
    model = load_classifier(args.classifier, "cpu")
    histories = train_model_set(
        model, train.as_float(kept), train.labels.numpy()[kept], args.output, args.qualities,
        validation_data=(train.as_float(held_out), train.labels.numpy()[held_out]) if len(held_out) else None,
        device_type=args.device, noise_std=args.noise_std, xi=args.xi, nb_epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
    )  # fmt: skip
    print(json.dumps({quality: history[-1] for quality, history in histories.items()}, indent=1))
    if not (args.classifier in zoo.names() or Path(args.classifier).is_file()):
        print(f"{args.classifier} is not a zoo weight file: members left as state dicts in {args.output}")
        return 0
    architecture, config = zoo.architecture_of(
        zoo.path(args.classifier) if args.classifier in zoo.names() else args.classifier
    )
    test = load_cifar10(args.data_dir, "test", download=args.download)
    card = {
        "data": f"CIFAR-10 train: {len(kept)} images of {train.source} (seeded split; {len(held_out)} others held out "
        "for validation)",
        "resolution": "32x32",
        "command": "python -m art_purifiers.training.noisy_compression "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "method": f"Zhang & Gao (2021) noisy compression training, chained from {args.classifier}: xi {args.xi}, "
        f"noise_std {args.noise_std}, SGD lr {args.lr} decayed 0.94 per epoch, {args.epochs} epochs per member",
        "torch": str(torch.__version__),
    }
    digests = export_members(
        args.output, architecture, config, card, args.qualities, (test.as_float(), test.labels.numpy())
    )
    print(json.dumps({f"{args.output}/cifar10-noisy-q{quality}.pt": sha for quality, sha in digests.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
