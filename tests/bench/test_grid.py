"""``gwa bench --grid reduced`` end to end, its tables checked against the run directories it wrote."""

import argparse
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sklearn.metrics import roc_auc_score

import gwa
from gwa.bench import grid
from gwa.bench.results import collect
from gwa.cli import bench as bench_cli
from gwa.report import flag_samples
from gwa.rundir import load_run


def _args(**kw):
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args([])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "runs"
    assert bench_cli.run(_args(grid="reduced", out=str(out))) == 0
    return out


@pytest.mark.slow  # `reduced` trains a small `gwa bench` grid
def test_reduced_grid_writes_every_run_and_the_tables(reduced):
    jobs = grid.make_jobs("reduced")
    assert {j.variant for j in jobs} == {"full", "val10", "val1"}
    for job in jobs:
        assert grid.is_complete(reduced / job.name)
    text = (reduced / "bench.md").read_text()
    for heading in ("## Provenance", "## Stop criteria: test accuracy", "## Mislabel detection"):
        assert heading in text
    meta = json.loads((reduced / "bench.json").read_text())
    assert meta["grid"] == "reduced" and meta["errors"] == []


@pytest.mark.slow  # `reduced` trains a small `gwa bench` grid
def test_table_cells_match_the_run_directories(reduced):
    results = {(r.setting, r.variant): r for r in collect(reduced, log=lambda m: None)}
    setting = ("digits", "mlp", "symmetric", 0.4, "cosine")
    full = load_run(reduced / grid.make_jobs("reduced")[-3].name)
    assert full.config["val_frac"] == 0.0 and full.config["noise"] == "symmetric"
    test = full.series("test_acc")
    assert results[(setting, "full")].test_at["oracle"] == pytest.approx(test.max())
    assert results[(setting, "full")].test_at["last"] == pytest.approx(test[-1])
    # gwa's default criterion: the core policy's epoch (1-based) over the run's rows, with the planned epochs.
    chosen = gwa.select_epoch(full.metrics, total_epochs=full.config["epochs"])
    assert results[(setting, "full")].chosen["gwa"] == chosen
    assert results[(setting, "full")].test_at["gwa"] == pytest.approx(test[chosen - 1])
    paper = gwa.select_epoch(full.metrics, "gwa_paper", total_epochs=full.config["epochs"])
    assert results[(setting, "full")].test_at["gwa_paper"] == pytest.approx(test[paper - 1])
    val = load_run(reduced / grid.make_jobs("reduced")[-2].name)
    assert val.config["val_frac"] == 0.1
    pick = int(np.argmax(val.series("val_acc")))
    assert results[(setting, "val10")].test_at["val"] == pytest.approx(val.series("test_acc")[pick])
    # detection: the mean alignment's AUROC, recomputed with sklearn from the stored scores
    a = full.score_matrix("alignment").astype(float)
    expected = roc_auc_score(full.noise_mask, -np.nanmean(a, axis=0))
    assert results[(setting, "full")].detection["alignment_mean"][0] == pytest.approx(expected)
    assert (setting, "val1") in results
    # the detection table's precision and recall rows: the flag rules' own numbers on this one noisy run
    text = (reduced / "bench.md").read_text()
    for rule, label in (("window", "default flag rule `window`"), ("lastk", "`lastk`")):
        flagged = flag_samples(full, rule=rule)
        for metric in ("precision", "recall"):
            value = getattr(flagged, metric)
            assert results[(setting, "full")].flags[rule][metric] == pytest.approx(value)
            assert f"| {metric}: {label} (" in text
            assert f"| {value:.3f} |" in next(
                line for line in text.splitlines() if line.startswith(f"| {metric}: {label} (")
            )


@pytest.mark.slow  # `reduced` trains a small `gwa bench` grid
def test_from_runs_rebuilds_the_same_tables_without_training(reduced, tmp_path):
    first = (reduced / "bench.md").read_text()
    report = tmp_path / "again.md"
    assert bench_cli.run(_args(from_runs=str(reduced), report=str(report))) == 0
    assert report.read_text() == first
    # starting the grid again trains nothing: every run is complete
    lines = []
    assert grid.run_jobs(grid.make_jobs("reduced"), reduced, log=lines.append) == []
    assert lines == ["6 of 6 runs already complete; training 0 with 1 worker(s)"]


