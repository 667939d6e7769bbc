"""Exact reduction of a tracker's epoch across ``torch.distributed`` ranks, once per epoch.

Moments are gathered as 5-number states and merged in rank order (:func:`gwa._moments.merge_states`), so every
rank gets the same, order-fixed result. Per-sample stores are reduced so that a sample seen by several ranks
(a padded ``DistributedSampler``) keeps the score of the lowest rank and counts once.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch.distributed as dist

import torch
from gwa._moments import EMPTY, MomentState, merge_states

#: One rank's per-sample chunk: ids, scores, undefined flags, signals.
_Chunk = tuple[np.ndarray, np.ndarray, np.ndarray, dict]


def is_active(group=None) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _comm_device(group=None) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def merge_moment_states(state: MomentState, group=None) -> MomentState:
    """All-gather every rank's state and merge them in rank order."""
    device = _comm_device(group)
    mine = torch.tensor(list(state), dtype=torch.float64, device=device)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, mine, group=group)
    merged = EMPTY
    for t in gathered:
        merged = merge_states(merged, MomentState(*t.cpu().tolist()))
    return merged


def sum_ints(values: list[int], group=None) -> list[int]:
    t = torch.tensor(values, dtype=torch.int64, device=_comm_device(group))
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t.cpu().tolist()


def reduce_store(
    store: dict[str, torch.Tensor], seen: torch.Tensor, n_duplicates: int, n_non_finite: int, group=None
):
    """Combine the ranks' per-sample stores; the lowest rank that saw a sample owns its values.

    Returns the host store (NaN where no rank saw a sample), the total duplicate count (repeats within ranks
    plus samples seen by several ranks, each extra sight counted) and the total non-finite count.
    """
    device = _comm_device(group)
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    seen = seen.to(device)
    owner = torch.where(seen, rank, world).to(torch.int64)
    dist.all_reduce(owner, op=dist.ReduceOp.MIN, group=group)
    mine = owner == rank
    sights = seen.to(torch.int64).sum()  # this rank's (already deduplicated) samples
    out = {}
    for name, values in store.items():
        v = values[:-1].to(device)
        v = torch.where(mine, v, torch.zeros_like(v)).double()
        dist.all_reduce(v, op=dist.ReduceOp.SUM, group=group)
        out[name] = v
    seen_any = owner < world
    for name, values in out.items():
        if name != "undefined":
            out[name] = torch.where(seen_any, values, torch.full_like(values, float("nan")))
    totals = torch.tensor([int(sights), n_duplicates, n_non_finite], dtype=torch.int64, device=device)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM, group=group)
    sights, n_duplicates, n_non_finite = totals.cpu().tolist()
    n_duplicates += sights - int(seen_any.sum())
    host = {name: t.cpu().numpy() for name, t in out.items()}
    host["undefined"] = host["undefined"] > 0.5
    return host, n_duplicates, n_non_finite


def gather_chunks(
    ids: np.ndarray, scores: np.ndarray, undefined: np.ndarray, signals: dict, group=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """All-gather the ranks' (ids, scores, undefined, signals) and concatenate them in rank order."""
    slots: list[_Chunk | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(slots, (ids, scores, undefined, signals), group=group)
    gathered = cast(list[_Chunk], slots)  # all_gather_object fills every slot
    ids = np.concatenate([g[0] for g in gathered])
    scores = np.concatenate([g[1] for g in gathered])
    undefined = np.concatenate([g[2] for g in gathered])
    signals = {k: np.concatenate([g[3][k] for g in gathered]) for k in signals}
    return ids, scores, undefined, signals


def gather_ints(values: list[int], group=None) -> list[list[int]]:
    """All-gather a short list of ints from every rank: one row per rank, in rank order."""
    device = _comm_device(group)
    mine = torch.tensor(values, dtype=torch.int64, device=device)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, mine, group=group)
    return [t.cpu().tolist() for t in gathered]


def raise_if_any_rank_failed(error: BaseException | None, failed_anywhere: bool, group=None) -> None:
    """Raise on every rank when any rank found an error in its own data (``failed_anywhere``, learnt from an
    all-gather every rank takes part in, e.g. :func:`gather_ints`).

    A rank-local error raised before the epoch's collectives would leave the other ranks waiting in them until
    the process group's timeout (30 min by default). Here the failing ranks' messages are gathered and every
    rank raises the same ``ValueError``, naming the ranks.
    """
    if not failed_anywhere:
        return
    slots: list[str | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(slots, None if error is None else str(error), group=group)
    failed = [(rank, message) for rank, message in enumerate(slots) if message is not None]
    if error is not None and len(failed) == 1:
        raise error
    shown = "; ".join(f"rank {rank}: {message}" for rank, message in failed)
    raise ValueError(f"gwa: {len(failed)} torch.distributed rank(s) found an error in their data: {shown}")
