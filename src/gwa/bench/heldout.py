"""The held-out analysis on per-run rows (:mod:`gwa.bench.perrun`): paired differences, intervals, verdicts.

Every number of the held-out tables comes from here; ``experiments/heldout_analysis.py`` only renders them.

- **Δ (points)** of a criterion = its test accuracy minus that of the noisy 10% split's choice (``val`` in the
  ``val10`` run) for the same setting and seed. Two Δs:

  - *deployed*: the criterion in the run a user of it would train (gwa's rules on the ``full`` run, 100% of the
    data; a split's rule in its own split run) against the split's run: what a user gets, data size included;
  - *selection-only*: the criterion applied to the ``val10`` run itself against the split's choice in that run:
    the quality of the choice alone, same model, same data.

- **Intervals**: crossed over seeds (:mod:`gwa.bench.crossed`): per setting a t interval over its seeds; pooled,
  the t interval over the per-seed means (estimand: these settings) and the two-way ANOVA interval (estimand: the
  family the settings stand for).
- **Verdicts** (docs/protocol.md, S3a/S3b, S5a/S5b): see :func:`s3a`, :func:`s3b`, :func:`beats`; a verdict whose
  value differs between an original and a perturbed re-execution is *unsettled* (:func:`settle`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from gwa.bench import crossed

#: S3a: the pooled Δ must be at least this (points); "demonstrated" when the interval's low end is.
S3A_THRESHOLD = -1.0
#: S3b: no setting's mean Δ below this (points).
S3B_THRESHOLD = -3.0
#: The reference every Δ is taken against: the noisy 10% split's choice in its own run.
REFERENCE = ("val10", "val")
DELTAS = ("deployed", "selection")

Setting = tuple  # (dataset, model, noise, noise_rate, schedule)


def setting_of(row: Mapping) -> Setting:
    return (row["dataset"], row["model"], row["noise"], float(row["noise_rate"]), row["schedule"])


class Rows:
    """Per-run rows indexed for the analysis."""

    def __init__(self, rows: Iterable[Mapping]):
        self.rows = list(rows)
        self.test: dict[tuple, float] = {}  # (setting, seed, variant, criterion) -> test accuracy
        for r in self.rows:
            if r["kind"] == "stop":
                self.test[(setting_of(r), r["seed"], r["variant"], r["criterion"])] = float(r["test_acc"])

    @property
    def settings(self) -> list[Setting]:
        return sorted({setting_of(r) for r in self.rows}, key=lambda s: (s[0], s[1], s[2], s[3], s[4]))

    def seeds(self, setting: Setting) -> list[int]:
        return sorted({r["seed"] for r in self.rows if setting_of(r) == setting})

    def of_kind(self, kind: str) -> list[Mapping]:
        return [r for r in self.rows if r["kind"] == kind]


def criterion_source(variant: str, criterion: str, which: str) -> tuple[str, str] | None:
    """``(variant, criterion)`` whose test accuracy enters the Δ ``which`` of a table row; None where that Δ
    does not exist (a 2% or 1% split cannot choose inside the 10% split's run)."""
    if which not in DELTAS:
        raise ValueError(f"Expected `which` in {', '.join(DELTAS)}; got {which!r}.")
    if which == "deployed" or variant == "val10":
        return variant, criterion
    return ("val10", criterion) if variant == "full" else None


def deltas(
    data: Rows, variant: str, criterion: str, which: str = "deployed"
) -> dict[Setting, dict[int, float]]:
    """``{setting: {seed: Δ in points}}`` for the seeds that have both the criterion's and the reference's run."""
    source = criterion_source(variant, criterion, which)
    out: dict[Setting, dict[int, float]] = {}
    if source is None:
        return out
    for s in data.settings:
        per_seed = {}
        for k in data.seeds(s):
            ref = data.test.get((s, k, *REFERENCE))
            value = data.test.get((s, k, *source))
            if ref is not None and value is not None:
                per_seed[k] = 100.0 * (value - ref)
        if per_seed:
            out[s] = per_seed
    return out


def pooled(d: Mapping[Setting, Mapping[int, float]], keep: Callable[[Setting], bool]) -> dict:
    """The settings of ``d`` that ``keep`` accepts."""
    return {s: v for s, v in d.items() if keep(s)}


def s3a(interval: crossed.Interval, threshold: float = S3A_THRESHOLD) -> str:
    """S3a on a pooled Δ: ``met`` when the estimate is >= threshold, ``demonstrated`` when the low end is too."""
    if not np.isfinite(interval.mean):
        return "not evaluated (no run)"
    if interval.mean < threshold:
        return f"missed by {threshold - interval.mean:.2f}"
    return "met; demonstrated" if interval.low >= threshold else "met"


def s3b(
    d: Mapping[Setting, Mapping[int, float]], threshold: float = S3B_THRESHOLD
) -> tuple[str, list[Setting]]:
    """S3b: ``(verdict, settings whose mean Δ is below the threshold)``."""
    below = [s for s, v in d.items() if float(np.mean(list(v.values()))) < threshold]
    return ("met" if not below else "missed"), below


def beats(interval: crossed.Interval) -> str:
    """S5a/S5b on a difference (rule minus baseline): ``met`` when > 0, ``demonstrated`` when the low end is."""
    if not np.isfinite(interval.mean):
        return "not evaluated (no run)"
    if interval.mean <= 0:
        return "missed"
    return "met; demonstrated" if interval.low > 0 else "met"


def flag_values(data: Rows, method: str, metric: str) -> dict[tuple[Setting, int], float]:
    return {
        (setting_of(r), r["seed"]): float(r[metric])
        for r in data.of_kind("flag")
        if r["criterion"] == method and r["variant"] == "full" and r[metric] is not None
    }


def flag_diffs(data: Rows, rule: str, baseline: str, metric: str) -> dict[Setting, dict[int, float]]:
    """``{setting: {seed: rule - baseline}}`` of a flag metric on the same noisy full runs."""
    a, b = flag_values(data, rule, metric), flag_values(data, baseline, metric)
    out: dict[Setting, dict[int, float]] = defaultdict(dict)
    for key in sorted(set(a) & set(b)):
        out[key[0]][key[1]] = a[key] - b[key]
    return dict(out)


def noise_rate_errors(data: Rows, estimator: str) -> dict[str, np.ndarray]:
    """``{noise kind: estimate - truth in points}`` over the full runs."""
    err: dict[str, list[float]] = defaultdict(list)
    for r in data.of_kind("noise_rate"):
        if r["criterion"] == estimator and r["variant"] == "full":
            err[r["noise"]].append(100.0 * (float(r["estimate"]) - float(r["truth"])))
    return {k: np.asarray(v) for k, v in err.items()}


def diagnostic_firing(
    data: Rows, loss_threshold: float = -2.0
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """How often each diagnostic fires on the full runs where the default's deployed Δ is below
    ``loss_threshold`` (``loses``) and on the others: ``({code: {group: count}}, {group: runs})``."""
    d = deltas(data, "full", "gwa")
    fired: dict[tuple[Setting, int], set[str]] = defaultdict(set)
    for r in data.of_kind("diagnostic"):
        if r["variant"] == "full":
            fired[(setting_of(r), r["seed"])].add(r["criterion"])
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"loses": 0, "others": 0})
    runs = {"loses": 0, "others": 0}
    for s, seeds in d.items():
        for k, value in seeds.items():
            group = "loses" if value < loss_threshold else "others"
            runs[group] += 1
            codes = fired.get((s, k), set())
            for code in codes | ({"any"} if codes else set()):
                counts[code][group] += 1
    return dict(counts), runs


def settle(original: Mapping[str, str], rerun: Mapping[str, str]) -> dict[str, str]:
    """Per verdict: the original's value where the re-execution agrees on met/missed, else ``unsettled``.

    A verdict is compared on its first word (met / missed); ``demonstrated`` may come and go without unsettling
    it, but the report shows both values.
    """
    out = {}
    for key, value in original.items():
        other = rerun.get(key)
        if other is None:
            out[key] = f"{value} (no re-execution)"
        elif value.split(";")[0].split(" ")[0] == other.split(";")[0].split(" ")[0]:
            out[key] = value
        else:
            out[key] = f"unsettled (original: {value}; re-execution: {other})"
    return out
