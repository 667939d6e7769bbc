"""Figures of a run directory (matplotlib, Agg backend, imported on first use).

Each ``plot_*`` function takes analysis arrays (never a model) and returns a matplotlib ``Figure``; callers
save
it with :func:`save_png` or :func:`png_bytes`. Colours are shared by every figure: clean samples blue,
mislabeled samples orange, GWA black, test accuracy green, validation accuracy purple, guarded epochs red.
"""

from __future__ import annotations

import io
import math

import numpy as np

COLORS = {
    "clean": "#4C72B0",
    "noisy": "#DD8452",
    "all": "#4C72B0",
    "gwa": "#222222",
    "gwa_paper": "#8c6d31",
    "align": "#4C72B0",
    "test_acc": "#55A868",
    "val_acc": "#8172B3",
    "train_acc": "#937860",
    "guard": "#C44E52",
    "zero": "#999999",
}
#: Stop criteria's markers: the GWA criterion in GWA's colour, the others in colours no curve uses.
CRITERION_COLORS = [
    "#CCB974",
    "#64B5CD",
    "#DA8BC3",
    "#937860",
    "#8C8C8C",
    "#2A9D8F",
    "#B5179E",
    "#9DA33A",
    "#1D3557",
]
DPI = 130


def pyplot():
    """matplotlib.pyplot on the Agg backend, with a clear error when matplotlib is missing."""
    try:
        import matplotlib
    except ModuleNotFoundError as exc:  # pragma: no cover - matplotlib is installed in the test env
        raise ModuleNotFoundError(
            "gwa's report figures need matplotlib: pip install 'gwa-alignment[plot]'", name="matplotlib"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "axes.spines.top": False,
            "figure.dpi": DPI,
        }
    )
    return plt


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def save_png(fig, path) -> bytes:
    """Write the figure to ``path`` as PNG and return the bytes (for embedding); closes it."""
    from gwa.rundir import write_atomic

    data = png_bytes(fig)
    write_atomic(path, lambda fh: fh.write(data))  # never through a planted link, never a torn file
    return data


def _limits(values: np.ndarray, *, pad: float = 0.12) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo or max(abs(hi), 1e-3)
    return lo - pad * span, hi + pad * span


def _accuracy_axis(ax, epochs, accuracies: dict[str, np.ndarray], ms: float = 3):
    """A right-hand twin axis with the accuracy curves; returns (twin, handles)."""
    twin = ax.twinx()
    handles = []
    labels = (
        ("test_acc", "test accuracy"),
        ("val_acc", "validation accuracy"),
        ("train_acc", "training accuracy"),
    )
    for key, label in labels:
        values = accuracies.get(key)
        if values is not None and np.isfinite(values).any():
            (h,) = twin.plot(
                epochs,
                values,
                color=COLORS[key],
                lw=1.6,
                ls={"val_acc": "--", "train_acc": ":"}.get(key, "-"),
                marker="s",
                ms=ms,
                label=label,
            )
            handles.append(h)
    twin.set_ylabel("accuracy")
    twin.spines["top"].set_visible(False)
    return twin, handles


def _mark_criteria(axes, choices) -> list:
    from matplotlib.lines import Line2D

    handles = []
    others = iter(CRITERION_COLORS * 4)
    sharing = [sum(c.epoch == choice.epoch for c in choices) for choice in choices]
    drawn: dict[int, int] = {}
    for choice, m in zip(choices, sharing, strict=True):
        color = COLORS["gwa"] if choice.criterion == "gwa" else next(others)
        acc = "" if math.isnan(choice.test_acc) else f", test {choice.test_acc:.3f}"
        # Criteria that chose the same epoch get interleaved dashes, so every colour stays visible.
        n = drawn[choice.epoch] = drawn.get(choice.epoch, -1) + 1
        style = (4 * n, (4, 4 * (m - 1))) if m > 1 else (0, (4, 2))
        for ax in axes:
            ax.axvline(choice.epoch, color=color, lw=1.5, ls=style, alpha=0.95, zorder=1)
        # A plain dashed proxy for the legend: the interleaved pattern would show mostly gaps there.
        handles.append(
            Line2D(
                [], [], color=color, lw=1.5, ls="--", label=f"{choice.criterion}: epoch {choice.epoch}{acc}"
            )
        )
    return handles


