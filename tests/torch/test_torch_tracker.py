"""GWATracker: forward-time capture, exact moments, per-sample store, duplicates, NaN, resume, signals."""

import io
import math
import warnings

import numpy as np
import pytest
import torch.nn.functional as F

import gwa
import torch
from gwa.torch import GWATracker, alignment
from torch import nn


def mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 4)).to(dtype)


def batches(n_batches, batch=8, seed=1, dtype=torch.float32, num_samples=None):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_samples or n_batches * batch, generator=g)  # one shuffled epoch
    for k in range(n_batches):
        ids = perm[k * batch : (k + 1) * batch]
        yield torch.randn(batch, 5, generator=g, dtype=dtype), torch.randint(0, 4, (batch,), generator=g), ids


def per_sample_oracle(model, x, y):
    """cos(-grad_W l_i, W) by autograd over the head weight, one sample at a time (float64)."""
    body, head = model[:-1], model[-1]
    w = head.weight.detach().double()
    out = []
    for i in range(len(x)):
        wi = w.clone().requires_grad_(True)
        emb = body(x[i : i + 1]).detach().double()
        loss = F.cross_entropy(emb @ wi.T + head.bias.detach().double(), y[i : i + 1])
        (g,) = torch.autograd.grad(loss, wi)
        out.append(float(-(g * w).sum() / (g.norm() * w.norm())))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("optimizer_cls", [torch.optim.SGD, torch.optim.Adam])
def test_scores_use_the_weights_of_the_forward_pass(optimizer_cls):
    model = mlp()
    opt = optimizer_cls(model.parameters(), lr=0.5)
    before, after = GWATracker(model, num_samples=64, defer=0), GWATracker(model, num_samples=64, defer=0)
    for x, y, ids in batches(4):
        logits = model(x)
        expected = per_sample_oracle(model, x, y)  # weights of this forward pass
        F.cross_entropy(logits, y).backward()
        got_before = before.update(logits, y, ids)
        opt.step()
        opt.zero_grad()
        got_after = after.update(logits, y, ids)
        torch.testing.assert_close(got_before, got_after, rtol=0, atol=0)
        assert torch.max(torch.abs(got_before.double() - expected)) < 1e-5
        # The paper's example reads W after the step: that gives different numbers, so this test can fail.
        post_step = alignment(logits.detach(), y, model[:-1](x).detach(), model[-1].weight.detach())
        assert torch.max(torch.abs(post_step.double() - expected)) > 1e-3
    r1, r2 = before.end_epoch(), after.end_epoch()
    assert r1.summary == r2.summary
    np.testing.assert_array_equal(r1.scores, r2.scores)


def test_summary_is_exact_moments_of_the_scores():
    model = mlp(dtype=torch.float64)
    tracker = GWATracker(model, defer=0)
    all_scores = []
    for x, y, ids in batches(5, dtype=torch.float64):
        all_scores.append(tracker.update(model(x), y, ids))
    result = tracker.end_epoch()
    ref = gwa.summarize(torch.cat(all_scores).numpy())
    assert result.summary.n == ref.n == 40
    for field in ("mean", "std", "excess_kurtosis", "gwa"):
        assert math.isclose(getattr(result.summary, field), getattr(ref, field), rel_tol=1e-12, abs_tol=1e-14)
    assert tracker.history == [result.summary] and result.epoch == 1


