"""What to score when the loss uses label smoothing: the smoothed target or the hard label (issue 20).

Each run trains one model with ``F.cross_entropy(logits, y, label_smoothing=EPS)`` and scores every training step
twice from the same forward pass (same weights, same logits, same features): against the smoothed target
``(1 - EPS) onehot(y) + EPS / C`` and against the hard label ``y``. A control arm trains without smoothing and
scores the hard label. Per scoring the script keeps the epoch gwa's default rule chooses (``gwa.select_epoch``)
with its test accuracy, and the mislabel ranking of gwa's default flag rule (``window``) with its AUROC against the
known flipped labels and the share of samples it flags at its threshold.

Settings are the development grid's (``gwa bench --grid full``, src/gwa/bench/grid.py): digits MLP and CNN,
MNIST-1D MLP (5,000 generated samples), Fashion-MNIST MLP (4,000 training samples); Adam 1e-3 constant, batch 128,
20 epochs, seeds 0-2; no noise, 40 % symmetric and 40 % class-pair ("asymmetric") noise.

Usage (resumable: finished runs are read back from their JSON files)::

    OMP_NUM_THREADS=1 nice -n 10 python experiments/soft_targets.py --out docs/data/soft-targets/runs
    python experiments/soft_targets.py --out docs/data/soft-targets/runs --table   # tables only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch.nn.functional as F

import torch

EPS = 0.1
SEEDS = (0, 1, 2)
NOISES = (("none", 0.0), ("symmetric", 0.4), ("asymmetric", 0.4))
#: (dataset, model, RunConfig options): the development grid's settings.
SETTINGS = (
    ("digits", "mlp", {"hidden": (256, 256)}),
    ("digits", "cnn", {"width": 16}),
    ("mnist1d", "mlp", {"hidden": (256, 256), "mnist1d_samples": 5000}),
    ("fashion-mnist", "mlp", {"hidden": (256, 256), "num_train": 4000}),
)
EPOCHS = 20
BATCH = 128
#: arm -> (label smoothing of the loss, scorings)
ARMS = {"smoothed_loss": (EPS, ("smoothed", "hard")), "plain_loss": (0.0, ("hard",))}


def run_one(
    dataset: str, model_name: str, options: dict, noise: str, rate: float, seed: int, arm: str
) -> dict:
    from sklearn.metrics import roc_auc_score

    import gwa
    import gwa.torch
    from gwa.policy import flag_scores
    from gwa.runner.config import RunConfig
    from gwa.runner.data import prepare
    from gwa.runner.loop import epoch_batches
    from gwa.runner.models import build_model, classifier_head

    smoothing, scorings = ARMS[arm]
    model_opts = {k: v for k, v in options.items() if k in ("hidden", "width")}
    data_opts = {k: v for k, v in options.items() if k not in model_opts}
    config = RunConfig(
        dataset=dataset, model=model_name, noise=noise, noise_rate=rate, seed=seed, epochs=EPOCHS, **options
    )
    data = prepare(config)
    torch.manual_seed(seed)
    model = build_model(model_name, input_shape=data.input_shape, num_classes=data.num_classes, **model_opts)
    head = classifier_head(model)
    captured = {}
    head.register_forward_hook(lambda mod, inp, out: captured.__setitem__("x", inp[0]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_train = torch.from_numpy(data.x_train)
    y_train = torch.from_numpy(data.y_train).long()
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test).long()
    if data.is_image:  # (N, H, W, C) -> (N, C, H, W)
        x_train, x_test = x_train.permute(0, 3, 1, 2), x_test.permute(0, 3, 1, 2)
    n, c = data.num_samples, data.num_classes
    matrices = {s: np.full((EPOCHS, n), np.nan) for s in scorings}
    history: dict[str, list] = {s: [] for s in scorings}
    test_acc, train_acc = [], []
    for epoch in range(EPOCHS):
        model.train()
        correct = 0
        for ids in epoch_batches(n, BATCH, seed, epoch):
            idx = torch.from_numpy(ids)
            logits = model(x_train[idx])
            y = y_train[idx]
            loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
            with torch.no_grad():  # the forward pass's weights: scored before the step
                emb, weight = captured["x"], head.weight
                for scoring in scorings:
                    target = (
                        (1 - EPS) * F.one_hot(y, c).to(logits.dtype) + EPS / c if scoring == "smoothed" else y
                    )
                    matrices[scoring][epoch, ids] = gwa.torch.alignment(logits, target, emb, weight).numpy()
                correct += int((logits.argmax(1) == y).sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            test_acc.append(float((model(x_test).argmax(1) == y_test).float().mean()))
        train_acc.append(correct / n)
        for scoring in scorings:
            history[scoring].append(
                {**gwa.summarize(matrices[scoring][epoch]).metrics(), "train_acc": train_acc[-1]}
            )
    result = {
        "dataset": dataset,
        "model": model_name,
        "noise": noise,
        "noise_rate": rate,
        "seed": seed,
        "arm": arm,
        "label_smoothing": smoothing,
        "epochs": EPOCHS,
        "num_train": n,
        "n_flipped": int(data.noise_mask.sum()),
        "test_acc": test_acc,
        "train_acc": train_acc,
        "oracle_epoch": int(np.argmax(test_acc)) + 1,
        "data_options": data_opts,
        "scorings": {},
    }
    mask = data.noise_mask.astype(bool)
    for scoring in scorings:
        epoch = gwa.select_epoch(history[scoring], total_epochs=EPOCHS)
        _, flagged, key = flag_scores(matrices[scoring], history=history[scoring], total_epochs=EPOCHS)
        result["scorings"][scoring] = {
            "gwa": [row["gwa"] for row in history[scoring]],
            "align_mean": [row["align_mean"] for row in history[scoring]],
            "chosen_epoch": epoch,
            "chosen_test_acc": test_acc[epoch - 1],
            "flag_auroc": float(roc_auc_score(mask, -key)) if 0 < mask.sum() < n else None,
            "flagged_share": float(flagged.mean()),
            "flag_precision": float((flagged & mask).sum() / flagged.sum()) if flagged.any() else None,
        }
    return result


def run_name(dataset, model, noise, rate, seed, arm) -> str:
    tag = "clean" if noise == "none" else f"{noise[:3]}{rate:g}"
    return f"{dataset}_{model}_{tag}_seed{seed}_{arm}"


def run_all(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for arm in ARMS:  # the smoothed-loss arm first: it holds the comparison
        for seed in SEEDS:
            for dataset, model, options in SETTINGS:
                for noise, rate in NOISES:
                    path = out / f"{run_name(dataset, model, noise, rate, seed, arm)}.json"
                    if path.exists():
                        continue
                    t0 = time.perf_counter()
                    result = run_one(dataset, model, options, noise, rate, seed, arm)
                    result["seconds"] = round(time.perf_counter() - t0, 1)
                    tmp = path.with_suffix(".part")
                    tmp.write_text(json.dumps(result, indent=1))
                    tmp.replace(path)
                    print(f"{path.name}: {result['seconds']} s", flush=True)


# ---------------------------------------------------------------------------------------------- tables

FAMILY = {"none": "no noise", "symmetric": "symmetric 40 %", "asymmetric": "class-pair 40 %"}


def load(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def _by_setting(runs, noise, arm, scoring, key) -> dict:
    """{dataset/model: {seed: value}} for one noise family, arm and scoring."""
    cells: dict[str, dict] = {}
    for r in runs:
        if r["noise"] == noise and r["arm"] == arm and scoring in r["scorings"]:
            value = r["scorings"][scoring][key]
            if value is not None:
                cells.setdefault(f"{r['dataset']}/{r['model']}", {})[r["seed"]] = value
    return cells


def _paired(runs, noise, key, a, b) -> dict:
    """{setting: {seed: a - b}} for two scorings of the smoothed-loss arm."""
    cells: dict[str, dict] = {}
    for r in runs:
        if r["noise"] == noise and r["arm"] == "smoothed_loss":
            va, vb = r["scorings"][a][key], r["scorings"][b][key]
            if va is not None and vb is not None:
                cells.setdefault(f"{r['dataset']}/{r['model']}", {})[r["seed"]] = va - vb
    return cells


def _level(estimate, scale: float, digits: int) -> str:
    mean, low, high = (scale * x for x in estimate)
    return "–" if not np.isfinite(mean) else f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def per_setting(runs: list[dict]) -> str:
    """Seed means per dataset/model: flag AUROC and chosen-epoch test accuracy, smoothed vs hard scoring."""
    lines = [
        "\nper setting (smoothed-loss arm, mean over seeds): AUROC smoothed / hard; accuracy % smoothed / hard\n",
        "| setting | noise | AUROC smoothed | AUROC hard | acc smoothed | acc hard | oracle acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, model, _ in SETTINGS:
        for noise in FAMILY:
            sel = [
                r
                for r in runs
                if r["dataset"] == dataset
                and r["model"] == model
                and r["noise"] == noise
                and r["arm"] == "smoothed_loss"
            ]
            if not sel:
                continue

            def mean(scoring, key, rows=sel):
                vals = [r["scorings"][scoring][key] for r in rows if r["scorings"][scoring][key] is not None]
                return float(np.mean(vals)) if vals else float("nan")

            oracle = float(np.mean([max(r["test_acc"]) for r in sel]))
            lines.append(
                f"| {dataset}/{model} | {FAMILY[noise]} | {mean('smoothed', 'flag_auroc'):.3f} | "
                f"{mean('hard', 'flag_auroc'):.3f} | {100 * mean('smoothed', 'chosen_test_acc'):.1f} | "
                f"{100 * mean('hard', 'chosen_test_acc'):.1f} | {100 * oracle:.1f} |"
            )
    return "\n".join(lines)


def tables(runs: list[dict]) -> str:
    from gwa.bench.crossed import settings_interval
    from gwa.bench.paired import format_interval

    def crossed(cells) -> tuple[float, float, float]:
        # seeds are crossed with settings (a seed fixes subset, noise and init in every setting): t over the
        # per-seed means, estimand "these settings" (gwa.bench.crossed; coverage in docs/results.md)
        i = settings_interval(cells)
        return i.mean, i.low, i.high

    columns = (
        ("smoothed_loss", "smoothed", "smoothed loss, scored vs smoothed target"),
        ("smoothed_loss", "hard", "smoothed loss, scored vs hard label"),
        ("plain_loss", "hard", "no smoothing (control), hard label"),
    )
    lines = []
    for key, what, scale in (
        ("flag_auroc", "flag AUROC (window rule, vs the flipped labels)", 1.0),
        ("chosen_test_acc", "test accuracy at the chosen epoch, %", 100.0),
        ("flagged_share", "share of training samples flagged at the rule's threshold, %", 100.0),
    ):
        lines.append(
            f"\n{what}: mean over settings of the seed mean [95 % crossed-seed t interval, estimand: these settings]\n"
        )
        lines.append("| noise | " + " | ".join(c[2] for c in columns) + " | hard − smoothed (paired) |")
        lines.append("|---|" + "---|" * (len(columns) + 1))
        digits = 3 if scale == 1.0 else 1
        for noise in FAMILY:
            cells = [
                _level(crossed(_by_setting(runs, noise, arm, s, key)), scale, digits) for arm, s, _ in columns
            ]
            diff = format_interval(crossed(_paired(runs, noise, key, "hard", "smoothed")), scale, digits)
            lines.append(f"| {FAMILY[noise]} | " + " | ".join(cells) + f" | {diff} |")
    n_runs = {arm: sum(r["arm"] == arm for r in runs) for arm in ARMS}
    lines.append(f"\nruns: {n_runs}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/data/soft-targets/runs"))
    parser.add_argument("--table", action="store_true", help="only print the tables of the runs in --out")
    args = parser.parse_args()
    if not args.table:
        run_all(args.out)
    runs = load(args.out)
    print(tables(runs))
    print(per_setting(runs))


if __name__ == "__main__":
    main()
