"""Two gloo ranks on CPU give the same epoch as one process over the same samples."""

import math
import socket

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import torch
from gwa.torch import GWATracker

pytestmark = pytest.mark.slow  # spawns two gloo processes that import torch

NUM_SAMPLES, WORLD, BATCH = 13, 2, 3


def padded_shards():
    """DistributedSampler(shuffle=False) layout: 13 samples padded to 14, so sample 0 is seen twice."""
    indices = list(range(NUM_SAMPLES))
    indices += indices[: WORLD * math.ceil(NUM_SAMPLES / WORLD) - NUM_SAMPLES]
    return [indices[rank::WORLD] for rank in range(WORLD)]


def batch_for(rank, step, ids):
    """Deterministic float64 batch of one rank's step: the head weight drifts with the step."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    w = torch.randn(4, 5, generator=g, dtype=torch.float64)
    x = torch.randn(len(ids), 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (len(ids),), generator=g)
    return x @ w.T, y, torch.tensor(ids), x, w


def rank_batches(rank):
    shard = padded_shards()[rank]
    return [batch_for(rank, k, shard[i : i + BATCH]) for k, i in enumerate(range(0, len(shard), BATCH))]


MODES = ("store", "chunks", "moments")
DTYPES = (torch.float64, torch.float32)


def make_trackers():
    trackers = {}
    for dtype in DTYPES:
        trackers["store", dtype] = GWATracker(num_samples=NUM_SAMPLES, signals=("loss", "pred"))
        trackers["chunks", dtype] = GWATracker(signals=("loss",))
        trackers["moments", dtype] = GWATracker(store_scores=False)
    return trackers


def run_epoch(trackers, batch_list):
    for logits, y, ids, x, w in batch_list:
        for (mode, dtype), t in trackers.items():
            t.update(
                logits.to(dtype),
                y,
                None if mode == "moments" else ids,
                embeddings=x.to(dtype),
                weight=w.to(dtype),
            )
    return {key: t.end_epoch() for key, t in trackers.items()}


def _worker(rank, port, out_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        results = run_epoch(make_trackers(), rank_batches(rank))
        torch.save(
            {
                key: (r.summary, r.scores, r.sample_ids, r.signals, r.n_duplicates)
                for key, r in results.items()
            },
            f"{out_path}.{rank}",
        )
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dist") / "result")
    # spawn, not fork: by now the suite may have started JAX threads, and forking a multithreaded process can
    # deadlock.
    mp.start_processes(_worker, args=(free_port(), out), nprocs=WORLD, join=True, start_method="spawn")
    return [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(WORLD)]


@pytest.fixture(scope="module")
def single_process_results():
    # Rank 0's batches first: the lowest rank's sighting of a duplicate is the one that counts.
    return run_epoch(make_trackers(), rank_batches(0) + rank_batches(1))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name", MODES)
def test_two_ranks_equal_one_process(two_rank_results, single_process_results, name, dtype):
    ref = single_process_results[name, dtype]
    for rank_result in two_rank_results:
        summary, scores, sample_ids, signals, n_duplicates = rank_result[name, dtype]
        assert summary.n == ref.summary.n and summary.n_undefined == ref.summary.n_undefined
        for field in ("mean", "std", "excess_kurtosis", "gwa"):
            assert math.isclose(
                getattr(summary, field), getattr(ref.summary, field), rel_tol=1e-12, abs_tol=1e-15
            )
        if name == "moments":  # no ids: nothing to deduplicate, all 14 sightings count
            assert summary.n == 14 and scores is None
            continue
        assert summary.n == NUM_SAMPLES and n_duplicates == ref.n_duplicates == 1
        np.testing.assert_array_equal(scores, ref.scores)
        for k in ref.signals:
            np.testing.assert_array_equal(signals[k], ref.signals[k])
        if name == "chunks":
            np.testing.assert_array_equal(sample_ids, np.arange(NUM_SAMPLES))