def test_explicit_path_without_hooks_and_bias():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(6, 3, generator=g), torch.randn(4, 3, generator=g), torch.randn(4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    tracker = GWATracker(bias=True, num_samples=6, defer=0)
    got = tracker.update(x @ w.T + b, y, torch.arange(6), embeddings=x, weight=w, bias=b)
    torch.testing.assert_close(got, alignment(x @ w.T + b, y, x, w, b))
    ids = torch.arange(6)
    with pytest.raises(ValueError, match="Expected `bias=` in update"):
        tracker.update(x @ w.T, y, ids, embeddings=x, weight=w)
    with pytest.raises(ValueError, match="Expected both `embeddings` and `weight`"):
        tracker.update(x @ w.T, y, ids, embeddings=x)
    with pytest.raises(
        RuntimeError, match="no captured forward pass.*no model: pass embeddings= and weight="
    ):
        tracker.update(x @ w.T, y, ids)
    with pytest.raises(ValueError, match="`sample_ids` in every update\\(\\) of an epoch or in none"):
        tracker.update(x @ w.T + b, y, embeddings=x, weight=w, bias=b)


def test_update_needs_a_fresh_capture_and_matching_batch():
    model = mlp()
    tracker = GWATracker(model)
    x, y, ids = next(batches(1))
    logits = model(x)
    tracker.update(logits, y, ids)
    with pytest.raises(RuntimeError, match=r"found no captured forward pass.*'2' in training mode"):
        tracker.update(logits, y, ids)
    logits = model(x)
    with pytest.raises(ValueError, match=r"captured forward pass of batch size 8; got logits.shape=\(4, 4\)"):
        tracker.update(logits[:4], y[:4], ids[:4])
    model.eval()
    model(x)  # eval forwards are not captured
    with pytest.raises(RuntimeError, match="found no captured forward pass"):
        tracker.update(model(x), y, ids)
    model.train()
    with torch.no_grad():  # nor no_grad ones: the message names that cause too
        logits = model(x)
    with pytest.raises(RuntimeError, match=r"with autograd on \(not under torch.no_grad\(\)"):
        tracker.update(logits, y, ids)


def test_gradient_accumulation_one_update_per_forward():
    model = mlp()
    acc, ref = GWATracker(model, defer=0), GWATracker(model, defer=0)
    ref.remove()
    (x1, y1, i1), (x2, y2, i2) = batches(2)
    l1, l2 = model(x1), model(x2)
    s1, s2 = acc.update(l1, y1, i1), acc.update(l2, y2, i2)
    w = model[-1].weight
    torch.testing.assert_close(s1, alignment(l1.detach(), y1, model[:-1](x1).detach(), w.detach()))
    torch.testing.assert_close(s2, alignment(l2.detach(), y2, model[:-1](x2).detach(), w.detach()))


def test_unconsumed_forwards_are_skipped_when_the_logits_are_the_heads_output():
    model = mlp()
    tracker = GWATracker(model, defer=0)
    (x1, _, _), (x2, y2, i2) = batches(2)
    with torch.no_grad():
        model(x1)  # no_grad forwards (teacher, EMA, scoring) are never captured
    model(x1)  # a training-mode forward whose update() never comes
    logits = model(x2)
    with pytest.warns(UserWarning, match="1 captured forward pass\\(es\\) of the head had no update"):
        scores = tracker.update(logits, y2, i2)
    torch.testing.assert_close(
        scores, alignment(logits.detach(), y2, model[:-1](x2).detach(), model[-1].weight.detach())
    )
    with pytest.raises(RuntimeError, match="found no captured forward pass"):
        tracker.update(logits, y2, i2)


def test_autocast_forward_is_scored_in_float32():
    model = mlp()
    tracker = GWATracker(model, defer=0)
    x, y, ids = next(batches(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.bfloat16
    scores = tracker.update(logits, y, ids)
    assert scores.dtype == torch.float32
    ref = alignment(logits.float().detach(), y, model[:-1](x).detach(), model[-1].weight.detach())
    # W x comes from float32 embeddings; only the bf16 rounding of the logits separates the two
    assert torch.max(torch.abs(scores - ref)) < 0.02


def _explicit_batches(n_batches=6, batch=5, num_samples=12, seed=3):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch, 4, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (batch,), generator=g)
        ids = torch.randint(0, num_samples, (batch,), generator=g)  # repeats within and across batches
        out.append((x @ w.T, y, ids, x, w))
    return out


@pytest.mark.parametrize("num_samples", [12, None])
def test_duplicates_count_once_first_occurrence_wins(num_samples):
    data = _explicit_batches()
    tracker = GWATracker(num_samples=num_samples, signals=("loss",), defer=0)
    first: dict[int, float] = {}
    n_seen = 0
    for logits, y, ids, x, w in data:
        scores = tracker.update(logits, y, ids, embeddings=x, weight=w)
        for i, s in zip(ids.tolist(), scores.tolist()):
            n_seen += 1
            first.setdefault(i, s)
    result = tracker.end_epoch()
    unique = np.array(list(first.values()))
    ref = gwa.summarize(unique)
    assert result.n_duplicates == n_seen - len(first) > 0
    assert result.summary.n == len(first)
    assert math.isclose(result.summary.mean, ref.mean, rel_tol=1e-12)
    assert math.isclose(result.summary.excess_kurtosis, ref.excess_kurtosis, rel_tol=1e-10)
    if num_samples is None:
        np.testing.assert_array_equal(result.sample_ids, sorted(first))
        np.testing.assert_allclose(result.scores, [first[i] for i in sorted(first)], rtol=1e-6)
    else:
        assert result.sample_ids is None and result.scores.shape == (12,)
        expected = np.full(12, np.nan)
        expected[list(first)] = list(first.values())
        np.testing.assert_allclose(result.scores, expected.astype(np.float32))
    assert set(result.signals) == {"loss"} and result.signals["loss"].shape == result.scores.shape


@pytest.mark.parametrize("num_samples", [10, None])
def test_non_finite_samples_are_skipped_counted_and_warned(num_samples):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(10, 3, generator=g), torch.randn(4, 3, generator=g)
    logits = x @ w.T
    y = torch.randint(0, 4, (10,), generator=g)
    logits[2, 1] = float("nan")
    x_bad = x.clone()
    x_bad[5, 0] = float("inf")
    tracker = GWATracker(num_samples=num_samples, defer=0)
    scores = tracker.update(logits, y, torch.arange(10), embeddings=x_bad, weight=w)
    assert torch.isnan(scores[[2, 5]]).all() and torch.isfinite(scores[[0, 1, 3, 4, 6, 7, 8, 9]]).all()
    with pytest.warns(RuntimeWarning, match="2 sample\\(s\\) with NaN/Inf logits, embeddings or targets"):
        result = tracker.end_epoch()
    assert result.n_non_finite == 2 and result.summary.n == 8
    keep = [0, 1, 3, 4, 6, 7, 8, 9]
    assert math.isclose(result.summary.mean, float(scores[keep].double().mean()), rel_tol=1e-6)
    assert np.isnan(result.scores[[2, 5]]).all() if num_samples else 2 not in result.sample_ids


def test_running_positions_without_ids_warn_once():
    model = mlp()
    tracker = GWATracker(model)
    (x1, y1, _), (x2, y2, _) = batches(2)
    with pytest.warns(UserWarning, match="storing scores by running position"):
        tracker.update(model(x1), y1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        tracker.update(model(x2), y2)
    result = tracker.end_epoch()
    np.testing.assert_array_equal(result.sample_ids, np.arange(16))
    quiet = GWATracker(model, store_scores=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x, y, _ in batches(2):
            quiet.update(model(x), y)
        r = quiet.end_epoch()
    assert r.scores is None and r.summary.n == 16


def _run(tracker, data, start=0, stop=None):
    for logits, y, ids, x, w in data[start:stop]:
        tracker.update(logits, y, ids, embeddings=x, weight=w)


@pytest.mark.parametrize("num_samples", [12, None])
def test_resume_mid_epoch_gives_the_same_numbers(num_samples):
    data = _explicit_batches()
    kwargs = {"num_samples": num_samples, "signals": ("margin", "correct")}
    full = GWATracker(**kwargs)
    _run(full, data)
    full_1 = full.end_epoch()
    _run(full, data, 0, 4)
    state_buffer = io.BytesIO()
    partial = GWATracker(**kwargs)
    _run(partial, data)
    partial.end_epoch()
    _run(partial, data, 0, 4)
    torch.save(partial.state_dict(), state_buffer)
    state_buffer.seek(0)
    resumed = GWATracker(**kwargs)
    resumed.load_state_dict(torch.load(state_buffer, weights_only=True))
    _run(full, data, 4)
    _run(resumed, data, 4)
    a, b = full.end_epoch(), resumed.end_epoch()
    assert (
        a.epoch == b.epoch == 2 and resumed.history == full.history and resumed.history[0] == full_1.summary
    )
    assert a.summary == b.summary and a.n_duplicates == b.n_duplicates
    np.testing.assert_array_equal(a.scores, b.scores)
    for k in a.signals:
        np.testing.assert_array_equal(a.signals[k], b.signals[k])
    with pytest.raises(ValueError, match="Expected a state with num_samples="):
        GWATracker(num_samples=99).load_state_dict(full.state_dict())


def test_signals_match_hand_computation():
    z = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 0.5]], dtype=torch.float64)
    x = torch.eye(3, dtype=torch.float64)[:2]
    w = torch.eye(3, dtype=torch.float64)
    y = torch.tensor([1, 1])
    tracker = GWATracker(num_samples=2, signals=("loss", "margin", "p_gold", "el2n", "pred", "correct"))
    tracker.update(z, y, torch.tensor([1, 0]), embeddings=x, weight=w)
    s = tracker.end_epoch().signals
    p = np.exp(z.numpy()) / np.exp(z.numpy()).sum(1, keepdims=True)
    onehot = np.eye(3)[[1, 1]]
    # stored by sample id: row 0 of the batch is sample 1
    np.testing.assert_allclose(s["loss"], -np.log(p[[1, 0], 1]), rtol=1e-6)
    np.testing.assert_allclose(s["margin"], [3.0 - 0.5, 1.0 - 2.0], rtol=1e-6)
    np.testing.assert_allclose(s["p_gold"], p[[1, 0], 1], rtol=1e-6)
    np.testing.assert_allclose(s["el2n"], np.linalg.norm(p - onehot, axis=1)[[1, 0]], rtol=1e-6)
    np.testing.assert_array_equal(s["pred"], [1.0, 0.0])
    np.testing.assert_array_equal(s["correct"], [1.0, 0.0])


def test_soft_target_signals_use_the_argmax_label():
    z = torch.tensor([[2.0, 1.0, -1.0]], dtype=torch.float64)
    t = torch.tensor([[0.1, 0.7, 0.2]], dtype=torch.float64)
    tracker = GWATracker(num_samples=1, signals=("loss", "margin", "el2n", "correct"))
    tracker.update(
        z, t, [0], embeddings=torch.ones(1, 3, dtype=torch.float64), weight=torch.eye(3, dtype=torch.float64)
    )
    s = tracker.end_epoch().signals
    p = torch.softmax(z, 1)[0].numpy()
    np.testing.assert_allclose(s["loss"], [-(t[0].numpy() * np.log(p)).sum()], rtol=1e-6)
    np.testing.assert_allclose(s["margin"], [1.0 - 2.0], rtol=1e-6)
    np.testing.assert_allclose(s["el2n"], [np.linalg.norm(p - t[0].numpy())], rtol=1e-6)
    np.testing.assert_array_equal(s["correct"], [0.0])


@pytest.mark.parametrize("soft", [False, True])
def test_update_does_not_read_values_on_the_host(monkeypatch, soft):
    """After the epoch's first update (eager checks), no .item()/.tolist()/.cpu()/bool()/... inside update()."""
    model = mlp()
    trackers = [
        GWATracker(model, num_samples=64, signals=("loss", "margin", "pred"), defer=0),
        GWATracker(model, defer=0),
        GWATracker(model, store_scores=False, defer=0),
        GWATracker(model, num_samples=64, score_dtype=torch.float16, defer=0),
    ]
    data = list(batches(2, num_samples=64))

    def target(y):
        return F.one_hot(y, 4).double() * 0.9 + 0.025 if soft else y

    def step(x, y, ids):
        logits = model(x)
        return [t.update(logits, target(y), ids) for t in trackers]

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation in update()")

    step(*data[0])  # the epoch's first update checks ids and targets eagerly
    with monkeypatch.context() as m:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "nonzero"):
            m.setattr(torch.Tensor, name, forbidden)
        m.setattr(torch, "nonzero", forbidden)
        scores = step(*data[1])
    x, y, _ = data[1]
    t = target(y).float() if soft else y
    expected = alignment(model(x).detach(), t, model[:-1](x).detach(), model[-1].weight.detach())
    for got in scores:
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert [t.end_epoch().summary.n for t in trackers] == [16, 16, 16, 16]


