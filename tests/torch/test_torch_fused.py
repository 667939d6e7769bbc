"""The tracker's fused path against the numpy core; storage strategies, float16, memory; compile fallback."""

import math

import numpy as np
import pytest
import torch.nn.functional as F

import gwa
import torch
from gwa._kernel import alignment_with_mask as numpy_alignment_with_mask
from gwa.torch import GWATracker
from gwa.torch._kernel import (
    Scorer,
    _fused_scores_functional,
    capture_split_terms,
    capture_terms,
    fused_scores,
    fused_soft_scores,
    join_norms,
    undefined_from_norm,
)
from gwa.torch._storage import IndexedStore, MomentsOnly, SparseStore
from torch import nn

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def problem(n, c, d, dtype, seed, scale=1.0, target="hard"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(c, d, generator=g, dtype=dtype) * scale / d**0.5
    b = torch.randn(c, generator=g, dtype=dtype)
    y = torch.randint(0, c, (n,), generator=g)
    if target == "smooth":
        y = F.one_hot(y, c).to(dtype) * 0.9 + 0.1 / c
    return x, w, b, y


def reference(logits, targets, x, w, b=None):
    scores, defined = numpy_alignment_with_mask(
        logits.double().numpy(),
        targets.double().numpy() if targets.is_floating_point() else targets.numpy(),
        x.double().numpy(),
        w.double().numpy(),
        None if b is None else b.double().numpy(),
    )
    return torch.from_numpy(scores), torch.from_numpy(~defined)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("include_bias", [False, True])
@pytest.mark.parametrize(
    ("n", "c", "d", "scale"), [(7, 2, 3, 1.0), (64, 10, 32, 1.0), (64, 10, 32, 40.0), (5, 1000, 64, 3.0)]
)
@pytest.mark.parametrize("from_output", [True, False], ids=["W x from the head output", "W x recomputed"])
def test_fused_hard_labels_match_the_numpy_core(dtype, include_bias, n, c, d, scale, from_output):
    x, w, b, y = problem(n, c, d, dtype, seed=n + c + d, scale=scale)
    logits = x @ w.T + b
    terms = capture_terms(x, w, b, logits if from_output else None, include_bias=include_bias, dtype=dtype)
    got = fused_scores(logits, y[:, None], terms)
    undefined = undefined_from_norm(terms.norm)
    expected, expected_undefined = reference(logits, y, x, w, b if include_bias else None)
    assert got.dtype == dtype
    assert float((got.double() - expected).abs().max()) <= TOL[dtype]
    assert torch.equal(undefined, expected_undefined)
    if scale > 10:  # confident samples: p_y rounds to 1 in float32, the gradient does not vanish
        p_gold = torch.softmax(logits.double(), 1).gather(1, y[:, None])
        assert float(p_gold.max()) > 1 - 1e-7


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_fused_soft_targets_match_the_numpy_core(dtype):
    x, w, b, t = problem(32, 6, 8, dtype, seed=3, target="smooth")
    logits = x @ w.T + b
    got, _ = fused_soft_scores(logits, t, capture_terms(x, w, b, logits, include_bias=False, dtype=dtype))
    expected, _ = reference(logits, t, x, w)
    assert float((got.double() - expected).abs().max()) <= TOL[dtype]


def test_fused_zero_embedding_is_undefined_and_non_finite_is_nan():
    x, w, b, y = problem(4, 3, 5, torch.float64, seed=0)
    x[0] = 0.0
    logits = x @ w.T + b
    logits[1, y[1]] = float("nan")  # the label's own logit: must not be masked away
    logits[2, (y[2] + 1) % 3] = float("inf")
    terms = capture_terms(x, w, b, None, include_bias=False, dtype=torch.float64)
    got, undefined = fused_scores(logits, y[:, None], terms), undefined_from_norm(terms.norm)
    assert got[0] == gwa.UNDEFINED_SCORE and bool(undefined[0])
    assert torch.isnan(got[1:3]).all() and not undefined[1:3].any() and torch.isfinite(got[3])


@pytest.mark.parametrize(
    "sizes", [[5], [4, 4, 4], [4, 7, 1], [3, 3, 6]], ids=["one", "equal", "unequal", "last"]
)
def test_split_norms_join_to_the_capture_norms(sizes):
    """Deferred batches keep ||x|| and ||W|| apart; joined, they are the per-step path's norm, batch by batch."""
    g = torch.Generator().manual_seed(3)
    splits, whole = [], []
    for n in sizes:
        x, w = (
            torch.randn(n, 6, generator=g, dtype=torch.float64),
            torch.randn(3, 6, generator=g, dtype=torch.float64),
        )
        out = x @ w.T
        splits.append(capture_split_terms(x, w, None, out))
        whole.append(capture_terms(x, w, None, out, include_bias=False, dtype=torch.float64).norm)
    joined = join_norms(splits)
    assert joined.shape == (sum(sizes),)
    torch.testing.assert_close(joined, torch.cat(whole), rtol=1e-15, atol=0)


def test_functional_form_for_compile_matches_the_eager_kernel():
    for dtype in (torch.float64, torch.float32):
        x, w, b, y = problem(50, 7, 9, dtype, seed=5, scale=20.0)
        logits = x @ w.T + b
        terms = capture_terms(x, w, b, logits, include_bias=False, dtype=dtype)
        a = fused_scores(logits, y[:, None], terms)
        f = _fused_scores_functional(logits, y[:, None], terms.neg_head_out, terms.norm)
        assert float((a - f).abs().max()) <= TOL[dtype] / 10


def test_compile_failure_falls_back_to_the_eager_path(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    scorer = Scorer(compile=True)
    x, w, b, y = problem(8, 4, 5, torch.float32, seed=1)
    logits = x @ w.T + b
    terms = capture_terms(x, w, b, logits, include_bias=False, dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="torch.compile of the fused scorer failed.*no compiler here"):
        got = scorer(logits, y[:, None], terms)
    assert scorer.failed.startswith("RuntimeError")
    torch.testing.assert_close(got, fused_scores(logits, y[:, None], terms), rtol=0, atol=0)


def _compiles() -> bool:
    try:
        torch.compile(lambda a: a + 1)(torch.zeros(1))
        return True
    except Exception:
        return False


@pytest.mark.slow  # torch.compile
@pytest.mark.skipif(not _compiles(), reason="torch.compile is not usable here (no C++ toolchain)")
def test_compiled_tracker_matches_eager_and_reads_nothing_on_the_host(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 4))
    eager, fused = (
        GWATracker(model, num_samples=32, defer=0),
        GWATracker(model, num_samples=32, compile=True, defer=0),
    )
    g = torch.Generator().manual_seed(0)
    data = [
        (
            torch.randn(8, 5, generator=g),
            torch.randint(0, 4, (8,), generator=g),
            torch.arange(8 * k, 8 * k + 8),
        )
        for k in range(3)
    ]
    for k, (x, y, ids) in enumerate(data):
        logits = model(x)
        with monkeypatch.context() as m:
            if k == 2:  # compiled at the first call; the third runs the compiled code only
                for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__"):
                    m.setattr(
                        torch.Tensor, name, lambda *a, **k: (_ for _ in ()).throw(AssertionError("host read"))
                    )
            a, b = eager.update(logits, y, ids), fused.update(logits, y, ids)
        assert fused._scorer.failed is None
        assert float((a - b).abs().max()) <= 1e-6
        expected, _ = reference(logits.detach(), y, model[:-1](x).detach(), model[-1].weight.detach())
        assert float((b.double() - expected).abs().max()) <= 1e-5
    ra, rb = eager.end_epoch(), fused.end_epoch()
    np.testing.assert_allclose(ra.scores, rb.scores, rtol=0, atol=1e-6)
    assert math.isclose(ra.summary.gwa, rb.summary.gwa, rel_tol=1e-5)


def test_storage_strategy_follows_the_settings():
    assert isinstance(GWATracker(num_samples=4).storage, IndexedStore)
    assert isinstance(GWATracker().storage, SparseStore)
    assert isinstance(GWATracker(store_scores=False).storage, MomentsOnly)
    assert isinstance(
        GWATracker(num_samples=4, store_scores=False).storage, IndexedStore
    )  # still deduplicates
    assert "storage=indexed" in repr(GWATracker(num_samples=4))


def _epoch(tracker, n_batches=5, batch=16, num_samples=80, repeat_ids=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(5, 8, generator=g)
    perm = torch.randperm(num_samples, generator=g)
    out = []
    for k in range(n_batches):
        x = torch.randn(batch, 8, generator=g)
        y = torch.randint(0, 5, (batch,), generator=g)
        ids = (
            torch.randint(0, num_samples, (batch,), generator=g)
            if repeat_ids
            else perm[k * batch : (k + 1) * batch]
        )
        out.append((ids, tracker.update(x @ w.T, y, ids, embeddings=x, weight=w)))
    return out


@pytest.mark.parametrize("num_samples", [80, None])
def test_unique_ids_fast_path_and_the_fallback_when_ids_repeat(num_samples):
    """Unique ids: every sighting is kept as scored. Repeated ids: the first sighting of each id counts."""
    for repeat in (False, True):
        tracker = GWATracker(num_samples=num_samples, defer=0)
        steps = _epoch(tracker, repeat_ids=repeat)
        result = tracker.end_epoch()
        first: dict[int, float] = {}
        for ids, scores in steps:
            for i, s in zip(ids.tolist(), scores.tolist()):
                first.setdefault(i, s)
        assert result.n_duplicates == 80 - len(first) and (result.n_duplicates > 0) == repeat
        got = (
            dict(zip(result.sample_ids.tolist(), result.scores.tolist()))
            if num_samples is None
            else {i: float(result.scores[i]) for i in range(80) if not np.isnan(result.scores[i])}
        )
        assert got.keys() == first.keys()
        np.testing.assert_allclose([got[i] for i in first], list(first.values()), rtol=1e-6)
        ref = gwa.summarize(np.array(list(first.values()), dtype=np.float32).astype(np.float64))
        assert result.summary.n == len(first) and math.isclose(result.summary.mean, ref.mean, rel_tol=1e-6)


def test_float16_storage_and_bytes_per_sample():
    full, half = (
        GWATracker(num_samples=80, defer=0),
        GWATracker(num_samples=80, score_dtype=torch.float16, defer=0),
    )
    _epoch(full)
    _epoch(half)
    # Held per sighting: int64 id + float32 score + bool undefined, or, compact: int32 id + float16 score + bool
    # undefined; both + int16 predicted and given class (per-class evidence).
    assert full.storage.nbytes() == 80 * (8 + 4 + 1 + 2 + 2)
    assert half.storage.nbytes() == 80 * (4 + 2 + 1 + 2 + 2)
    a, b = full.end_epoch(), half.end_epoch()
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-3)  # float16: ~3 significant digits
    assert abs(a.summary.mean - b.summary.mean) < 1e-3 and abs(a.summary.gwa - b.summary.gwa) < 1e-2
    moments = GWATracker(store_scores=False, defer=0)
    _epoch(moments)
    assert moments.storage.nbytes() == 4 * 8 + 3 * 8 + 8  # power sums, counts, shift: O(1)
    with pytest.raises(
        ValueError, match="`score_dtype` to be torch.float32 or torch.float16; got torch.int8"
    ):
        GWATracker(score_dtype=torch.int8, defer=0)


def test_out_of_range_ids_after_the_first_batch_are_reported_at_end_epoch():
    tracker = GWATracker(num_samples=80)
    _epoch(tracker, n_batches=2)
    x, w = torch.randn(2, 8), torch.randn(5, 8)
    tracker.update(x @ w.T, torch.tensor([0, 1]), torch.tensor([3, 80]), embeddings=x, weight=w)
    with pytest.raises(
        ValueError,
        match=r"`sample_ids` in \[0, 79\] \(num_samples=80\); got 1 id\(s\) out of range "
        r"in epoch 1 \(min 80, max 80\)",
    ):
        tracker.end_epoch()


def test_steady_state_fast_path_keeps_every_check_that_can_fail():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 4))
    tracker = GWATracker(model, num_samples=40, signals=("loss",), defer=0)
    x, y = torch.randn(8, 5), torch.randint(0, 4, (8,))
    tracker.update(model(x), y, torch.arange(8))
    assert tracker._plan is not None  # the next matching call takes the fast path
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\] \(C=4 from logits\)"):
        tracker.update(model(x), y + 4, torch.arange(8, 16))
    logits = model(x[:5])  # another batch size: the checked path again, with the same numbers
    got = tracker.update(logits, y[:5], torch.arange(16, 21))
    expected, _ = reference(logits.detach(), y[:5], model[:-1](x[:5]).detach(), model[-1].weight.detach())
    assert float((got.double() - expected).abs().max()) <= 1e-5
    logits = model(x)
    got = tracker.update(logits, y, torch.arange(21, 29))  # fast path again
    expected, _ = reference(logits.detach(), y, model[:-1](x).detach(), model[-1].weight.detach())
    assert float((got.double() - expected).abs().max()) <= 1e-5
    for _ in range(2):  # int32 class ids: converted on the checked path, never handed raw to the kernel
        logits = model(x)
        got = tracker.update(logits, y.int(), torch.arange(21, 29))
        torch.testing.assert_close(
            got,
            fused_scores(
                logits.detach(),
                y[:, None],
                capture_terms(
                    model[:-1](x),
                    model[-1].weight,
                    model[-1].bias,
                    logits,
                    include_bias=False,
                    dtype=torch.float32,
                ),
            ),
        )
    with pytest.raises(ValueError, match="`sample_ids` in every update"):
        tracker.update(model(x), y)
    result = tracker.end_epoch()
    seen = ~np.isnan(result.scores)
    assert result.summary.n == seen.sum() == 21 and np.isfinite(result.signals["loss"][seen]).all()
    assert np.isnan(result.scores[8:16]).all()  # the refused call left nothing behind
