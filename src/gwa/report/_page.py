"""What ``gwa report`` writes: figures (PNG) and one self-contained HTML page for a run directory.

The page has a header (run config, each stop criterion's epoch and test accuracy, the GWA guard explained when
it fired, how far to trust the default criterion's choice: :func:`gwa.policy.diagnose`), the GWA and mean-alignment curves against accuracy, the per-epoch distribution of per-sample
alignment, the per-class evidence (which classes look swapped, :mod:`gwa.report._classes`), a data map
(per-sample mean vs. std of alignment over epochs) and the most negatively aligned samples with thumbnails of
their inputs. Images are embedded as base64 data URIs; the page loads nothing.
Interrupted runs are reported as far as they got, with a note.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gwa import policy
from gwa.report import _analysis as analysis
from gwa.report import _html as markup
from gwa.report import _plots as plots
from gwa.rundir import write_atomic

DEFAULT_TOP_SAMPLES = 20
#: Config entries shown in the run table when present (``gwa train`` writes the first ones, the callbacks and
#: ``RunRecorder`` the framework, head, monitor and max_epochs).
HEADER_KEYS = (
    "framework",
    "dataset",
    "model",
    "head",
    "noise",
    "noise_rate",
    "epochs",
    "max_epochs",
    "monitor",
    "patience",
    "optimizer",
    "lr",
    "batch_size",
    "seed",
    "world_size",
    "backend",
)
HIDDEN_KEYS = {"format", "gwa_version", "status"}


def write_report(run_dir, out=None, *, top_samples: int = DEFAULT_TOP_SAMPLES) -> Path:
    """Write the figures and ``report.html`` for a run directory.

    Args:
        run_dir: the run directory (or a loaded :class:`gwa.rundir.Run`).
        out: output directory (default ``RUN/report``); created if needed.
        top_samples: rows in the table of most negatively aligned samples.

    Returns:
        The path of the HTML page.

    Raises:
        gwa.rundir.RunDirError: not a run directory, another format version, no finished epoch, or per-sample
            scores missing for a logged epoch.
    """
    if isinstance(top_samples, bool) or not (isinstance(top_samples, int) and top_samples >= 0):
        raise ValueError(f"Expected `top_samples` to be an integer >= 0; got {top_samples!r}.")
    run = analysis.open_run(run_dir)
    analysis.require_epochs(run)
    out = Path(out) if out is not None else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    choices = list(analysis.chosen_epochs(run).values())
    notes = analysis.run_notes(run)
    epochs = np.asarray(run.epochs)
    gwa_paper, guarded = analysis.gwa_paper_curve(run)

    subtitle = (
        f"{run.path.resolve()} · {len(epochs)} epoch(s) · {int(run.config.get('num_samples', 0))} "
        f"training samples · gwa {run.config.get('gwa_version')}"
    )
    parts = [f"<h1>gwa report: {markup.esc(run.name)}</h1>", f'<p class="muted">{markup.esc(subtitle)}</p>']
    parts += [f'<div class="note">{markup.esc(n)}</div>' for n in notes]
    parts.append(markup.section("config", "Run", _config_table(run)))
    parts.append(markup.section("summary", "Stop criteria", _summary_block(run, choices, guarded)))

    accuracies = {k: run.series(k) for k in ("test_acc", "val_acc")}
    held_out = any(np.isfinite(v).any() for v in accuracies.values())
    if not held_out:  # a run without test or validation accuracy (a callback's): the training accuracy
        accuracies["train_acc"] = run.series("train_acc")
    curves = plots.plot_curves(
        epochs,
        gwa_paper,
        guarded,
        analysis.mean_alignment_curve(run),
        accuracies,
        choices,
        gwa=run.series("gwa"),
    )
    png = plots.save_png(curves, out / "curves.png")
    caption = "Dashed vertical lines: each criterion's chosen epoch."
    if guarded.any():
        caption += " Red crosses and shading: epochs whose GWA (paper) is guarded (see the GWA guard above)."
    if not held_out:
        caption += (
            " This run logged no test or validation accuracy; the accuracy axis shows the training accuracy"
            " (at each sample's forward pass) where it was recorded."
        )
    parts.append(
        markup.section(
            "curves",
            "GWA and mean alignment against accuracy",
            markup.img(png, alt="GWA curves") + f"<p class='muted'>{markup.esc(caption)}</p>",
        )
    )

    from gwa.report._classes import class_section

    per_class = class_section(run, out)  # None without classes.jsonl
    if per_class is not None:
        parts.append(per_class)
    if analysis.has_scores(run):
        parts += _sample_sections(run, out, choices, top_samples)
    else:
        parts.append(
            '<div class="note">This run stored no per-sample alignment scores, so the distribution, '
            "the data map and the sample table are left out.</div>"
        )
    page = markup.page(f"gwa report: {run.name}", "\n".join(parts))
    html_path = out / "report.html"
    write_atomic(html_path, lambda fh: fh.write(page.encode("utf-8")))  # an old report survives a crash
    return html_path


def _config_value(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_config_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _config_table(run) -> str:
    """The settings that identify a run and what it recorded, then every config entry in a collapsed block."""
    config, summary = run.config, run.summary
    rows: list[list[str | int]] = [
        [k, _config_value(config[k])] for k in HEADER_KEYS if k in config and config[k] is not None
    ]
    rows.append(["training samples", int(config.get("num_samples", 0))])
    planned = config.get("epochs") or config.get("max_epochs")
    rows.append(["epochs run", f"{len(run.epochs)} of {planned}" if planned else len(run.epochs)])
    stopped, decision = (
        (summary["stopped_epoch"], summary["decision"]) if summary is not None else (None, None)
    )
    if stopped is not None:
        rows.append(["stopped early", f"at epoch {stopped}: {decision or ''}".rstrip(": ")])
    signals = [s for s in run.signals() if s != analysis.ALIGNMENT]
    rows.append(
        [
            "per-sample signals",
            ", ".join(signals)
            if signals
            else "alignment only"
            if analysis.has_scores(run)
            else "none stored",
        ]
    )
    if run.labels is not None:
        known = int((run.labels >= 0).sum())
        rows.append(["labels", "stored" if known == run.labels.size else f"stored for {known} seen samples"])
    noise, rate = (summary["noise"], summary["realised_noise_rate"]) if summary is not None else (None, None)
    if rate is not None:
        flipped = f"{(noise or {}).get('num_noisy', '?')} ({float(rate):.1%} of the training set)"
        rows.append(["flipped labels", flipped])
    elif run.noise_mask is None:
        rows.append(["flipped labels", "not known (no noise mask: a real dataset)"])
    rest = [[k, _config_value(v)] for k, v in config.items() if k not in HIDDEN_KEYS]
    return (
        markup.table(["setting", "value"], rows)
        + f"<details><summary>full configuration ({len(rest)} entries)</summary>"
        f"{markup.table(['key', 'value'], rest)}</details>"
    )


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 5] -> '1–3, 5'."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}–{v}")
            start = None
    return ", ".join(out)


def _summary_block(run, choices, guarded) -> str:
    source = "summary.json" if choices and choices[0].source == "summary" else "recomputed from metrics.jsonl"
    default = run.summary["default"] if run.summary is not None else policy.DEFAULT_CRITERION

    def at(key, choice):
        return markup.fmt(analysis.metric_at(run, key, choice.epoch))

    rows = [
        [
            f"{c.criterion} (default)" if c.criterion == default else c.criterion,
            c.epoch,
            markup.fmt(c.test_acc),
            at("val_acc", c),
            at("gwa", c),
            at("gwa_paper", c),
            at("align_mean", c),
        ]
        for c in choices
    ]
    headers = ["criterion", "epoch", "test acc", "val acc", "gwa", "GWA (paper)", "mean alignment"]
    # A run that measured no test (or validation) accuracy, as a callback's usually, gets no empty column.
    empty = {k for k in (2, 3) if rows and all(r[k] == "–" for r in rows)}
    headers = [h for k, h in enumerate(headers) if k not in empty]
    rows = [[c for k, c in enumerate(r) if k not in empty] for r in rows]
    body = markup.table(headers, rows, numeric=set(range(1, len(headers))))
    body += f"<p class='muted'>Chosen epochs from {source}.</p>"
    if guarded.any():
        body += _guard_sentence(run, guarded)
    return body + _trust_block(run)


def _trust_block(run) -> str:
    """How far to trust the default criterion's choice: each diagnostic (gwa.policy.diagnose) with its action."""
    found = analysis.diagnostics(run)
    if not found:
        return "<h3>How far to trust the choice</h3><p>No diagnostic fired.</p>"
    items = "".join(
        f"<li><b>{markup.esc(d.get('code'))}</b>{' (info)' if d.get('level') == 'info' else ''}: "
        f"{markup.esc(d.get('message'))}. "
        f"<i>Action:</i> {markup.esc(d.get('action'))}.</li>"
        for d in found
    )
    return f"<h3>How far to trust the choice</h3><ul>{items}</ul>"


