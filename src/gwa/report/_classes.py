"""The report's per-class section: where the negatively aligned samples are, and which classes look swapped.

From the run's per-class evidence (``classes.jsonl``, :class:`gwa.ClassEvidence` per epoch) over the epochs the
noise map reads (:func:`gwa.policy.noise_map_window`): a panel with each given label's share of negatively aligned
samples and the (given label -> predicted class) shares of those samples, and a table of the noise map's swapped
pairs (``summary.json``'s ``noise_estimate``, else recomputed by the core) with their estimated rates, beside the
true flip rates when the run knows its clean labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gwa import policy
from gwa.report import _analysis as analysis
from gwa.report import _html as markup
from gwa.report import _plots as plots


def noise_map_of(run):
    """The run's noise map: ``summary.json``'s ``noise_estimate`` when there, else recomputed; None without
    per-class evidence."""
    estimate = run.summary["noise_estimate"] if run.summary is not None else None
    if isinstance(estimate, dict) and estimate:
        try:
            return policy.NoiseMap.from_dict({k: v for k, v in estimate.items() if k != "description"})
        except ValueError:
            pass  # an unreadable entry: recompute it from the evidence
    evidence = run.class_evidence()
    if evidence is None:
        return None
    return policy.noise_map_of_run(run.metrics, evidence, total_epochs=analysis.planned_epochs(run))


def true_flip_rates(run, num_classes: int) -> np.ndarray | None:
    """``(C, C)`` share of each given label's samples whose clean label is another class; None if unknown."""
    if run.labels is None or run.clean_labels is None:
        return None
    given, clean = np.asarray(run.labels, np.int64), np.asarray(run.clean_labels, np.int64)
    ok = (given >= 0) & (given < num_classes) & (clean >= 0) & (clean < num_classes)
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (given[ok], clean[ok]), 1.0)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    np.fill_diagonal(rates, 0.0)
    return rates


def plot_class_panel(evidence, names: list[str]):
    """Left: each given label's negative share; right: where its negatively aligned samples are predicted."""
    plt = plots.pyplot()
    count = np.sum([e.count for e in evidence], axis=0).astype(np.float64)
    negative = np.sum([e.negative_confusion for e in evidence], axis=0).astype(np.float64)
    share = negative.sum(axis=1) / np.maximum(count, 1.0)
    cells = negative / np.maximum(count, 1.0)[:, None]
    np.fill_diagonal(cells, np.nan)  # predicted as their own label: not a swap
    c = len(names)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.9 + 0.42 * c + 1.5), width_ratios=(1, 1.3))
    left.barh(np.arange(c), share, color=plots.COLORS["noisy"], alpha=0.8)
    left.set_yticks(np.arange(c), names)
    left.invert_yaxis()
    left.set_xlabel("share of the class's samples negatively aligned")
    left.set_title("Negatively aligned, per given label")
    image = right.imshow(cells, cmap="Reds", vmin=0, vmax=max(float(np.nanmax(cells)), 1e-3) if c else 1)
    right.set_xticks(np.arange(c), names, rotation=45, ha="right")
    right.set_yticks(np.arange(c), names)
    right.set_xlabel("predicted class")
    right.set_ylabel("given label")
    right.set_title("Negatively aligned samples: given label -> prediction")
    fig.colorbar(image, ax=right, fraction=0.046, pad=0.04, label="share of the given label's samples")
    fig.tight_layout()
    return fig


def class_section(run, out: Path) -> str | None:
    """The section's HTML (with its figure written to ``out``), or None when the run holds no class evidence."""
    evidence = run.class_evidence()
    if evidence is None:
        return None
    noise_map = noise_map_of(run)
    c = evidence[0].num_classes
    config_names = run.config.get("class_names")
    names = (
        [str(n) for n in config_names]
        if isinstance(config_names, list) and len(config_names) == c
        else [str(k) for k in range(c)]
    )
    window = noise_map.window if noise_map is not None and noise_map.window else (1, len(evidence))
    chosen = evidence[window[0] - 1 : window[1]]
    png = plots.save_png(plot_class_panel(chosen, names), out / "classes.png")
    body = markup.img(png, alt="per-class negative alignment") + (
        f"<p class='muted'>Summed over epochs {window[0]}–{window[1]} (after the warm-up through gwa's choice past "
        "the early transient: the epochs the noise map reads). A flipped label is negatively aligned and predicted "
        "as its true class until the network memorises it.</p>"
    )
    body += swapped_table(run, noise_map, names)
    return markup.section("classes", "Per-class evidence: which classes look swapped", body)


def swapped_table(run, noise_map, names: list[str]) -> str:
    """The noise map's overall rate and swapped pairs, beside the truth when the run knows it."""
    if noise_map is None:
        return "<p>No noise map (the run's per-class evidence does not cover every epoch).</p>"
    truth = true_flip_rates(run, len(names))
    actual = None if run.noise_mask is None else float(np.asarray(run.noise_mask, bool).mean())
    if not noise_map.reliable:  # an abstaining map shows no estimate (issue 18)
        return f"<p>Noise map: not enough evidence yet ({markup.esc(noise_map.reason)}).</p>"
    head = f"<p>Estimated share of labels that look wrong: <b>{noise_map.rate:.1%}</b>"
    head += "" if actual is None else f" (actual: {actual:.1%})"
    head += f"; {noise_map.concentration:.0%} of it lies in the pairs below.</p>"
    if not noise_map.pairs:
        return head + "<p>No class pair stands out: the noise (if any) looks spread over the classes.</p>"
    headers = ["given label", "likely true class", "estimated rate"]
    if truth is not None:
        headers.append("actual rate")
    rows = []
    for given, likely, rate in noise_map.pairs:
        row = [names[given], names[likely], f"{rate:.1%}"]
        if truth is not None:
            row.append(f"{truth[given, likely]:.1%}")
        rows.append(row)
    return head + markup.table(headers, rows, numeric=set(range(2, len(headers))))
