"""
Train the EDSR x2 upsampler of the SuperResolution defence (zoo artifact ``edsr-x2-cifar10-photos``).

Recipe (Lim et al. 2017, adapted): pairs (``x`` downsampled by 2, ``x``) where ``x`` is a random 32x32 CIFAR-10
training image or a random 32x32 crop of a scikit-image photo (half of each batch each), with random flips and
90-degree rotations; the low-resolution image is the bicubic, antialiased half-size image rounded to 8 bits (what a
defended input looks like); L1 loss, Adam, learning rate halved every quarter of the run. Photos ``chelsea`` and
``coffee`` are held out for the model card's photo-crop PSNR. Presets:

* ``--preset paper``: EDSR-baseline (16 blocks, 64 features), 300,000 steps of batch 16 at 1e-4 (the EDSR paper's
  schedule; it trains on CUDA when available, ``--device`` to choose).
* ``--preset cpu``: the same network, 12,000 steps of batch 16 at 5e-4 in bfloat16 autocast (about 25 minutes on a
  2-core CPU).

Checkpoints every 100 steps make it resumable (``--resume``)::

    python -m art_purifiers.training.edsr --data-dir path/to/cifar10 --output runs/edsr-x2

writes ``runs/edsr-x2/edsr-x2-cifar10-photos.pt`` in the zoo format, with PSNR/SSIM of EDSR and of bicubic
upsampling on CIFAR-10 test images and on held-out photo crops in its model card.
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
from art_purifiers.nets.edsr import EDSR
from art_purifiers.training.common import (
    Preset,
    add_recipe_arguments,
    augment,
    load_checkpoint,
    recipe_device,
    save_checkpoint,
)

PRESETS = {
    "paper": Preset(blocks=16, features=64, batch_size=16, lr=1e-4, steps=300_000),
    "cpu": Preset(blocks=16, features=64, batch_size=16, lr=5e-4, steps=12_000),
}
#: scikit-image photos used for training (grey ones as three equal channels) and held out for the card.
TRAINING_PHOTOS = ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "camera", "brick",
                   "grass", "gravel", "moon", "clock", "coins")  # fmt: skip
HELD_OUT_PHOTOS = ("chelsea", "coffee")
PATCH = 32
NAME = "edsr-x2-cifar10-photos"


def load_photo(name: str) -> torch.Tensor:
    """A scikit-image photo as a uint8 ``(3, H, W)`` tensor (grey photos get three equal channels)."""
    from skimage import data

    image = torch.from_numpy(np.ascontiguousarray(getattr(data, name)()))
    image = image[..., None].expand(-1, -1, 3) if image.dim() == 2 else image[..., :3]
    return image.permute(2, 0, 1).contiguous()


def downsample(images: torch.Tensor) -> torch.Tensor:
    """Half-size bicubic, antialiased, rounded to 8 bits (float in [0, 1] in, float in [0, 1] out)."""
    small = F.interpolate(images, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    return small.clamp(0, 1).mul(255).round().div(255)


def random_crops(photos: list[torch.Tensor], count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random ``size`` x ``size`` crops (uint8) from randomly chosen photos."""
    crops = []
    for index in torch.randint(0, len(photos), (count,), generator=generator).tolist():
        photo = photos[index]
        top = int(torch.randint(0, photo.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, photo.shape[2] - size + 1, (1,), generator=generator))
        crops.append(photo[:, top : top + size, left : left + size])
    return torch.stack(crops)


def grid_crops(photo: torch.Tensor, size: int) -> torch.Tensor:
    """Non-overlapping ``size`` x ``size`` crops covering a photo (uint8)."""
    tiles = photo.unfold(1, size, size).unfold(2, size, size)
    return tiles.permute(1, 2, 0, 3, 4).reshape(-1, photo.shape[0], size, size)


