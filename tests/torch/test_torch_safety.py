"""Head safety, pairing by identity, soft-target validation and strict state loading of GWATracker."""

import logging

import numpy as np
import pytest
import torch.nn.functional as F

import gwa
import torch
from gwa.torch import GWATracker, alignment
from torch import nn


def expected_scores(logits, y, emb, head):
    return alignment(logits.detach(), y, emb.detach(), head.weight.detach())


class WithAux(nn.Module):
    """A classifier whose auxiliary Linear(16, 4) is registered after the real head ``fc``."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 16)
        self.fc = nn.Linear(16, 4)
        self.aux = nn.Linear(16, 4)
        self.aux_out = None

    def forward(self, x):
        h = torch.relu(self.body(x))
        self.aux_out = self.aux(h)  # e.g. an auxiliary loss
        return self.fc(h)


def test_auxiliary_head_never_wins_silently():
    torch.manual_seed(0)
    model = WithAux()
    tracker = GWATracker(model, defer=0)
    assert tracker.head_name == "aux"  # the documented rule: the last nn.Linear registered
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    logits = model(x)
    with pytest.raises(
        ValueError, match=r"hooked head 'aux' \(nn.Linear, weight \(4, 16\)\).*head=.*'fc' \(4, 16\)"
    ):
        tracker.update(logits, y, torch.arange(8))
    fixed = GWATracker(model, head="fc", defer=0)
    logits = model(x)
    got = fixed.update(logits, y, torch.arange(8))
    torch.testing.assert_close(got, expected_scores(logits, y, torch.relu(model.body(x)), model.fc))


def test_chosen_head_is_logged_once(caplog):
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    with caplog.at_level(logging.INFO, logger="gwa"):
        tracker = GWATracker(model)
    assert [r.getMessage() for r in caplog.records] == [
        "gwa: tracking the classifier head '2', nn.Linear of weight shape (C, D) = (3, 7)"
    ]
    assert tracker.head_shape == (3, 7) and "'2' (3, 7)" in repr(tracker)


class LoraLinear(nn.Module):
    """The layout of peft.tuners.lora.Linear: base_layer plus lora_A / lora_B ModuleDicts."""

    def __init__(self, base, r=2):
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.ModuleDict({"default": nn.Linear(base.in_features, r, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(r, base.out_features, bias=False)})

    def forward(self, h):
        return self.base_layer(h) + self.lora_B["default"](self.lora_A["default"](h))


class LoraNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 16)
        self.classifier = LoraLinear(nn.Linear(16, 5))

    def forward(self, x):
        return self.classifier(torch.relu(self.body(x)))


@pytest.mark.parametrize("head", [None, "classifier", "classifier.base_layer", "classifier.lora_B.default"])
def test_lora_wrapped_head_is_refused_clearly(head):
    with pytest.raises(ValueError, match=r"'classifier' is LoRA-wrapped \(PEFT\).*merge_and_unload"):
        GWATracker(LoraNet(), head=head)


def test_temperature_scaled_logits_are_paired_and_verified():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5))
    tracker = GWATracker(model, defer=0)
    for _ in range(3):
        x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
        out = model(x)
        got = tracker.update(out / 2.0, y, torch.randint(0, 100, (8,)))
        # W x comes from the head; the loss half from the logits given (the tempered softmax).
        torch.testing.assert_close(
            got, alignment(out.detach() / 2.0, y, model[:-1](x).detach(), model[-1].weight.detach())
        )


def test_extra_forward_is_refused_not_paired_with_the_wrong_batch():
    """The audit's F6: a training-mode forward between the step's forward and its update, logits not the output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5))
    tracker = GWATracker(model, defer=0)
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    out = model(x)
    model(torch.randn(8, 6))  # e.g. a SAM second pass or a validation forward without no_grad
    with pytest.raises(
        RuntimeError, match=r"cannot tell which of 2 captured forward passes.*tracker.paused\(\)"
    ):
        tracker.update(out * 1.0, y, torch.arange(8))
    # the fix the message names: the extra forward inside paused()
    out = model(x)
    with tracker.paused():
        model(torch.randn(8, 6))
    got = tracker.update(out * 1.0, y, torch.arange(8))
    torch.testing.assert_close(got, expected_scores(out, y, model[:-1](x), model[-1]))


def test_identity_pairing_skips_an_unscored_forward_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5))
    tracker = GWATracker(model, defer=0)
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    model(torch.randn(8, 6))
    out = model(x)
    with pytest.warns(UserWarning, match="1 captured forward pass"):
        got = tracker.update(out, y, torch.arange(8))
    torch.testing.assert_close(got, expected_scores(out, y, model[:-1](x), model[-1]))


def test_unpaired_skip_returns_nan_and_counts():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5))
    tracker = GWATracker(model, num_samples=16, unpaired="skip", defer=0)
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    out = model(x)
    model(x)
    with pytest.warns(UserWarning, match="Skipping \\(unpaired='skip'\\)"):
        got = tracker.update(out * 1.0, y, torch.arange(8))
    assert torch.isnan(got).all()
    out = model(x)
    tracker.update(out, y, torch.arange(8, 16))
    with pytest.warns(RuntimeWarning, match="8 sample\\(s\\) of update\\(\\) calls whose forward pass"):
        result = tracker.end_epoch()
    assert result.n_unpaired == 8 and result.summary.n == 8
    with pytest.raises(ValueError, match="`unpaired` to be 'raise' or 'skip'; got 'ignore'"):
        GWATracker(unpaired="ignore", defer=0)


