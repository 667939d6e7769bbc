"""GWATracker(defer=K): batches scored together agree with the numpy core and with the per-step path."""

import numpy as np
import pytest
import torch.nn.functional as F

import gwa
import torch
from gwa.torch import DEFAULT_DEFER, GWATracker
from gwa.torch import _epoch as epoch_module
from gwa.torch._kernel import _softmax_rows
from torch import nn

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
C = 4


def mlp(dtype=torch.float64, bias=True):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, C, bias=bias)).to(dtype)


def data(steps, batch=8, num_samples=None, dtype=torch.float64, seed=1):
    """``steps`` batches of one shuffled epoch (ids unique unless num_samples < steps * batch)."""
    g = torch.Generator().manual_seed(seed)
    n = steps * batch
    ids = torch.randperm(n, generator=g) % (num_samples or n)
    for k in range(steps):
        x = torch.randn(batch, 5, generator=g, dtype=dtype) * 3
        yield x, torch.randint(0, C, (batch,), generator=g), ids[k * batch : (k + 1) * batch]


def train(model, trackers, batches, *, after_step=True, soft_every=0, temperature=None, ids=True):
    """SGD steps with every tracker updated (after ``optimizer.step()`` by default: the hook kept the forward's
    weights); returns the numpy core's float64 scores from the forward's own x and W, step by step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    head = model[-1]
    seen = {}
    handle = head.register_forward_hook(
        lambda m, i, o: seen.update(x=i[0].detach().clone(), w=m.weight.detach().clone())
    )
    expected = []
    try:
        for k, (x, y, i) in enumerate(batches):
            logits = model(x)
            targets = y
            if soft_every and k % soft_every == soft_every - 1:
                targets = F.one_hot(y, C).to(logits.dtype) * 0.8 + 0.05
            scored = logits / temperature if temperature else logits
            expected.append(
                gwa.alignment(
                    scored.detach().double().numpy(),
                    targets.double().numpy() if targets.is_floating_point() else targets.numpy(),
                    seen["x"].double().numpy(),
                    seen["w"].double().numpy(),
                )
            )
            F.cross_entropy(logits, y).backward()
            if not after_step:
                for t in trackers:
                    t.update(scored, targets, i if ids else None)
            opt.step()
            opt.zero_grad()
            if after_step:
                for t in trackers:
                    t.update(scored, targets, i if ids else None)
    finally:
        handle.remove()
    return np.concatenate(expected)


def stored_scores(tracker):
    """The epoch's per-sighting scores in the compute dtype, in update order (state_dict scores what is pending)."""
    chunks = tracker.state_dict()["epoch_state"]["data"]["chunks"]
    assert [c[1] for c in chunks] == sorted(c[1] for c in chunks)  # offsets follow the updates
    return torch.cat([c[2] for c in chunks])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("defer", [1, 3, 7, 100])
@pytest.mark.parametrize("bias", [True, False], ids=["head bias", "no bias"])
def test_deferred_scores_match_the_numpy_core(dtype, defer, bias):
    model = mlp(dtype, bias)
    tracker = GWATracker(model, num_samples=56, defer=defer)
    expected = train(model, [tracker], data(7, dtype=dtype))
    got = stored_scores(tracker)
    assert got.dtype == dtype and got.shape == (56,)
    assert float((got.double() - torch.from_numpy(expected)).abs().max()) <= TOL[dtype]
    # 7 updates: chunks of `defer` updates, the rest scored by state_dict() (here) or end_epoch().
    chunks = tracker.state_dict()["epoch_state"]["data"]["chunks"]
    assert [c[2].shape[0] // 8 for c in chunks] == [min(defer, 7)] * (7 // min(defer, 7)) + (
        [7 % defer] if 7 % min(defer, 7) else []
    )
    result = tracker.end_epoch()
    ids = np.concatenate([i.numpy() for _, _, i in data(7, dtype=dtype)])
    np.testing.assert_allclose(result.scores[ids], expected, rtol=0, atol=1e-6)
    assert result.summary.n == 56 and result.n_duplicates == 0


