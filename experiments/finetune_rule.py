"""Issue 12, item 6: the paper's fine-tuning rule (first minimum of the curve, then the maximum), measured.

Per seed: pretrain a model on classes 0-4 of a dataset (clean), keep its body (the head is dropped: the new
task has other classes), then fine-tune it with ``gwa train --init-checkpoint BODY --classes 5,6,7,8,9
--finetune`` (the runner API that command calls) on the other five classes, clean and with label noise, once on
all training samples (``full``) and once with a 10% stratified split held out (``val10``). On the full run every
rule picks an epoch; the split picks one in its own run; each is scored by the clean test accuracy there and
compared with the split, seed by seed (paired bootstrap over seeds, ``gwa.bench.paired``).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python experiments/finetune_rule.py --plan cnn \
        --out /work/evid_runs/finetune --json docs/data/experiments/finetune_rule.json
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python experiments/finetune_rule.py --plan mlp \
        --out /work/evid_runs/finetune_mlp --json docs/data/experiments/finetune_rule.json
    (add --analyse-only to rebuild the tables from the run directories, --plot PNG for the curves)
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _machine, when run as a script

import numpy as np

from gwa import policy
from gwa.bench.grid import is_complete
from gwa.bench.paired import format_interval, two_level_bootstrap
from gwa.rundir import load_run

#: Rules reported, each as (label, criterion, fine-tuning rule, run it chooses in).
RULES = (
    ("gwa, fine-tuning rule", "gwa", True, "full"),
    ("gwa_paper, fine-tuning rule", "gwa_paper", True, "full"),
    ("align_mean, fine-tuning rule", "align_mean", True, "full"),
    ("gwa, default rule", "gwa", False, "full"),
    ("gwa_paper, default rule", "gwa_paper", False, "full"),
    ("val10 split (noisy labels)", "val", False, "val10"),
    ("last epoch", "last", False, "full"),
    ("oracle (best test)", "oracle", False, "full"),
)
REFERENCE = "val10 split (noisy labels)"


@dataclass(frozen=True)
class Plan:
    """The experiment's recipe; :data:`PLANS` are what docs/results.md reports, tests use a tiny one."""

    dataset: str = "fashion-mnist"
    model: str = "cnn"
    model_options: tuple = (("width", 16),)
    pretrain_classes: tuple[int, ...] | None = (0, 1, 2, 3, 4)  # None: every class
    finetune_classes: tuple[int, ...] | None = (5, 6, 7, 8, 9)
    keep_head: bool = False  # fine-tune from the whole model (same classes), not just its body
    pretrain_seed_offset: int = 0  # pretrain subset/initialisation seed = seed + offset
    pretrain_train: int = 3000
    finetune_train: int = 2000
    pretrain_epochs: int = 10
    epochs: int = 20
    noises: tuple = (("none", 0.0), ("symmetric", 0.4), ("asymmetric", 0.4))
    seeds: tuple[int, ...] = (200, 201, 202, 203, 204)


#: ``cnn``: SmallCNN width 16, 20 fine-tuning epochs (320 steps); ``mlp``: MLP 256-256, 40 epochs (640 steps),
#: long enough for the noisy labels to be memorised; ``mlp-continue``: the same MLP pretrained on a clean subset
#: of all ten classes (another seed's subset), then fine-tuned whole, head included, on noisy labels.
_MLP = Plan(model="mlp", model_options=(("hidden", (256, 256)),), epochs=40)
PLANS = {
    "cnn": Plan(),
    "mlp": _MLP,
    "mlp-continue": dataclasses.replace(
        _MLP,
        pretrain_classes=None,
        finetune_classes=None,
        keep_head=True,
        pretrain_seed_offset=1000,
        noises=(("symmetric", 0.4), ("asymmetric", 0.4)),
    ),
}


def _noise_name(noise: str, rate: float) -> str:
    return "clean" if noise == "none" else f"{noise[:3]}{rate:g}"


def pretrain_config(plan: Plan, seed: int, out: Path):
    from gwa.runner.config import RunConfig

    return RunConfig(
        dataset=plan.dataset,
        model=plan.model,
        classes=plan.pretrain_classes,
        num_train=plan.pretrain_train,
        epochs=plan.pretrain_epochs,
        seed=seed + plan.pretrain_seed_offset,
        signals=(),
        out=str(out / f"pretrain_seed{seed}"),
        overwrite=True,
        quiet=True,
        **dict(plan.model_options),
    )


def finetune_config(plan: Plan, seed: int, noise: str, rate: float, variant: str, body: Path, out: Path):
    from gwa.runner.config import RunConfig

    name = f"finetune_{_noise_name(noise, rate)}_seed{seed}_{variant}"
    return RunConfig(
        dataset=plan.dataset,
        model=plan.model,
        classes=plan.finetune_classes,
        num_train=plan.finetune_train,
        noise=noise,
        noise_rate=rate,
        val_frac=0.1 if variant == "val10" else 0.0,
        epochs=plan.epochs,
        seed=seed,
        init_checkpoint=str(body),
        finetune=True,
        signals=(),
        out=str(out / name),
        name=name,
        overwrite=True,
        quiet=True,
        **dict(plan.model_options),
    )


