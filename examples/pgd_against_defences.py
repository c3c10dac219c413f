"""Attack a defended PyTorch model with ART's PGD under each BPDA mode, and switch modes with set_params.

The model here is torchvision's ResNet-18 with random weights (nothing can be downloaded offline), so the numbers show
the API and the plumbing, not robustness. Replace ``model`` with your trained classifier.

    python examples/pgd_against_defences.py
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier

from art_purifiers import NNFavoredJpeg, QuantizeDistort
from art_purifiers.demo import load_photos


def main() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = load_photos(96)  # scikit-image's photos, NCHW float32 in [0, 1]
    for defence in (NNFavoredJpeg(), QuantizeDistort(seed=0)):
        classifier = PyTorchClassifier(
            model,
            torch.nn.CrossEntropyLoss(),
            input_shape=x.shape[1:],
            nb_classes=10,
            clip_values=(0, 1),
            preprocessing_defences=[defence],
        )
        labels = classifier.predict(x).argmax(1)
        for bpda in ("straight_through", "identity", "surrogate"):
            defence.set_params(bpda=bpda)
            attack = ProjectedGradientDescent(classifier, eps=8 / 255, eps_step=2 / 255, max_iter=5, verbose=False)
            x_adv = attack.generate(x, labels)
            kept = float(np.mean(classifier.predict(x_adv).argmax(1) == labels))
            print(
                f"{type(defence).__name__:16s} bpda={bpda:16s} predictions kept {kept:.2f}, "
                f"Linf {np.abs(x_adv - x).max() * 255:.1f}/255"
            )


if __name__ == "__main__":
    main()
