"""gwa compare: statistics per run, rankings and rank correlations on hand-built runs with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gwa.report._compare import compare_runs, run_row
from gwa.rundir import load_run

# name: (max mean alignment at epoch 3, best test acc at epoch 2, gwa (the default value) at the gwa epoch 4,
# test acc at epoch 4)
RUNS = {
    "A": (0.1, 0.5, 0.10, 0.40),
    "B": (0.2, 0.7, 0.05, 0.45),
    "C": (0.3, 0.6, 0.20, 0.55),
    "D": (0.4, 0.8, 0.15, 0.50),
}


def _metrics(align, best, gwa, test_at_gwa):
    rows = []
    for e in range(1, 6):
        rows.append(
            {
                "align_mean": align if e == 3 else align / 2,
                "gwa": gwa if e == 4 else gwa / 4,
                "gwa_paper": 10 * gwa if e == 4 else 2 * gwa,  # the paper's value: another scale
                "gwa_paper_flagged": False,
                "test_acc": best if e == 2 else (test_at_gwa if e == 4 else 0.3),
            }
        )
    return rows


@pytest.fixture
def four_runs(tmp_path, write_run):
    paths = []
    for name, values in RUNS.items():
        paths.append(
            write_run(
                tmp_path / name,
                metrics=_metrics(*values),
                summary={"criteria": {"gwa": {"epoch": 4, "test_acc": values[3]}}},
            )
        )
    return paths


def test_rows_and_order(four_runs):
    res = compare_runs(four_runs)
    assert [r.name for r in res.rows] == ["D", "C", "B", "A"]  # by max mean alignment, highest first
    d = res.rows[0]
    assert (d.max_align, d.align_epoch, d.test_at_align) == (0.4, 3, 0.3)
    assert (d.gwa, d.gwa_epoch, d.gwa_source, d.test_at_gwa) == (
        0.15,
        4,
        "summary",
        0.5,
    )  # the logged default
    assert (d.best_test, d.best_test_epoch) == (0.8, 2)


def test_rank_correlations_known(four_runs):
    corr = {(c.statistic, c.target): c for c in compare_runs(four_runs).correlations}
    # Max alignment ranks A<B<C<D, best test ranks A<C<B<D: one swap -> rho = 1 - 6*2/(4*15), tau = (5-1)/6.
    c = corr[("max mean alignment", "best test acc")]
    assert c.n == 4 and c.spearman == pytest.approx(0.8) and c.kendall == pytest.approx(2 / 3)
    # Exact two-sided p: of the 24 orderings, 1 + 3 reach rho >= 0.8 (identity, one adjacent swap) and as many
    # rho <= -0.8; the same 8 orderings have |tau| >= 2/3.
    assert c.spearman_p == pytest.approx(8 / 24) and c.kendall_p == pytest.approx(8 / 24)
    # GWA ranks B<A<D<C, test acc at the GWA epoch A<B<D<C: one swap.
    c = corr[("GWA", "test acc at its epoch")]
    assert c.spearman == pytest.approx(0.8) and c.kendall == pytest.approx(2 / 3)
    # Test acc at the max-alignment epoch is 0.3 for all runs: a constant has no rank correlation.
    assert math.isnan(corr[("max mean alignment", "test acc at its epoch")].spearman)


def test_gwa_recomputed_is_the_default_criterion_not_the_paper_pole(tmp_path, write_run):
    from gwa.report import _analysis as A

    rows = _metrics(0.2, 0.7, 0.09, 0.6)
    # Epoch 2 sits at the paper's kurtosis pole: a huge paper value, which the default value does not have.
    rows[1].update(gwa_paper=50.0, gwa_paper_flagged=True, gwa_guard="kurtosis_pole")
    path = write_run(tmp_path / "r", metrics=rows)
    row = run_row(path)
    assert (row.gwa, row.gwa_epoch, row.gwa_source) == (0.09, 4, "recomputed")
    assert A.recompute_choices(load_run(path))["gwa_paper"].epoch == 2  # the verbatim rule takes the pole


def test_markdown_and_cli(four_runs, tmp_path, commands, capsys):
    out, png = tmp_path / "t" / "table.md", tmp_path / "cmp.png"
    assert commands(["compare", *map(str, four_runs), "--out", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    text = out.read_text()
    assert text.strip() in printed
    lines = text.splitlines()
    assert lines[2].startswith(
        "| 1 | D | 5 | 0.400 (ep 3) | 0.300 | 2 | 0.150 (ep 4) | 0.500 | 0.800 (ep 2) |"
    )
    assert "| max mean alignment | best test acc | 4 | 0.800 (" in text
    assert (
        "| max mean alignment | test acc at its epoch | 4 | undefined (constant values) | undefined |" in text
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lines[-1].startswith(
        "How far to trust the ranking: in gwa's benchmark the max mean alignment did not"
    )


def test_duplicate_names_show_paths(tmp_path, write_run):
    a = write_run(tmp_path / "a" / "run", metrics=_metrics(0.1, 0.5, 1.0, 0.4))
    b = write_run(tmp_path / "b" / "run", metrics=_metrics(0.2, 0.6, 1.0, 0.4))
    assert [r.name for r in compare_runs([a, b]).rows] == [str(b), str(a)]


def test_exact_spearman_pvalue_for_a_perfect_ranking():
    from gwa.report._compare import rank_correlation

    c = rank_correlation([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], statistic="s", target="t")
    assert (c.spearman, c.spearman_p, c.kendall, c.kendall_p) == pytest.approx((1, 2 / 24, 1, 2 / 24))
    # Ten runs: scipy's t-approximation, which for rho = 1 is 0.
    c = rank_correlation(range(10), range(10), statistic="s", target="t")
    assert c.spearman == pytest.approx(1) and c.spearman_p == pytest.approx(0, abs=1e-12)


def test_too_few_runs_for_correlation(four_runs):
    res = compare_runs(four_runs[:2])
    assert res.correlations == []
    assert "Rank correlations need at least 3 runs" in res.to_markdown()
    assert res.to_markdown().endswith("(docs/results.md, 'Model ranking').")


def test_incomplete_run_is_marked(tmp_path, write_run):
    path = write_run(tmp_path / "partial", metrics=_metrics(0.1, 0.5, 1.0, 0.4)[:3], complete=False)
    assert "partial (incomplete)" in compare_runs([path]).to_markdown()


def test_errors(tmp_path, commands, capsys):
    with pytest.raises(ValueError, match="Expected at least one run directory"):
        compare_runs([])
    (tmp_path / "empty").mkdir()
    assert commands(["compare", str(tmp_path / "empty")]) == 2
    assert "is not a gwa run directory: no config.json" in capsys.readouterr().err


def test_rank_helper_handles_nan():
    from gwa.report._compare import _ranks

    assert _ranks([0.1, np.nan, 0.3]) == ["2", "–", "1"]
