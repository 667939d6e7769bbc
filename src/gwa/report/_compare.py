"""What ``gwa compare RUN [RUN ...]`` computes: runs ranked by alignment statistics next to their test accuracy.

Two train-time statistics, neither needing held-out data:

- **max mean alignment**: the highest per-epoch mean alignment over training, ``max_T E[gamma_T]`` (the
  paper's model-comparison statistic, Sec. 6; comparable across runs of one architecture, since its scale
  depends on the embedding dimension);
- **gwa**: the default criterion's value (``mean / (excess kurtosis + 3)``) at the epoch it chose (from
  summary.json, else recomputed by :func:`gwa.policy.select_all`).

Each is shown next to the test accuracy at its epoch and the run's best test accuracy. With three or more
runs, Spearman's rho and Kendall's tau (scipy.stats) measure how well each statistic ranks the runs by test
accuracy; their two-sided p-values are exact for small samples (all pairings up to 8 runs for rho, scipy's
exact method for tau).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_RUNS_FOR_CORRELATION = 3
#: Printed under every comparison: what our own benchmark says about the ranking (docs/results.md, item 7).
TRUST_NOTE = (
    "How far to trust the ranking: in gwa's benchmark the max mean alignment did not rank 7 MNIST-1D "
    "architectures by test accuracy (Kendall tau -0.52 [-0.62, -0.14] at 20 epochs, -0.14 [-0.43, +0.05] at 40; "
    "a 10% validation split: +1.00). To choose between architectures, rank by held-out accuracy "
    "(docs/results.md, 'Model ranking')."
)
EXACT_SPEARMAN_MAX_RUNS = 8  # 8! = 40320 pairings: well under a second


@dataclass(frozen=True)
class RunRow:
    """One run's statistics; epochs are 1-based, NaN (and epoch None) where a value is not available."""

    name: str
    path: Path
    epochs: int
    complete: bool
    max_align: float
    align_epoch: int | None
    test_at_align: float
    gwa: float
    gwa_epoch: int | None
    gwa_source: str
    test_at_gwa: float
    best_test: float
    best_test_epoch: int | None


@dataclass(frozen=True)
class Correlation:
    """Rank correlation of one per-run ``statistic`` with one ``target`` accuracy over ``n`` runs."""

    statistic: str
    target: str
    n: int
    spearman: float
    spearman_p: float
    kendall: float
    kendall_p: float


@dataclass(frozen=True)
class CompareResult:
    """The runs' rows (highest max mean alignment first) and the rank correlations over them."""

    rows: list[RunRow]
    correlations: list[Correlation]

    def to_markdown(self) -> str:
        return _markdown(self)

    def plot(self, path) -> Path:
        from gwa.report import _plots as plots

        names = [r.name for r in self.rows]

        def col(attr):
            return np.array([getattr(r, attr) for r in self.rows], dtype=np.float64)

        fig = plots.plot_compare(
            names,
            [
                (
                    col("max_align"),
                    col("best_test"),
                    "max mean alignment over epochs",
                    "best test accuracy",
                    "Max mean alignment vs. test accuracy",
                ),
                (
                    col("gwa"),
                    col("test_at_gwa"),
                    "GWA at the gwa criterion's epoch",
                    "test accuracy at that epoch",
                    "GWA vs. test accuracy",
                ),
            ],
        )
        plots.save_png(fig, path)
        return Path(path)


def _nanargmax(values: np.ndarray) -> int | None:
    return int(np.nanargmax(values)) if np.isfinite(values).any() else None


def run_row(run) -> RunRow:
    """The comparison statistics of one run (a path or a loaded :class:`gwa.rundir.Run`)."""
    from gwa.report import _analysis as A

    run = A.open_run(run)
    A.require_epochs(run)
    epochs = run.epochs
    align = A.mean_alignment_curve(run)
    i = _nanargmax(align)
    align_epoch = None if i is None else epochs[i]
    choice = A.chosen_epochs(run).get("gwa") or A.recompute_choices(run).get("gwa")
    gwa_epoch = None if choice is None else choice.epoch
    test = run.series("test_acc")
    j = _nanargmax(test)
    return RunRow(
        name=run.name,
        path=run.path,
        epochs=len(epochs),
        complete=run.complete,
        max_align=math.nan if i is None else float(align[i]),
        align_epoch=align_epoch,
        test_at_align=A.metric_at(run, "test_acc", align_epoch),
        gwa=A.metric_at(run, "gwa", gwa_epoch),
        gwa_epoch=gwa_epoch,
        gwa_source="none" if choice is None else choice.source,
        test_at_gwa=A.metric_at(run, "test_acc", gwa_epoch),
        best_test=math.nan if j is None else float(test[j]),
        best_test_epoch=None if j is None else epochs[j],
    )


def rank_correlation(x, y, *, statistic: str, target: str) -> Correlation | None:
    """Spearman and Kendall correlations over the runs where both values are finite.

    Returns None with fewer than 3 such runs; NaN correlations (shown as undefined) when either column is
    constant.
    """
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < MIN_RUNS_FOR_CORRELATION:
        return None
    if np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:  # a constant column has no ranking: undefined, said so
        return Correlation(statistic, target, int(ok.sum()), math.nan, math.nan, math.nan, math.nan)
    rho = stats.spearmanr(x[ok], y[ok])
    tau = stats.kendalltau(x[ok], y[ok])  # scipy's exact p-value for small samples without ties
    return Correlation(
        statistic,
        target,
        int(ok.sum()),
        float(rho.statistic),
        _spearman_pvalue(x[ok], y[ok], float(rho.pvalue)),
        float(tau.statistic),
        float(tau.pvalue),
    )


