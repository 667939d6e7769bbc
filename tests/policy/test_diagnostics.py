"""Trust diagnostics on hand-built histories: each fires where it should, and not where it should not."""

import numpy as np
import pytest

import gwa
from gwa import policy

# 10 epochs: gwa peaks at epoch 3 while the training accuracy is still climbing (the digits-CNN transient)
GWA_PEAK3 = [0.01, 0.05, 0.09, 0.06, 0.04, 0.03, 0.03, 0.03, 0.03, 0.03]
ACC_RISING = [0.2, 0.4, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99]
ACC_FITTED = [0.85, 0.9, 0.92, 0.93, 0.94, 0.95, 0.95, 0.96, 0.96, 0.96]


def _rows(**cols):
    n = len(next(iter(cols.values())))
    return [{k: v[e] for k, v in cols.items()} for e in range(n)]


def _codes(diags):
    return [d.code for d in diags]


def test_early_transient_fires_only_while_the_model_has_not_fit_the_data():
    diags = policy.diagnose(_rows(gwa=GWA_PEAK3, train_acc=ACC_RISING))
    assert _codes(diags) == ["early_transient"]
    d = diags[0]
    assert d.evidence == {"epoch": 3, "train_acc": 0.5, "reachable_train_acc": 0.99}
    assert (
        "epoch 3" in d.message and "validation split" in d.action and str(d).startswith("[early_transient]")
    )
    # same curve, but the model already fits the data at epoch 3: no transient
    assert policy.diagnose(_rows(gwa=GWA_PEAK3, train_acc=ACC_FITTED)) == []
    # a choice after the first 30% of training is never called a transient
    late = [0.01, 0.02, 0.03, 0.05, 0.09, 0.04, 0.03, 0.03, 0.03, 0.03]
    assert policy.diagnose(_rows(gwa=late, train_acc=ACC_RISING)) == []


def test_early_transient_accounts_for_the_noise_plateau():
    # 40% of the samples negatively aligned: the model plateaus near 60% training accuracy before memorising
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.05, 0.01, (10, 600)), rng.normal(-0.05, 0.01, (10, 400))], axis=1)
    acc = [0.3, 0.5, 0.55, 0.6, 0.62, 0.7, 0.8, 0.9, 0.95, 0.99]
    rows = _rows(gwa=GWA_PEAK3, train_acc=acc)
    assert "early_transient" in _codes(policy.diagnose(rows))  # without the scores: 0.55 vs 0.99
    codes = _codes(policy.diagnose(rows, alignment=scores))  # with them: 0.55 vs 1 - 0.4
    assert "early_transient" not in codes and "label_noise" in codes


# gwa chooses epoch 6 on this curve (late enough and fitted: no other diagnostic fires)
GWA_PEAK6 = [0.01, 0.02, 0.03, 0.04, 0.05, 0.09, 0.06, 0.05, 0.04, 0.03]
# a split whose best epoch is 8, 5 points above epoch 6
VAL_BEST8 = [0.50, 0.55, 0.60, 0.62, 0.64, 0.66, 0.68, 0.71, 0.70, 0.69]


def test_split_disagrees_names_the_splits_better_epoch():
    val = VAL_BEST8
    diags = policy.diagnose(_rows(gwa=GWA_PEAK6, train_acc=ACC_FITTED, val_acc=val))
    assert _codes(diags) == ["split_disagrees"]
    d = diags[0]
    assert d.evidence == pytest.approx(
        {"split_epoch": 8, "split_acc": 0.71, "chosen_split_acc": 0.66, "gap": 0.05}
    )
    assert "epoch 8 at 71.0%" in d.message and "epoch 6 at 66.0%" in d.message and "5.0 points" in d.message
    assert "--veto-frac" in d.action and d.level == "warning"


def test_split_disagrees_says_when_the_gap_is_within_a_small_splits_noise():
    val = VAL_BEST8
    small = policy.diagnose(_rows(gwa=GWA_PEAK6, train_acc=ACC_FITTED, val_acc=val, val_size=[80] * 10))[0]
    se = np.sqrt(0.71 * 0.29 / 80)  # 5.1 points: a 5-point gap is within two of them
    assert small.evidence["standard_error"] == pytest.approx(se) and small.evidence["split_size"] == 80
    assert (
        "on 80 samples" in small.message
        and f"{100 * se:.1f} points" in small.message
        and "chance" in small.message
    )
    large = policy.diagnose(_rows(gwa=GWA_PEAK6, train_acc=ACC_FITTED, val_acc=val, val_size=[5000] * 10))[0]
    assert large.evidence["split_size"] == 5000 and "chance" not in large.message  # SE 0.6 points: no caveat


