"""The hostile-input suite, tracker part (issue 20): buffers a loader refills, float16 storage of huge ids, logits
of an older forward, and ``WithIndex`` over datasets that fetch batches with ``__getitems__``."""

import numpy as np
import pytest
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset, random_split

import torch
from gwa.integrations import WithIndex
from gwa.torch import GWATracker, alignment
from torch import nn

pytestmark = pytest.mark.filterwarnings("ignore:gwa. update.. got no sample_ids")
refused = pytest.mark.hostile("refused")
accepted = pytest.mark.hostile("accepted")
N, B, C = 256, 32, 4


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, C))


def _data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, 6, generator=g), torch.randint(0, C, (N,), generator=g)
    order = torch.randperm(N, generator=g)
    return x, y, order


def _epoch(defer: int, feed: str) -> np.ndarray:
    """One epoch in batches of 32 (no optimizer step: every batch sees the same head). ``feed``: 'fresh' tensors,
    'numpy' (one numpy buffer refilled each step, handed out as torch.from_numpy) or 'torch' (one tensor refilled
    in place)."""
    x, y, order = _data()
    model = _model()
    tracker = GWATracker(model, num_samples=N, defer=defer)
    ids_buf, y_buf = np.zeros(B, np.int64), np.zeros(B, np.int64)
    ids_t = torch.zeros(B, dtype=torch.int64)
    for k in range(N // B):
        rows = order[k * B : (k + 1) * B]
        if feed == "numpy":
            ids_buf[:], y_buf[:] = rows.numpy(), y[rows].numpy()
            ids, targets = torch.from_numpy(ids_buf), torch.from_numpy(y_buf)
        elif feed == "torch":
            ids_t.copy_(rows)
            ids, targets = ids_t, y[rows]
        else:
            ids, targets = rows.clone(), y[rows]
        logits = model(x[rows])
        F.cross_entropy(logits, targets).backward()
        tracker.update(logits, targets, sample_ids=ids)
    result = tracker.end_epoch()
    tracker.remove()
    return result


@accepted
@pytest.mark.parametrize("defer", [32, 3, 0])
def test_a_refilled_numpy_buffer_gives_the_scores_of_fresh_tensors(defer):
    fresh, reused = _epoch(defer, "fresh"), _epoch(defer, "numpy")
    assert np.isfinite(reused.scores).all() and reused.n_duplicates == 0
    np.testing.assert_array_equal(reused.scores, fresh.scores)
    assert reused.summary.gwa == fresh.summary.gwa


@refused
def test_ids_refilled_in_place_with_defer_0_are_refused_at_end_epoch():
    with pytest.raises(RuntimeError, match=r"sample_ids tensor given to update\(\) was modified in place"):
        _epoch(0, "torch")


@refused
def test_ids_refilled_in_place_with_defer_are_refused():
    with pytest.raises(RuntimeError, match=r"modified in place before its batch was scored"):
        _epoch(32, "torch")


@refused
@pytest.mark.parametrize("defer", [32, 0])
def test_float16_storage_does_not_wrap_a_huge_id_onto_a_valid_one(defer):
    model = _model()
    tracker = GWATracker(model, num_samples=8, score_dtype=torch.float16, defer=defer)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 3])
    for ids in (
        torch.tensor([0, 1, 2, 4]),
        torch.tensor([5, 6, 7, 2**32 + 3]),
    ):  # later batch: checked at end
        logits = model(x)
        tracker.update(logits, y, sample_ids=ids)
    with pytest.raises(ValueError, match=r"Expected `sample_ids` in \[0, 7\].*got 1 id\(s\) out of range"):
        tracker.end_epoch()


def _two_forwards(model):
    torch.manual_seed(1)
    x1, x2, y = torch.randn(8, 6), torch.randn(8, 6), torch.randint(0, C, (8,))
    return x1, x2, y


@refused
@pytest.mark.parametrize("defer", [32, 0])
def test_logits_of_an_older_forward_are_not_paired_with_the_newest_capture(defer):
    model = _model()
    tracker = GWATracker(model, defer=defer)
    x1, x2, y = _two_forwards(model)
    out1 = model(x1)
    tracker.update(out1, y)  # verifies the head
    out2 = model(x2)  # noqa: F841 - alive, as in a loop that keeps it for its loss
    with pytest.raises(RuntimeError, match=r"logits that are not from the pending forward pass"):
        tracker.update(out1 * 1.0, y)


@accepted
@pytest.mark.parametrize("transform", ["detach", "temperature", "float64"])
def test_logits_derived_from_the_newest_forward_still_pair_with_it(transform):
    model = _model()
    tracker = GWATracker(model, defer=0)
    x1, x2, y = _two_forwards(model)
    tracker.update(model(x1), y)
    out2 = model(x2)
    given = {"detach": out2.detach(), "temperature": out2 / 2.0, "float64": out2.double()}[transform]
    scores = tracker.update(given, y)
    with torch.no_grad():  # the pairing that is right: these logits with x2's head input
        expected = alignment(given.double(), y, model[:2](x2).double(), model[2].weight.double())
    torch.testing.assert_close(scores.double(), expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- WithIndex
class Batched:
    """A dataset that fetches batches itself, as Hugging Face ``datasets`` does (rows as dicts)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": torch.tensor([float(i)]), "label": i % 2}

    def __getitems__(self, indices):
        return [{"x": torch.tensor([float(i)]), "label": i % 2} for i in indices]


@accepted
def test_with_index_adds_the_index_to_subset_and_random_split_batches():
    base = TensorDataset(torch.arange(10.0)[:, None] * 10, torch.arange(10) % 3)
    subset = Subset(base, [7, 2, 5, 0])
    part, _ = random_split(base, [6, 4], generator=torch.Generator().manual_seed(0))
    for ds in (subset, part):
        assert hasattr(ds, "__getitems__")  # what made the DataLoader bypass __getitem__
        (x, y, idx), *_ = DataLoader(WithIndex(ds), batch_size=len(ds))
        assert idx.tolist() == list(range(len(ds)))
        assert x[:, 0].tolist() == [10.0 * i for i in ds.indices] and y.tolist() == [
            i % 3 for i in ds.indices
        ]


@accepted
def test_with_index_adds_the_key_to_rows_fetched_by_getitems():
    (batch,) = DataLoader(WithIndex(Batched(5)), batch_size=5, shuffle=False)
    assert batch["sample_id"].tolist() == [0, 1, 2, 3, 4] and batch["label"].tolist() == [0, 1, 0, 1, 0]
    assert WithIndex(Batched(5)).__getitems__([3, 1]) == [
        {"x": torch.tensor([3.0]), "label": 1, "sample_id": 3},
        {"x": torch.tensor([1.0]), "label": 1, "sample_id": 1},
    ]


@refused
def test_with_index_refuses_a_getitems_that_loses_items():
    class Short(Batched):
        def __getitems__(self, indices):
            return super().__getitems__(indices)[:-1]

    with pytest.raises(ValueError, match=r"Short.__getitems__ to return one item per index \(3\); got 2"):
        WithIndex(Short(5)).__getitems__([0, 1, 2])