def _guard_sentence(run, guarded) -> str:
    """One sentence on why some epochs' GWA is not trusted, then which epochs for which reason."""
    from gwa._summary import MIN_DENOMINATOR, PAPER_BETA

    reasons = analysis.guard_reasons(run)
    by_reason: dict[str, list[int]] = {}
    for epoch, g in zip(run.epochs, guarded, strict=True):
        if g:  # guarded without a logged reason means no finite GWA (see gwa_paper_curve)
            code = reasons[epoch][0] if epoch in reasons else None
            why = (
                analysis.GUARD_LABELS.get(code, "flagged by the trainer") if code else "no finite GWA logged"
            )
            by_reason.setdefault(why, []).append(int(epoch))
    flagged = sorted(e for epochs in by_reason.values() for e in epochs)
    detail = "; ".join(f"{why} at {_ranges(epochs)}" for why, epochs in by_reason.items())
    return (
        '<div class="guard"><b>GWA guard.</b> '
        + markup.esc(
            f"The paper's GWA is not trusted at epoch(s) {_ranges(flagged)} ({len(flagged)} of "
            f"{len(run.epochs)}): the 'gwa_paper' criterion takes such values as they are, gwa's default "
            f"('gwa', mean / (excess kurtosis + 3)) has no pole. The usual cause is the kurtosis pole: when the alignment "
            f"scores are flat or bimodal (as label noise makes them), excess kurtosis + {PAPER_BETA:g} "
            f"falls to {MIN_DENOMINATOR:g} or below and the paper's formula divides by almost zero or flips "
            f"sign. Here: {detail}."
        )
        + "</div>"
    )