def _explicit(n=6, c=4, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, w = torch.randn(n, d, generator=g), torch.randn(c, d, generator=g)
    return x @ w.T, x, w


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (torch.full((6, 4), 0.5), r"rows to sum to 1 .*got 6 row\(s\) that do not"),
        (
            torch.tensor([[1.2, -0.2, 0.0, 0.0]] * 6),
            r"probabilities \(>= 0\); got 6 row\(s\) with negative entries",
        ),
        (
            torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 6),
            r"6 multi-hot row\(s\).*GWA is defined for softmax cross-entropy",
        ),
    ],
)
def test_soft_targets_are_validated_at_the_first_update(targets, message):
    logits, x, w = _explicit()
    tracker = GWATracker(num_samples=6)
    with pytest.raises(ValueError, match=message):
        tracker.update(logits, targets, torch.arange(6), embeddings=x, weight=w)
    with pytest.raises(ValueError, match="Expected soft `targets`"):  # the numpy core refuses the same rows
        gwa.alignment(
            logits.double().numpy(), targets.double().numpy(), x.double().numpy(), w.double().numpy()
        )


def test_soft_target_violations_after_the_first_batch_fail_end_epoch():
    logits, x, w = _explicit()
    tracker = GWATracker(num_samples=12, defer=0)
    good = F.one_hot(torch.arange(6) % 4, 4).float() * 0.9 + 0.025
    tracker.update(logits, good, torch.arange(6), embeddings=x, weight=w)
    bad = good.clone()
    bad[2] *= 2.0
    bad[4, 0] = float("nan")  # non-finite rows are skipped and counted, not a violation
    scores = tracker.update(logits, bad, torch.arange(6, 12), embeddings=x, weight=w)
    assert torch.isnan(scores[4]) and torch.isfinite(scores[[0, 1, 2, 3, 5]]).all()
    with pytest.raises(ValueError, match=r"got 1 row\(s\) that do not in epoch 1 \(checked on the device"):
        tracker.end_epoch()


def test_label_smoothing_scores_match_the_core():
    logits, x, w = _explicit(n=8, c=5, d=4)
    smooth = F.one_hot(torch.arange(8) % 5, 5).double() * 0.9 + 0.02
    tracker = GWATracker(num_samples=8, defer=0)
    got = tracker.update(logits.double(), smooth, torch.arange(8), embeddings=x.double(), weight=w.double())
    expected = gwa.alignment(logits.double().numpy(), smooth.numpy(), x.double().numpy(), w.double().numpy())
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------------ strict state dicts
def _state():
    logits, x, w = _explicit()
    tracker = GWATracker(num_samples=6, signals=("loss",))
    tracker.update(logits, torch.tensor([0, 1, 2, 3, 0, 1]), torch.arange(6), embeddings=x, weight=w)
    return tracker.state_dict()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(format=99), r"expected `format` 1 or 2 .*got 99"),
        (lambda s: s.update(epoch=-1), r"`epoch` to be a non-negative int; got -1"),
        (lambda s: s.update(epoch=2), r"`history` to be a list of 2 summary dicts"),
        (
            lambda s: s["epoch_state"].update(sightings=-3),
            r"`epoch_state.sightings` to be a non-negative int; got -3",
        ),
        (
            lambda s: s["epoch_state"].update(sightings=7),
            r"`epoch_state.sightings` == 6 \(the chunks' rows\); got 7",
        ),
        (lambda s: s["epoch_state"].update(storage="sparse"), r"partial epoch of the 'indexed' storage"),
        (
            lambda s: s["epoch_state"]["data"]["chunks"].__setitem__(
                0, (torch.arange(5), *s["epoch_state"]["data"]["chunks"][0][1:])
            ),
            r"`chunks\[0\].ids` of length 6",
        ),
        (
            lambda s: s["epoch_state"]["data"]["chunks"].__setitem__(
                0, (torch.arange(6) + 3, *s["epoch_state"]["data"]["chunks"][0][1:])
            ),
            r"chunks\[0\].ids in \[0, 6\)",
        ),
        (lambda s: s.pop("history"), r"the key 'history'"),
    ],
)
def test_load_state_dict_validates(mutate, message):
    state = _state()
    mutate(state)
    with pytest.raises(ValueError, match=message):
        GWATracker(num_samples=6, signals=("loss",)).load_state_dict(state)


def test_format_1_state_at_an_epoch_boundary_still_loads():
    state = _state()
    state.update(format=1, epoch_state=None)
    tracker = GWATracker(num_samples=6, signals=("loss",))
    tracker.load_state_dict(state)
    assert tracker.epoch == 0
    state["epoch_state"] = {"sums": None}
    with pytest.raises(ValueError, match="format 1 .* holds a partial epoch"):
        tracker.load_state_dict(state)


def test_nan_min_denominator_is_refused():
    with pytest.raises(ValueError, match="`min_denominator` to be a number; got nan"):
        GWATracker(min_denominator=float("nan"))


def test_auxiliary_head_of_another_width_names_the_hooked_head():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(6, 16)
            self.fc = nn.Linear(16, 4)
            self.score = nn.Linear(16, 1)  # e.g. a confidence head, registered last

        def forward(self, x):
            h = torch.relu(self.body(x))
            self.aux = self.score(h)
            return self.fc(h)

    model = Net()
    tracker = GWATracker(model)
    assert tracker.head_name == "score"  # the documented rule: the last nn.Linear registered
    logits = model(torch.randn(8, 6))
    with pytest.raises(
        ValueError,
        match=r"hooked head 'score' \(nn.Linear, weight \(1, 16\)\) does not produce "
        r"these logits \(C=4\): pass GWATracker\(model, head=...\).*'fc' \(4, 16\)",
    ):
        tracker.update(logits, torch.randint(0, 4, (8,)), torch.arange(8))