def test_the_default_scores_32_updates_together_and_matches_defer_0():
    model = mlp(torch.float32)
    default, eager = GWATracker(model, num_samples=264), GWATracker(model, num_samples=264, defer=0)
    assert default.defer == DEFAULT_DEFER == 32 and eager.defer == 0
    returned = []
    real_update = default.update
    default.update = lambda *a, **k: returned.append(real_update(*a, **k))
    expected = train(model, [eager, default], data(33, dtype=torch.float32))
    assert returned == [None] * 33  # update() keeps the batch; nothing to return
    chunks = default.state_dict()["epoch_state"]["data"]["chunks"]
    assert [c[2].shape[0] for c in chunks] == [32 * 8, 8]  # 32 updates scored at once, the 33rd by state_dict
    a, b = eager.end_epoch(), default.end_epoch()
    np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-6)
    ids = np.concatenate([i.numpy() for _, _, i in data(33, dtype=torch.float32)])
    np.testing.assert_allclose(b.scores[ids], expected, rtol=0, atol=TOL[torch.float32])
    assert b.summary.gwa == pytest.approx(a.summary.gwa, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_samples": 40},
        {"num_samples": 40, "signals": ("loss", "margin", "p_gold", "el2n", "pred", "correct")},
        {"num_samples": 40, "score_dtype": torch.float16},
        {},
        {"store_scores": False},
        {"num_samples": 40, "store_scores": False},
    ],
    ids=["indexed", "signals", "float16", "sparse", "moments", "indexed-no-scores"],
)
@pytest.mark.parametrize("after_step", [True, False], ids=["after step", "before step"])
def test_deferred_epoch_equals_the_per_step_epoch_with_duplicates(kwargs, after_step):
    """Repeated ids across and within chunks: first sightings win, as on the per-step path."""
    model = mlp(torch.float32)
    eager, deferred = GWATracker(model, defer=0, **kwargs), GWATracker(model, defer=3, **kwargs)
    train(model, [eager, deferred], data(8, num_samples=40, dtype=torch.float32), after_step=after_step)
    a, b = eager.end_epoch(), deferred.end_epoch()
    assert b.n_duplicates == a.n_duplicates == (0 if kwargs == {"store_scores": False} else 24)
    assert b.summary.n == a.summary.n
    assert b.summary.gwa == pytest.approx(a.summary.gwa, rel=1e-5, abs=1e-6)
    for name in ("mean", "std", "excess_kurtosis"):
        assert getattr(b.summary, name) == pytest.approx(getattr(a.summary, name), rel=1e-4, abs=1e-6)
    if a.scores is None:
        assert b.scores is None
    else:
        np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(b.sample_ids, a.sample_ids) if a.sample_ids is not None else None
        assert a.signals.keys() == b.signals.keys()
        for k in a.signals:
            np.testing.assert_allclose(b.signals[k], a.signals[k], rtol=1e-6, atol=1e-6)


def test_deferred_positions_soft_targets_and_temperature():
    """No sample ids (running positions across chunks), soft targets every third batch (a chunk boundary each
    time the kind changes), and logits / T (not the head's output: paired as the only pending capture)."""
    model = mlp(torch.float64)
    eager, deferred = GWATracker(model, defer=0), GWATracker(model, defer=4)
    with pytest.warns(UserWarning, match="no sample_ids"):
        expected = train(model, [eager, deferred], data(9), soft_every=3, temperature=2.0, ids=False)
    got = stored_scores(deferred)
    assert float((got - torch.from_numpy(expected)).abs().max()) <= TOL[torch.float64]
    a, b = eager.end_epoch(), deferred.end_epoch()
    np.testing.assert_array_equal(b.sample_ids, np.arange(72))
    np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.scores, expected, rtol=0, atol=1e-6)


