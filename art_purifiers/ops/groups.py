"""Run a function on the groups of a batch that share a key (a JPEG quality, a restorer) and restore the order.

Codecs take one quality per call and each restorer serves one quality range, so per-image parameters are applied
group by group: gather the images of each key, run, and scatter the results back to their rows. The gather and
scatter are index operations, so gradients flow through them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import torch


def group_indices(keys: torch.Tensor | Sequence[int]) -> list[tuple[int, torch.Tensor]]:
    """
    The rows of each distinct key.

    :param keys: One integer key per row.
    :return: ``(key, rows)`` pairs, keys ascending, ``rows`` an ascending CPU ``LongTensor``.
    """
    flat = torch.as_tensor(keys).reshape(-1).cpu()
    values, inverse = torch.unique(flat, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    counts = torch.bincount(inverse, minlength=len(values)).tolist()
    return list(zip(values.tolist(), torch.split(order, counts)))


def map_groups(
    fn: Callable[[torch.Tensor, int], torch.Tensor | Sequence[torch.Tensor]],
    x: torch.Tensor,
    keys: torch.Tensor | Sequence[int],
    split: int = 1,
    pool: Executor | None = None,
) -> torch.Tensor:
    """
    ``out[i] = fn(x[rows of key k], k)[position of i among those rows]`` for every row ``i`` of key ``k``.

    With a ``pool``, only ``fn`` runs in its threads: the gathering of each part, the stacking of per-row results and
    the scattering back run in the calling thread, because a torch operation started from a pool thread may open a
    team of torch's own threads, and several of them oversubscribe the cores.

    :param fn: Maps a batch of rows sharing one key (and the key) to a batch with as many rows, as one tensor or as
               a sequence of per-row tensors.
    :param x: The batch, rows along dimension 0.
    :param keys: One integer key per row.
    :param split: Cut each group into at most this many parts (to feed a thread pool).
    :param pool: Runs ``fn`` on the parts concurrently when given (for codecs that release the GIL).
    :return: The results in the order of ``x``'s rows.
    """
    if len(keys) != x.shape[0]:
        raise ValueError(f"Expected one key per row ({x.shape[0]}), got {len(keys)}.")
    jobs = [(key, part) for key, rows in group_indices(keys) for part in rows.tensor_split(min(split, len(rows)))]
    if len(jobs) == 1:  # one key, rows already in order
        parts = [x]
    else:
        parts = [x.index_select(0, rows.to(x.device)) for _, rows in jobs]
    arguments = [(part, key) for part, (key, _) in zip(parts, jobs)]
    outputs = list(pool.map(lambda args: fn(*args), arguments)) if pool is not None else [fn(*a) for a in arguments]
    results = [out if isinstance(out, torch.Tensor) else torch.stack(list(out)) for out in outputs]
    if len(jobs) == 1:
        return results[0]
    # one output buffer; index_copy_ is differentiable, so gradients reach every group
    out = results[0].new_empty((x.shape[0], *results[0].shape[1:]))
    for (_, rows), result in zip(jobs, results):
        out.index_copy_(0, rows.to(out.device), result)
    return out
