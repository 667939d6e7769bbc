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