def test_constructor_and_argument_errors():
    model = mlp()
    with pytest.raises(ValueError, match=r"`signals` among \['loss', 'margin'.*got unknown \['aum'\]"):
        GWATracker(model, signals=("loss", "aum"))
    with pytest.raises(ValueError, match="Expected `num_samples` to be a positive int or None; got 0"):
        GWATracker(model, num_samples=0)
    with pytest.raises(ValueError, match="Expected the head '0' to have a bias because bias=True"):
        GWATracker(nn.Sequential(nn.Linear(3, 2, bias=False)), bias=True)
    with pytest.raises(ValueError, match="Expected `beta` to be a positive finite number"):
        GWATracker(model, beta=-1.0)
    tracker = GWATracker(model, num_samples=8)
    x, y, ids = next(batches(1))
    logits = model(x)
    with pytest.raises(TypeError, match="integer class ids"):
        tracker.update(logits, y.float(), ids)
    with pytest.raises(TypeError, match=r"soft `targets` \(B, C\) to be floating point"):
        tracker.update(logits, torch.zeros(8, 4, dtype=torch.int64), ids)
    tracker.update(logits, y, ids % 8)  # the rejected calls left the capture in place
    tracker.end_epoch()
    with pytest.raises(ValueError, match=r"`sample_ids` of shape \(B,\) = \(8,\); got shape=\(3,\)"):
        tracker.update(model(x), y, ids[:3])
    with pytest.raises(TypeError, match="Expected integer `sample_ids`"):
        tracker.update(model(x), y, ids.float())
    with pytest.raises(
        ValueError, match=r"`sample_ids` in \[0, 7\] \(num_samples=8\); got an id out of range"
    ):
        tracker.update(model(x), y, ids + 100)
    with pytest.raises(ValueError, match=r"`sample_ids` in \[0, 7\]"):
        tracker.update(model(x), y, ids - 100)
    with pytest.raises(
        ValueError, match=r"class ids in \[0, 3\] \(C=4 from logits\); got an id out of range"
    ):
        tracker.update(model(x), y + 10, ids % 8)
    # the failed calls left the epoch untouched
    tracker.update(model(x), y, ids % 8)
    result = tracker.end_epoch()
    assert result.summary.n == len(set((ids % 8).tolist())) and result.n_duplicates == 8 - result.summary.n
    with pytest.raises(TypeError, match="Expected `logits` to be a torch.Tensor"):
        tracker.update(np.zeros((8, 4)), y, ids)


