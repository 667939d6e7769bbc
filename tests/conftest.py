"""Generic fixtures shared by the whole suite (keep it small: no framework imports here)."""

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator per test, so that tests do not depend on their order."""
    return np.random.default_rng(20251028)


# The hostile-input suite (docs/reliability.md): every test marked `hostile` is one case. A case passes only when
# its assertions hold: the refused ones raise the expected error naming the file or argument, and none runs a
# payload, loses a file, gives a wrong result or a traceback-type crash. The tally is printed at the end.
# A case may name its class (`@pytest.mark.hostile("refused", cls="symlinks")`); the tally then also counts by class.
_hostile: dict[tuple[str, str], dict[str, int]] = {}
_hostile_classes: dict[tuple[str, str], dict[str, int]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("hostile")
    if marker is not None and (report.when == "call" or (report.when == "setup" and not report.passed)):
        kind = marker.args[0] if marker.args else "refused"
        _hostile.setdefault((item.path.name, kind), {"passed": 0, "failed": 0, "skipped": 0})[
            report.outcome
        ] += 1
        if "cls" in marker.kwargs:
            key = (marker.kwargs["cls"], kind)
            _hostile_classes.setdefault(key, {"passed": 0, "failed": 0, "skipped": 0})[report.outcome] += 1


def pytest_terminal_summary(terminalreporter):
    if not _hostile:
        return
    total = {k: sum(t[k] for t in _hostile.values()) for k in ("passed", "failed", "skipped")}
    terminalreporter.write_line(
        f"hostile-input suite: {sum(total.values())} cases, {total['passed']} held, "
        f"{total['failed']} failed, {total['skipped']} skipped"
    )
    for (name, kind), t in sorted(_hostile.items()):
        terminalreporter.write_line(f"  {name:<26} {kind:<9} {t['passed']}/{sum(t.values())} held")
    if _hostile_classes:
        terminalreporter.write_line("hostile-input suite by class (cases that name one):")
        for (cls, kind), t in sorted(_hostile_classes.items()):
            terminalreporter.write_line(f"  {cls:<26} {kind:<9} {t['passed']}/{sum(t.values())} held")
