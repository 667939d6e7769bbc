import numpy as np
import pytest
from scipy.spatial.distance import pdist

torch = pytest.importorskip("torch")
import torch.nn.functional as F

from gwa.baselines import disparity
from torch import nn


def _scaled_loss_np(w, b, x, y):
    """The authors' batch objective in float64 numpy: mean(l_i / std(l, ddof=1)) for softmax CE."""
    z = x @ w.T + b
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    losses = -logp[np.arange(len(y)), y]
    return np.mean(losses / losses.std(ddof=1))


def _numeric_grad(w, b, x, y, eps=1e-6):
    theta = np.concatenate([w.ravel(), b])
    g = np.zeros_like(theta)
    for k in range(theta.size):
        up, down = theta.copy(), theta.copy()
        up[k] += eps
        down[k] -= eps
        g[k] = (
            _scaled_loss_np(up[: w.size].reshape(w.shape), up[w.size :], x, y)
            - _scaled_loss_np(down[: w.size].reshape(w.shape), down[w.size :], x, y)
        ) / (2 * eps)
    return g


def test_matches_finite_difference_oracle_on_a_linear_model():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    batches_np = [(rng.normal(size=(6, 4)), rng.integers(0, 3, size=6)) for _ in range(4)]
    model = nn.Linear(4, 3).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w))
        model.bias.copy_(torch.from_numpy(b))
    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches_np]
    grads = np.stack([_numeric_grad(w, b, x, y) for x, y in batches_np])
    expected = pdist(grads).mean()  # mean over the s(s-1)/2 = 6 pairs
    assert disparity.gradient_disparity(model, F.cross_entropy, batches) == pytest.approx(expected, rel=1e-6)


def test_identical_batches_have_zero_disparity_and_order_does_not_matter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(10, 5), torch.randint(0, 3, (10,))
    assert disparity.gradient_disparity(model, F.cross_entropy, [(x, y), (x, y), (x, y)]) == pytest.approx(
        0, abs=1e-12
    )
    other = (torch.randn(10, 5), torch.randint(0, 3, (10,)))
    a = disparity.gradient_disparity(model, F.cross_entropy, [(x, y), other])
    b = disparity.gradient_disparity(model, F.cross_entropy, [other, (x, y)])
    assert a == pytest.approx(b) and a > 0


def test_leaves_parameters_grads_buffers_mode_and_rng_untouched():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.ReLU(), nn.Linear(6, 3))
    model.eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(3)]
    rng = torch.get_rng_state()
    expected_next = torch.rand(3)
    torch.set_rng_state(rng)
    gd = disparity.gradient_disparity(
        model, F.cross_entropy, batches, train=True
    )  # train mode: dropout, BN stats
    assert np.isfinite(gd) and gd > 0
    torch.testing.assert_close(torch.rand(3), expected_next)
    assert not model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)  # BN running stats and num_batches_tracked included
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())


def test_train_flag_changes_the_forward_mode():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)).eval()
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(3)]
    kept = disparity.gradient_disparity(model, F.cross_entropy, batches)
    train = disparity.gradient_disparity(model, F.cross_entropy, batches, train=True)
    assert kept == pytest.approx(disparity.gradient_disparity(model, F.cross_entropy, batches, train=False))
    assert kept != pytest.approx(train)


def test_errors():
    model = nn.Linear(2, 2)
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="at least 2 batches"):
        disparity.gradient_disparity(model, F.cross_entropy, [(x, y)])
    with pytest.raises(ValueError, match="batch 1 has 1"):
        disparity.gradient_disparity(model, F.cross_entropy, [(x, y), (x[:1], y[:1])])
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="trainable parameters"):
        disparity.gradient_disparity(frozen, F.cross_entropy, [(x, y), (x, y)])


def test_select_epoch_minimum_with_patience():
    gd = [5, 4, 3, 4, 5, 6, 7, 8, 2]
    assert disparity.select_epoch(gd, patience=5) == 2  # stops at index 7, never sees the late 2
    assert disparity.select_epoch(gd, patience=10) == 8
    assert disparity.select_epoch([np.nan, 3, 3, 1], patience=5) == 3
    assert disparity.select_epoch([1, 2, 0.5], warmup=1, patience=5) == 2
    with pytest.raises(ValueError, match="finite value after the warm-up"):
        disparity.select_epoch([np.nan, np.nan])