def _thumbnail(run, sample_id: int, index: dict) -> str:
    k = index.get(int(sample_id))
    if k is None:
        return ""
    x = run.previews[k]
    if x.ndim == 1:
        return markup.sparkline_svg(x)
    return markup.img(plots.image_thumbnail(x), alt=f"sample {sample_id}", cls="thumb")


def _sample_sections(run, out: Path, choices, top_samples: int) -> list[str]:
    matrix = analysis.alignment_matrix(run)
    stats = analysis.sample_stats(matrix)
    mask = run.noise_mask.astype(bool) if run.noise_mask is not None else None
    parts = []

    marks: dict[int, str] = {}
    for c in choices:
        marks[c.epoch] = f"{marks[c.epoch]}, {c.criterion}" if c.epoch in marks else c.criterion
    show = plots.pick_epochs(run.epochs, extra=[c.epoch for c in choices if c.criterion == "gwa"])
    png = plots.save_png(
        plots.plot_alignment_distribution(run.epochs, matrix, mask, show_epochs=show, marks=marks),
        out / "alignment_distribution.png",
    )
    parts.append(
        markup.section(
            "distribution",
            "Per-sample alignment by epoch",
            markup.img(png, alt="alignment distribution") + _separation_note(stats, mask),
        )
    )

    png = plots.save_png(plots.plot_data_map(stats.mean, stats.std, mask), out / "data_map.png")
    parts.append(
        markup.section(
            "datamap",
            "Data map",
            markup.img(png, alt="data map")
            + "<p class='muted'>Each point is a training sample: its mean alignment over the epochs "
            "where it was seen against how much that alignment varied. Samples that stay below "
            "zero pull the head's weights the other way: often mislabeled or atypical.</p>",
        )
    )

    seen_ids = np.flatnonzero(stats.seen)
    order = seen_ids[np.argsort(stats.mean[seen_ids], kind="stable")][:top_samples]
    index = {int(i): k for k, i in enumerate(run.preview_ids)} if run.previews is not None else {}
    # Each column only when the run has it: a real dataset has no clean labels and no noise mask.
    columns: list[tuple[str, bool, str | None]] = [("rank", True, None), ("sample id", True, None)]
    pred = analysis.last_seen_signal(run, "pred")
    loss = analysis.last_seen_signal(run, "loss")
    columns += [
        ("label", False, None),
        ("clean label", False, None),
        ("prediction", False, None),
        ("mean alignment", True, None),
        ("last alignment", True, None),
        ("epochs < 0", True, None),
        ("mislabeled?", False, "raw"),
        ("last loss", True, None),
        ("input", False, "raw"),
    ]
    keep = {
        "label": run.labels is not None,
        "clean label": run.clean_labels is not None,
        "prediction": pred is not None,
        "last loss": loss is not None,
        "mislabeled?": mask is not None,
        "input": bool(index),
    }
    columns = [c for c in columns if keep.get(c[0], True)]
    rows = []
    for rank, i in enumerate(order, 1):
        cell = {
            "rank": rank,
            "sample id": int(i),
            "label": _label(run.labels, i),
            "clean label": _label(run.clean_labels, i),
            "prediction": "–" if pred is None or not np.isfinite(pred[i]) else int(pred[i]),
            "last loss": markup.fmt(None if loss is None else loss[i]),
            "mean alignment": markup.fmt(stats.mean[i]),
            "last alignment": markup.fmt(stats.last[i]),
            "epochs < 0": f"{stats.frac_negative[i]:.0%}",
            "mislabeled?": "–" if mask is None else ('<span class="noisy">yes</span>' if mask[i] else "no"),
            "input": _thumbnail(run, i, index),
        }
        rows.append([cell[name] for name, _, _ in columns])
    table = markup.table(
        [name for name, _, _ in columns],
        rows,
        numeric={k for k, c in enumerate(columns) if c[1]},
        raw={k for k, c in enumerate(columns) if c[2] == "raw"},
        sortable=True,
    )
    parts.append(
        markup.section(
            "negative",
            f"The {len(order)} most negatively aligned samples",
            "<p class='muted'>Ranked by mean alignment over the epochs where each sample was seen (click a "
            "column header to sort by it). Export a ranked list with <code>gwa flag</code>.</p>" + table,
        )
    )
    return parts


def _label(labels, i) -> str | int:
    return "–" if labels is None or labels[i] < 0 else int(labels[i])


def _separation_note(stats, mask) -> str:
    if mask is None or not mask.any() or mask.all():
        return ""
    seen = stats.seen
    try:
        from sklearn.metrics import roc_auc_score
    except ModuleNotFoundError:  # the plot extra alone has no scikit-learn; the note is optional
        return ""

    auroc = roc_auc_score(mask[seen], -stats.mean[seen])
    return (
        f"<p class='muted'>Mean alignment over epochs separates flipped from clean labels with AUROC "
        f"{auroc:.3f} ({int(mask[seen].sum())} flipped of {int(seen.sum())} samples seen).</p>"
    )
