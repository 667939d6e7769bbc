"""The noise map and the class_conditional diagnostic on hand-built histories with known answers."""

import json

import numpy as np
import pytest
from tests.policy._noisy_runs import SWAPS, SYMMETRIC, C, epoch, run

import gwa
from gwa import policy
from gwa.policy import NoiseMap, estimate_noise_map


def test_two_swapped_pairs_are_recovered():
    ev, truth = epoch(SWAPS)
    nm = estimate_noise_map(ev)
    assert nm.rate == pytest.approx(truth) and truth == pytest.approx(1.1 / 6)
    np.testing.assert_allclose(nm.per_class, [0.3, 0.3, 0.25, 0.25, 0, 0])
    assert {(g, t) for g, t, _ in nm.pairs} == set(SWAPS)
    assert [r for _, _, r in nm.pairs] == [0.3, 0.3, 0.25, 0.25]
    assert nm.concentration == pytest.approx(1.0)
    assert policy.is_class_conditional(nm)


def test_symmetric_noise_has_no_pairs_and_does_not_raise_class_conditional():
    ev, truth = epoch(SYMMETRIC)
    nm = estimate_noise_map(ev)
    assert nm.rate == pytest.approx(truth, abs=0.005) and nm.pairs == ()
    assert not policy.is_class_conditional(nm)
    codes = [d.code for d in policy.diagnose(run(SYMMETRIC))]
    assert "class_conditional" not in codes and "label_noise" in codes
    info = next(d for d in policy.diagnose(run(SYMMETRIC)) if d.code == "label_noise")
    assert info.level == "info" and "30%" in info.message


def test_clean_data_with_hard_samples_reads_near_zero():
    ev, truth = epoch({}, hard=0.15)
    assert truth == 0 and ev.negative_share.mean() == pytest.approx(0.15, abs=0.03)  # the plain sign: 15%
    nm = estimate_noise_map(ev)
    assert nm.rate == 0.0 and nm.pairs == () and nm.concentration == 0.0
    assert policy.diagnose(run({}, hard=0.15)) == []


def test_swapped_pairs_raise_class_conditional_with_the_action():
    found = {d.code: d for d in policy.diagnose(run(SWAPS))}
    assert "label_noise" not in found  # the class_conditional diagnostic carries the rate
    d = found["class_conditional"]
    assert d.action == "keep a small validation split (or use --veto-frac)" and d.level == "warning"
    assert "0 -> 1 (30%)" in d.message and d.evidence["pairs"][0][:2] in ([0, 1], [1, 0])


def test_the_trust_text_differs_between_pair_and_symmetric_noise():
    pair = [str(d) for d in policy.diagnose(run(SWAPS))]
    sym = [str(d) for d in policy.diagnose(run(SYMMETRIC))]
    assert pair and sym and set(pair).isdisjoint(sym)


def test_window_average_over_a_run_and_the_window():
    rows = run(SWAPS, epochs=10, fitted=[0, 0, 0, 0, 0, 0.5, 0.8, 1, 1, 1])
    rows[3]["gwa"] = 0.5  # gwa's choice at epoch 4: the window is epochs 2-4 (warm-up: 1 epoch of 10)
    assert policy.noise_map_window(rows) == (2, 4)
    nm = policy.noise_map_of_run(rows)
    assert nm.window == (2, 4) and nm.rate == pytest.approx(1.1 / 6)
    late = estimate_noise_map([r["class_evidence"] for r in rows], window=(8, 10))
    assert late.rate == 0.0  # memorised: what the window leaves out


