"""Zhang & Gao's own gray-box and black-box protocols (their Table 2) on CIFAR-10: the NN-favored JPEG with the
noisy-trained model ensemble against JPEG and NNFavoredJpeg alone (see :mod:`art_purifiers.evaluation.unaware`).

Gray-box: the attacks are computed on the undefended reference classifier M (FGSM 2/4/8, I-FGSM 2/3/4, DeepFool,
C&W L2). Black-box: the same FGSM and I-FGSM, plus DI-FGSM 2/4, computed on the transfer surrogate
``cifar10-surrogate`` (another architecture and seed). Neither attacker knows the defence; the adaptive attacks are
``art-purifiers evaluate --classifier art_purifiers.estimators.compression_ensemble:zhang2021_ensemble``.

The same clean-correct test images as ``art-purifiers evaluate --num-images N --seed 0`` with the reference
classifier. Writes ``paper-protocol.md``, ``.json`` and the per-image correctness ``.npz`` to ``--output``. Run from
the repository root:

    python -m reproductions.nnfj_ensemble_paper_protocol --data-dir path/to/cifar10 --num-images 200 \\
        --output runs/nnfj-ensemble-paper-protocol
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from art.defences.preprocessor import JpegCompression

from art_purifiers import NNFavoredJpeg, zoo
from art_purifiers.classifiers import make_classifier
from art_purifiers.data import load_cifar10
from art_purifiers.estimators import zhang2021_ensemble
from art_purifiers.evaluation.context import select_clean_correct
from art_purifiers.evaluation.unaware import Predictor, attack_unaware, markdown, predictor, zhang2021_attacks

SCENARIOS = {
    "gray-box": ("cifar10-reference", "computed on the undefended reference classifier M"),
    "black-box": ("cifar10-surrogate", "computed on the transfer surrogate (another architecture and seed)"),
}


def defences(members: Path | None) -> dict[str, Predictor]:
    """The table's rows: the predictors of each defended model."""
    reference = zoo.load("cifar10-reference").eval()

    def jpeg(quality: int) -> Predictor:
        codec = JpegCompression(clip_values=(0.0, 1.0), quality=quality, channels_first=True)
        return predictor(reference, lambda x: codec(x)[0])

    nnfj = NNFavoredJpeg()
    return {
        "no defence": predictor(reference),
        "JPEG q75 (the data's own quality: flattered)": jpeg(75),
        "JPEG q50": jpeg(50),
        "NNFavoredJpeg alone": predictor(reference, lambda x: nnfj(x)[0]),
        "NNFavoredJpeg + noisy-trained ensemble (the paper's method)": predictor(zhang2021_ensemble(members=members)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="CIFAR-10 directory (default: $ART_PURIFIERS_DATA)")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cw-steps", type=int, default=100, help="C&W iterations per binary-search step")
    parser.add_argument("--cw-search-steps", type=int, default=5, help="C&W binary-search steps")
    parser.add_argument("--members", type=Path, help="directory of a trained model set (default: the shipped one)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    command = "python -m reproductions.nnfj_ensemble_paper_protocol " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    started = time.time()
    test = load_cifar10(args.data_dir, "test")
    x_all, labels = test.as_float(), test.labels.numpy()
    rows = defences(args.members)
    indices = select_clean_correct(rows["no defence"](x_all), labels, args.num_images, args.seed)
    x, y = x_all[indices], labels[indices]
    args.output.mkdir(parents=True, exist_ok=True)
    clean = {name: float((predict(x) == y).mean()) for name, predict in rows.items()}
    summary: dict = {"command": command, "indices": indices.tolist(), "clean": clean, "scenarios": {}}
    texts = []
    for scenario, (source, how) in SCENARIOS.items():
        attacked = make_classifier(zoo.load(source).eval(), [], (3, 32, 32), 10, "cpu")
        attacks = zhang2021_attacks(
            scenario == "black-box", cw_steps=args.cw_steps, cw_search_steps=args.cw_search_steps
        )
        result = attack_unaware(attacked, x, y, attacks, rows, cache=args.output / scenario)
        np.savez_compressed(args.output / f"paper-protocol-{scenario}.npz", indices=indices, attacks=result["attacks"],
                            **{name: correct for name, correct in result["correct"].items()})  # fmt: skip
        summary["scenarios"][scenario] = {"source": source, "attacks": result["attacks"], "rows": result["rows"]}
        intro = (
            f"**{scenario}** (Zhang & Gao, Table 2): {len(indices)} test images that M classifies correctly (CIFAR-10, "
            f"a JPEG q75 copy), adversarial examples {how}, then given to each defended model; accuracy (%), and "
            "the share correct under every attack at once with its Wilson 95% interval."
        )
        texts.append(markdown(result, intro, command))
    texts.append("Clean accuracy on these images (%): " + ", ".join(f"{n} {100 * a:.1f}" for n, a in clean.items()))
    summary["seconds"] = round(time.time() - started)
    (args.output / "paper-protocol.json").write_text(json.dumps(summary, indent=1))
    (args.output / "paper-protocol.md").write_text("\n\n".join(texts) + "\n")
    print("\n\n".join(texts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
