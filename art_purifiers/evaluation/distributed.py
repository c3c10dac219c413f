"""
The evaluation suite under ``torchrun``: which process this is, and the few collective steps the suite needs.

A run launched by ``torchrun`` (or anything that sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` the same way) joins a ``gloo`` process group: gloo carries Python objects and CPU tensors between
processes on one machine or many, and works with several processes sharing one GPU. The suite splits its images into
chunks, gives each process a share of the chunks still to do, and gathers the chunks' results to every process (see
:mod:`art_purifiers.evaluation.suite`); rank 0 alone writes results and reports.

Without a launch, :class:`World` is a single process and every collective is the identity, so the suite has one code
path.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

#: The environment variables ``torchrun`` sets for every process it starts.
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Environment variable: seconds a process waits at a collective step for the others (default a day). The others
#: may be busy for hours: rank 0 fitting a table search, or a long chunk of an EOT attack on a CPU. gloo's own
#: default of 30 minutes would end such runs.
TIMEOUT_ENV = "ART_PURIFIERS_DIST_TIMEOUT"


@dataclass(frozen=True)
class World:
    """
    This process's place among the processes of a run.

    :param rank: Global rank (0 writes the results).
    :param size: Number of processes.
    :param local_rank: Rank on this machine (picks the GPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes results, reports and shared caches."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, requested: str) -> str:
        """
        The torch device of this process: ``auto`` is ``cuda:LOCAL_RANK`` when CUDA is present (processes beyond the
        machine's GPU count share them round-robin), else ``cpu``; a bare ``cuda`` gets the local rank's GPU too.
        """
        if requested == "auto":
            requested = "cuda" if torch.cuda.is_available() else "cpu"
        if requested == "cuda" and self.distributed:
            return f"cuda:{self.local_rank % max(torch.cuda.device_count(), 1)}"
        return requested

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, value: T | None) -> T:
        """Rank 0's ``value`` on every process (others pass anything, usually ``None``)."""
        if not self.distributed:
            return value  # type: ignore[return-value]  # rank 0's own value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]  # type: ignore[return-value]

    def all_gather(self, value: T) -> list[T]:
        """Every process's ``value``, in rank order, on every process."""
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, value)
        return gathered

    def main_first(self, step: Callable[[], T]) -> T:
        """
        Run ``step`` on rank 0, then on the others once it has finished: rank 0 fits, decodes or downloads and
        writes the cache files, the others read them.
        """
        if self.is_main:
            result = step()
            self.barrier()
            return result
        self.barrier()
        return step()

    def share(self, items: Sequence[T], costs: Sequence[float] | None = None) -> list[T]:
        """
        This process's share of ``items``: round-robin, or, given each item's expected cost, the longest first to the
        least loaded process (Graham's LPT rule), so uneven chunks (a cascade's survivors) still finish together.
        Every process computes the same split.
        """
        if costs is None:
            return list(items[self.rank :: self.size])
        if len(costs) != len(items):
            raise ValueError(f"share needs one cost per item, got {len(costs)} for {len(items)}.")
        loads = [0.0] * self.size
        owners = [0] * len(items)
        for index in sorted(range(len(items)), key=lambda i: (-costs[i], i)):
            owners[index] = min(range(self.size), key=lambda rank: (loads[rank], rank))
            loads[owners[index]] += costs[index]
        return [item for item, owner in zip(items, owners) if owner == self.rank]


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or a launcher that sets the same variables)."""
    return all(name in os.environ for name in LAUNCH_VARIABLES)


def init_world() -> tuple[World, bool]:
    """
    The world of this process; joins the gloo process group of a ``torchrun`` launch with more than one process.

    :return: The world, and whether this call created the process group (the caller then destroys it).
    :raises ValueError: if the launch variables are inconsistent.
    """
    if not launched():
        return World(), False
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        if not os.environ[name].isdigit():
            raise ValueError(f"{name} must be a non-negative integer, got {os.environ[name]!r}.")
    rank, size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if not 0 <= rank < size or local_rank < 0:
        raise ValueError(f"Inconsistent launch: RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank}.")
    world = World(rank, size, local_rank)
    if size == 1 or dist.is_initialized():
        return world, False
    seconds = float(os.environ.get(TIMEOUT_ENV, 24 * 3600))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=seconds))
    return world, True


def chunk_bounds(count: int, chunk_size: int, offset: int = 0) -> list[tuple[int, int]]:
    """
    ``[start, end)`` of consecutive chunks of ``chunk_size`` covering ``count`` items from ``offset`` (the last may be
    shorter).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
    return [(offset + start, offset + min(count, start + chunk_size)) for start in range(0, count, chunk_size)]