def test_remove_and_context_manager_stop_capturing():
    model = mlp()
    with GWATracker(model) as tracker:
        assert len(model[-1]._forward_hooks) == 1
    assert len(model[-1]._forward_hooks) == 0
    model(torch.randn(2, 5))
    with pytest.raises(RuntimeError, match="no captured forward pass"):
        tracker.update(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_sequence_shaped_head_input_is_a_clear_error():
    head = nn.Linear(6, 3)
    tracker = GWATracker(head)
    logits = head(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=r"receive embeddings of shape \(N, D\); got shape=\(2, 5, 6\)"):
        tracker.update(logits, torch.tensor([0, 1]))


def test_empty_epoch_is_guarded_not_an_error():
    result = GWATracker(mlp(), num_samples=4).end_epoch()
    assert result.summary.n == 0 and result.summary.guard == gwa.Guard(gwa.GuardCode.NO_SCORES, "no scores")
    assert np.isnan(result.scores).all()


def test_bias_through_the_hook_matches_the_kernel():
    model = mlp()
    tracker = GWATracker(model, bias=True, defer=0)
    x, y, ids = next(batches(1))
    logits = model(x)
    head = model[-1]
    expected = alignment(logits.detach(), y, model[:-1](x).detach(), head.weight.detach(), head.bias.detach())
    torch.testing.assert_close(tracker.update(logits, y, ids), expected)


def test_hugging_face_model_end_to_end():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config).train()
    tracker = GWATracker(model, num_samples=4)
    tokens = torch.randint(0, 50, (4, 7))
    labels = torch.tensor([0, 1, 2, 0])
    logits = model(input_ids=tokens).logits
    tracker.update(logits, labels, torch.arange(4))  # the default: scored with the next batches, at end_epoch
    pooled = model.bert(input_ids=tokens).pooler_output.detach()
    expected = alignment(logits.detach(), labels, pooled, model.classifier.weight.detach())
    result = tracker.end_epoch()
    torch.testing.assert_close(torch.from_numpy(result.scores), expected)
    assert result.summary.n == 4


def test_timm_model_end_to_end():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=5).train()
    tracker = GWATracker(model, num_samples=6)
    images = torch.randn(6, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    logits = model(images)
    tracker.update(logits, labels, torch.arange(6))  # the default: scored with the next batches, at end_epoch
    features = model.forward_head(
        model.forward_features(images), pre_logits=True
    ).detach()  # BN in train mode
    expected = alignment(logits.detach(), labels, features, model.fc.weight.detach())
    scores = torch.from_numpy(tracker.end_epoch().scores)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
