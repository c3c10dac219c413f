"""
Train the reference CIFAR-10 classifier (zoo artifact ``cifar10-reference``).

Recipe: :class:`~art_purifiers.nets.classifier.CifarConvNet`, SGD with Nesterov momentum 0.9, a one-cycle learning
rate (linear warm-up over the first quarter, then linear decay to zero), weight decay 5e-4, label smoothing 0.2,
random horizontal flips and random crops after 2 pixels of reflection padding, batch 512. On the CPU it trains in
bfloat16 autocast with channels-last tensors when the processor supports it (evaluation is always float32).

Checkpoints after every epoch make it resumable (``--resume``)::

    python -m art_purifiers.training.classifier --data-dir path/to/cifar10 --output runs/classifier

writes ``runs/classifier/cifar10-reference.pt`` in the zoo format, with its test accuracy in the model card.

The transfer surrogate of the evaluation suite (zoo artifact ``cifar10-surrogate``) is trained by the same recipe
with another architecture, seed and loss, so that transfer attacks cross both weights and architecture::

    python -m art_purifiers.training.classifier --data-dir path/to/cifar10 --output runs/surrogate \
        --architecture cifar-resnet --seed 1 --label-smoothing 0 --name cifar10-surrogate

The feature network of the NRP defence (zoo artifact ``cifar10-vgg-features``) is a third architecture, trained
without label smoothing (its features, not its logits, are what SSP and the purifier's loss use)::

    python -m art_purifiers.training.classifier --data-dir path/to/cifar10 --output runs/vgg-features \
        --architecture cifar-vgg --seed 2 --label-smoothing 0 --epochs 10 --name cifar10-vgg-features
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers import zoo
from art_purifiers.data import ImageDataset, load_cifar10
from art_purifiers.nets import ARCHITECTURES

#: Stage widths per architecture.
DEFAULT_WIDTHS = {"cifar-convnet": [24, 64, 192, 192], "cifar-resnet": [32, 64, 128], "cifar-vgg": [32, 64, 128]}


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crops after reflection padding and random horizontal flips of a uint8/float NCHW batch."""
    n, channels, height, width = images.shape
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), generator=generator)
    rows = (dy + torch.arange(height).view(1, 1, -1, 1)).expand(n, channels, height, width + 2 * pad)
    cols = dx + torch.arange(width).view(1, 1, 1, -1)
    flip = torch.rand(n, 1, 1, 1, generator=generator) < 0.5
    cols = torch.where(flip, cols.flip(-1), cols).expand(n, channels, height, width)
    cropped = padded.gather(2, rows)
    return cropped.gather(3, cols)


@torch.no_grad()
def accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy (float32) of ``model`` on a uint8 dataset, on the device of the model's parameters."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(dataset), batch_size):
        images = dataset.images[start : start + batch_size].to(device).float() / 255
        correct += int((model(images).argmax(1).cpu() == dataset.labels[start : start + batch_size]).sum())
    return correct / len(dataset)


def learning_rate(step: int, total: int, peak: float, warmup: float = 0.25) -> float:
    """One-cycle schedule: linear from 0 to ``peak`` over ``warmup`` of the steps, then linearly to 0."""
    position = step / total
    return peak * (position / warmup if position < warmup else (1 - position) / (1 - warmup))