def _spearman_pvalue(x: np.ndarray, y: np.ndarray, approximate: float) -> float:
    """Two-sided p-value of Spearman's rho: exact over all pairings up to 8 runs, else scipy's t-test.

    The t-approximation is far off for a handful of runs (it gives p = 0 for a perfect ranking of 4 runs,
    whose exact p-value is 2/24).
    """
    from scipy import stats

    if x.size > EXACT_SPEARMAN_MAX_RUNS:
        return approximate
    ry = stats.rankdata(y) - (y.size + 1) / 2

    def rho(a, axis=-1):
        ra = stats.rankdata(a, axis=axis)
        ra = ra - ra.mean(axis=axis, keepdims=True)
        return (ra * ry).sum(axis=axis) / np.sqrt((ra**2).sum(axis=axis) * (ry**2).sum())

    result = stats.permutation_test(
        (x,), rho, permutation_type="pairings", vectorized=True, n_resamples=np.inf, alternative="two-sided"
    )
    return float(result.pvalue)


def compare_runs(runs) -> CompareResult:
    """Statistics of every run, sorted by max mean alignment (highest first), and their rank correlations.

    Raises:
        ValueError: when ``runs`` is empty; gwa.rundir.RunDirError for a run that cannot be read.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("Expected at least one run directory in `runs`; got none.")
    rows = [run_row(r) for r in runs]
    names = [r.name for r in rows]
    if len(set(names)) < len(names):  # same run names (e.g. every run dir called "run"): show the paths
        rows = [dataclasses.replace(r, name=str(r.path)) for r in rows]
    rows.sort(key=lambda r: (-r.max_align if math.isfinite(r.max_align) else math.inf, r.name))

    def col(attr):
        return [getattr(r, attr) for r in rows]

    pairs = [
        ("max mean alignment", "max_align", "best test acc", "best_test"),
        ("max mean alignment", "max_align", "test acc at its epoch", "test_at_align"),
        ("GWA", "gwa", "best test acc", "best_test"),
        ("GWA", "gwa", "test acc at its epoch", "test_at_gwa"),
    ]
    correlations = [
        c
        for s, sa, t, ta in pairs
        if (c := rank_correlation(col(sa), col(ta), statistic=s, target=t)) is not None
    ]
    return CompareResult(rows, correlations)


def _ranks(values: list[float]) -> list[str]:
    """1 = highest; '–' for NaN."""
    order = sorted((v, i) for i, v in enumerate(values) if math.isfinite(v))
    out = ["–"] * len(values)
    for rank, (_, i) in enumerate(reversed(order), 1):
        out[i] = str(rank)
    return out


def markdown_cell(text: str) -> str:
    """``text`` safe in one markdown table cell printed to a terminal: control characters (newlines that
    would forge a row, ANSI/OSC escapes that would drive the terminal) shown as ``\\xNN``/``\\uNNNN``, HTML
    as entities, ``|`` escaped. A run's name comes from its config.json, which a shared run directory sets."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append({"<": "&lt;", ">": "&gt;", "&": "&amp;", "|": "\\|", "\\": "\\\\"}.get(ch, ch))
    return "".join(out)


def _markdown(result: CompareResult) -> str:
    from gwa.report._html import fmt

    def at(value, epoch):
        return f"{fmt(value)} (ep {epoch})" if epoch is not None else fmt(value)

    gwa_ranks = _ranks([r.gwa for r in result.rows])
    header = (
        "| align rank | run | epochs | max mean alignment | test acc there | GWA rank | GWA | test acc there "
        "| best test acc |"
    )
    lines = [header, "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    align_ranks = _ranks([r.max_align for r in result.rows])
    for r, a_rank, g_rank in zip(result.rows, align_ranks, gwa_ranks, strict=True):
        name = markdown_cell(r.name) + ("" if r.complete else " (incomplete)")
        lines.append(
            f"| {a_rank} | {name} | {r.epochs} | {at(r.max_align, r.align_epoch)} | {fmt(r.test_at_align)} "
            f"| {g_rank} | {at(r.gwa, r.gwa_epoch)} | {fmt(r.test_at_gwa)} "
            f"| {at(r.best_test, r.best_test_epoch)} |"
        )
    lines.append("")
    if not result.correlations:
        usable = sum(math.isfinite(r.max_align) and math.isfinite(r.best_test) for r in result.rows)
        lines.append(
            f"Rank correlations need at least {MIN_RUNS_FOR_CORRELATION} runs with both a mean alignment and "
            f"a test accuracy; {usable} of the {len(result.rows)} run(s) have both."
        )
        return "\n".join([*lines, "", TRUST_NOTE])
    lines += [
        "| statistic | against | runs | Spearman rho (p) | Kendall tau (p) |",
        "|---|---|---:|---:|---:|",
    ]
    for c in result.correlations:
        if math.isnan(c.spearman):
            lines.append(f"| {c.statistic} | {c.target} | {c.n} | undefined (constant values) | undefined |")
            continue
        lines.append(
            f"| {c.statistic} | {c.target} | {c.n} | {fmt(c.spearman)} ({c.spearman_p:.2g}) "
            f"| {fmt(c.kendall)} ({c.kendall_p:.2g}) |"
        )
    return "\n".join([*lines, "", TRUST_NOTE])
