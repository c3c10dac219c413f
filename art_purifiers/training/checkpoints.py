"""Resumable training: atomic checkpoints of modules, optimizers, the data sampler, the step and the log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


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
