"""Mustafa et al.'s own protocol (their Tables 1, 4 and 5) on CIFAR-10: attacks computed on the undefended
classifier, then purified by SuperResolution and its ablations (see :mod:`art_purifiers.evaluation.unaware`).

The same clean-correct test images as ``art-purifiers evaluate --num-images N --seed 0``. Writes ``paper-protocol.md``,
``paper-protocol.json`` and the per-image correctness ``paper-protocol.npz`` (defence x attack x image) to
``--output``. Run from the repository root:

    python -m reproductions.super_resolution_paper_protocol --data-dir path/to/cifar10 --num-images 200 \\
        --output runs/sr-paper-protocol
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
import torch

from art_purifiers import SuperResolution, zoo
from art_purifiers.classifiers import make_classifier
from art_purifiers.data import load_cifar10
from art_purifiers.evaluation.context import select_clean_correct
from art_purifiers.evaluation.unaware import Predictor, attack_unaware, markdown, paper_attacks
from art_purifiers.evaluation.unaware import predictor as unaware_predictor

#: Rows: the defence as the paper runs it (the 2x image), our default (resized back), and the paper's ablations
#: (Tables 3-5), resized back: the reference classifier, trained at 32x32, loses half its clean accuracy at 64x64.
ROWS = {
    "WD + EDSR, 2x image (the paper)": {"output_size": "upscaled"},
    "WD + EDSR, resized back (our default)": {},
    "EDSR only": {"denoise": False},
    "WD only": {"upsampler": "none"},
    "WD + bicubic": {"upsampler": "bicubic"},
    "WD + bilinear": {"upsampler": "bilinear"},
    "WD + nearest": {"upsampler": "nearest"},
}


def predictor(model: torch.nn.Module, defence: SuperResolution | None) -> Predictor:
    """Labels predicted by ``model`` behind ``defence`` (or undefended)."""
    return unaware_predictor(model, None if defence is None else lambda x: defence(x)[0])


INTRO = (
    "Attack-unaware protocol: {count} clean-correct CIFAR-10 test images (a JPEG q75 copy), adversarial examples "
    "computed on the undefended reference classifier, then purified; accuracy (%), and the share correct under "
    "every attack at once with its Wilson 95% interval."
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="CIFAR-10 directory (default: $ART_PURIFIERS_DATA)")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cw-steps", type=int, default=100, help="C&W iterations per binary-search step")
    parser.add_argument("--cw-search-steps", type=int, default=5, help="C&W binary-search steps")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    command = "python -m reproductions.super_resolution_paper_protocol " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    started = time.time()
    test = load_cifar10(args.data_dir, "test")
    model = zoo.load("cifar10-reference").eval()
    undefended = make_classifier(model, [], (3, 32, 32), 10, "cpu")
    x_all, labels = test.as_float(), test.labels.numpy()
    indices = select_clean_correct(predictor(model, None)(x_all), labels, args.num_images, args.seed)
    defences = {"no defence": predictor(model, None)}
    defences |= {name: predictor(model, SuperResolution(device_type="cpu", **kw)) for name, kw in ROWS.items()}
    args.output.mkdir(parents=True, exist_ok=True)
    attacks = paper_attacks(cw_steps=args.cw_steps, cw_search_steps=args.cw_search_steps)
    result = attack_unaware(undefended, x_all[indices], labels[indices], attacks, defences, cache=args.output)
    np.savez_compressed(args.output / "paper-protocol.npz", indices=indices, attacks=result["attacks"],
                        **{name: correct for name, correct in result["correct"].items()})  # fmt: skip
    summary = {"command": command, "attacks": result["attacks"], "rows": result["rows"], "rows_kwargs": ROWS,
               "seconds": round(time.time() - started)}  # fmt: skip
    (args.output / "paper-protocol.json").write_text(json.dumps(summary, indent=1))
    text = markdown(result, INTRO.format(count=len(indices)), command)
    (args.output / "paper-protocol.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