def train(
    train_set: ImageDataset,
    test_set: ImageDataset | None,
    output: Path,
    epochs: int = 18,
    batch_size: int = 512,
    peak_lr: float = 0.4,
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.2,
    widths: Sequence[int] = (24, 64, 192, 192),
    seed: int = 0,
    architecture: str = "cifar-convnet",
    bf16: bool | None = None,
    resume: bool = False,
) -> nn.Module:
    """Run the recipe, checkpointing to ``output/checkpoint.pt`` after every epoch; return the trained model."""
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = ARCHITECTURES[architecture](widths=widths).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    total_steps = epochs * steps_per_epoch
    bf16 = torch.backends.mkldnn.is_available() if bf16 is None else bf16
    checkpoint = output / "checkpoint.pt"
    start_epoch, history = _resume(checkpoint, model, optimizer, generator) if resume else (0, [])
    for epoch in range(start_epoch, epochs):
        model.train()
        started = time.time()
        order = torch.randperm(len(train_set), generator=generator)
        loss_sum = 0.0
        for index in range(steps_per_epoch):
            batch = order[index * batch_size : (index + 1) * batch_size]
            images = augment(train_set.images[batch], generator).div_(255).contiguous(memory_format=torch.channels_last)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(epoch * steps_per_epoch + index, total_steps, peak_lr)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(images), train_set.labels[batch], label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(batch)
        record = {"epoch": epoch + 1, "loss": loss_sum / len(train_set), "seconds": time.time() - started}
        if test_set is not None:
            record["test_accuracy"] = accuracy(model, test_set)
        history.append(record)
        print(json.dumps(record), flush=True)
        _save_checkpoint(checkpoint, model, optimizer, generator, history)
    model.history = history  # type: ignore[assignment]
    return model.eval()


def _resume(
    checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[int, list[dict[str, Any]]]:
    """The epochs done and their history, the model, optimizer and generator restored (none: 0 and [])."""
    if not checkpoint.is_file():
        return 0, []
    state = torch.load(checkpoint, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    print(f"resumed after epoch {state['epoch']}", flush=True)
    return state["epoch"], json.loads(state["history"])


def _save_checkpoint(checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     generator: torch.Generator, history: list[dict[str, Any]]) -> None:  # fmt: skip
    """Model, optimizer, data-order generator and history after an epoch, written atomically."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "epoch": history[-1]["epoch"],
        "history": json.dumps(history),
    }
    torch.save(state, checkpoint.with_suffix(".tmp"))
    checkpoint.with_suffix(".tmp").replace(checkpoint)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="CIFAR-10 directory (default: $ART_PURIFIERS_DATA)")
    parser.add_argument("--download", action="store_true", help="download the original CIFAR-10 via torchvision")
    parser.add_argument("--output", type=Path, default=Path("runs/classifier"))
    parser.add_argument("--epochs", type=int, default=18)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.4, help="peak learning rate")
    parser.add_argument("--architecture", choices=sorted(DEFAULT_WIDTHS), default="cifar-convnet")
    parser.add_argument("--widths", type=int, nargs="+", help="channels per stage (default: the architecture's)")
    parser.add_argument("--label-smoothing", type=float, default=0.2)
    parser.add_argument("--name", default="cifar10-reference", help="zoo name of the written file (NAME.pt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only (smoke tests)")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32")
    parser.add_argument("--resume", action="store_true", help="continue from output/checkpoint.pt")
    args = parser.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())

    widths = args.widths or DEFAULT_WIDTHS[args.architecture]
    train_set = load_cifar10(args.data_dir, "train", download=args.download)
    test_set = load_cifar10(args.data_dir, "test", download=args.download)
    if args.limit:
        train_set = ImageDataset(train_set.images[: args.limit], train_set.labels[: args.limit], train_set.classes, "")
    started = time.time()
    model = train(
        train_set,
        test_set,
        args.output,
        epochs=args.epochs,
        batch_size=args.batch_size,
        peak_lr=args.lr,
        widths=widths,
        label_smoothing=args.label_smoothing,
        architecture=args.architecture,
        seed=args.seed,
        bf16=False if args.no_bf16 else None,
        resume=args.resume,
    )
    test_accuracy = accuracy(model.float().to(memory_format=torch.contiguous_format), test_set)
    card = {
        "data": f"CIFAR-10 train ({len(train_set)} images) from {train_set.source}",
        "resolution": "32x32",
        "metrics": {"test_top1": test_accuracy, "test_images": len(test_set), "test_source": test_set.source},
        "command": "python -m art_purifiers.training.classifier " + shlex.join(sys.argv[1:] if argv is None else argv),
        "training_seconds_last_run": round(time.time() - started),
        "history": model.history,
        "torch": str(torch.__version__),
    }
    file = args.output / f"{args.name}.pt"
    sha = zoo.save(file, model, args.architecture, {"widths": list(widths)}, card)
    print(json.dumps({"test_accuracy": test_accuracy, "sha256": sha, "file": str(file)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
