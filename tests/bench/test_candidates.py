import numpy as np
import pytest

from gwa.bench.candidates import CANDIDATES, guarded_paper


def _rows(**cols):
    n = len(next(iter(cols.values())))
    return [{"epoch": e + 1, **{k: v[e] for k, v in cols.items() if v[e] is not None}} for e in range(n)]


PAPER = [9.0, 0.2, 0.3, 0.25, -3.3, 0.9, 0.4, 0.35, 0.3, 0.28]
FLAG = [False, False, False, False, True, True, False, False, False, False]


def test_guarded_paper_rule_skips_flagged_epochs():
    rows = _rows(gwa_paper=PAPER, gwa_paper_flagged=FLAG)
    assert rows[guarded_paper(rows)]["epoch"] == 7  # epochs 5, 6 flagged: 0.4 at epoch 7
    assert guarded_paper(_rows(gwa_paper=PAPER, gwa_paper_flagged=[False] * 10)) == 5  # 0.9 at epoch 6
    every = _rows(gwa_paper=[-3.0, -1.0, -2.0], gwa_paper_flagged=[True, True, True])
    with pytest.raises(ValueError, match="finite value"):
        guarded_paper(every)


def test_research_candidates_on_hand_built_rows():
    # 10 epochs, warm-up skips epoch 1.
    mean = [0.9, 0.2, 0.3, 0.25, 0.22, 0.21, 0.26, 0.24, 0.2, 0.2]
    kurt = [0.0, 0.0, 3.0, -1.5, -1.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    default = [m / (k + 3) for m, k in zip(mean, kurt)]
    rows = _rows(align_mean=mean, gwa=default, gwa_paper=[1.0] * 10, gwa_paper_flagged=[True] * 10)
    with pytest.raises(ValueError, match="finite value"):
        CANDIDATES["gwa_guarded"](rows)
    pick = {name: rows[f(rows)]["epoch"] for name, f in CANDIDATES.items() if name != "gwa_guarded"}
    # Pearson ratio with the fine-tuning rule: first minimum after the warm-up at epoch 3 (0.05), then the max
    # after it: 0.25/1.5 = 0.167 at epoch 4
    assert pick["gwa_pearson_finetune"] == 4
    # first local minimum after the warm-up: epoch 2 (0.2 -> 0.3 rises), then the max after it: epoch 3
    assert pick["align_mean_finetune"] == 3
    # trailing 3-mean from epoch 3: 0.467, 0.25, 0.257, 0.227, 0.23, 0.237, 0.233, 0.213 -> epoch 3
    assert pick["align_mean_smooth3"] == 3
    # every GWA flagged: the guarded rule cannot choose, the fallback takes the mean alignment
    assert pick["gwa_guarded_or_mean"] == 3
    assert int(np.argmax(default[1:])) + 2 == 4


def test_warmup_in_steps_skips_the_first_100_optimizer_steps():
    from gwa.bench.candidates import warmup_in_steps

    gwa_curve = [9, 8, 7, 6, 5, 1, 2, 3, 2, 1]  # a transient peak in the first epochs
    rows = [{"gwa": g, "step": 24 * (e + 1)} for e, g in enumerate(gwa_curve)]
    assert warmup_in_steps(rows) == 4  # epochs 1-4 end within 96 steps; argmax of 5, 1, 2, 3, ...
    rows = [{"gwa": g, "step": 200 * (e + 1)} for e, g in enumerate(gwa_curve)]
    assert warmup_in_steps(rows) == 1  # long epochs: the paper's 10% (1 epoch) applies
    rows = [{"gwa": g, "step": 5 * (e + 1)} for e, g in enumerate(gwa_curve)]
    assert warmup_in_steps(rows) == 9  # every epoch within 100 steps: only the last is left


def test_after_transient_skips_epochs_the_model_has_not_fit_yet():
    from gwa.bench.candidates import after_transient

    gwa_curve = [0.01, 0.05, 0.09, 0.06, 0.04, 0.03, 0.035, 0.03, 0.03, 0.03]
    acc = [0.2, 0.4, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99]
    rows = [{"gwa": g, "train_acc": a} for g, a in zip(gwa_curve, acc)]
    clean = np.full((10, 100), 0.05)
    assert after_transient(rows, clean) == 6  # eligible from acc >= 0.84 (epoch 6); max 0.035 at epoch 7
    noisy = clean.copy()
    noisy[:, :50] = -0.05  # estimated noise 50%: fits ~0.5, so epoch 3 is eligible
    assert after_transient(rows, noisy) == 2


def _memo_rows(gwa_curve, acc=None):
    acc = acc or [0.9] * len(gwa_curve)
    return [{"gwa": g, "train_acc": a} for g, a in zip(gwa_curve, acc)]


def test_negative_share_counts_seen_samples_only():
    from gwa.bench.candidates import negative_share

    m = np.array([[-0.1, 0.2, np.nan, 0.3], [np.nan, np.nan, np.nan, np.nan], [-0.1, -0.2, -0.3, 0.1]])
    out = negative_share(m)
    assert out[0] == pytest.approx(1 / 3) and np.isnan(out[1]) and out[2] == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"`alignment` of shape \(epochs, samples\); got shape=\(3,\)"):
        negative_share(np.zeros(3))


