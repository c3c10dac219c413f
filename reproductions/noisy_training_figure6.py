"""Zhang & Gao's Figure 6 analogue: each noisy-trained member's accuracy on test images compressed at every quality.

    python -m reproductions.noisy_training_figure6 --data-dir path/to/cifar10 --members runs/noisy-set \
        --output reproductions/results/cpu-noisy-training-figure6

Trains the chain M90..M30 with :func:`~art_purifiers.training.noisy_compression.train_model_set` into ``--members``
(resumable), unless it is already there. It then scores M and every member on the test split compressed by
``NNFavoredJpeg`` at each quality, with no compression too. The paper's shape is that M_q does best at quality q.
Writes ``<output>.md`` and ``<output>.png``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from art_purifiers import NNFavoredJpeg
from art_purifiers.classifiers import load_classifier
from art_purifiers.data import load_cifar10
from art_purifiers.estimators import CompressionEnsemble
from art_purifiers.training.noisy_compression import PAPER_QUALITIES, held_out_split, train_model_set


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        predictions = torch.cat([model(torch.from_numpy(x[i : i + 500])).argmax(1) for i in range(0, len(x), 500)])
    return float((predictions.numpy() == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--members", type=Path, required=True, help="directory of the model set (trained if missing)")
    parser.add_argument("--output", type=Path, required=True, help="file stem of the table and plot")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-images", type=int, default=45000)
    args = parser.parse_args()
    train, test = load_cifar10(args.data_dir, "train"), load_cifar10(args.data_dir, "test")
    chosen = held_out_split(len(train), 5000)[1][: args.train_images]  # the images the command trains on
    reference = load_classifier("cifar10-reference", "cpu").eval()
    model = copy.deepcopy(reference)
    train_model_set(model, train.as_float(chosen), train.labels.numpy()[chosen], args.members, nb_epochs=args.epochs)
    x, y = test.as_float(), test.labels.numpy()
    qualities = [None, *PAPER_QUALITIES]
    inputs = {q: x if q is None else NNFavoredJpeg(quality=q)(x)[0] for q in qualities}
    rows = {"M": [accuracy(reference, inputs[q], y) for q in qualities]}
    members = {}
    for quality in PAPER_QUALITIES:
        member = copy.deepcopy(reference)
        member.load_state_dict(torch.load(args.members / f"m{quality}.pt", weights_only=True))
        members[quality] = member.eval()
        rows[f"M{quality}"] = [accuracy(members[quality], inputs[q], y) for q in qualities]
    # the paper's ensemble of M, M90, M70, M50 and M30, each member compressing at its own quality on top
    ensemble = CompressionEnsemble([(reference, None), *[(members[q], q) for q in (90, 70, 50, 30)]]).eval()
    rows["ensemble (M, M90, M70, M50, M30)"] = [accuracy(ensemble, inputs[q], y) for q in qualities]
    header = ["model", "uncompressed", *[f"q{q}" for q in PAPER_QUALITIES]]
    lines = [
        "# Noisy-trained members on compressed test images (Zhang & Gao, Figure 6 analogue)",
        "",
        f"`python -m reproductions.noisy_training_figure6 --epochs {args.epochs} --train-images {args.train_images}`. "
        "Members are fine-tuned in a chain (M90 from M, each next from the previous one) with noise 0.03 and xi "
        "0.9. They are scored on the "
        f"{len(y)} test images of a CIFAR-10 copy re-encoded as JPEG q75, compressed by `NNFavoredJpeg` at "
        "each quality. Accuracy is in %, and the best model per quality is in bold. The ensemble's members compress "
        "their input again at their own quality.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    best = {column: max(values[column] for values in rows.values()) for column in range(len(qualities))}
    for name, values in rows.items():
        cells = [f"**{100 * v:.1f}**" if v == best[c] else f"{100 * v:.1f}" for c, v in enumerate(values)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, args.output.with_suffix(".png"))


def plot(rows: dict[str, list[float]], file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    labels = ["none", *[str(q) for q in PAPER_QUALITIES]]
    for name, values in rows.items():
        axis.plot(labels, [100 * v for v in values], marker="o", label=name)
    axis.set(xlabel="compression quality of the test images", ylabel="accuracy (%)", title="Members by test quality")
    axis.legend(ncol=2, fontsize=8)
    figure.tight_layout()
    figure.savefig(file, dpi=120)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
