"""experiments/tracker_split_parity.py: its comparison finds a changed value, a moved NaN and a missing array."""

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "tracker_split_parity.py"


def _compare():
    spec = importlib.util.spec_from_file_location("tracker_split_parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compare


def test_compare_accepts_only_identical_arrays(tmp_path, capsys):
    compare = _compare()
    before = {"a/e0/scores": np.array([0.5, np.nan, -0.25]), "a/e0/counts": np.array([1, 0, 0])}
    np.savez(tmp_path / "before.npz", **before)
    np.savez(tmp_path / "same.npz", **before)
    np.savez(tmp_path / "value.npz", **dict(before, **{"a/e0/scores": np.array([0.5, np.nan, -0.2500001])}))
    np.savez(tmp_path / "nan.npz", **dict(before, **{"a/e0/scores": np.array([0.5, 0.0, np.nan])}))
    np.savez(
        tmp_path / "dtype.npz", **dict(before, **{"a/e0/scores": before["a/e0/scores"].astype(np.float32)})
    )
    np.savez(tmp_path / "missing.npz", **{"a/e0/scores": before["a/e0/scores"]})
    assert compare(str(tmp_path / "before.npz"), str(tmp_path / "same.npz")) == 0
    assert "identical" in capsys.readouterr().out
    for changed in ("value", "nan", "dtype", "missing"):
        assert compare(str(tmp_path / "before.npz"), str(tmp_path / f"{changed}.npz")) == 1, changed
        assert "DIFFERENT: 1 array(s)" in capsys.readouterr().out, changed