def _alignment(neg_per_epoch, n=100):
    """(E, n) scores with the given number of negatively aligned samples per epoch."""
    m = np.full((len(neg_per_epoch), n), 0.05)
    for e, k in enumerate(neg_per_epoch):
        m[e, :k] = -0.05
    return m


def test_memorisation_alarm_on_a_shrinking_negative_mode_or_a_falling_gwa():
    from gwa.bench.candidates import memorisation_alarm

    flat = _memo_rows([0.5, 1.0, 1.0, 0.9, 0.95, 0.9, 0.92, 0.9, 0.91, 0.9])  # warm-up: epoch 1
    # the negative share stays at 30 of 100 (ratio 1.0): no alarm
    assert not memorisation_alarm(flat, _alignment([40] + [30] * 9))
    # the negative share falls from 30 to 22 (ratio 0.73 < 0.75): alarm; to 23 (0.77): none
    assert memorisation_alarm(flat, _alignment([40] + [30] * 8 + [22]))
    assert not memorisation_alarm(flat, _alignment([40] + [30] * 8 + [23]))
    # the epoch-1 maximum (40) lies in the warm-up and does not count
    assert not memorisation_alarm(flat, _alignment([80] + [30] * 9))
    # GWA falls from its peak 1.0 to 0.79 (more than 0.2 of it): alarm; to 0.81: none
    assert memorisation_alarm(
        _memo_rows([0.5, 1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.79]), _alignment([30] * 10)
    )
    assert not memorisation_alarm(_memo_rows([0.5, 1.0] + [0.9] * 7 + [0.81]), _alignment([30] * 10))
    # negative GWA values: the drop is measured against the peak's magnitude (-1.0 -> -1.3 is a 30% drop)
    assert memorisation_alarm(_memo_rows([-2.0, -1.0, -1.1, -1.3]), _alignment([30] * 4))
    assert not memorisation_alarm(_memo_rows([-2.0, -1.0, -1.1, -1.1]), _alignment([30] * 4))
    # an undefined last value cannot confirm that nothing is memorised
    assert memorisation_alarm(_memo_rows([0.5, 1.0, 1.0, None]), _alignment([30] * 4))


def test_memorisation_alarm_rejects_bad_input():
    from gwa.bench.candidates import memorisation_alarm

    with pytest.raises(ValueError, match="non-empty `rows`"):
        memorisation_alarm([], _alignment([30]))
    with pytest.raises(ValueError, match=r"one row per epoch \(3\); got 2 rows"):
        memorisation_alarm(_memo_rows([0.1, 0.2, 0.3]), _alignment([30, 30]))


def test_gwa_memorisation_keeps_the_last_epoch_unless_the_alarm_fires():
    from gwa.bench.candidates import after_transient, gwa_memorisation

    gwa_curve = [0.5, 1.0, 0.9, 0.95, 0.9, 0.92, 0.9, 0.91, 0.9, 0.9]
    rows = _memo_rows(gwa_curve)
    assert gwa_memorisation(rows, _alignment([30] * 10)) == 9  # no alarm: the last epoch, not the argmax (2)
    shrinking = _alignment([30, 30, 30, 28, 26, 24, 22, 20, 18, 16])  # the mislabeled mode is being fitted
    assert gwa_memorisation(rows, shrinking) == after_transient(rows, shrinking) == 1  # GWA's argmax, epoch 2


def test_window_share_is_the_share_the_default_flag_rule_flags():
    from gwa.bench.candidates import window_noise_rate

    # 10 epochs, warm-up 1; gwa_after_transient picks epoch 4 (GWA's maximum), so the window is epochs 2-4
    rows = _memo_rows([0.9, 0.2, 0.3, 0.5, 0.4, 0.3, 0.2, 0.2, 0.2, 0.2])
    m = np.full((10, 4), 0.1)
    m[1:4, 0] = -0.1  # flipped, memorised after epoch 4: counted on the window, not on later epochs
    m[4:, 0] = 0.3
    m[:, 1] = [0.5, -0.2, -0.2, 0.1, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5]  # window mean -0.1: counted
    m[1:4, 2] = [0.2, np.nan, -0.1]  # one unseen epoch skipped: mean 0.05, not counted
    m[:, 3] = np.nan  # never seen: not in the denominator
    assert window_noise_rate(rows, m) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least one sample seen"):
        window_noise_rate(rows, np.full((10, 4), np.nan))
