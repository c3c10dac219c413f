"""The classifier under attack: a model loaded from a spec, and its ART classifier with the defences in front.

Shared by the evaluation suite, the training scripts and the estimators.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_purifiers import zoo
from art_purifiers.attacks.eot import EOTPyTorchClassifier


def load_classifier(spec: str, device: str | torch.device = "cpu") -> nn.Module:
    """
    The model to defend: a zoo name (``cifar10-reference``), a weight file in the zoo format, or
    ``package.module:attribute`` naming an ``nn.Module`` or a function returning one (input NCHW in [0, 1]). A chain
    ``first+second`` of such specs applies them in order, clamping each output but the last to [0, 1] as a defence
    does: e.g. an attacker's own purifier before its surrogate, ``runs/nrp-attacker/purifier.pt+cifar10-surrogate``.
    """
    if "+" in spec and not Path(spec).is_file():
        stages: list[nn.Module] = []
        for part in spec.split("+"):
            stages += [load_classifier(part, device), nn.Hardtanh(0.0, 1.0)]
        return nn.Sequential(*stages[:-1]).to(device).eval()
    if spec in zoo.names():
        return zoo.load(spec, device=device)
    if Path(spec).is_file():
        return zoo.load_file(spec, device=device)
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
        model = target() if not isinstance(target, nn.Module) and callable(target) else target
        if not isinstance(model, nn.Module):
            raise TypeError(f"{spec} gave a {type(model).__name__}, not a torch.nn.Module.")
        return model.to(device).eval()
    raise ValueError(f"Classifier {spec!r} is neither a zoo name ({zoo.names()}), a weight file, nor module:attribute.")


def make_classifier(
    model: nn.Module, defences: list[Any], input_shape: tuple[int, ...], nb_classes: int, device: str, eot: int = 1
) -> PyTorchClassifier:
    """An ART classifier on [0, 1] NCHW inputs; an :class:`EOTPyTorchClassifier` when ``eot > 1``."""
    kwargs: dict[str, Any] = dict(
        loss=nn.CrossEntropyLoss(),
        input_shape=input_shape,
        nb_classes=nb_classes,
        clip_values=(0.0, 1.0),
        preprocessing_defences=defences or None,
        device_type="gpu" if device.startswith("cuda") else "cpu",
    )
    if eot > 1:
        return EOTPyTorchClassifier(model, eot_samples=eot, **kwargs)
    return PyTorchClassifier(model, **kwargs)
