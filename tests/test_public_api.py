"""The public names, the numpy-only import of the core, and the docstring examples of the core modules."""

import doctest
import importlib
import subprocess
import sys
import textwrap

import pytest

import gwa

CORE_MODULES = [
    "gwa",
    "gwa._validation",
    "gwa._kernel",
    "gwa._moments",
    "gwa._summary",
    "gwa.policy",
    "gwa.policy._criteria",
    "gwa.policy._stopper",
    "gwa._class_evidence",
    "gwa.policy._noise_map",
    "gwa.policy._class_criteria",
    "gwa.policy._flags",
    "gwa.rundir",
    "gwa.cli",
]
HEAVY = [
    "torch",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "lightning",
    "transformers",
    "timm",
    "matplotlib",
    "scipy",
    "sklearn",
    "tqdm",
    "mnist1d",
]


def test_all_is_pinned():
    assert gwa.__all__ == [  # constants, classes, functions (ruff's RUF022 order)
        "DEFAULT_CRITERION",
        "PAPER_BETA",
        "UNDEFINED_SCORE",
        "ClassEvidence",
        "EarlyStopper",
        "EpochSummary",
        "Guard",
        "GuardCode",
        "Moments",
        "StopReason",
        "alignment",
        "class_evidence",
        "gwa_value",
        "pearson_ratio",
        "select_epoch",
        "summarize",
    ]
    for name in gwa.__all__:
        assert getattr(gwa, name) is not None
    assert gwa.PAPER_BETA == 1.2 and gwa.UNDEFINED_SCORE == 0.0 and gwa.DEFAULT_CRITERION == "gwa"
    # The public names are the core policy's own objects, not copies.
    assert gwa.select_epoch is gwa.policy.select_epoch and gwa.EarlyStopper is gwa.policy.EarlyStopper
    assert gwa.StopReason is gwa.policy.StopReason and gwa.DEFAULT_CRITERION == gwa.policy.DEFAULT_CRITERION
    assert isinstance(gwa.__version__, str) and gwa.__version__.count(".") == 2


def test_import_gwa_with_frameworks_blocked():
    # sys.modules[name] = None makes any `import name` raise ImportError: the core must never need them.
    script = textwrap.dedent(f"""
        import sys
        HEAVY = {HEAVY!r}
        for name in HEAVY:
            sys.modules[name] = None
        import numpy as np
        import gwa, gwa.rundir, gwa.cli
        x = np.array([[1.0, 0.0], [0.5, 2.0]]); W = np.eye(2)
        s = gwa.alignment(x @ W.T, np.array([0, 1]), x, W)
        assert abs(s[0] - 0.5) < 1e-12, s
        m = gwa.Moments.from_values(s)
        summary = gwa.summarize(m); gwa.gwa_value(m)
        assert gwa.select_epoch([0.1, 0.3, 0.2]) == 2 and gwa.select_epoch([summary, summary]) == 1
        stopper = gwa.EarlyStopper(patience=1, total_epochs=3)
        assert [stopper.step(v) for v in (0.1, 0.3, 0.2)] == [False, False, True] and stopper.best_epoch == 2
        import gwa.policy, gwa.report._page, gwa.report._flag, gwa.report._compare
        gwa.cli.build_parser()
        loaded = sorted({{m.split(".")[0] for m, mod in sys.modules.items() if mod is not None}} & set(HEAVY))
        assert not loaded, loaded
        print("ok")
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("name", CORE_MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"


def test_core_modules_with_examples_have_them():
    # The examples above are not vacuous: these modules document their main entry points with one.
    for name in ("gwa._kernel", "gwa._moments", "gwa._summary", "gwa.policy._criteria"):
        assert doctest.testmod(importlib.import_module(name)).attempted > 0, name
