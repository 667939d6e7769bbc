"""The analysis side of gwa: reads run directories only (never models or frameworks).

The public API (everything else in this package is an implementation detail and may change):

- :func:`write_report`: ``gwa report``, figures and a self-contained HTML page for a run directory.
- :func:`flag_samples` -> :class:`FlagResult`: ``gwa flag``, training samples ranked as likely mislabeled.
- :func:`compare_runs` -> :class:`CompareResult` (of :class:`RunRow` and :class:`Correlation`):
  ``gwa compare``, runs ranked by alignment next to their test accuracy.

matplotlib (``pip install 'gwa-alignment[plot]'``) is imported only when a figure is drawn; scikit-learn and scipy only
when a number needs them.
"""

# The implementation modules are private (_page.py, _flag.py, _compare.py, ...): import from here, not from them.
from gwa.report._compare import CompareResult, Correlation, RunRow, compare_runs
from gwa.report._flag import FlagResult, flag_samples
from gwa.report._page import write_report

__all__ = [
    "CompareResult",
    "Correlation",
    "FlagResult",
    "RunRow",
    "compare_runs",
    "flag_samples",
    "write_report",
]
