"""Data parallelism: per-device moments merged across 2 simulated CPU devices equal one device on the batch.

XLA's device count is fixed when jax initialises, so the check runs in a subprocess and the other tests
keep their single device.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("multidevice_check.py")
pytestmark = pytest.mark.slow  # a subprocess that starts jax with two devices


@pytest.fixture(scope="module")
def results():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize(("dtype", "rtol"), [("float64", 1e-10), ("float32", 1e-5)])
def test_merged_device_moments_equal_one_device(results, dtype, rtol):
    res = results[dtype]
    assert res["n_devices"] == 2 and res["dtype"] == dtype
    one = np.array(res["one_device"])
    assert one[0] == 35  # the 5 padded rows are masked out
    np.testing.assert_allclose(res["shard_map"], one, rtol=rtol, atol=1e-12)
    for state in res.get("pmap", []):  # every device holds the global moments
        np.testing.assert_allclose(state, one, rtol=rtol, atol=1e-12)
    assert dtype == "float32" or len(res["pmap"]) == 2


def test_merged_moments_match_the_numpy_core(results):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from multidevice_check import batch
    finally:
        sys.path.pop(0)
    import gwa
    from gwa._kernel import alignment_with_mask

    logits, targets, emb, weight, mask = batch()
    scores, _ = alignment_with_mask(logits[mask], targets[mask], emb[mask], weight)
    expected = np.array(gwa.Moments.from_values(scores).state)
    np.testing.assert_allclose(results["float64"]["shard_map"], expected, rtol=1e-10, atol=1e-12)