def test_split_disagrees_stays_quiet_within_two_points_and_without_a_split():
    close = [0.50, 0.55, 0.60, 0.62, 0.64, 0.66, 0.67, 0.679, 0.67, 0.66]  # 1.9 points: no finding
    assert policy.diagnose(_rows(gwa=GWA_PEAK6, train_acc=ACC_FITTED, val_acc=close)) == []
    exactly = [0.50, 0.55, 0.60, 0.62, 0.64, 0.66, 0.67, 0.68, 0.67, 0.66]  # 2.0 points: fires
    assert _codes(policy.diagnose(_rows(gwa=GWA_PEAK6, train_acc=ACC_FITTED, val_acc=exactly))) == [
        "split_disagrees"
    ]
    assert policy.diagnose(_rows(gwa=GWA_PEAK6, train_acc=ACC_FITTED)) == []  # no split at all
    missing = [0.50, 0.55, 0.60, 0.62, 0.64, float("nan"), 0.68, 0.71, 0.70, 0.69]  # not scored at the choice
    assert policy.diagnose(_rows(gwa=GWA_PEAK6, train_acc=ACC_FITTED, val_acc=missing)) == []
    # an accuracy logged in percent is not read as one (nothing to compare it with)
    percent = [100 * v for v in VAL_BEST8]
    assert policy.diagnose(_rows(gwa=GWA_PEAK6, train_acc=ACC_FITTED, val_acc=percent)) == []
    # the split's own criterion is never told to prefer the split
    val = VAL_BEST8
    rows = _rows(gwa=GWA_PEAK6, train_acc=ACC_FITTED, val_acc=val)
    assert policy.diagnose(rows, "val") == []
    # judging another epoch than the default's: epoch 8 is the split's best, nothing to say
    assert policy.diagnose(rows, epoch=8) == []


def test_still_rising_at_the_last_epoch():
    rising = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10]
    diags = policy.diagnose(_rows(gwa=rising, train_acc=ACC_FITTED))
    assert _codes(diags) == ["still_rising"]
    assert diags[0].evidence["last_values"] == pytest.approx([0.07, 0.08, 0.09, 0.10])
    # a run that stopped before its planned end is not judged, nor a curve with a dip in its last 3 epochs
    assert policy.diagnose(_rows(gwa=rising, train_acc=ACC_FITTED), total_epochs=20) == []
    dip = [*rising[:8], 0.075, 0.1]
    assert policy.diagnose(_rows(gwa=dip, train_acc=ACC_FITTED)) == []


def test_label_noise_reports_the_estimated_rate():
    rng = np.random.default_rng(1)
    flat = [0.02] * 10
    clean = rng.normal(0.05, 0.01, (10, 1000))
    assert policy.diagnose(_rows(gwa=flat), alignment=clean) == []
    noisy = clean.copy()
    noisy[:, :250] -= 0.1
    diags = policy.diagnose(_rows(gwa=flat), alignment=noisy)
    assert _codes(diags) == ["label_noise"]
    assert diags[0].evidence["noise_rate"] == pytest.approx(0.25) and "25%" in diags[0].message


def test_short_warmup_counts_optimizer_steps():
    rows = _rows(gwa=[0.1] * 10, step=[10 * (e + 1) for e in range(10)])  # warm-up: epoch 1 = 10 steps
    diags = policy.diagnose(rows)
    assert _codes(diags) == ["short_warmup"] and diags[0].evidence == {"warmup_epochs": 1, "warmup_steps": 10}
    long = _rows(gwa=[0.1] * 10, step=[60 * (e + 1) for e in range(10)])
    assert policy.diagnose(long) == []
    assert policy.diagnose(_rows(gwa=[0.1] * 10)) == []  # no step key: nothing to judge


def test_paper_pole_only_for_the_paper_criterion():
    kurt = [0.0, -1.5, -1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    mean = [0.05] * 10
    rows = _rows(
        align_mean=mean,
        align_excess_kurtosis=kurt,
        gwa=[m / (k + 3) for m, k in zip(mean, kurt)],
        gwa_paper=[m / (k + 1.2) for m, k in zip(mean, kurt)],
    )
    diags = policy.diagnose(rows, "gwa_paper")
    assert _codes(diags) == ["paper_pole"] and diags[0].evidence == {"epochs_at_pole": 2}
    assert policy.diagnose(rows, "gwa") == []


def test_accepts_epoch_summaries_and_an_explicit_epoch():
    rng = np.random.default_rng(2)
    history = [gwa.summarize(rng.normal(m, 0.02, 400)) for m in (0.01, 0.05, 0.03, 0.03, 0.03)]
    assert policy.diagnose(history) == []
    assert policy.diagnose(history, epoch=5) == []
    with pytest.raises(ValueError, match="among the history's epochs 1..5; got 6"):
        policy.diagnose(history, epoch=6)
    with pytest.raises(ValueError, match="non-empty"):
        policy.diagnose([])
    with pytest.raises(ValueError, match="criterion"):
        policy.diagnose(history, "nope")