def plot_curves(epochs, gwa_paper, guarded, align_mean, accuracies: dict[str, np.ndarray], choices, gwa=None):
    """The paper's GWA (verbatim), mean alignment and gwa's default value over epochs, against accuracy, with each
    criterion's epoch marked.

    Args:
        epochs: ``(E,)`` epoch numbers.
        gwa_paper: ``(E,)`` the paper's GWA as logged (``gwa_paper``; may be huge or infinite at guarded epochs).
        guarded: ``(E,)`` bool, True where the GWA value is not to be trusted (kurtosis pole).
        align_mean: ``(E,)`` mean per-sample alignment.
        accuracies: ``{"test_acc": (E,), "val_acc": (E,), "train_acc": (E,)}``; missing or all-NaN curves are
            left out.
        choices: :class:`gwa.report._analysis.Choice` objects to mark as vertical lines.
        gwa: ``(E,)`` gwa's default value (``gwa``: mean / Pearson kurtosis), drawn with the mean alignment.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = np.asarray(epochs)
    gwa_paper, guarded = np.asarray(gwa_paper, dtype=np.float64), np.asarray(guarded, dtype=bool)
    fig, (ax_gwa, ax_mean) = plt.subplots(2, 1, figsize=(9, 7.2), sharex=True, layout="constrained")

    # Markers shrink as epochs grow, so long runs stay legible.
    ms = 4 if epochs.size <= 30 else 2 if epochs.size <= 100 else 0
    trusted = np.where(guarded, np.nan, gwa_paper)
    (h_gwa,) = ax_gwa.plot(
        epochs,
        trusted,
        color=COLORS["gwa_paper"],
        lw=2,
        marker="o",
        ms=ms,
        label="GWA, paper's Eq. 2 (trusted epochs)",
    )
    lo, hi = _gwa_limits(trusted, gwa_paper[guarded])
    handles = [h_gwa]
    if guarded.any():
        # Guarded values can sit anywhere near the pole: far ones are drawn at the edge, with their value.
        g_epochs, g_values = epochs[guarded], gwa_paper[guarded]
        shown = np.clip(np.nan_to_num(g_values, nan=0.0, posinf=hi, neginf=lo), lo, hi)
        handles.append(
            ax_gwa.scatter(
                g_epochs,
                shown,
                marker="X",
                s=55 if ms == 4 else 20,
                color=COLORS["guard"],
                zorder=4,
                clip_on=False,
                label="GWA at guarded epochs (kurtosis pole; far values at the edge)",
            )
        )
        span = hi - lo
        gap = max(1.0, epochs.size / 12)  # labels closer than `gap` epochs would overlap
        last_label: dict[bool, float] = {}
        for e, v, y in zip(g_epochs, g_values, shown, strict=True):
            if not (lo <= v <= hi) and e - last_label.get(y >= hi, -np.inf) >= gap:
                last_label[y >= hi] = e
                ax_gwa.annotate(
                    f"{v:.3g}",
                    (e, y - 0.07 * span if y >= hi else y + 0.04 * span),
                    ha="center",
                    fontsize=7,
                    color=COLORS["guard"],
                )
            ax_gwa.axvspan(e - 0.5, e + 0.5, color=COLORS["guard"], alpha=0.08, lw=0)
    ax_gwa.set_ylim(lo, hi)
    ax_gwa.axhline(0, color=COLORS["zero"], lw=0.8)
    ax_gwa.set_ylabel("paper: mean / (excess kurtosis + 1.2)")
    ax_gwa.set_title("Gradient-weight alignment and accuracy over training")
    _, acc_handles = _accuracy_axis(ax_gwa, epochs, accuracies, ms=ms * 0.75)

    (h_mean,) = ax_mean.plot(
        epochs, align_mean, color=COLORS["align"], lw=2, marker="o", ms=ms, label="mean alignment"
    )
    mean_handles = [h_mean]
    if gwa is not None and np.isfinite(np.asarray(gwa, dtype=np.float64)).any():
        (h_default,) = ax_mean.plot(
            epochs,
            gwa,
            color=COLORS["gwa"],
            lw=2,
            marker="s",
            ms=ms,
            label="gwa (default): mean / (excess kurtosis + 3)",
        )
        mean_handles.append(h_default)
    ax_mean.axhline(0, color=COLORS["zero"], lw=0.8)
    ax_mean.set_ylabel("mean alignment, gwa")
    ax_mean.set_xlabel("epoch")
    ax_mean.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax_mean.set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)
    _accuracy_axis(ax_mean, epochs, accuracies, ms=ms * 0.75)
    crit_handles = _mark_criteria([ax_gwa, ax_mean], choices)
    handles += [*mean_handles, *acc_handles, *crit_handles]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    return fig


def _gwa_limits(trusted: np.ndarray, guarded_values: np.ndarray) -> tuple[float, float]:
    """Axis limits from the trusted GWA values, widened for guarded ones that are not far out."""
    if not np.isfinite(trusted).any():
        trusted = guarded_values[np.isfinite(guarded_values)]
        trusted = np.clip(trusted, *np.percentile(trusted, [10, 90])) if trusted.size else trusted
    lo, hi = _limits(np.append(trusted, 0.0))
    span = hi - lo
    near = guarded_values[
        np.isfinite(guarded_values) & (guarded_values > lo - span) & (guarded_values < hi + span)
    ]
    return _limits(np.concatenate([trusted, near, [0.0]]))


def pick_epochs(epochs, *, max_rows: int = 7, extra=()) -> list[int]:
    """Up to ``max_rows`` epochs spread evenly from first to last, plus the ``extra`` (e.g. chosen) ones."""
    epochs = list(epochs)
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, min(max_rows, len(epochs)))).astype(int))
    picked = {epochs[i] for i in idx} | {e for e in extra if e in epochs}
    return sorted(picked)


def plot_alignment_distribution(
    epochs, matrix, noise_mask=None, *, show_epochs=None, marks=None, bins: int = 50
):
    """Per-epoch distribution of per-sample alignment as a ridge plot (the paper's Figure 1 view).

    Args:
        epochs: ``(E,)`` epoch numbers of the matrix rows.
        matrix: ``(E, N)`` alignment per epoch and sample, NaN where unseen.
        noise_mask: optional ``(N,)`` bool; mislabeled samples are drawn apart from clean ones.
        show_epochs: the epochs to draw (default: :func:`pick_epochs`).
        marks: optional ``{epoch: text}`` shown under an epoch's label (e.g. the criteria that chose it).
    """
    plt = pyplot()
    epochs = list(epochs)
    show = list(show_epochs) if show_epochs is not None else pick_epochs(epochs)
    finite = matrix[np.isfinite(matrix)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    lo, hi = min(lo, -0.05), max(hi, 0.05)
    edges = np.linspace(lo, hi, bins + 1)
    groups = (
        [("all samples", None, COLORS["all"])]
        if noise_mask is None
        else [
            ("clean label", ~noise_mask, COLORS["clean"]),
            ("flipped label (noise mask)", noise_mask, COLORS["noisy"]),
        ]
    )
    fig, ax = plt.subplots(figsize=(8.5, max(2.8, 1.0 + 0.85 * len(show))))
    for row, epoch in enumerate(reversed(show)):
        scores = matrix[epochs.index(epoch)]
        counts = [
            np.histogram(scores[np.isfinite(scores) & (True if m is None else m)], edges)[0]
            for _, m, _ in groups
        ]
        top = max(max(c.max() for c in counts), 1)
        for (label, _, color), c in zip(groups, counts, strict=True):
            ax.stairs(
                row + 0.92 * c / top,
                edges,
                baseline=row,
                fill=True,
                color=color,
                alpha=0.6,
                lw=0,
                label=label if row == 0 else None,
            )
        ax.axhline(row, color="#cccccc", lw=0.6, zorder=0)
    ax.axvline(0, color=COLORS["zero"], lw=1, ls="--")
    marks = marks or {}
    ax.set_yticks(
        range(len(show)), [f"epoch {e}" + (f"\n({marks[e]})" if e in marks else "") for e in reversed(show)]
    )
    ax.set_ylim(-0.1, len(show) + 0.1)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("per-sample alignment  cos(−∇W ℓ, W)")
    ax.set_title("Distribution of per-sample alignment by epoch (counts, each row scaled to its peak)")
    for side in ("left", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.legend(loc="upper left", frameon=False)
    fig.tight_layout()
    return fig


def plot_data_map(mean, std, noise_mask=None):
    """Data map: per-sample mean against standard deviation of alignment over epochs (Swayamdipta et al.).

    Args:
        mean, std: ``(N,)`` per-sample mean and std over epochs (NaN for samples never seen).
        noise_mask: optional ``(N,)`` bool colouring mislabeled samples apart.
    """
    plt = pyplot()
    seen = np.isfinite(mean)
    n = int(seen.sum())
    size = 14 if n <= 2000 else 4 if n <= 20000 else 1
    fig, ax = plt.subplots(figsize=(7, 5.2))
    groups = (
        [("all samples", seen, COLORS["all"])]
        if noise_mask is None
        else [
            ("clean label", seen & ~noise_mask, COLORS["clean"]),
            ("flipped label", seen & noise_mask, COLORS["noisy"]),
        ]
    )
    for label, m, color in groups:
        ax.scatter(
            std[m],
            mean[m],
            s=size,
            color=color,
            alpha=0.55,
            lw=0,
            rasterized=True,
            label=f"{label} ({int(m.sum())})",
        )
    ax.axhline(0, color=COLORS["zero"], lw=1, ls="--")
    ax.set_xlabel("variability: std of alignment over epochs")
    ax.set_ylabel("mean alignment over epochs")
    ax.set_title("Data map of training samples (below the dashed line: opposes the weights)")
    legend = ax.legend(loc="best", frameon=False)
    for handle in legend.legend_handles:  # readable legend markers however small the points are
        handle.set_sizes([30])
        handle.set_alpha(0.9)
    fig.tight_layout()
    return fig


def plot_compare(names, panels):
    """Run statistics against test accuracy, one labelled point per run and one panel per statistic.

    Args:
        names: ``(R,)`` run names.
        panels: ``[(x, y, x_label, y_label, title), ...]`` with ``x`` and ``y`` of shape ``(R,)``.
    """
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels), 4.4), layout="constrained", squeeze=False
    )
    for ax, (x, y, x_label, y_label, title) in zip(axes[0], panels, strict=True):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        ax.scatter(x, y, s=42, color=COLORS["align"], zorder=3)
        for name, a, b in zip(names, x, y, strict=True):
            if np.isfinite(a) and np.isfinite(b):
                ax.annotate(str(name), (a, b), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    return fig


def image_thumbnail(image) -> bytes:
    """A preview image ``(H, W)``, ``(H, W, 3)`` or ``(C, H, W)`` as min-max scaled PNG bytes."""
    import matplotlib.image

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)  # channel-first (C, H, W), as torch stores images
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise ValueError(
            f"Expected a preview image of shape (H, W), (H, W, 3) or (3, H, W); got shape={img.shape}."
        )
    lo, hi = np.nanmin(img), np.nanmax(img)
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, img, cmap="gray" if img.ndim == 2 else None, format="png")
    return buf.getvalue()
