"""The realised label-noise rate (issue 20): what the noise did, printed by ``gwa train`` and saved in the run."""

import json

import numpy as np
import pytest

from gwa.runner import noise


def test_asymmetric_rate_is_per_source_class_so_fewer_labels_flip_overall():
    y = np.repeat(np.arange(10), 600)  # Fashion-MNIST's balanced classes, 6 of them sources of a pair
    pairs = noise.pairs_for("fashion-mnist")
    _, mask = noise.asymmetric(y, 0.3, pairs, seed=0)
    assert noise.realised_rate(mask) == pytest.approx(0.3 * 6 / 10)
    line = noise.describe_realised(
        "asymmetric", 0.3, mask, pairs=pairs, class_names=[f"c{k}" for k in range(10)]
    )
    assert line.startswith("label noise: asymmetric 0.3 flipped 18.0% of the 6,000 training labels")
    assert "only the paired classes flip" in line and "c0->c6" in line and "c9->c7" in line


def test_symmetric_and_file_lines_state_the_share_flipped():
    mask = np.zeros(200, bool)
    mask[:50] = True
    assert noise.describe_realised("symmetric", 0.25, mask).startswith(
        "label noise: symmetric 0.25 flipped 25.0% of the 200 training labels"
    )
    assert "worse.npy differ from the clean ones on 25.0% of the 200" in noise.describe_realised(
        "file", 0.0, mask, source="worse.npy"
    )
    assert noise.realised_rate(np.zeros(0, bool)) == 0.0


@pytest.mark.slow
def test_gwa_train_prints_and_saves_the_realised_rate(tmp_path, capsys):
    pytest.importorskip("torch")
    from gwa import cli

    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--num-train", "300", "--hidden", "8", "--epochs", "1"]
    assert cli.main([*argv, "--noise", "asymmetric", "--noise-rate", "0.3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    labels, clean = np.load(out / "labels.npy"), np.load(out / "clean_labels.npy")
    rate = float((labels != clean).mean())
    assert 0 < rate < 0.3  # digits: 5 of 10 classes are sources
    assert f"label noise: asymmetric 0.3 flipped {rate:.1%} of the 300 training labels" in printed
    for name in ("config.json", "summary.json"):
        assert json.loads((out / name).read_text())["realised_noise_rate"] == pytest.approx(rate)


def test_help_states_the_class_pair_convention(capsys):
    pytest.importorskip("torch")
    from gwa import cli

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "each source class of the dataset's class pairs" in text and "fewer labels flip overall" in text
