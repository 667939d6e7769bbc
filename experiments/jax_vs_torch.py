"""How close are ``gwa train --backend jax`` and ``--backend torch`` on one config? Prints the numbers in docs/jax.md.

Part 1 starts the JAX run from the torch run's initial weights: what is left is floating-point order (XLA vs
ATen kernels), so the curves should agree closely and drift slowly. Part 2 lets each backend draw its own
initial weights (the normal case) and compares the backend gap with the seed-to-seed spread of torch alone.

    python experiments/jax_vs_torch.py            # digits, MLP, 20% symmetric noise, 20 epochs, seeds 0-2
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np


def torch_initial_params(config, data):
    """The torch backend's initial weights for ``config`` as a Flax params tree (kernels transposed)."""
    import jax.numpy as jnp

    import torch
    from gwa.runner.models import build_model

    torch.manual_seed(config.seed)  # exactly as train_torch does before building the model
    model = build_model(
        config.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        hidden=config.hidden,
        width=config.width,
    )
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    names = [f"body_{i}" for i in range(len(linears) - 1)] + ["head"]
    return {
        name: {
            "kernel": jnp.asarray(m.weight.detach().numpy().T),
            "bias": jnp.asarray(m.bias.detach().numpy()),
        }
        for name, m in zip(names, linears)
    }


def run(config, out: Path, *, torch_init: bool = False):
    from gwa.rundir import load_run
    from gwa.runner import models_jax
    from gwa.runner.data import prepare
    from gwa.runner.train import run_training

    config = config.replace(out=str(out), quiet=True)
    original = models_jax.init_params
    if torch_init:
        data = prepare(config)
        models_jax.init_params = lambda model, shape, seed: torch_initial_params(config, data)
    try:
        return load_run(run_training(config, progress=False))
    finally:
        models_jax.init_params = original


def gwa_pick_acc(run) -> float:
    """Test accuracy at the epoch gwa's default criterion chose (summary.json, the core policy's choice)."""
    return run.summary["criteria"]["gwa"]["test_acc"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    import jax
    import torch
    from gwa.runner.config import RunConfig

    torch.set_num_threads(1)
    base = RunConfig(
        dataset="digits", model="mlp", noise="symmetric", noise_rate=0.2, epochs=args.epochs, device="cpu"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
        f"torch {torch.__version__}, jax {jax.__version__}; config: digits, mlp {base.hidden}, adam lr "
        f"{base.lr:g}, batch {base.batch_size}, 20% symmetric noise, {args.epochs} epochs"
    )
    keys = (
        "train_loss",
        "test_acc",
        "align_mean",
        "gwa",
        "gwa_paper",
    )  # gwa: the default value; gwa_paper: Eq. 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(
            "\n1. same initial weights (seed 0): |jax - torch| per epoch, max over epochs (and at the last)"
        )
        t = run(base.replace(backend="torch"), tmp / "t0")
        j = run(base.replace(backend="jax"), tmp / "j0_same", torch_init=True)
        for key in keys:
            diff = np.abs(j.series(key) - t.series(key))
            print(
                f"   {key:<11} max {diff.max():.2e}  last {diff[-1]:.2e}  (torch last {t.series(key)[-1]:.4f})"
            )
        for epoch in (1, args.epochs):
            a, b = j.scores(epoch).astype(np.float64), t.scores(epoch).astype(np.float64)
            print(
                f"   per-sample alignment, epoch {epoch:>2}: max |diff| {np.abs(a - b).max():.2e}, "
                f"Pearson r {np.corrcoef(a, b)[0, 1]:.6f}"
            )

        print(f"\n2. each backend draws its own initial weights, seeds 0-{args.seeds - 1}")
        runs = {"torch": [t], "jax": []}
        for seed in range(args.seeds):
            if seed:
                runs["torch"].append(run(base.replace(backend="torch", seed=seed), tmp / f"t{seed}"))
            runs["jax"].append(run(base.replace(backend="jax", seed=seed), tmp / f"j{seed}"))
        for name, rs in runs.items():
            final = [r.series("test_acc")[-1] for r in rs]
            picked = [gwa_pick_acc(r) for r in rs]
            best = [np.nanmax(r.series("test_acc")) for r in rs]
            print(
                f"   {name:<5} final test acc {np.mean(final):.4f} ± {np.std(final):.4f}   at gwa's epoch "
                f"{np.mean(picked):.4f} ± {np.std(picked):.4f}   best {np.mean(best):.4f}"
            )
        for key in ("test_acc", "gwa"):
            torch_curves = np.stack([r.series(key) for r in runs["torch"]])
            jax_curves = np.stack([r.series(key) for r in runs["jax"]])
            seed_gap = np.mean(
                [
                    np.sqrt(np.mean((a - b) ** 2))
                    for i, a in enumerate(torch_curves)
                    for b in torch_curves[i + 1 :]
                ]
            )
            backend_gap = np.mean([np.sqrt(np.mean((a - b) ** 2)) for a in jax_curves for b in torch_curves])
            print(
                f"   RMS curve distance of {key:<8}: torch seed vs seed {seed_gap:.4f}, jax vs torch {backend_gap:.4f}"
            )


if __name__ == "__main__":
    main()