@pytest.mark.slow  # `reduced` trains a small `gwa bench` grid
def test_in_process_runs_leave_threads_and_the_loader_as_they_were(reduced, tmp_path):
    import torch
    from gwa.runner import data

    before = torch.get_num_threads(), data.load_dataset
    lines = []
    job = grid.make_jobs("reduced")[1]  # a validation-split run, trained again in a fresh folder
    assert grid.run_jobs([job], tmp_path, threads=1, log=lines.append) == []
    assert grid.is_complete(tmp_path / job.name)
    assert (torch.get_num_threads(), data.load_dataset) == before
    assert not hasattr(data.load_dataset, "cache_info")


def test_errors():
    with pytest.raises(ValueError, match="`grid`"):
        grid.make_jobs("huge")
    with pytest.raises(ValueError, match="--workers"):
        bench_cli.run(_args(workers=0))
    with pytest.raises(FileNotFoundError, match="--from-runs"):
        bench_cli.run(_args(from_runs="/nonexistent/bench"))


def test_per_run_file_from_the_bench_feeds_the_held_out_analysis(reduced, tmp_path):
    from gwa.bench import heldout, perrun

    path = tmp_path / "per_run.csv"
    assert bench_cli.run(_args(from_runs=str(reduced), report=str(tmp_path / "t.md"), per_run=str(path))) == 0
    rows = perrun.read_csv(path)
    results = {(r.setting, r.variant): r for r in collect(reduced, log=lambda m: None)}
    setting = ("digits", "mlp", "symmetric", 0.4, "cosine")
    val = load_run(reduced / grid.make_jobs("reduced")[-2].name)
    pick = int(np.argmax(val.series("val_acc")))
    row = next(
        r for r in rows if r["variant"] == "val10" and r["criterion"] == "val" and r["noise"] == "symmetric"
    )
    assert (row["epoch"], row["val_acc"]) == (pick + 1, pytest.approx(val.series("val_acc")[pick]))
    assert row["val_clean_acc"] == pytest.approx(val.series("val_acc_clean")[pick])
    data = heldout.Rows(rows)
    deployed = heldout.deltas(data, "full", "gwa")[setting][0]
    selection = heldout.deltas(data, "full", "gwa", "selection")[setting][0]
    assert deployed == pytest.approx(
        100 * (results[(setting, "full")].test_at["gwa"] - val.series("test_acc")[pick])
    )
    assert selection == pytest.approx(
        100 * (results[(setting, "val10")].test_at["gwa"] - val.series("test_acc")[pick])
    )
    flags = {r["criterion"] for r in rows if r["kind"] == "flag"}
    assert {"window", "lastk", "frac"} <= flags
    truth = next(r["truth"] for r in rows if r["kind"] == "noise_rate" and r["noise"] == "symmetric")
    assert truth == pytest.approx(load_run(reduced / grid.make_jobs("reduced")[-3].name).noise_mask.mean())


def test_the_third_held_out_grid_is_crossed_and_has_a_paper_regime_family():
    jobs = grid.make_jobs("heldout3")
    assert len(jobs) == 4 * 7 * 10 * 3
    assert {j.seed for j in jobs} == set(range(110, 120)) and {j.variant for j in jobs} == {
        "full",
        "val10",
        "val2",
    }
    assert {(j.noise, j.noise_rate) for j in jobs} >= {
        ("instance", 0.2),
        ("instance", 0.4),
        ("asymmetric", 0.2),
    }
    resnet = [j for j in jobs if j.model == "resnet"]
    config = resnet[0].config(grid.Path("/tmp/unused"))
    assert (config.schedule, config.augment, config.optimizer) == ("warmup_cosine", True, "sgd")
    steps = -(-config.num_train // config.batch_size) * config.epochs
    h_longest = max(-(-4000 // 128) * 30, -(-3000 // 128) * 20)  # H1: 4,000 samples x 30 epochs at 128
    assert steps >= 10 * h_longest
    assert resnet[0].name.endswith("_warmup_cosine_seed110_full")
    # the development grids keep their variants (the 2% split is H''s only)
    assert {j.variant for j in grid.make_jobs("full")} == {"full", "val10", "val1"}
    assert grid.variant_of(0.02) == "val2"
