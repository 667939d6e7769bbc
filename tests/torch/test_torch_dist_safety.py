"""Two gloo ranks that disagree fail with a message naming the ranks; a rank without batches is fine."""

import datetime
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import torch
from gwa.torch import GWATracker

pytestmark = pytest.mark.slow  # spawns two gloo processes that import torch

WORLD = 2


def _batch(seed, n=4, c=3, d=5):
    g = torch.Generator().manual_seed(seed)
    x, w = (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(c, d, generator=g, dtype=torch.float64),
    )
    return x @ w.T, torch.randint(0, c, (n,), generator=g), x, w


def _outcome(fn):
    try:
        result = fn()
        return ("ok", result)
    except RuntimeError as error:
        return ("RuntimeError", str(error))


def _zero_batch_case(rank, kwargs, with_ids):
    tracker = GWATracker(**kwargs)
    if rank == 0:  # rank 1 has no batch this epoch
        for k in range(2):
            logits, y, x, w = _batch(k)
            tracker.update(
                logits, y, torch.arange(4 * k, 4 * k + 4) if with_ids else None, embeddings=x, weight=w
            )
    r = tracker.end_epoch()
    return r.summary.n, r.summary.mean


def _worker(rank, port, out_path):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    out = {}
    try:
        import warnings

        warnings.simplefilter("ignore")
        for name, kwargs in (
            ("indexed", {"num_samples": 16}),
            ("sparse", {}),
            ("moments", {"store_scores": False}),
        ):
            for with_ids in (False, True):
                out["zero", name, with_ids] = _outcome(
                    lambda k=kwargs, i=with_ids: _zero_batch_case(rank, k, i)
                )
        out["num_samples"] = _outcome(lambda: GWATracker(num_samples=100 if rank == 0 else 37).end_epoch())

        def ids_on_one_rank():
            tracker = GWATracker()
            logits, y, x, w = _batch(rank)
            tracker.update(logits, y, torch.arange(4) if rank == 0 else None, embeddings=x, weight=w)
            return tracker.end_epoch().summary.n

        out["ids"] = _outcome(ids_on_one_rank)
        out["storage"] = _outcome(lambda: GWATracker(store_scores=rank == 0).end_epoch())
        torch.save(out, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dist_safety") / "r")
    mp.start_processes(_worker, args=(_free_port(), out), nprocs=WORLD, join=True, start_method="spawn")
    return [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(WORLD)]


@pytest.mark.parametrize("with_ids", [False, True], ids=["positions", "ids"])
@pytest.mark.parametrize("name", ["indexed", "sparse", "moments"])
def test_a_rank_without_batches_is_fine(outcomes, name, with_ids):
    results = [o["zero", name, with_ids] for o in outcomes]
    assert all(status == "ok" for status, _ in results), results
    (n0, mean0), (n1, mean1) = (r for _, r in results)
    assert n0 == n1 == 8 and mean0 == mean1  # moments merged across ranks: rank 0's 8 samples


def test_different_num_samples_name_the_ranks(outcomes):
    for o in outcomes:
        status, message = o["num_samples"]
        assert status == "RuntimeError" and "num_samples (rank 0: 100, rank 1: 37)" in message


def test_ids_on_one_rank_only_name_the_ranks(outcomes):
    for o in outcomes:
        status, message = o["ids"]
        assert status == "RuntimeError" and "sample_ids (rank 0: 1, rank 1: 2)" in message


def test_different_storage_name_the_ranks(outcomes):
    for o in outcomes:
        status, message = o["storage"]
        assert status == "RuntimeError" and "storage (rank 0: 1, rank 1: 2)" in message
