"""
Whether this package's defences give the same gradients through ART's ``PyTorchClassifier`` with and without ART's
fix of issue #1526: run it once in an environment with unpatched ART and once with the patched tree, then compare.

    python upstream/compare_gradients.py --save unpatched.npz            # ART 1.20.1 as released
    python upstream/compare_gradients.py --save patched.npz --compare unpatched.npz   # ART with upstream/patches

Every defence of the shared contract tests, in every ``bpda`` mode (seeded), on three random 20x28 images through a
small fixed convolutional network; defences that change the image size are left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from art_purifiers.base import ART_HAS_ESTIMATED_GRADIENTS, BPDA_MODES  # noqa: E402
from tests.defences import DEFENCES  # noqa: E402


def gradients() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(1872, 5))
    x = np.random.default_rng(0).random((3, 3, 20, 28)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[[0, 3, 1]]
    results = {}
    for defence_class in DEFENCES:
        for bpda in BPDA_MODES:
            defence = defence_class(seed=3, bpda=bpda, device_type="cpu")
            if defence.purified_size(20, 28) != (20, 28):
                continue
            classifier = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 20, 28),
                                           nb_classes=5, clip_values=(0, 1), preprocessing_defences=[defence],
                                           device_type="cpu")  # fmt: skip
            results[f"{defence_class.__name__}-{bpda}"] = classifier.loss_gradient(x, y)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", type=Path, required=True)
    parser.add_argument("--compare", type=Path)
    args = parser.parse_args()
    results = gradients()
    np.savez(args.save, **results)
    print(f"ART with estimated gradients: {ART_HAS_ESTIMATED_GRADIENTS}; {len(results)} gradients in {args.save}")
    if args.compare:
        other = np.load(args.compare)
        worst = max(float(np.abs(results[k] - other[k]).max() / np.abs(other[k]).max()) for k in results)
        print(f"largest difference to {args.compare}, relative to the gradient's largest entry: {worst:.3g}")


if __name__ == "__main__":
    main()