def save_body(run_dir: Path, path: Path, *, keep_head: bool = False) -> Path:
    """The pretrained model's last state_dict without its head (``head.*``; whole with ``keep_head``), for
    ``--init-checkpoint``."""
    import torch
    from gwa.runner import checkpoint
    from gwa.runner.train_torch import load_checkpoint

    state = load_checkpoint(checkpoint.marked_file(run_dir, "last"))["model"]
    body = {k: v for k, v in state.items() if keep_head or not k.startswith("head.")}
    if len(body) == len(state) and not keep_head:
        raise ValueError(
            f"Expected a `head.*` tensor in {run_dir}'s checkpoint; got keys {sorted(state)[:8]}."
        )
    torch.save(body, path)
    return path


def train_all(plan: Plan, out: Path, log=print) -> float:
    """Pretrain and fine-tune every (seed, noise, variant) not complete yet; returns the training seconds."""
    import torch
    from gwa.runner.train import run_training

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    for seed in plan.seeds:
        pre = pretrain_config(plan, seed, out)
        body = out / f"body_seed{seed}.pt"
        if not (is_complete(pre.out_dir) and body.exists()):
            t0 = time.perf_counter()
            run_training(pre, progress=False)
            save_body(pre.out_dir, body, keep_head=plan.keep_head)
            seconds += time.perf_counter() - t0
            log(f"pretrained seed {seed}: {time.perf_counter() - t0:.1f}s")
        for noise, rate in plan.noises:
            for variant in ("full", "val10"):
                config = finetune_config(plan, seed, noise, rate, variant, body, out)
                if is_complete(config.out_dir):
                    continue
                t0 = time.perf_counter()
                run_training(config, progress=False)
                seconds += time.perf_counter() - t0
                log(f"{config.run_name}: {time.perf_counter() - t0:.1f}s")
    return seconds


def choices(full_rows: list[dict], val_rows: list[dict], epochs: int) -> dict[str, dict]:
    """``{rule label: {"epoch", "test_acc"}}`` for every rule of :data:`RULES` that can choose."""
    out = {}
    for label, criterion, finetune, variant in RULES:
        rows = full_rows if variant == "full" else val_rows
        try:
            epoch = policy.select_epoch(rows, criterion, finetune=finetune, total_epochs=epochs)
        except ValueError:  # nothing finite where the rule looks
            continue
        out[label] = {"epoch": epoch, "test_acc": float(rows[epoch - 1]["test_acc"])}
    return out


def first_minimum_epoch(rows: list[dict], key: str, epochs: int) -> int:
    """Where the fine-tuning rule starts looking (1-based): the first epoch after the warm-up whose next value
    is not lower (the definition of :func:`gwa.policy.choose`); the warm-up's end when the curve rises at once."""
    values = [float(r[key]) for r in rows]
    for i in range(policy.warmup_epochs(epochs), len(values) - 1):
        if values[i + 1] >= values[i]:
            return i + 1
    return len(values)


def analyse(plan: Plan, out: Path) -> dict:
    """Per (setting, seed) choices, then per setting and pooled over the noisy settings: mean test accuracy and
    the paired difference to the split with its bootstrap interval (points)."""
    runs: dict[str, dict[int, dict]] = {}
    pretrain_acc, overlap = {}, {}
    for seed in plan.seeds:
        pre = pretrain_config(plan, seed, out)
        if is_complete(pre.out_dir):
            pretrain_acc[seed] = float(load_run(pre.out_dir).metrics[-1]["test_acc"])
            overlap[seed] = _shared_samples(plan, seed, out)
        for noise, rate in plan.noises:
            full = finetune_config(plan, seed, noise, rate, "full", Path("-"), out).out_dir
            val = finetune_config(plan, seed, noise, rate, "val10", Path("-"), out).out_dir
            if not (is_complete(full) and is_complete(val)):
                continue
            full_run = load_run(full)
            picks = choices(full_run.metrics, load_run(val).metrics, plan.epochs)
            rate_actual = (
                float(np.asarray(full_run.noise_mask).mean()) if full_run.noise_mask is not None else 0
            )
            picks["_noise_rate_actual"] = rate_actual  # type: ignore[assignment]
            picks["_first_minimum_epoch"] = first_minimum_epoch(full_run.metrics, "gwa", plan.epochs)  # type: ignore[assignment]
            runs.setdefault(_noise_name(noise, rate), {})[seed] = picks
    settings = {setting: _cells({setting: by_seed}) for setting, by_seed in runs.items()}
    noisy = {s: v for s, v in runs.items() if s != "clean"}
    return {
        "plan": dataclasses.asdict(plan),
        "pretrain_test_acc_last": {str(k): v for k, v in pretrain_acc.items()},
        "pretrain_samples_in_finetune_set": {str(k): v for k, v in overlap.items()},
        "runs": {s: {str(k): v for k, v in by_seed.items()} for s, by_seed in runs.items()},
        "settings": settings,
        "pooled_noisy": _cells(noisy) if noisy else {},
    }


