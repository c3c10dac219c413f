"""Algorithm 1 of Zhang & Gao (the NN-favored table search) re-run with the whole noisy-trained ensemble as the
classifier (:func:`art_purifiers.estimators.search_ensemble_table`), on the images and adversarial examples that
``art-purifiers evaluate --defence NNFavoredJpeg:table=search`` searches with for the reference classifier alone: 256
training images and their PGD (Linf 8/255, 20 steps) examples on the undefended classifier. Run from the repository
root:

    python -m reproductions.nnfj_ensemble_table_search --data-dir path/to/cifar10 \\
        --output reproductions/results/cpu-nnfj-ensemble-table-search
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from art_purifiers import NNFavoredJpeg, zoo
from art_purifiers.classifiers import make_classifier
from art_purifiers.data import load_cifar10
from art_purifiers.defences.nn_favored_jpeg import DEFAULT_FAVORED_DIAGONALS
from art_purifiers.estimators import search_ensemble_table, zhang2021_ensemble
from art_purifiers.evaluation.context import fit_image_indices
from art_purifiers.evaluation.targets import FitData


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="CIFAR-10 directory (default: $ART_PURIFIERS_DATA)")
    parser.add_argument("--fit-images", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--members", type=Path, help="directory of a trained model set (default: the shipped one)")
    parser.add_argument("--state", type=Path, default=Path("runs/nnfj-ensemble-table-search"), help="cache directory")
    parser.add_argument("--output", type=Path, required=True, help="file stem of the .md and .json results")
    args = parser.parse_args(argv)
    command = "python -m reproductions.nnfj_ensemble_table_search " + shlex.join(sys.argv[1:] if argv is None else argv)
    train = load_cifar10(args.data_dir, "train")
    indices = fit_image_indices(len(train), args.fit_images, args.seed)
    undefended = make_classifier(zoo.load("cifar10-reference"), [], (3, 32, 32), 10, "cpu")
    fit = FitData(lambda: (train.as_float(indices), train.labels.numpy()[indices]), undefended, args.state, args.seed)
    started = time.time()
    ensemble = zhang2021_ensemble(members=args.members)
    result = search_ensemble_table(ensemble, fit.x, fit.y, fit.adversarial("pgd"), fit.y)
    single = NNFavoredJpeg().search_table(undefended, fit.x, fit.y, fit.adversarial("pgd"), fit.y, verbose=False)
    at_default = search_ensemble_table(
        ensemble,
        fit.x,
        fit.y,
        fit.adversarial("pgd"),
        fit.y,
        None,
        [DEFAULT_FAVORED_DIAGONALS],
        [50.0],
        0.99,  # the default table is scored whatever its clean-accuracy loss
        verbose=False,
    )
    seconds = round(time.time() - started)
    lines = [
        "# NN-favored table search with the noisy-trained ensemble (Zhang & Gao, Algorithm 1)",
        "",
        f"`{command}` ({seconds} s on this machine, both searches). {args.fit_images} CIFAR-10 training images (a JPEG "
        "q75 copy) and their PGD Linf 8/255 (20 steps) examples on the reference classifier M; a candidate may cost "
        "at most 1 point of clean accuracy against M on uncompressed images; grid k = 1..14, QS_AF = 1, 6, ..., 116.",
        "",
        "| classifier | chosen k | chosen QS_AF | clean % | adversarial % | feasible |",
        "|---|---|---|---|---|---|",
    ]
    for name, found in (("M alone (NNFavoredJpeg.search_table)", single), ("the ensemble", result)):
        lines.append(
            f"| {name} | {found.favored_diagonals} | {found.qs_af:g} | {100 * found.clean_accuracy:.1f} | "
            f"{100 * found.adversarial_accuracy:.1f} | {found.feasible} |"
        )
    lines.append(
        f"| the ensemble at the default table | {DEFAULT_FAVORED_DIAGONALS} | 50 | "
        f"{100 * at_default.clean_accuracy:.1f} | {100 * at_default.adversarial_accuracy:.1f} | - |"
    )
    lines += ["", f"M's clean accuracy on these images: {100 * result.clean_accuracy_undefended:.1f}%."]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    payload = {"command": command, "seconds": seconds, "ensemble": result.params, "single": single.params,
               "ensemble_rows": result.rows, "single_rows": single.rows}  # fmt: skip
    args.output.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
