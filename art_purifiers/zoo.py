"""Named pretrained artifacts shipped with the package (restorers, classifiers, ...).

Every artifact is one file in ``art_purifiers/weights/`` written by :func:`save`: a dict with the architecture name
and constructor config, the state dict (fp16 allowed), and a model card (data, resolution, metrics and the exact
command that produced it). Files are checked against the sha256 recorded in :data:`REGISTRY` and loaded with
``torch.load(..., weights_only=True)``. Weights that users train with the same commands load with :func:`load_file`.

>>> from art_purifiers import zoo
>>> zoo.names()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from art_purifiers.nets import ARCHITECTURES

FORMAT = "art-purifiers-weights/1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class Artifact:
    """
    A shipped weight file.

    :param name: Public name, e.g. ``"cifar10-reference"``.
    :param filename: File name inside ``art_purifiers/weights``.
    :param sha256: Hex digest of the file.
    :param architecture: Name registered with :func:`art_purifiers.nets.register_architecture`.
    :param command: The command that produced the file.
    :param summary: One line for listings (data, resolution, headline metric).
    """

    name: str
    filename: str
    sha256: str
    architecture: str
    command: str
    summary: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


def _cifar10_restorer(quality: int, sha256: str, psnr: tuple[float, float], ssim: tuple[float, float]) -> Artifact:
    """A shipped CompressRestore restorer; ``psnr``/``ssim``: JPEG alone and JPEG + generator, from its model card."""
    return Artifact(
        name=f"cifar10-restorer-q{quality}",
        filename=f"cifar10-restorer-q{quality}.pt",
        sha256=sha256,
        architecture="argan-generator",
        command="python -m art_purifiers.training.restorer --data-dir path/to/cifar10 "
        f"--quality {quality} --output runs/restorer-q{quality}",
        summary=f"CompressRestore restorer for JPEG q{quality} (argan-generator, 1.4 M parameters), CIFAR-10 32x32; "
        f"1,000 test images of a CIFAR-10 copy re-encoded as JPEG q75, JPEG -> JPEG + generator: PSNR "
        f"{psnr[0]:.2f} -> {psnr[1]:.2f} dB, "
        f"SSIM {ssim[0]:.4f} -> {ssim[1]:.4f}",
        tags=("restorer", "cifar10", "compress-restore"),
    )


def _cifar10_noisy_member(quality: int, sha256: str, top1: float, top1_compressed: float) -> Artifact:
    """
    A shipped member of Zhang & Gao's model set; accuracies on the test images of a CIFAR-10 copy re-encoded as JPEG
    q75, from its model card.
    """
    return Artifact(
        name=f"cifar10-noisy-q{quality}",
        filename=f"cifar10-noisy-q{quality}.pt",
        sha256=sha256,
        architecture="cifar-convnet",
        command="python -m art_purifiers.training.noisy_compression --data-dir path/to/cifar10 "
        "--output runs/noisy-set --epochs 10 --train-images 20000",
        summary=f"Zhang & Gao's M{quality}: cifar10-reference fine-tuned by noisy compression training in the chain "
        f"M90 -> ... -> M{quality} (10 epochs per member on 20,000 training images); 5,000 test images of a "
        f"CIFAR-10 copy re-encoded as JPEG q75: {100 * top1:.2f}% top-1, {100 * top1_compressed:.2f}% compressed at "
        f"q{quality}",
        tags=("classifier", "cifar10", "noisy-training", "zhang2021-ensemble"),
    )


#: Shipped artifacts by name.
REGISTRY: dict[str, Artifact] = {
    artifact.name: artifact
    for artifact in (
        Artifact(
            name="cifar10-reference",
            filename="cifar10-reference.pt",
            sha256="bc8ee19cea3bf0d1d49520ba839b69b32345555e7082f90fb721a3dfb3ba9f1e",
            architecture="cifar-convnet",
            command="python -m art_purifiers.training.classifier --data-dir path/to/cifar10 "
            "--output runs/classifier --epochs 18",
            summary="CIFAR-10 reference classifier, 32x32 NCHW in [0, 1], 1.1 M parameters; 89.80% top-1 on the "
            "5,000 test images of a CIFAR-10 copy re-encoded as JPEG q75",
            tags=("classifier", "cifar10"),
        ),
        Artifact(
            name="cifar10-surrogate",
            filename="cifar10-surrogate.pt",
            sha256="690bc358a754d02f7b32a03e48133f3a65aaa308800e2b9ff3db1848b640f8d9",
            architecture="cifar-resnet",
            command="python -m art_purifiers.training.classifier --data-dir path/to/cifar10 --output "
            "runs/surrogate --architecture cifar-resnet --seed 1 --label-smoothing 0 --name cifar10-surrogate",
            summary="Transfer surrogate of the evaluation suite: a small ResNet (another architecture, seed and loss "
            "than cifar10-reference), 32x32 NCHW in [0, 1], 0.31 M parameters; 85.88% top-1 on the 5,000 test images "
            "of a CIFAR-10 copy re-encoded as JPEG q75",
            tags=("classifier", "cifar10", "surrogate"),
        ),
        Artifact(
            name="cifar10-vgg-features",
            filename="cifar10-vgg-features.pt",
            sha256="48f7d4fd39c0ad1e666ec5675a6a4d41bbb42fef53e46929356dbca75af0f09a",
            architecture="cifar-vgg",
            command="python -m art_purifiers.training.classifier --data-dir path/to/cifar10 --output "
            "runs/vgg-features --architecture cifar-vgg --seed 2 --label-smoothing 0 --epochs 10 --name "
            "cifar10-vgg-features",
            summary="Feature network of the NRP defence and the SSP attack (features.relu3_3): a VGG-style network "
            "(stages of 2, 2, 3 conv-BN-ReLU), 32x32 NCHW in [0, 1], 0.44 M parameters; 85.32% top-1 on the 5,000 "
            "test images of a CIFAR-10 copy re-encoded as JPEG q75",
            tags=("classifier", "cifar10", "features"),
        ),
        Artifact(
            name="cifar10-nrp-light",
            filename="cifar10-nrp-light.pt",
            sha256="6d07965d35b024b443b9078c3587c6082680c9db5e96705bb4e71c0eb9160980",
            architecture="nrp-residual-generator",
            command="python -m art_purifiers.training.nrp --data-dir path/to/cifar10 --output runs/nrp-light",
            summary="NRP light purifier (8 residual blocks, 32 features, 0.15 M parameters), CPU preset: 2,000 steps "
            "against 10-iteration SSP on cifar10-vgg-features; it does not reach the paper's quality: on SSP-100 "
            "test images 24.08 dB with it against 25.29 dB without (clean images: 25.49 dB after purification)",
            tags=("purifier", "cifar10", "nrp"),
        ),
        Artifact(
            name="cifar10-nrp-attacker",
            filename="cifar10-nrp-attacker.pt",
            sha256="509e4a51128bb5e935392a2ddd1746e1c1925619d8665cc6d44f04e7d76f6388",
            architecture="nrp-residual-generator",
            command="python -m art_purifiers.training.nrp --data-dir path/to/cifar10-attacker-4000-4999 "
            "--preset paper --architecture nrp-residual-generator --batch-size 32 --lr 2e-4 --seed 1 --steps 946 "
            "--output runs/gpu/nrp-attacker --name nrp-attacker",
            summary="An attacker's own NRP purifier, for the paper's 'attacker knows the defence' case: the authors' "
            "light generator (23 blocks, 64 features, 1.70 M parameters), trained by the same recipe with another "
            "seed on training images the defender's purifiers never saw (numbers 4000-4999 of each class; the data "
            "directory is that ImageFolder subset beside the test split), 946 steps against 100-iteration SSP on an "
            "H100. Test accuracy of cifar10-reference behind it 80.2% (89.8% alone); on SSP-100 images 24.85 dB "
            "with it against 25.29 dB without. Use it as a transfer source: "
            "transfer:...,source=cifar10-nrp-attacker+cifar10-surrogate",
            tags=("purifier", "cifar10", "nrp", "attacker"),
        ),
        Artifact(
            name="edsr-x2-cifar10-photos",
            filename="edsr-x2-cifar10-photos.pt",
            sha256="a3b15237c019d2565cc1f3d56430f2061c429adb658b56403396cf627077785f",
            architecture="edsr",
            command="python -m art_purifiers.training.edsr --data-dir path/to/cifar10 --output runs/edsr-x2",
            summary="SuperResolution's EDSR x2 (EDSR-baseline: 16 blocks, 64 features, 1.37 M parameters), trained on "
            "CIFAR-10 and scikit-image photos; PSNR bicubic -> EDSR: 26.49 -> 29.03 dB on 1,000 CIFAR-10 test images "
            "(JPEG q75 copy), 34.17 -> 36.35 dB on 82 crops of held-out photos",
            tags=("super-resolution", "cifar10", "photos"),
        ),
        _cifar10_restorer(
            20, "5211b5f9b62cd9555eced7dc45cab2fa7e2d68f4955ffc0269bc9a2f6c6fc0ac", (26.27, 27.57), (0.8837, 0.9066)
        ),
        _cifar10_restorer(
            40, "d7d685d93da2f4c150985a49716cad69aa52db95b04c624cd9b785a6887bd283", (28.73, 29.68), (0.9274, 0.9389)
        ),
        _cifar10_noisy_member(90, "f32604ab4155df56601f8ae1e7ef9fe276dcfb8635c4ce2c9942080e49d3ed0a", 0.8902, 0.8896),
        _cifar10_noisy_member(70, "6698ff4fcae577d37f02bcb2d3d9baf8eabcd66b427d8a2cb2d4dead426bf966", 0.8846, 0.8774),
        _cifar10_noisy_member(50, "fc1d7ab96a1c443d58f5170071313b92df4ac1813f9ff5372f56ca95cda6706d", 0.8810, 0.8600),
        _cifar10_noisy_member(30, "d934b48474b5d5d7fa03dcdc1c5099d62a5c696ed9a7061ac5e011bf6ac7cc65", 0.8816, 0.8186),
        _cifar10_restorer(
            60, "088bbbdc53ab9261d846ea13af24bdb5bafb725a57f62bf735f3ca4ca6d26a96", (32.65, 35.87), (0.9724, 0.9846)
        ),
    )
}


def names() -> list[str]:
    """Sorted names of the shipped artifacts."""
    return sorted(REGISTRY)


def info(name: str) -> Artifact:
    """
    The registry entry of an artifact.

    :raises KeyError: for unknown names, listing the known ones.
    """
    if name not in REGISTRY:
        raise KeyError(f"Unknown artifact {name!r}; shipped artifacts: {names() or 'none'}.")
    return REGISTRY[name]


def sha256_of(file: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def path(name: str) -> Path:
    """
    Path of a shipped artifact after checking its sha256.

    :raises FileNotFoundError: if the file is missing from the installation.
    :raises RuntimeError: if its sha256 does not match the registry.
    """
    artifact = info(name)
    file = WEIGHTS_DIR / artifact.filename
    if not file.is_file():
        raise FileNotFoundError(f"Weight file {file} of artifact {name!r} is missing from the installation.")
    actual = sha256_of(file)
    if actual != artifact.sha256:
        raise RuntimeError(f"Weight file {file} is corrupt or was replaced: sha256 {actual} != {artifact.sha256}.")
    return file


def load(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """
    Build a shipped artifact's module, load its checked weights and put it in eval mode.

    :param name: One of :func:`names`.
    :param device: Device of the returned module.
    """
    artifact = info(name)
    module = load_file(path(name), device=device)
    if type(module) is not ARCHITECTURES.get(artifact.architecture):
        raise RuntimeError(f"Artifact {name!r} should hold a {artifact.architecture!r}, the file holds another.")
    return module


def resolve(source: str | Path | nn.Module, train_command: str = "") -> nn.Module:
    """
    A network named by a user: a shipped artifact's name, a weight file in the zoo format, or a module (returned
    as it is).

    :param source: What the user passed.
    :param train_command: A command that trains such weights, quoted in the error for unknown sources.
    :raises ValueError: for a string that is neither a shipped name nor an existing file.
    """
    if isinstance(source, nn.Module):
        return source
    if isinstance(source, str) and source in REGISTRY:
        return load(source)
    if isinstance(source, (str, Path)) and Path(source).is_file():
        return load_file(source)
    hint = f" Train one with `{train_command}`." if train_command else ""
    raise ValueError(f"{source!r} is neither a shipped artifact ({names()}), a weight file, nor an nn.Module.{hint}")


def architecture_of(file: str | Path) -> tuple[str, dict[str, Any]]:
    """The registered architecture name and constructor config stored in a weight file."""
    payload = _read(file)
    return str(payload["architecture"]), dict(payload["config"])


def card(file: str | Path) -> dict[str, Any]:
    """The model card stored in a weight file (data, resolution, metrics, command)."""
    return dict(_read(file)["card"])


def load_file(file: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """
    Load a weight file written by :func:`save` (shipped or user-trained) into a float32 module in eval mode.

    :param file: Path of the file.
    :param device: Device of the returned module.
    """
    payload = _read(file)
    architecture = payload["architecture"]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{file}: unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}.")
    module = ARCHITECTURES[architecture](**payload["config"])
    state = {key: value.float() if value.is_floating_point() else value for key, value in payload["state_dict"].items()}
    module.load_state_dict(state)
    return module.to(device).eval()


def save(
    file: str | Path,
    module: nn.Module,
    architecture: str,
    config: dict[str, Any],
    card: dict[str, Any],
    half: bool = True,
) -> str:
    """
    Write a module in the zoo format and return the file's sha256 (for the registry).

    :param file: Destination path.
    :param module: The trained module (an instance of the registered ``architecture``).
    :param architecture: Registered architecture name.
    :param config: Keyword arguments that rebuild the module: ``ARCHITECTURES[architecture](**config)``.
    :param card: Model card: at least ``data``, ``resolution``, ``metrics`` and ``command``.
    :param half: Store floating-point tensors as float16 (halves the size; loading converts back to float32).
    """
    if ARCHITECTURES.get(architecture) is not type(module):
        raise ValueError(f"module is a {type(module).__name__}, not the registered architecture {architecture!r}.")
    # plain JSON types only: weights_only loading refuses anything else (e.g. torch.__version__'s class)
    card = json.loads(json.dumps(card, default=str))
    missing = {"data", "resolution", "metrics", "command"} - set(card)
    if missing:
        raise ValueError(f"The model card lacks {sorted(missing)}.")
    state = {
        key: (value.detach().half() if half and value.is_floating_point() else value.detach()).cpu().contiguous()
        for key, value in module.state_dict().items()
    }
    payload = {"format": FORMAT, "architecture": architecture, "config": config, "card": card, "state_dict": state}
    torch.save(payload, file)
    return sha256_of(file)


def _read(file: str | Path) -> dict[str, Any]:
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError and others for unsafe or damaged files
        raise ValueError(f"{file} is not a loadable art-purifiers weight file: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{file} is not an art-purifiers weight file (format {FORMAT!r}).")
    return payload