def test_to_dict_round_trip_and_describe():
    nm = estimate_noise_map(epoch(SWAPS)[0])
    d = json.loads(json.dumps(nm.to_dict()))
    assert set(d) == {"rate", "per_class", "pairs", "concentration", "count", "window", "reliable", "reason"}
    assert d["pairs"][0] in ([0, 1, 0.3], [1, 0, 0.3])
    back = NoiseMap.from_dict(d)
    assert back.pairs == nm.pairs and back.rate == pytest.approx(nm.rate, abs=1e-6)
    names = [f"c{k}" for k in range(C)]
    assert nm.describe(names) == (
        "noise map: ~18% of labels look wrong; likely swapped (given -> true): c0 -> c1 (30%), c1 -> c0 (30%), "
        "c2 -> c3 (25%), c3 -> c2 (25%)"
    )
    assert (
        estimate_noise_map(epoch({})[0]).describe()
        == "noise map: ~0% of labels look wrong; no class pair stands out"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rate": 1.5}, r"`rate` as a share in \[0, 1\]"),
        ({"pairs": [[0, 0, 0.1]]}, "two different class ids"),
        ({"pairs": [[0, 9, 0.1]]}, "two different class ids"),
        ({"count": [1]}, "`count` as a list of 6 integers"),
        ({"window": [0, 2]}, "`window` as"),
    ],
)
def test_from_dict_rejects_bad_fields(change, message):
    d = estimate_noise_map(epoch(SWAPS)[0]).to_dict()
    d.update(change)
    with pytest.raises(ValueError, match=message):
        NoiseMap.from_dict(d)


def test_bad_input():
    with pytest.raises(ValueError, match="at least one ClassEvidence"):
        estimate_noise_map([])
    ev = epoch(SWAPS)[0]
    with pytest.raises(ValueError, match=r"`window` within epochs 1..2"):
        estimate_noise_map([ev, ev], window=(2, 3))
    with pytest.raises(TypeError, match=r"`evidence\[0\]` to be a gwa.ClassEvidence"):
        estimate_noise_map([3])
    assert policy.noise_map_of_run([{"gwa": 0.1}]) is None  # no class evidence: no map


def test_a_short_run_abstains_even_where_its_evidence_looks_like_swapped_pairs():
    # A weak model's hard clean confusions can look exactly like swapped pairs; 5 epochs leave no warm-up epoch.
    rows = run(SWAPS, epochs=5)
    nm = policy.noise_map_of_run(rows)
    assert not nm.reliable and "at least 10 epochs" in nm.reason
    assert not policy.is_class_conditional(nm)
    codes = [d.code for d in policy.diagnose(rows)]
    assert "class_conditional" not in codes and "label_noise" not in codes
    assert nm.describe().startswith("noise map: not enough evidence yet (the run's 5 planned epochs")
    assert policy.noise_map_of_run(run(SWAPS, epochs=10)).reliable  # the same evidence over 10 epochs reads


def test_a_clean_under_fitted_run_with_hard_samples_does_not_raise_class_conditional():
    rows = run(SWAPS, epochs=10)
    for r in rows:
        r["train_acc"] = 0.40  # 1 - 0.40 - 0.18: 42% of the samples neither fitted nor counted as noise
    nm = policy.noise_map_of_run(rows)
    assert not nm.reliable and nm.reason.startswith("under-fitted: at epoch 5 42% of the samples")
    assert "class_conditional" not in [d.code for d in policy.diagnose(rows)]
    rows[4]["train_acc"] = 1 - 1.1 / 6 - 0.2  # 20% unexplained at the window's end: reads
    assert policy.noise_map_of_run(rows).reliable


def test_too_few_samples_per_class_abstains():
    y = np.repeat(np.arange(3), [100, 100, 12])
    pred = y.copy()
    pred[:30] = 1
    ev = gwa.class_evidence(np.where(pred != y, -0.05, 0.06), y, pred, 3)
    rows = [{"gwa": 0.03 - 0.001 * abs(e - 4), "train_acc": 0.86, "class_evidence": ev} for e in range(10)]
    nm = policy.noise_map_of_run(rows)
    assert not nm.reliable and nm.reason.startswith("class 2 has 12 samples per epoch")
    assert estimate_noise_map(ev).reliable and estimate_noise_map(ev).pairs  # the bare estimate still reads


def test_an_abstaining_map_round_trips_and_old_summaries_read_as_reliable():
    nm = policy.noise_map_of_run(run(SWAPS, epochs=5))
    back = NoiseMap.from_dict(json.loads(json.dumps(nm.to_dict())))
    assert not back.reliable and back.reason == nm.reason
    old = {k: v for k, v in nm.to_dict().items() if k not in ("reliable", "reason")}
    assert NoiseMap.from_dict(old).reliable
    with pytest.raises(ValueError, match="Expected `reliable` as true/false"):
        NoiseMap.from_dict({**nm.to_dict(), "reliable": "no"})
