"""gwa report end to end on fixture runs: files, the HTML's structure, embedded PNGs, partial runs, errors."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import gwa
from gwa.report import write_report
from gwa.report._html import fmt
from gwa.rundir import RunDirError, load_run

SECTIONS = ["config", "summary", "curves", "distribution", "datamap", "negative"]
FIGURES = ["curves.png", "alignment_distribution.png", "data_map.png"]


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.images, self.tags, self.rows, self.text = [], [], [], [], []
        self._table = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        if tag == "tr" and self.sections and self.sections[-1] == "negative":
            self.rows.append([])
        if tag == "td" and self.sections and self.sections[-1] == "negative":
            self.rows[-1].append("")

    def handle_data(self, data):
        self.text.append(data)
        if self.rows and self.sections[-1] == "negative" and self.rows[-1]:
            self.rows[-1][-1] += data


def parse(path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def decode_png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    img = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True)))
    img.load()
    assert img.format == "PNG"
    return img


def test_report_end_to_end(run_dir, tmp_path, commands, capsys):
    out = tmp_path / "out"
    assert commands(["report", str(run_dir), "--out", str(out), "--top-samples", "12"]) == 0
    assert f"report written to {out / 'report.html'}" in capsys.readouterr().out
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = parse(out / "report.html")
    assert page.sections == SECTIONS
    # Self-contained: every image is an embedded PNG, nothing is fetched (the one script, sorting a table, is
    # inline).
    assert not [t for t, a in page.tags if t in ("link", "iframe") or (t == "script" and "src" in a)]
    assert all(not str(v).startswith(("http:", "https:", "//")) for _, a in page.tags for v in a.values())
    figures = [decode_png(a["src"]) for a in page.images if a["class"] == "figure"]
    thumbs = [decode_png(a["src"]) for a in page.images if a["class"] == "thumb"]
    assert len(figures) == 3 and all(min(f.size) > 300 for f in figures)
    assert len(thumbs) == 12 and all(t.size == (8, 8) for t in thumbs)
    # The embedded figures are the files written next to the page.
    curves = next(a["src"] for a in page.images if a["alt"] == "GWA curves")
    assert base64.b64decode(curves.split(",", 1)[1]) == (out / "curves.png").read_bytes()


def test_report_content_matches_run(run_dir, tmp_path):
    run = load_run(run_dir)
    page = parse(write_report(run_dir, tmp_path / "o", top_samples=10))
    text = "".join(page.text)
    assert (
        "datasetdigits" in text
        and "modelmlp" in text
        and "noisesymmetric" in text
        and "noise_rate0.3" in text
    )
    assert "flipped labels72 (30.0% of the training set)" in text
    # Criteria from summary.json with their test accuracy; the default one is marked.
    for name, entry in run.summary["criteria"].items():
        label = f"{name} (default)" if name == "gwa" else name
        assert f"{label}{entry['epoch']}{entry['test_acc']:.3f}" in text
        # Then val acc, gwa (the default value), the paper's GWA and the mean alignment at that epoch.
        row = run.metrics[entry["epoch"] - 1]
        cells = [fmt(row[k]) for k in ("test_acc", "val_acc", "gwa", "gwa_paper", "align_mean")]
        assert f"{label}{entry['epoch']}{''.join(cells)}" in text
    # The guard sentence names exactly the flagged epochs of metrics.jsonl (2-6 in this fixture).
    flagged = [r["epoch"] for r in run.metrics if r["gwa_paper_flagged"]]
    assert flagged == [2, 3, 4, 5, 6]
    assert {r["gwa_guard"] for r in run.metrics if r["gwa_paper_flagged"]} == {"kurtosis_pole"}
    assert "GWA guard. The paper's GWA is not trusted at epoch(s) 2–6 (5 of 12)" in text
    assert "Here: kurtosis pole at 2–6." in text
    # Most negative samples: ranked by mean alignment over seen epochs, checked against a brute-force mean.
    matrix = np.stack([np.load(run_dir / "scores" / f"alignment_{e:04d}.npy") for e in run.epochs]).astype(
        float
    )
    means = np.array([np.mean(c[np.isfinite(c)]) for c in matrix.T])
    expected = np.argsort(means, kind="stable")[:10]
    rows = [r for r in page.rows if r]
    assert [int(r[1]) for r in rows] == expected.tolist()
    assert [float(r[4]) for r in rows] == pytest.approx(means[expected], abs=5e-4)
    noisy = run.noise_mask[expected]
    assert [r[7] for r in rows] == ["yes" if m else "no" for m in noisy]


def test_signal_previews_become_sparklines(tmp_path, simulate_run):
    path = tmp_path / "sig"
    simulate_run(path, previews="signal", n=60, epochs=5)
    html = write_report(path, top_samples=5).read_text()
    assert html.count("<polyline") == 5
    assert (path / "report" / "report.html").exists()  # default --out is RUN/report


def test_partial_run_without_summary_or_mask(tmp_path, simulate_run, commands, capsys):
    path = tmp_path / "partial"
    simulate_run(path, complete=False, summary=False, previews=None, n=60, epochs=4)
    (path / "noise_mask.npy").unlink()
    assert commands(["report", str(path), "--out", str(tmp_path / "o"), "--top-samples", "3"]) == 0
    assert "note: This run is not complete (status 'running')" in capsys.readouterr().out
    page = parse(tmp_path / "o" / "report.html")
    text = " ".join(page.text)
    assert "not complete (status 'running')" in text and "4 epoch(s) logged so far" in text
    # A run without a noise mask (every real dataset) gets no warning about it and no "mislabeled?" column.
    assert "recomputed from metrics.jsonl" in text and "noise_mask" not in text and "mislabeled?" not in text
    assert page.sections == SECTIONS
    rows = [r for r in page.rows if r]
    assert len(rows) == 3 and all(
        len(r) == 8 for r in rows
    )  # rank, id, label, clean label, 3 alignment, loss


def test_metrics_only_run_reports_curves_and_guard_reasons(tmp_path, write_run):
    rows = [
        {"gwa": 0.02 * e, "gwa_paper": 0.1 * e, "align_mean": 0.05 * e, "test_acc": 0.5} for e in range(1, 6)
    ]
    rows[1]["gwa_paper"] = None
    rows[2].update(
        gwa_guard="constant_scores",
        gwa_guard_message="constant scores: kurtosis undefined",
        gwa_paper_flagged=True,
    )
    rows[4].update(
        gwa_paper=-40.0,
        gwa_guard="kurtosis_pole",
        gwa_guard_message="kurtosis pole: excess kurtosis -1.3 + beta 1.2 = -0.1 <= 0.1",
    )
    page = parse(write_report(write_run(tmp_path / "m", metrics=rows), tmp_path / "o"))
    assert page.sections == ["config", "summary", "curves"]
    text = "".join(page.text)
    assert "stored no per-sample alignment scores" in text
    assert "not trusted at epoch(s) 2–3, 5 (3 of 5)" in text
    assert "Here: no finite GWA logged at 2; constant scores at 3; kurtosis pole at 5." in text


def test_errors(tmp_path, run_dir, commands, capsys, write_run):
    with pytest.raises(RunDirError, match=r"does not exist"):
        write_report(tmp_path / "missing")
    cfg = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**cfg, "format": 3}))
    with pytest.raises(RunDirError, match=r"has run-directory format 3; this gwa reads formats 1, 2\."):
        write_report(run_dir)
    assert commands(["report", str(run_dir)]) == 2
    assert "gwa report: error:" in capsys.readouterr().err
    (run_dir / "config.json").write_text(json.dumps(cfg))
    (run_dir / "scores" / "alignment_0003.npy").unlink()
    with pytest.raises(RunDirError, match=r"no 'alignment' scores for epoch 3"):
        write_report(run_dir, tmp_path / "o")
    empty = write_run(tmp_path / "e", metrics=[], num_samples=3)
    with pytest.raises(RunDirError, match=r"no finished epoch yet"):
        write_report(empty)
    with pytest.raises(ValueError, match=r"Expected `top_samples` to be an integer >= 0; got -1"):
        write_report(run_dir, top_samples=-1)


# ---------------------------------------------------------------------------------------------- trust diagnostics
# The docstring example of gwa.policy.diagnose: the alignment peaks at epoch 3 while the model still fits 50%.
DIAGNOSE_GWA = [0.01, 0.05, 0.09, 0.06, 0.04, 0.03, 0.03, 0.03, 0.03, 0.03]
DIAGNOSE_ACC = [0.2, 0.4, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99]


def test_report_shows_the_diagnostics_recomputed_from_the_rows(tmp_path, write_run):
    rows = [{"gwa": g, "train_acc": a} for g, a in zip(DIAGNOSE_GWA, DIAGNOSE_ACC, strict=True)]
    expected = gwa.policy.diagnose([{"epoch": e, **r} for e, r in enumerate(rows, start=1)])
    assert [d.code for d in expected] == ["early_transient"]
    run = write_run(tmp_path / "run", metrics=rows)
    page = write_report(run).read_text()
    assert "How far to trust the choice" in page and "early_transient" in page
    assert "keep a small validation split for this run" in page and "No diagnostic fired." not in page


def test_report_reads_the_summarys_diagnostics_escaped(tmp_path, write_run):
    rows = [{"gwa": g, "train_acc": a} for g, a in zip(DIAGNOSE_GWA, DIAGNOSE_ACC, strict=True)]
    stored = [{"code": "made_up", "message": "a <b>bold</b> claim", "action": "do x & y", "evidence": {}}]
    summary = {"default": "gwa", "criteria": {"gwa": {"epoch": 3}}, "diagnostics": stored}
    page = write_report(write_run(tmp_path / "a", metrics=rows, summary=summary)).read_text()
    assert "made_up" in page and "a &lt;b&gt;bold&lt;/b&gt; claim" in page and "do x &amp; y" in page
    assert "early_transient" not in page  # the stored list is shown as it is, not recomputed
    summary["diagnostics"] = []
    page = write_report(write_run(tmp_path / "b", metrics=rows, summary=summary)).read_text()
    assert "No diagnostic fired." in page
