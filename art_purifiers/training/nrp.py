"""
Train a Neural Representation Purifier (Naseer et al., CVPR 2020, Algorithm 2; zoo artifact ``cifar10-nrp-light``).

Each step draws clean training images (random flips and 90-degree rotations), perturbs them with SSP
(:mod:`art_purifiers.attacks.ssp`: Linf 16/255, step 0.01) against a frozen feature network, purifies them, and
updates the critic and then the purifier. The purifier's loss is the paper's
``5e-3 x relativistic average GAN + 1e-2 x pixel MSE + 1 x feature MAE``, the feature distance taken at the same layer
SSP attacks; the critic (:class:`~art_purifiers.nets.nrp.RelativisticCritic`) learns to tell clean images from
purified ones relative to the other batch's average. Adam, learning rate halved every quarter of the run.

The paper trains on MS-COCO crops against ImageNet VGG16's conv3.3 with 100 SSP iterations per batch. Here the feature
network is our CIFAR-10 ``cifar10-vgg-features`` (``features.relu3_3``), and the presets are:

* ``--preset paper``: the full residual-in-residual generator (23 blocks, 64 features, 16.5 M parameters), batch
  16, learning rate 1e-4, 100 SSP iterations per batch, 30,000 steps (use a GPU).
* ``--preset cpu``: the light residual generator, shrunk to 8 blocks of 32 features, batch 16, learning rate 5e-4,
  10 SSP iterations per batch (100 makes CPU training a toy), 2,000 steps, in bfloat16 autocast (``--no-bf16``:
  float32).

Checkpoints every 100 steps make it resumable (``--resume``)::

    python -m art_purifiers.training.nrp --data-dir path/to/cifar10 --output runs/nrp-light

writes ``runs/nrp-light/cifar10-nrp-light.pt`` in the zoo format; its card holds PSNR/SSIM on clean and
100-iteration-SSP test images with and without the purifier.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers import zoo
from art_purifiers.attacks.ssp import Features, layer_features, self_supervised_perturbation
from art_purifiers.data import ImageDataset, load_cifar10
from art_purifiers.metrics import image_quality
from art_purifiers.nets import ARCHITECTURES
from art_purifiers.nets.nrp import RelativisticCritic
from art_purifiers.training.classifier import accuracy
from art_purifiers.training.common import (
    Preset,
    add_recipe_arguments,
    augment,
    load_checkpoint,
    recipe_device,
    save_checkpoint,
)

PRESETS = {
    "paper": Preset(blocks=23, features=64, batch_size=16, lr=1e-4, steps=30_000),
    "cpu": Preset(blocks=8, features=32, batch_size=16, lr=5e-4, steps=2000),
}
#: Generator architecture and SSP iterations per training batch, by preset.
PRESET_ARCHITECTURES = {"paper": "nrp-generator", "cpu": "nrp-residual-generator"}
PRESET_SSP_STEPS = {"paper": 100, "cpu": 10}


@dataclass(frozen=True)
class LossWeights:
    """The paper's weights: alpha (relativistic GAN), gamma (pixel MSE) and lambda (feature MAE)."""

    adversarial: float = 5e-3
    pixel: float = 1e-2
    feature: float = 1.0


@dataclass(frozen=True)
class SSPSettings:
    """The training-time attack: Linf budget, step and iterations (the paper: 16/255, 0.01, 100)."""

    eps: float = 16 / 255
    step: float = 0.01
    steps: int = 10