@torch.no_grad()
def upscaling_quality(network: EDSR, images: torch.Tensor, batch_size: int = 100) -> dict[str, dict[str, float]]:
    """PSNR/SSIM against ``images`` (uint8 NCHW) of EDSR and of bicubic x2 applied to their half-size versions."""
    network.eval()
    originals, bicubic, edsr = [], [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].float() / 255
        small = downsample(batch)
        originals.append(batch)
        bicubic.append(F.interpolate(small, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1))
        edsr.append(network(small).clamp(0, 1))
    reference = torch.cat(originals).numpy()
    return {
        "bicubic": image_quality(reference, torch.cat(bicubic).numpy()),
        "edsr": image_quality(reference, torch.cat(edsr).numpy()),
    }


def train(args: argparse.Namespace) -> tuple[EDSR, dict[str, int], list[dict[str, float]]]:
    preset = PRESETS[args.preset]
    steps = args.steps or preset.steps or 1
    batch_size = args.batch_size or preset.batch_size
    lr = args.lr or preset.lr
    config: dict[str, int] = {"blocks": args.blocks or preset.blocks, "features": args.features or preset.features}
    cifar = load_cifar10(args.data_dir, "train", download=args.download).images
    photos = [load_photo(name) for name in TRAINING_PHOTOS]
    torch.manual_seed(args.seed)
    sampler = torch.Generator().manual_seed(args.seed)
    device = recipe_device(args.device)
    network = EDSR(blocks=config["blocks"], features=config["features"]).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    args.output.mkdir(parents=True, exist_ok=True)
    checkpoint = args.output / "checkpoint.pt"
    step, log = 0, list[dict[str, Any]]()
    parts = {"network": network, "optimizer": optimizer}
    if args.resume and checkpoint.is_file():
        step, log = load_checkpoint(checkpoint, parts, sampler)
    started = time.time()
    while step < steps:
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 ** (step // max(1, steps // 4))
        network.train()
        half = batch_size // 2
        batch = torch.cat(
            [
                cifar[torch.randint(0, len(cifar), (batch_size - half,), generator=sampler)],
                random_crops(photos, half, PATCH, sampler),
            ]
        )
        target = augment(batch, sampler).to(device).float().div_(255)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.no_bf16):
            loss = F.l1_loss(network(downsample(target)).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 100 == 0 or step == steps:
            log.append({"step": step, "l1": round(float(loss.detach()), 5), "seconds": round(time.time() - started)})
            print(json.dumps(log[-1]), flush=True)
            save_checkpoint(checkpoint, parts, sampler, step, log)
    return network.cpu().eval(), config, log


def card_metrics(network: EDSR, args: argparse.Namespace) -> dict[str, object]:
    """The model card's PSNR/SSIM: CIFAR-10 test images and 64x64 crops of the held-out photos."""
    test = load_cifar10(args.data_dir, "test", download=args.download)
    subset = test.images[np.random.default_rng(0).permutation(len(test))[: args.eval_images]]
    crops = torch.cat([grid_crops(load_photo(name), 64) for name in HELD_OUT_PHOTOS])
    return {
        "cifar10_test": {**upscaling_quality(network, subset), "images": len(subset), "source": test.source},
        "held_out_photo_crops": {**upscaling_quality(network, crops), "images": len(crops),
                                 "photos": list(HELD_OUT_PHOTOS), "crop": "64x64 grid"},  # fmt: skip
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser, PRESETS, device=True)
    parser.add_argument("--eval-images", type=int, default=1000, help="CIFAR-10 test images for the card")
    args = parser.parse_args(argv)
    network, config, log = train(args)
    metrics = card_metrics(network.float(), args)
    card = {
        "data": "CIFAR-10 train images (JPEG q75 copy) and scikit-image photos " + ", ".join(TRAINING_PHOTOS),
        "resolution": f"x2 from {PATCH // 2}x{PATCH // 2} to {PATCH}x{PATCH} patches (any size works)",
        "metrics": metrics,
        "command": "python -m art_purifiers.training.edsr " + shlex.join(sys.argv[1:] if argv is None else argv),
        "log": log,
    }
    file = args.output / f"{NAME}.pt"
    sha = zoo.save(file, network, "edsr", config, card)
    print(json.dumps({"file": str(file), "sha256": sha, **metrics}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
