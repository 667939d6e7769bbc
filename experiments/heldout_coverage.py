"""Coverage of each interval method on synthetic crossed designs (docs/protocol.md, grid H″; docs/results.md).

    PYTHONPATH=src python experiments/heldout_coverage.py > coverage.md

d[s, k] = a_s + b_k + e_sk with setting effects a (sd 1), a seed effect b shared by every setting (sd 1.5) and
residuals e (sd 0.5), true mean 0; 2,000 replicates per cell (Monte Carlo sd about 0.005), 1,000 bootstrap
resamples (300 x 300 for the nested two-level bootstrap). Which estimand each method covers is in
:func:`gwa.bench.crossed.coverage`.
"""

from __future__ import annotations

from gwa.bench.crossed import coverage

METHODS = (
    ("setting_t", "one setting: t interval over its seeds"),
    ("setting_bootstrap", "one setting: percentile bootstrap over its seeds"),
    ("settings_t", "these settings: t over per-seed means (crossed)"),
    ("seed_bootstrap", "these settings: joint-seed percentile bootstrap"),
    ("two_level", "these settings: nested two-level bootstrap (H, H')"),
    ("family", "the family: two-way random-effects ANOVA"),
)


def main() -> None:
    cells = [(s, k) for k in (5, 10) for s in (2, 4, 12)]
    lines = [
        "| method | " + " | ".join(f"{s} settings x {k} seeds" for s, k in cells) + " |",
        "|" + "---|" * (len(cells) + 1),
    ]
    for method, label in METHODS:
        row = []
        for s, k in cells:
            small = method == "two_level"
            row.append(
                coverage(
                    method,
                    n_settings=s,
                    n_seeds=k,
                    replicates=300 if small else 2000,
                    resamples=300 if small else 1000,
                    seed=s * 100 + k,
                )
            )
        lines.append(f"| {label} | " + " | ".join(f"{c:.3f}" for c in row) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