def test_deferred_chunks_also_close_on_the_element_budget(monkeypatch):
    """Above DEFER_MAX_ELEMENTS pending logits, the batches are scored before `defer` of them are pending."""
    monkeypatch.setattr(epoch_module, "DEFER_MAX_ELEMENTS", 2 * 8 * C)  # two batches of 8 x 4
    model = mlp(torch.float64)
    tracker = GWATracker(model, num_samples=40, defer=100)
    expected = train(model, [tracker], data(5))
    chunks = tracker.state_dict()["epoch_state"]["data"]["chunks"]
    assert [c[2].shape[0] for c in chunks] == [16, 16, 8]
    assert [c[1] for c in chunks] == [0, 16, 32]
    assert float((stored_scores(tracker) - torch.from_numpy(expected)).abs().max()) <= 1e-10


def test_deferred_undefined_and_non_finite_samples():
    model = mlp(torch.float64, bias=False)
    eager, deferred = GWATracker(model, num_samples=32, defer=0), GWATracker(model, num_samples=32, defer=2)
    x = torch.randn(8, 5, dtype=torch.float64)
    for k in range(3):
        xk = x.clone()
        logits = model(xk)
        if k == 1:
            logits = logits.clone()
            logits[0, 0] = float("nan")  # non-finite logits: NaN score, skipped
        for t in (eager, deferred):
            t.update(logits, torch.arange(8) % C, torch.arange(8) + 8 * k)
    # A zero embedding (zero head input): undefined cosine. The hook sees the head's input, so zero the body.
    for p in model[0].parameters():
        p.data.zero_()
    model[1] = nn.Identity()
    logits = model(x[:8] * 0)
    assert float(logits.detach().abs().max()) == 0.0
    for t in (eager, deferred):
        t.update(logits, torch.zeros(8, dtype=torch.int64), torch.arange(8) + 24)
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        a = eager.end_epoch()
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        b = deferred.end_epoch()
    assert b.n_non_finite == a.n_non_finite == 1
    assert b.summary.n_undefined == a.summary.n_undefined == 8
    np.testing.assert_array_equal(np.isnan(b.scores), np.isnan(a.scores))
    np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("soft", [False, True])
def test_deferred_update_does_not_read_values_on_the_host(monkeypatch, soft):
    """The host-sync test of the per-step path, over updates that keep batches and one that scores them."""
    model = mlp(torch.float32)
    trackers = [
        GWATracker(model, num_samples=64, defer=2, signals=("loss", "margin", "pred")),
        GWATracker(model, defer=2),
        GWATracker(model, store_scores=False, defer=2),
        GWATracker(model, num_samples=64, score_dtype=torch.float16, defer=2),
    ]
    eager = GWATracker(model, num_samples=64, defer=0)
    batches = list(data(4, num_samples=64, dtype=torch.float32))

    def target(y):
        return F.one_hot(y, C).double() * 0.9 + 0.025 if soft else y

    def step(x, y, ids):
        logits = model(x)
        eager.update(logits, target(y), ids)
        return [t.update(logits, target(y), ids) for t in trackers]

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation in update()")

    step(*batches[0])  # the epoch's first update checks ids and targets eagerly
    with monkeypatch.context() as m:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "nonzero"):
            m.setattr(torch.Tensor, name, forbidden)
        m.setattr(torch, "nonzero", forbidden)
        returned = [step(*b) for b in batches[1:]]  # the second update of each tracker scores two batches
    assert all(r is None for rs in returned for r in rs)
    assert all(len(t.storage.chunks) == 2 for t in trackers if t.storage.name != "moments")
    expected = eager.end_epoch()
    for t in trackers:
        r = t.end_epoch()
        assert r.summary.n == 32
        assert r.summary.gwa == pytest.approx(
            expected.summary.gwa, rel=1e-3 if t.score_dtype == torch.float16 else 1e-5
        )


def test_deferred_state_dict_resumes_the_partial_epoch():
    model = mlp(torch.float64)
    whole, first = GWATracker(model, num_samples=48, defer=4), GWATracker(model, num_samples=48, defer=4)
    batches = list(data(6))
    train(model, [whole, first], batches[:3])
    state = first.state_dict()  # scores the three pending batches
    resumed = GWATracker(model, num_samples=48, defer=4)
    first.remove()
    resumed.load_state_dict(state)
    train(model, [whole, resumed], batches[3:])
    a, b = whole.end_epoch(), resumed.end_epoch()
    np.testing.assert_array_equal(b.scores, a.scores)
    assert b.summary.n == 48


