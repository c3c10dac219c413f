"""
Train a (Compress and Restore)^N restoration generator for one JPEG quality (zoo artifacts
``cifar10-restorer-q20/q40/q60``).

Recipe (Ferrari et al. 2022, adapted to CIFAR-10): pairs (JPEG at ``--quality`` with the real codec, original),
random flips and 90-degree rotations; loss = pixel MSE + ``--adversarial-weight`` x the generator's GAN loss against
a :class:`~art_purifiers.nets.argan.PatchDiscriminator` (binary cross-entropy); Adam, learning rate halved every
quarter of the run (the paper: 1e-4, halved every 5 of 20 epochs). Presets:

* ``--preset paper``: 16 residual blocks, 64 features, 20 epochs of batch 16 (the paper's schedule; use a GPU).
* ``--preset cpu``: the same generator, 4,000 steps of batch 32 (2.6 epochs of the CIFAR-10 training images) at
  learning rate 5e-4 (1e-4 learns too slowly in so few steps), in bfloat16 autocast: about 11 minutes per quality
  on a 2-core CPU.

The paper does not give the loss weights. The GAN term costs PSNR: in 1,500-step CPU runs at quality 40 the
generator gained +0.72 dB over JPEG with weight 0 and +0.33 dB with 1e-4, and a 5,000-step run with 1e-3 ended
0.3 dB *below* JPEG. The default weight is therefore 1e-5.

Checkpoints every 100 steps make it resumable (``--resume``)::

    python -m art_purifiers.training.restorer --data-dir path/to/cifar10 --quality 40 --output runs/restorer-q40

writes ``runs/restorer-q40/cifar10-restorer-q40.pt`` in the zoo format, with the PSNR/SSIM of JPEG alone and of
JPEG + generator on the test images in its model card.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from art_purifiers import zoo
from art_purifiers.data import load_cifar10
from art_purifiers.metrics import image_quality
from art_purifiers.nets.argan import PatchDiscriminator, RestorationGenerator
from art_purifiers.ops.jpeg import jpeg_round_trip
from art_purifiers.training.common import Preset, add_recipe_arguments, augment, load_checkpoint, save_checkpoint

PRESETS = {
    "paper": Preset(blocks=16, features=64, batch_size=16, lr=1e-4, epochs=20),
    "cpu": Preset(blocks=16, features=64, batch_size=32, lr=5e-4, steps=4000),
}


@torch.no_grad()
def restoration_quality(
    generator: RestorationGenerator, images: torch.Tensor, quality: int, batch_size: int = 250
) -> dict[str, dict[str, float]]:
    """PSNR/SSIM against the originals of JPEG alone and of JPEG + generator (images: uint8 NCHW)."""
    generator.eval()
    originals, compressed, restored = [], [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].float() / 255
        jpeg = jpeg_round_trip(batch, quality)
        originals.append(batch)
        compressed.append(jpeg)
        restored.append(generator(jpeg))
    reference = torch.cat(originals).numpy()
    return {
        "jpeg": image_quality(reference, torch.cat(compressed).numpy()),
        "jpeg+generator": image_quality(reference, torch.cat(restored).clamp(0, 1).numpy()),
    }


def train(args: argparse.Namespace) -> tuple[RestorationGenerator, dict[str, int], list[dict[str, float]]]:
    preset = PRESETS[args.preset]
    blocks = args.blocks or preset.blocks
    features = args.features or preset.features
    batch_size = args.batch_size or preset.batch_size
    lr = args.lr or preset.lr
    train_set = load_cifar10(args.data_dir, "train", download=args.download)
    steps = args.steps or preset.steps or (preset.epochs or 1) * len(train_set) // batch_size
    torch.manual_seed(args.seed)
    sampler = torch.Generator().manual_seed(args.seed)
    generator = RestorationGenerator(blocks=blocks, features=features).to(memory_format=torch.channels_last)
    discriminator = PatchDiscriminator().to(memory_format=torch.channels_last)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=lr)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=lr)
    halve_every = max(1, steps // 4)
    bf16 = not args.no_bf16
    args.output.mkdir(parents=True, exist_ok=True)
    checkpoint = args.output / "checkpoint.pt"
    step, log = 0, list[dict[str, Any]]()
    parts = {"generator": generator, "discriminator": discriminator, "optimizer_g": optimizer_g,
             "optimizer_d": optimizer_d}  # fmt: skip
    if args.resume and checkpoint.is_file():
        step, log = load_checkpoint(checkpoint, parts, sampler)
    started = time.time()
    while step < steps:
        for group in (*optimizer_g.param_groups, *optimizer_d.param_groups):
            group["lr"] = lr * 0.5 ** (step // halve_every)
        generator.train()
        discriminator.train()
        batch = train_set.images[torch.randint(0, len(train_set), (batch_size,), generator=sampler)]
        clean = augment(batch, sampler).float().div_(255)
        compressed = jpeg_round_trip(clean, args.quality)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            restored = generator(compressed.contiguous(memory_format=torch.channels_last))
            real_logits = discriminator(clean.contiguous(memory_format=torch.channels_last))
            fake_logits = discriminator(restored.detach())
            loss_d = F.binary_cross_entropy_with_logits(
                real_logits, torch.ones_like(real_logits)
            ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        optimizer_d.step()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            adversarial_logits = discriminator(restored)
            loss_adv = F.binary_cross_entropy_with_logits(adversarial_logits, torch.ones_like(adversarial_logits))
            loss_pixel = F.mse_loss(restored.float(), clean)
            loss_g = loss_pixel + args.adversarial_weight * loss_adv
        optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer_g.step()
        step += 1
        if step % 100 == 0 or step == steps:
            record = {"step": step, "pixel_mse": float(loss_pixel.detach()), "adversarial": float(loss_adv.detach()),
                      "discriminator": float(loss_d.detach()), "seconds": round(time.time() - started)}  # fmt: skip
            log.append(record)
            print(json.dumps(record), flush=True)
            save_checkpoint(checkpoint, parts, sampler, step, log)
    return generator.eval(), {"blocks": blocks, "features": features}, log


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser, PRESETS)
    parser.add_argument("--quality", type=int, required=True, help="JPEG quality the generator restores")
    parser.add_argument("--adversarial-weight", type=float, default=1e-5, help="weight of the GAN loss")
    parser.add_argument("--eval-images", type=int, default=1000, help="test images for the PSNR/SSIM in the card")
    args = parser.parse_args(argv)
    if not 1 <= args.quality <= 100:
        parser.error("--quality must lie in [1, 100]")
    generator, config, log = train(args)
    test = load_cifar10(args.data_dir, "test", download=args.download)
    subset = test.images[np.random.default_rng(0).permutation(len(test))[: args.eval_images]]
    generator = generator.float().to(memory_format=torch.contiguous_format)
    metrics = restoration_quality(generator, subset, args.quality)
    card = {
        "data": f"CIFAR-10 train images from {test.source.rsplit('/', 1)[0]} (JPEG q75 copy)",
        "resolution": "32x32 (any size works; trained on 32x32)",
        "quality": args.quality,
        "metrics": {**metrics, "test_images": len(subset)},
        "command": "python -m art_purifiers.training.restorer " + shlex.join(sys.argv[1:] if argv is None else argv),
        "log": log,
    }
    name = f"cifar10-restorer-q{args.quality}"
    sha = zoo.save(args.output / f"{name}.pt", generator, "argan-generator", config, card)
    print(json.dumps({"file": str(args.output / f"{name}.pt"), "sha256": sha, **metrics}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
