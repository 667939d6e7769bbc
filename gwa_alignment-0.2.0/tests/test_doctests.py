"""The examples in the public modules' docstrings run and give what they show."""

import doctest
import importlib

import pytest

#: Public library modules (the command modules of runner/bench/cli are exercised end to end instead).
MODULES = [
    "gwa._kernel",
    "gwa._moments",
    "gwa._summary",
    "gwa.policy._criteria",
    "gwa.policy._stopper",
    "gwa.policy._flags",
    "gwa.baselines.labelwave",
    "gwa.baselines.disparity",
    "gwa.baselines.detection",
    "gwa.torch",
    "gwa.torch._kernel",
    "gwa.torch._tracker",
    "gwa.jax",
    "gwa.jax._kernel",
    "gwa.jax._moments",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name.startswith("gwa.torch"):
        pytest.importorskip("torch")
    if name.startswith("gwa.jax"):
        pytest.importorskip("jax")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no docstring example"
