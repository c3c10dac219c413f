"""Choosing the noise level of Zhang & Gao's noisy compression training (the paper does not give it).

    python -m reproductions.noisy_training_noise_level --data-dir path/to/cifar10 \
        --output reproductions/results/cpu-noisy-training-noise-level.md

The reference classifier (M) is fine-tuned at one quality with each noise level, on a subset of the training split.
Each result is scored on held-out training images: clean accuracy, accuracy after the compression, and accuracy on
FGSM examples (Linf 8/255) made on M and then compressed. That last one is the paper's gray-box setting, used as a
cheap proxy for robustness; it is not an adaptive attack.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from art.attacks.evasion import FastGradientMethod
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_purifiers import NNFavoredJpeg
from art_purifiers.classifiers import load_classifier, make_classifier
from art_purifiers.data import load_cifar10
from art_purifiers.metrics import wilson_interval
from art_purifiers.training.noisy_compression import NoisyCompressionTrainer, held_out_split


def wrap(model: nn.Module) -> PyTorchClassifier:
    return make_classifier(model, [], (3, 32, 32), 10, "cpu")


def scores(classifier: PyTorchClassifier, compression: NNFavoredJpeg, x: np.ndarray, x_fgsm: np.ndarray, y: np.ndarray):
    def accuracy(images: np.ndarray) -> float:
        return float((classifier.predict(images, batch_size=500).argmax(1) == y).mean())

    return accuracy(x), accuracy(compression(x)[0]), accuracy(compression(x_fgsm)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--quality", type=int, default=50)
    parser.add_argument("--noise-levels", type=float, nargs="+", default=[0.0, 0.01, 0.03, 0.06, 0.1])
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--validation-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    train = load_cifar10(args.data_dir, "train")
    val, fit = held_out_split(len(train), args.validation_images)
    fit = fit[: args.train_images]
    x_val, y_val = train.as_float(val), train.labels.numpy()[val]
    x_fit, y_fit = train.as_float(fit), train.labels.numpy()[fit]
    reference = load_classifier("cifar10-reference", "cpu")
    compression = NNFavoredJpeg(quality=args.quality)
    x_fgsm = FastGradientMethod(wrap(reference), eps=8 / 255).generate(x_val, y=np.eye(10)[y_val]).astype(np.float32)
    n = len(y_val)
    lines = [
        "# Noise level of the noisy compression training",
        "",
        f"Command: `python -m reproductions.noisy_training_noise_level --quality {args.quality} --train-images "
        f"{args.train_images} --validation-images {args.validation_images} --epochs {args.epochs}` (the CIFAR-10 copy "
        "re-encoded as JPEG q75). The reference classifier is fine-tuned at quality "
        f"{args.quality} with xi 0.9, SGD lr 0.005 and {args.epochs} epochs on {len(y_fit)} training images. It is "
        f"scored on {n} other training images. FGSM is Linf 8/255, made on the reference classifier, then compressed "
        "(gray box, not adaptive). Wilson 95% intervals are in brackets.",
        "",
        f"| model | clean | compressed q{args.quality} | FGSM 8/255 then compressed | seconds |",
        "|---|---|---|---|---|",
    ]

    def row(name: str, values: tuple[float, float, float], seconds: float) -> str:
        cells = [
            f"{100 * v:.1f} [{100 * wilson_interval(v, n)[0]:.1f}, {100 * wilson_interval(v, n)[1]:.1f}]"
            for v in values
        ]
        return f"| {name} | " + " | ".join(cells) + f" | {seconds:.0f} |"

    lines.append(row("M (not fine-tuned)", scores(wrap(reference), compression, x_val, x_fgsm, y_val), 0))
    for noise in args.noise_levels:
        classifier = wrap(copy.deepcopy(reference))
        started = time.time()
        trainer = NoisyCompressionTrainer(classifier, args.quality, noise_std=noise, nb_epochs=args.epochs)
        trainer.fit(x_fit, y_fit)
        lines.append(
            row(f"noise_std {noise}", scores(classifier, compression, x_val, x_fgsm, y_val), time.time() - started)
        )
        print(lines[-1], flush=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
