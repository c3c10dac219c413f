"""What the training recipes share: presets, augmentation, the common command-line options and resumable
checkpoints (modules, optimizers, the data sampler, the step and the log, written atomically)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Preset:
    """Network size and schedule of a recipe; ``steps`` wins over ``epochs`` when both are set."""

    blocks: int
    features: int
    batch_size: int
    lr: float
    steps: int | None = None
    epochs: int | None = None


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and rotations by multiples of 90 degrees (square images)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    turns = torch.randint(0, 4, (len(images),), generator=generator)
    return torch.stack([torch.rot90(image, int(k), dims=(-2, -1)) for image, k in zip(images, turns)])


def add_recipe_arguments(parser: argparse.ArgumentParser, presets: dict[str, Preset], device: bool = False) -> None:
    """
    The options every image-to-image recipe takes: data, output, preset and its overrides.

    :param device: Also offer ``--device`` (for the recipes that train on a GPU; see :func:`recipe_device`).
    """
    parser.add_argument("--data-dir", help="CIFAR-10 directory (default: $ART_PURIFIERS_DATA)")
    parser.add_argument("--download", action="store_true", help="download the original CIFAR-10 via torchvision")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--preset", choices=sorted(presets), default="cpu")
    parser.add_argument("--steps", type=int, help="override the preset's number of steps")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--blocks", type=int)
    parser.add_argument("--features", type=int)
    parser.add_argument("--lr", type=float, help="override the preset's learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--resume", action="store_true")
    if device:
        parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def recipe_device(name: str | None) -> torch.device:
    """The device a recipe trains on: ``name``, else CUDA when available, else the CPU."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def save_checkpoint(
    checkpoint: Path, parts: dict[str, Any], sampler: torch.Generator, step: int, log: list[dict[str, Any]]
) -> None:
    """
    Write the state of ``parts`` (objects with ``state_dict``: modules, optimizers) atomically: a crash mid-write
    leaves the previous checkpoint.
    """
    state: dict[str, Any] = {name: part.state_dict() for name, part in parts.items()}
    state |= {"sampler": sampler.get_state(), "step": step, "log": json.dumps(log)}
    torch.save(state, checkpoint.with_suffix(".tmp"))
    checkpoint.with_suffix(".tmp").replace(checkpoint)


def load_checkpoint(
    checkpoint: Path, parts: dict[str, Any], sampler: torch.Generator
) -> tuple[int, list[dict[str, Any]]]:
    """Restore ``parts`` and the sampler from a checkpoint (``weights_only``); return the step and the log."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for name, part in parts.items():
        part.load_state_dict(state[name])
    sampler.set_state(state["sampler"])
    step, log = int(state["step"]), json.loads(state["log"])
    print(f"resumed at step {step}", flush=True)
    return step, log
