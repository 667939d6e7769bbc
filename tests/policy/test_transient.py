"""The epochs past the early transient, and gwa's default rule over them, on hand-built rows."""

import numpy as np
import pytest

from gwa.policy import after_transient_epoch, past_transient

GWA = [0.01, 0.05, 0.09, 0.06, 0.04, 0.03, 0.035, 0.03, 0.03, 0.03]
ACC = [0.2, 0.4, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99]


def _rows(acc=ACC):
    return [{"gwa": g, **({} if a is None else {"train_acc": a})} for g, a in zip(GWA, acc)]


def test_past_transient_is_within_15_points_of_what_the_model_fits():
    clean = np.full((10, 100), 0.05)
    assert past_transient(_rows(), clean).tolist() == [False] * 5 + [True] * 5  # from 0.84 = 0.99 - 0.15
    noisy = clean.copy()
    noisy[:, :50] = -0.05  # estimated noise 50%: the model fits about 0.5, so 0.35 and up count
    assert past_transient(_rows(), noisy).tolist() == [False] + [True] * 9
    # epochs without a logged training accuracy are not excluded; none logged: every epoch counts
    assert (
        past_transient(_rows([None, None, *ACC[2:]]), clean).tolist()
        == [True, True] + [False] * 3 + [True] * 5
    )
    assert past_transient(_rows([None] * 10), clean).all()


def test_after_transient_epoch_is_the_default_rule_over_those_epochs():
    clean = np.full((10, 100), 0.05)
    assert after_transient_epoch(_rows(), clean) == 7  # 0.035 at epoch 7, not the transient's 0.09
    assert after_transient_epoch(_rows([None] * 10), clean) == 3  # nothing known: the default rule's epoch 3
    # planned for 40 epochs: the warm-up covers 4 epochs, which changes nothing past the transient here
    assert after_transient_epoch(_rows(), clean, total_epochs=40) == 7
    rows = [{"gwa": float("nan"), "train_acc": 0.9}] * 3
    with pytest.raises(ValueError, match="at least one finite value"):
        after_transient_epoch(rows, np.full((3, 4), 0.05))
