"""benchmarks/harness_artifacts.py: its two measurements, at tiny size."""

import importlib.util
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "harness_artifacts.py"


@pytest.fixture(scope="module")
def harness():
    import sys

    sys.path.insert(0, str(SCRIPT.parent))  # the script imports its sibling _machine
    try:
        spec = importlib.util.spec_from_file_location("harness_artifacts", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


@pytest.mark.parametrize("variant", ["plain", "32", "0"])
def test_faults_reports_faults_and_system_time_per_step(harness, variant):
    line = harness.faults(8, variant, steps=3)
    match = re.fullmatch(r"([\d.]+) faults/step, ([\d.]+) ms system time/step", line)
    assert match and float(match[1]) >= 0 and float(match[2]) >= 0


def test_a_a_is_relative_to_the_first_model(harness):
    deltas = harness.a_a(8, rounds=2)
    assert len(deltas) == 4 and deltas[0] == 0.0
    assert all(abs(d) < 1.0 for d in deltas)  # identical models: well within a factor of two