def test_deferred_in_place_change_of_a_kept_tensor_is_an_error():
    model = mlp(torch.float64)
    tracker = GWATracker(model, num_samples=16, defer=4)
    x, y, ids = next(data(1))
    assert tracker.update(model(x), y, ids) is None
    y.fill_(0)  # the kept targets changed before their batch was scored
    with pytest.raises(RuntimeError, match=r"modified in place before its batch was scored.*defer=0"):
        tracker.end_epoch()


def test_deferred_class_ids_out_of_range():
    model = mlp(torch.float64)
    tracker = GWATracker(model, num_samples=16, defer=4)
    x, y, ids = next(data(1))
    with pytest.raises(
        ValueError, match=r"`targets` class ids in \[0, 3\] \(C=4 from logits\); got an id out"
    ):
        tracker.update(model(x), y + 4, ids)  # the epoch's first update: checked at once
    tracker.update(model(x), y, ids)
    tracker.update(model(x), y.clone().fill_(7), ids + 8)  # later: checked when the batches are scored
    with pytest.raises(ValueError, match=r"`targets` class ids in \[0, 3\]"):
        tracker.end_epoch()


def test_deferred_paused_and_autocast():
    """Forwards inside paused() are not captured; an autocast forward (bf16 head output) is rescored in
    float32 by the hook, as on the per-step path."""
    model = mlp(torch.float32)
    eager, deferred = GWATracker(model, num_samples=24, defer=0), GWATracker(model, num_samples=24, defer=5)
    for k, (x, y, ids) in enumerate(data(3, dtype=torch.float32)):
        with deferred.paused(), eager.paused():
            model(x)  # an extra forward that is not scored
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=k == 1):
            logits = model(x)
        for t in (eager, deferred):
            t.update(logits, y, ids)
    a, b = eager.end_epoch(), deferred.end_epoch()
    np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-6)


def test_defer_argument_errors():
    for bad in (-1, True, 1.5, "4"):
        with pytest.raises(ValueError, match=rf"Expected `defer` to be a non-negative int .*got {bad!r}"):
            GWATracker(mlp(), defer=bad)


@pytest.mark.parametrize("c", [2, 10, 15, 16, 33, 1000])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_softmax_layouts_agree(c, dtype):
    """The transposed-view softmax (few classes on a CPU) gives the plain kernel's values, contiguous."""
    z = torch.randn(37, c, dtype=dtype, generator=torch.Generator().manual_seed(c)) * 5
    p = _softmax_rows(z)
    torch.testing.assert_close(p, torch.softmax(z, dim=1), rtol=0, atol=TOL[dtype] / 10)
    assert p.is_contiguous()


@pytest.mark.parametrize("with_bias", [False, True])
def test_deferred_explicit_path_matches_the_numpy_core(with_bias):
    """No model (embeddings= and weight= per update), with and without the bias in the cosine."""
    tracker = GWATracker(num_samples=40, bias=with_bias, defer=2)
    g = torch.Generator().manual_seed(5)
    expected = []
    for k in range(5):
        x = torch.randn(8, 6, generator=g, dtype=torch.float64)
        w = torch.randn(C, 6, generator=g, dtype=torch.float64)
        b = torch.randn(C, generator=g, dtype=torch.float64)
        y = torch.randint(0, C, (8,), generator=g)
        logits = x @ w.T + b
        kwargs = {"bias": b} if with_bias else {}
        assert tracker.update(logits, y, torch.arange(8) + 8 * k, embeddings=x, weight=w, **kwargs) is None
        expected.append(
            gwa.alignment(logits.numpy(), y.numpy(), x.numpy(), w.numpy(), b.numpy() if with_bias else None)
        )
    got = stored_scores(tracker)
    assert float((got - torch.from_numpy(np.concatenate(expected))).abs().max()) <= 1e-10