def _shared_samples(plan: Plan, seed: int, out: Path) -> int | None:
    """How many training samples (rows of the original training set) the pretraining and the full fine-tuning
    run of ``seed`` share; None when either is missing."""
    noise, rate = plan.noises[0]
    pre = pretrain_config(plan, seed, out).out_dir / "source_index.npy"
    full = finetune_config(plan, seed, noise, rate, "full", Path("-"), out).out_dir / "source_index.npy"
    if not (pre.exists() and full.exists()):
        return None
    return int(np.intersect1d(np.load(pre), np.load(full)).size)


def _cells(runs: dict[str, dict[int, dict]]) -> dict[str, dict]:
    """Per rule: mean test accuracy (%), Δ to the split in points (two-level bootstrap over settings and seeds;
    one setting: its seeds resampled), and the chosen epochs."""
    out = {}
    for label, *_ in RULES:
        picks = [p for by_seed in runs.values() for p in by_seed.values()]
        if not all(label in p and REFERENCE in p for p in picks):
            continue
        diffs = {
            s: [100 * (p[label]["test_acc"] - p[REFERENCE]["test_acc"]) for p in by_seed.values()]
            for s, by_seed in runs.items()
        }
        out[label] = {
            "test_acc": float(np.mean([100 * p[label]["test_acc"] for p in picks])),
            "delta": list(two_level_bootstrap(diffs)),
            "epochs": [p[label]["epoch"] for p in picks],
        }
    return out


def table(result: dict) -> str:
    """Markdown: one row per rule, one column per setting plus the pooled noisy settings."""
    columns = [(s, result["settings"][s]) for s in result["settings"]]
    if result["pooled_noisy"]:
        columns.append(("noisy settings pooled", result["pooled_noisy"]))
    lines = [
        "| rule | " + " | ".join(name for name, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, *_ in RULES:
        cells = []
        for _, cell in columns:
            c = cell.get(label)
            if c is None:
                cells.append("–")
            elif label == REFERENCE:
                cells.append(f"{c['test_acc']:.1f} (reference)")
            else:
                cells.append(f"{c['test_acc']:.1f} ({format_interval(tuple(c['delta']), digits=1)})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def epochs_table(result: dict) -> str:
    """Markdown: the epochs each rule chose, per setting (seeds in order)."""
    names = list(result["settings"])
    lines = ["| rule | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, *_ in RULES:
        cells = [
            ",".join(map(str, result["settings"][s].get(label, {}).get("epochs", []))) or "–" for s in names
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(plan: Plan, out: Path, path: str) -> None:
    """gwa and gwa_paper of the full fine-tuning runs next to test accuracy, one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(plan.noises), figsize=(5 * len(plan.noises), 3.8), squeeze=False)
    for ax, (noise, rate) in zip(axes[0], plan.noises):
        ax2 = ax.twinx()
        for k, seed in enumerate(plan.seeds):
            run_dir = finetune_config(plan, seed, noise, rate, "full", Path("-"), out).out_dir
            if not is_complete(run_dir):
                continue
            rows = load_run(run_dir).metrics
            e = [r["epoch"] for r in rows]
            ax.plot(e, [r["gwa"] for r in rows], color=f"C{k}", label=f"seed {seed}")
            ax2.plot(e, [100 * r["test_acc"] for r in rows], ":", color=f"C{k}", alpha=0.7)
            ft = policy.select_epoch(rows, "gwa", finetune=True, total_epochs=plan.epochs)
            ax.plot(ft, rows[ft - 1]["gwa"], "v", color=f"C{k}", ms=8)
        ax.set_title(f"fine-tuning, {_noise_name(noise, rate)}")
        ax.set_xlabel("epoch (triangle: the fine-tuning rule's choice on gwa)")
        ax.set_ylabel("gwa (solid)")
        ax2.set_ylabel("test accuracy % (dotted)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    from _plans import run_plans

    return run_plans(
        __doc__,
        PLANS,
        default="cnn",
        json_name="finetune_rule.json",
        plot_help="the curves",
        train_all=train_all,
        analyse=analyse,
        render=lambda name, plan, result: f"plan {name}:\n\n{table(result)}\n\n{epochs_table(result)}",
        plot=lambda plan, out, result, png: plot(plan, out, png),
        argv=argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
