"""The chunk store of an evaluation: per-chunk state files, written atomically, read back on resume, and the chunks
still to do shared among the processes of a run."""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from art_purifiers.evaluation.distributed import World


class ChunkStore:
    """
    Runs work chunk by chunk: each chunk's arrays are saved in their own file as soon as they are done, so a crash loses
    only the chunks under way, and a resumed run (with any number of processes) redoes only those.

    :param world: The processes of the run (one, or a ``torchrun`` group).
    :param verbose: Show a progress bar.
    """

    def __init__(self, world: World, verbose: bool = False) -> None:
        self.world = world
        self.verbose = verbose

    def run(
        self,
        folder: Path | None,
        compute: Callable[[int, int], dict[str, Any]],
        desc: str,
        chunks: Sequence[tuple[int, int]],
        costs: dict[int, float] | None = None,
    ) -> list[dict[str, Any]]:
        """
        Every chunk's arrays, in chunk order, on every process. The chunks not yet saved in ``folder`` are shared
        round-robin among the processes, and each is saved (``folder/<start>.npz``) as soon as it is done, so a crash
        loses only the chunks under way; saved ones are read back. Arrays named ``x_*`` (examples) stay in the files.

        :param folder: Where chunks are saved; ``None`` computes every chunk and saves nothing.
        :param compute: ``(start, end) -> arrays`` of the images ``[start, end)``.
        :param chunks: ``[start, end)`` bounds.
        :param costs: Expected cost per chunk start, to balance uneven chunks (default: their sizes, round-robin).
        """
        files = {start: None if folder is None else folder / f"{start:08d}.npz" for start, _ in chunks}
        if folder is not None and self.world.is_main:
            folder.mkdir(parents=True, exist_ok=True)
        readable: dict[int, dict[str, Any]] = {}  # what rank 0 read while checking, reused for its own share
        if self.world.is_main:
            for start, file in files.items():
                stored = None if file is None else load_state(file)
                if stored is not None:
                    readable[start] = without_examples(stored)
        saved = self.world.broadcast(list(readable) if self.world.is_main else None)
        missing = [(start, end) for start, end in chunks if start not in saved]
        todo = self.world.share(missing, None if costs is None else [costs[start] for start, _ in missing])
        mine: dict[int, dict[str, Any]] = {}
        with tqdm(
            total=sum(end - start for start, end in todo), desc=desc, leave=False, disable=not self.verbose
        ) as bar:
            for start, end in todo:
                arrays = compute(start, end)
                if files[start] is not None:
                    save_atomic(files[start], **arrays)  # type: ignore[arg-type]
                mine[start] = without_examples(arrays)
                bar.update(end - start)
        for start in self.world.share(saved):
            stored = readable.get(start) or load_state(files[start], set_aside=False)  # type: ignore[arg-type]
            if stored is None:
                raise RuntimeError(f"{files[start]} was readable a moment ago and is not now; is another run using it?")
            mine[start] = without_examples(stored)
        merged = {start: arrays for part in self.world.all_gather(mine) for start, arrays in part.items()}
        return [merged[start] for start, _ in chunks]


def save_atomic(file: Path, **arrays: Any) -> None:
    """Write ``arrays`` to ``file`` (NumPy ``.npz``) through a temporary file, so a reader never sees half of it."""
    temporary = file.with_name(file.name + ".tmp.npz")
    np.savez_compressed(temporary, **arrays)
    temporary.replace(file)


def load_state(file: Path, set_aside: bool = True) -> dict[str, np.ndarray] | None:
    """
    A saved state file's arrays, or ``None`` when there is none. A file that cannot be read (a copy cut short, a disk
    that filled up) is set aside as ``NAME.unreadable`` with a warning, and its work is done again rather than lost.

    :param set_aside: Move an unreadable file aside (only the process that writes the state does).
    """
    if not file.is_file():
        return None
    try:
        with np.load(file) as saved:
            return {name: saved[name] for name in saved.files}  # reads every member once: a truncated one fails here
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if not set_aside:
            return None
        aside = file.with_name(file.name + ".unreadable")
        file.replace(aside)
        print(f"warning: {file} could not be read ({error}); moved to {aside.name}, redoing its work", file=sys.stderr)
        return None


def gathered(chunks: Sequence[dict[str, Any]], name: str, axis: int = 0) -> np.ndarray:
    """One array of every chunk's ``name``, in chunk order."""
    return np.concatenate([chunk[name] for chunk in chunks], axis=axis)


def total_seconds(chunks: Sequence[dict[str, Any]]) -> float:
    """The seconds the chunks took, summed."""
    return float(sum(float(chunk["seconds"]) for chunk in chunks))


def without_examples(arrays: dict[str, Any]) -> dict[str, Any]:
    """A chunk's arrays without its examples (``x_*``), which stay in its file."""
    return {name: value for name, value in arrays.items() if not name.startswith("x_")}
