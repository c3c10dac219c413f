"""SSP as an attack, and the purifier's quality (Naseer et al. 2020).

1. **Transfer.** Untargeted examples crafted on the feature network ``cifar10-vgg-features`` and given to the reference
   classifier, on test images both classify correctly: SSP (Algorithm 1, 100 iterations of step 0.01, labels unused)
   at several layers, against PGD (cross-entropy on the feature network's logits, 100 iterations of step 0.01,
   random start) and MI-FGSM (10 iterations, momentum 1), all at the same Linf budget. The paper says SSP transfers
   better than both. The rows give the fooling rate on the reference classifier with a Wilson interval, and the
   white-box rate on the feature network itself.
2. **Purifier** (with ``--purifier``): PSNR/SSIM against the clean images of the purified clean images, of SSP-100
   images (at the purifier's training layer) without and with the purifier, and the reference classifier's clean
   accuracy without the purifier, behind it, and behind it with dynamic inference.

Run from the repository root (the CIFAR-10 copy here is JPEG q75):

    python -m reproductions.nrp_ssp_transfer --data-dir path/to/cifar10 --num-images 500 \\
        --purifier runs/nrp-light/cifar10-nrp-light.pt --output reproductions/results/cpu-nrp-ssp-transfer.md
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers import NeuralRepresentationPurifier, zoo
from art_purifiers.attacks.apgd import project
from art_purifiers.attacks.ssp import layer_features, self_supervised_perturbation
from art_purifiers.attacks.transfer import momentum_iterative
from art_purifiers.data import load_cifar10
from art_purifiers.evaluation.robust import proportion
from art_purifiers.metrics import image_quality
from reproductions.restoration_quality import emit

LAYERS = ("features.relu1_2", "features.relu2_2", "features.relu3_1", "features.relu3_3")
Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pgd(model: nn.Module, eps: float, steps: int = 100, step: float = 0.01, seed: int = 0) -> Attack:
    """Untargeted Linf PGD on cross-entropy with a uniform random start (sign steps, projected)."""
    generator = torch.Generator().manual_seed(seed)

    def attack(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = (x + eps * (torch.rand(x.shape, generator=generator) * 2 - 1)).clamp(0, 1)
        for _ in range(steps):
            images = x_adv.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(F.cross_entropy(model(images), y, reduction="sum"), images)
            x_adv = project(x, x_adv + step * gradient.sign(), "Linf", eps).detach()
        return x_adv

    return attack


def ssp(model: nn.Module, layer: str, eps: float, seed: int = 0) -> Attack:
    features, generator = layer_features(model, layer), torch.Generator().manual_seed(seed)
    return lambda x, _y: self_supervised_perturbation(features, x, eps, generator=generator)


def batched(attack: Attack, x: torch.Tensor, y: torch.Tensor, size: int = 100) -> torch.Tensor:
    return torch.cat([attack(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)])


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(part).argmax(1) for part in x.split(250)])


def transfer_rows(source: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> list[str]:
    attacks: dict[str, Attack] = {
        "PGD (CE, 100 x 0.01)": pgd(source, eps),
        "MI-FGSM (10 steps)": lambda a, b: momentum_iterative(source, a, b, eps, steps=10),
        **{f"SSP at {layer} (100 x 0.01)": ssp(source, layer, eps) for layer in LAYERS},
    }
    rows = []
    for name, attack in attacks.items():
        x_adv = batched(attack, x, y)
        fooled = proportion((predict(target, x_adv) != y).numpy())
        white_box = float((predict(source, x_adv) != y).float().mean())
        low, high = fooled["ci95"]
        rows.append(f"| {round(eps * 255)}/255 | {name} | {100 * fooled['accuracy']:.1f} [{100 * low:.1f}, "
                    f"{100 * high:.1f}] | {100 * white_box:.1f} |")  # fmt: skip
    return rows


def purifier_rows(file: str, features: nn.Module, layer: str, classifier: nn.Module, x: torch.Tensor,
                  y: torch.Tensor) -> list[str]:  # fmt: skip
    static = NeuralRepresentationPurifier(network=file, device_type="cpu")
    dynamic = NeuralRepresentationPurifier(network=file, dynamic=True, seed=0, device_type="cpu")
    attacked = batched(ssp(features, layer, 16 / 255, seed=1), x, y)
    reference = x.numpy()
    rows = ["| images | PSNR (dB) | SSIM |", "|---|---|---|"]
    for name, images in (("clean, purified", static(reference)[0]), ("SSP-100 16/255", attacked.numpy()),
                         ("SSP-100 16/255, purified", static(attacked.numpy())[0])):  # fmt: skip
        quality = image_quality(reference, images)
        rows.append(f"| {name} | {quality['psnr_db']:.2f} | {quality['ssim']:.4f} |")
    rows += ["", "| reference classifier | clean accuracy (%) |", "|---|---|"]
    for name, defence in (("undefended", None), ("behind the purifier", static),
                          ("behind the purifier, dynamic=True", dynamic)):  # fmt: skip
        images = x if defence is None else torch.from_numpy(defence(x.numpy())[0])
        rows.append(f"| {name} | {100 * float((predict(classifier, images) == y).float().mean()):.1f} |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="CIFAR-10 directory (default: $ART_PURIFIERS_DATA)")
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--feature-network", default="cifar10-vgg-features")
    parser.add_argument("--purifier", help="purifier weight file (zoo format or the authors'); skip part 2 without")
    parser.add_argument("--layer", default="features.relu3_3", help="the purifier's training layer")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    started = time.time()
    source, target = zoo.resolve(args.feature_network).eval(), zoo.load("cifar10-reference").eval()
    for network in (source, target):
        network.requires_grad_(False)
    test = load_cifar10(args.data_dir, "test")
    x_all, y_all = test.images[: 4 * args.num_images].float() / 255, test.labels[: 4 * args.num_images]
    both = (predict(source, x_all) == y_all) & (predict(target, x_all) == y_all)
    x, y = x_all[both][: args.num_images], y_all[both][: args.num_images]
    lines = ["# SSP transfer and the NRP purifier (Naseer et al. 2020)", "",
             f"`python -m reproductions.nrp_ssp_transfer {shlex.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"{len(x)} CIFAR-10 test images (the JPEG q75 copy) that the feature network `{args.feature_network}` "
             "and the reference classifier both classify correctly. Cells: the reference classifier's fooling rate "
             "(%, Wilson 95% interval), and the feature network's own (white-box).", "",
             "| Linf | attack on the feature network | fooling rate of the reference classifier | white-box |",
             "|---|---|---|---|"]  # fmt: skip
    for eps in (8 / 255, 16 / 255):
        lines += transfer_rows(source, target, x, y, eps)
    if args.purifier:
        lines += ["", f"## Purifier `{args.purifier}` (SSP at `{args.layer}`)", ""]
        lines += purifier_rows(args.purifier, source, args.layer, target, x, y)
    lines += ["", f"{round(time.time() - started)} s on {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}."]  # fmt: skip
    emit("\n".join(lines), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