def relativistic_losses(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The relativistic average GAN losses (Jolicoeur-Martineau 2019) from the critic's raw scores of clean (``real``)
    and purified (``fake``) images: the critic's loss (clean more real than purified on average) and the purifier's
    (the reverse).
    """
    real_vs_fake = RelativisticCritic.relativistic_logits(real, fake)
    fake_vs_real = RelativisticCritic.relativistic_logits(fake, real)

    def loss(real_label: float) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits
        return bce(real_vs_fake, torch.full_like(real_vs_fake, real_label)) + bce(
            fake_vs_real, torch.full_like(fake_vs_real, 1 - real_label)
        )

    return loss(1.0), loss(0.0)


def training_step(
    purifier: nn.Module,
    critic: nn.Module,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    features: Features,
    clean: torch.Tensor,
    ssp: SSPSettings,
    weights: LossWeights,
    sampler: torch.Generator,
) -> dict[str, float]:
    """One step of Algorithm 2 on a clean batch: SSP adversaries, a critic update, then a purifier update."""
    optimizer_p, optimizer_c = optimizers
    adversarial = self_supervised_perturbation(features, clean, ssp.eps, ssp.step, ssp.steps, generator=sampler)
    purified = purifier(adversarial)
    loss_c, _ = relativistic_losses(critic(clean), critic(purified.detach()))
    optimizer_c.zero_grad(set_to_none=True)
    loss_c.backward()
    optimizer_c.step()
    _, loss_adversarial = relativistic_losses(critic(clean).detach(), critic(purified))
    loss_pixel = F.mse_loss(purified.float(), clean)
    with torch.no_grad():
        target = features(clean).float()
    loss_feature = F.l1_loss(features(purified).float(), target)
    loss = weights.adversarial * loss_adversarial + weights.pixel * loss_pixel + weights.feature * loss_feature
    optimizer_p.zero_grad(set_to_none=True)
    loss.backward()
    optimizer_p.step()
    named = {"critic": loss_c, "adversarial": loss_adversarial, "pixel_mse": loss_pixel, "feature_mae": loss_feature}
    return {name: float(value.detach()) for name, value in named.items()}


def frozen_features(network: nn.Module, layer: str) -> Features:
    """The feature function of a network whose weights stay fixed (eval mode, no parameter gradients)."""
    network.eval().requires_grad_(False)
    return layer_features(network, layer)


def train(
    args: argparse.Namespace, images: torch.Tensor, features: Features, device: torch.device
) -> tuple[nn.Module, dict, list]:
    """
    Run the recipe on uint8 NCHW ``images`` on ``device`` (where ``features`` must live); return the purifier (eval
    mode, on ``device``), its config and the log.
    """
    preset = PRESETS[args.preset]
    config = {"blocks": args.blocks or preset.blocks, "features": args.features or preset.features}
    batch_size, lr = args.batch_size or preset.batch_size, args.lr or preset.lr
    steps = args.steps or preset.steps or 1
    ssp = SSPSettings(steps=args.ssp_steps or PRESET_SSP_STEPS[args.preset])
    torch.manual_seed(args.seed)
    sampler = torch.Generator().manual_seed(args.seed)
    purifier = ARCHITECTURES[args.architecture or PRESET_ARCHITECTURES[args.preset]](**config).to(device)
    critic = RelativisticCritic().to(device)
    optimizers = (torch.optim.Adam(purifier.parameters(), lr=lr), torch.optim.Adam(critic.parameters(), lr=lr))
    parts = {"purifier": purifier, "critic": critic, "optimizer_p": optimizers[0], "optimizer_c": optimizers[1]}
    args.output.mkdir(parents=True, exist_ok=True)
    checkpoint = args.output / "checkpoint.pt"
    step, log = 0, list[dict[str, Any]]()
    if args.resume and checkpoint.is_file():
        step, log = load_checkpoint(checkpoint, parts, sampler)
    started = time.time()
    while step < steps:
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 ** (step // max(1, steps // 4))
        purifier.train()
        critic.train()
        batch = images[torch.randint(0, len(images), (batch_size,), generator=sampler)]
        clean = augment(batch, sampler).to(device).float().div_(255)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.no_bf16):
            losses = training_step(purifier, critic, optimizers, features, clean, ssp, LossWeights(), sampler)
        step += 1
        if step % 100 == 0 or step == steps:
            log.append({"step": step, **losses, "seconds": round(time.time() - started)})
            print(json.dumps(log[-1]), flush=True)
            save_checkpoint(checkpoint, parts, sampler, step, log)
    return purifier.eval(), config, log


@torch.no_grad()
def _purify(purifier: nn.Module, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    device = next(purifier.parameters()).device
    return torch.cat([purifier(part.to(device)).clamp(0, 1).cpu() for part in images.split(batch_size)])


def purification_quality(purifier: nn.Module, features: Features, images: torch.Tensor, seed: int = 0) -> dict:
    """PSNR/SSIM against the clean images of: the purified clean images, and SSP-100 images without and with the
    purifier."""
    generator, device = torch.Generator().manual_seed(seed), next(purifier.parameters()).device
    attacked = torch.cat([self_supervised_perturbation(features, part.to(device), generator=generator).cpu()
                          for part in images.split(100)])  # fmt: skip
    reference = images.numpy()
    return {
        "clean+purifier": image_quality(reference, _purify(purifier, images).numpy()),
        "ssp100": image_quality(reference, attacked.numpy()),
        "ssp100+purifier": image_quality(reference, _purify(purifier, attacked).numpy()),
    }


def classifier_accuracy(purifier: nn.Module, classifier: nn.Module, test: ImageDataset) -> dict[str, Any]:
    """Top-1 test accuracy of ``classifier`` alone and behind the purifier (the clean-accuracy cost of purifying)."""
    return {
        "classifier": accuracy(classifier, test),
        # the defence clamps the purified images to [0, 1] (Hardtanh(0, 1)) before the classifier sees them
        "purifier+classifier": accuracy(nn.Sequential(purifier, nn.Hardtanh(0.0, 1.0), classifier), test),
        "images": len(test),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser, PRESETS, device=True)
    parser.add_argument("--architecture", choices=sorted(set(PRESET_ARCHITECTURES.values())),
                        help="purifier architecture (default: the preset's)")  # fmt: skip
    parser.add_argument("--feature-network", default="cifar10-vgg-features", help="zoo name or weight file")
    parser.add_argument("--layer", default="features.relu3_3", help="feature layer of SSP and the feature loss")
    parser.add_argument("--ssp-steps", type=int, help="SSP iterations per training batch (default: the preset's)")
    parser.add_argument("--eval-images", type=int, default=500, help="test images for the card's PSNR/SSIM")
    parser.add_argument(
        "--classifier",
        default="cifar10-reference",
        help="zoo name or weight file; the card holds its test accuracy behind the purifier",
    )
    parser.add_argument("--name", default="cifar10-nrp-light", help="zoo name of the written file (NAME.pt)")
    args = parser.parse_args(argv)
    device = recipe_device(args.device)
    features = frozen_features(zoo.resolve(args.feature_network).to(device), args.layer)
    train_set = load_cifar10(args.data_dir, "train", download=args.download)
    purifier, config, log = train(args, train_set.images, features, device)
    test = load_cifar10(args.data_dir, "test", download=args.download)
    subset = test.images[np.random.default_rng(0).permutation(len(test))[: args.eval_images]].float() / 255
    metrics = purification_quality(purifier, features, subset)
    metrics["test_accuracy"] = classifier_accuracy(purifier, zoo.resolve(args.classifier).to(device), test)
    card = {
        "data": f"CIFAR-10 train images from {test.source.rsplit('/', 1)[0]} (JPEG q75 copy)",
        "resolution": "32x32 (fully convolutional; trained on 32x32)",
        "feature_network": str(args.feature_network),
        "layer": args.layer,
        "metrics": {**metrics, "test_images": len(subset), "ssp_eval": "Linf 16/255, step 0.01, 100 iterations"},
        "command": "python -m art_purifiers.training.nrp " + shlex.join(sys.argv[1:] if argv is None else argv),
        "log": log,
    }
    architecture = args.architecture or PRESET_ARCHITECTURES[args.preset]
    sha = zoo.save(args.output / f"{args.name}.pt", purifier.cpu(), architecture, config, card)
    print(json.dumps({"file": str(args.output / f"{args.name}.pt"), "sha256": sha, **metrics}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
