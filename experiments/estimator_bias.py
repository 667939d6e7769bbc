"""Issue 12, item 2(a): is the digits-CNN "early transient" the online estimator's bias?

Trains the bench's digits CNN (width 16, Adam 1e-3, batch 128, the runner's data, init, batch order and schedule)
and logs, per epoch, the alignment statistics of two estimators over the same training samples:

- online: each sample scored in its training step with the head weights of that forward pass (what gwa logs);
- offline: every sample scored after the epoch, in a no-grad pass with the end-of-epoch weights.

If the offline curve has the same early peak, the transient is training dynamics, not the estimator.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python experiments/estimator_bias.py --out runs/estimator_bias.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch.nn.functional as F

import gwa
import torch
from gwa.runner.config import RunConfig
from gwa.runner.data import prepare
from gwa.runner.loop import epoch_batches
from gwa.runner.models import build_model, classifier_head
from gwa.runner.train_torch import build_optimizer, lr_factor, to_model_input


def _stats(scores: np.ndarray) -> dict:
    s = gwa.summarize(scores)
    return {
        "mean": s.mean,
        "excess_kurtosis": s.excess_kurtosis,
        "gwa": s.gwa,
        "median": float(np.median(scores)),
    }


def run(seed: int, schedule: str, epochs: int, noise: str, rate: float) -> dict:
    config = RunConfig(
        dataset="digits",
        model="cnn",
        width=16,
        schedule=schedule,
        epochs=epochs,
        seed=seed,
        noise=noise,
        noise_rate=rate,
        quiet=True,
    )
    data = prepare(config)
    torch.manual_seed(seed)
    model = build_model("cnn", input_shape=data.input_shape, num_classes=data.num_classes, width=16)
    head = classifier_head(model)
    captured = {}
    head.register_forward_hook(lambda m, inp, out: captured.__setitem__("x", inp[0].detach()))
    opt = build_optimizer(config, model.parameters())
    n = data.num_samples
    steps = len(epoch_batches(n, config.batch_size, seed, 1))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: lr_factor(k, schedule=schedule, total_steps=epochs * steps, warmup_steps=0)
    )
    x_all, y_all = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = to_model_input(torch.from_numpy(data.x_test)), torch.from_numpy(data.y_test)
    rows, step_means = [], []
    for epoch in range(1, epochs + 1):
        model.train()
        online = np.full(n, np.nan)
        for ids in epoch_batches(n, config.batch_size, seed, epoch):
            idx = torch.from_numpy(ids)
            logits = model(to_model_input(x_all[idx]))
            loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad()
            loss.backward()
            g = gwa.alignment(logits.detach(), y_all[idx], captured["x"], head.weight.detach())  # pre-step W
            online[ids] = g.double().numpy()
            step_means.append(float(g.mean()))
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            logits = model(to_model_input(x_all))
            offline = gwa.alignment(logits, y_all, captured["x"], head.weight).double().numpy()
            test_acc = float((model(x_test).argmax(1) == y_test).float().mean())
        rows.append(
            {
                "epoch": epoch,
                "step": epoch * steps,
                "test_acc": test_acc,
                "online": _stats(online),
                "offline": _stats(offline),
                "spearman_online_offline": float(
                    np.corrcoef(np.argsort(np.argsort(online)), np.argsort(np.argsort(offline)))[0, 1]
                ),
            }
        )
    return {
        "seed": seed,
        "schedule": schedule,
        "noise": noise,
        "noise_rate": rate,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "rows": rows,
        "step_mean_online": step_means,
    }


def analyse(results: list[dict]) -> str:
    """Markdown: per run, the epoch where each estimator's mean alignment peaks and the epoch gwa's default rule
    (warm-up 10%) picks on each, with the test accuracy there."""
    from gwa import policy

    lines = [
        (
            "| run | peak of mean γ (online / offline) | gwa default picks (online / offline) | test % there "
            "(online / offline) | last-epoch test % | rank corr. online-offline (epochs 1, 5, last) |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        rows = r["rows"]
        test = [x["test_acc"] for x in rows]
        peak = [1 + int(np.argmax([x[k]["mean"] for x in rows])) for k in ("online", "offline")]
        pick = [policy.select_epoch([x[k]["gwa"] for x in rows], "gwa") for k in ("online", "offline")]
        corr = [rows[i]["spearman_online_offline"] for i in (0, 4, len(rows) - 1)]
        noise = "clean" if r["noise"] == "none" else f"sym {100 * r['noise_rate']:g}%"
        lines.append(
            f"| {r['schedule']}, {noise}, seed {r['seed']} | {peak[0]} / {peak[1]} | {pick[0]} / {pick[1]} | "
            f"{100 * test[pick[0] - 1]:.1f} / {100 * test[pick[1] - 1]:.1f} | {100 * test[-1]:.1f} | "
            + ", ".join(f"{c:.2f}" for c in corr)
            + " |"
        )
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results if r["schedule"] == "constant"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, noise in zip(axes, ("none", "symmetric")):
        for r in (r for r in runs if r["noise"] == noise):
            e = [x["epoch"] for x in r["rows"]]
            ax.plot(
                e,
                [x["online"]["mean"] for x in r["rows"]],
                "-",
                color=f"C{r['seed']}",
                label=f"seed {r['seed']} online",
            )
            ax.plot(
                e,
                [x["offline"]["mean"] for x in r["rows"]],
                "--",
                color=f"C{r['seed']}",
                label=f"seed {r['seed']} offline (end-of-epoch W)",
            )
        ax2 = ax.twinx()
        for r in (r for r in runs if r["noise"] == noise):
            ax2.plot(
                [x["epoch"] for x in r["rows"]],
                [x["test_acc"] for x in r["rows"]],
                ":",
                color=f"C{r['seed']}",
                alpha=0.6,
            )
        ax2.set_ylabel("test accuracy (dotted)")
        ax.axvline(2.5, color="grey", lw=0.8)
        ax.set_title(f"digits CNN w16, constant lr, {'clean' if noise == 'none' else '40% symmetric noise'}")
        ax.set_xlabel("epoch (10 optimizer steps each)")
        ax.set_ylabel("mean alignment")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--analyse-only", action="store_true")
    p.add_argument("--plot", help="write the constant-lr curves to this PNG")
    args = p.parse_args()
    if args.analyse_only:
        results = json.loads(Path(args.out).read_text())
        print(analyse(results))
        if args.plot:
            plot(results, args.plot)
        return
    torch.set_num_threads(1)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else []
    done = {(r["seed"], r["schedule"], r["noise"]) for r in results}
    for schedule in ("cosine", "constant"):
        for seed in (int(s) for s in args.seeds.split(",")):
            for noise, rate in (("none", 0.0), ("symmetric", 0.4)):
                if (seed, schedule, noise) in done:
                    continue
                results.append(run(seed, schedule, args.epochs, noise, rate))
                out.write_text(json.dumps(results) + "\n")  # resumable: one finished run at a time
                r = results[-1]["rows"]
                print(
                    seed,
                    schedule,
                    noise,
                    "online mean",
                    [round(x["online"]["mean"], 3) for x in r],
                    "offline mean",
                    [round(x["offline"]["mean"], 3) for x in r],
                    flush=True,
                )


if __name__ == "__main__":
    main()
