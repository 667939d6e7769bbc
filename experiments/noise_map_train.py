"""Train the development runs of issue 18 (noise map, class_conditional, veto) and keep their raw per-run arrays.

A plain torch loop with :class:`gwa.torch.GWATracker`; predictions come from the training step's own logits. Each
run trains on 90% of a noisy subset and scores the other 10% (noisy labels, the "10% split") every epoch; its first
fifth is the "2% split" (2% of the subset). The test set is clean. So every comparison is *selection-only*: gwa's
choice, the splits' choices and the veto's choice are read in the same run. Settings: Fashion-MNIST MLP, MNIST-1D
MLP, Fashion-MNIST CNN; noise none, symmetric 0.2/0.4, class-pair 0.2/0.4; seeds 0-2, seed by seed. cleanlab's
5-fold out-of-sample probabilities (last-epoch and early-stopped folds) for the two MLP families on seed 0 (the
CNN's folds would cost five CNN runs each; left out).

Resumable: a finished run (``<cache>/<name>.npz``) is skipped. Run with nice and one thread:

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python experiments/noise_map_train.py runs/noise_map
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import torch
from gwa.runner import noise as noise_mod
from gwa.runner.data import load_dataset
from gwa.runner.models import build_model
from gwa.torch import GWATracker
from torch import nn

NOISES = (("none", 0.0), ("symmetric", 0.2), ("symmetric", 0.4), ("pair", 0.2), ("pair", 0.4))
SEEDS = (0, 1, 2)
#: (dataset, model, subset size, epochs, with cleanlab folds)
FAMILIES = (
    ("fashion-mnist", "mlp", 5000, 25, True),
    ("mnist1d", "mlp", 4000, 40, True),
    ("fashion-mnist", "cnn", 5000, 20, False),
)
TEST_SIZE = 2000
BATCH = 64
LR = 1e-3


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def run_name(dataset: str, model: str, noise: str, rate: float, seed: int) -> str:
    return f"{dataset}_{model}_{noise}{round(rate * 100):02d}_s{seed}"


def _prepare(dataset: str, size: int, noise: str, rate: float, seed: int):
    data = load_dataset(dataset, mnist1d_samples=size + TEST_SIZE)
    rng = np.random.default_rng(1000 + seed)
    idx = rng.permutation(len(data.y_train))[:size]
    x, clean = data.x_train[idx].astype(np.float32), data.y_train[idx].astype(np.int64)
    if data.x_train.max() > 2:
        x = x / 255.0
    mu, sd = x.mean(), x.std() + 1e-8
    x = (x - mu) / sd
    xt = (data.x_test[:TEST_SIZE].astype(np.float32) / (255.0 if data.x_test.max() > 2 else 1.0) - mu) / sd
    yt = data.y_test[:TEST_SIZE].astype(np.int64)
    if noise == "symmetric":
        given, _ = noise_mod.symmetric(clean, rate, 10, seed=seed)
    elif noise == "pair":
        given, _ = noise_mod.asymmetric(clean, rate, noise_mod.pairs_for(dataset), seed=seed)
    else:
        given = clean.copy()
    return x, clean, given, xt, yt, data.input_shape


def _to_input(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x)
    return t.permute(0, 3, 1, 2).contiguous() if t.ndim == 4 else t


def _predict(model, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(_to_input(x[i : i + 512])) for i in range(0, len(x), 512)])
    model.train()
    return out.numpy()


def _fit(model, x, y, epochs, seed, *, tracker=None, evals=()):
    """Train; per epoch: train-pass predictions (N,), and the logits of each array in ``evals``."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    xs, ys = _to_input(x), torch.from_numpy(y)
    n = len(y)
    preds, eval_logits, results = [], [[] for _ in evals], []
    for _ in range(epochs):
        pred = np.full(n, -1, dtype=np.int16)
        for batch in torch.randperm(n, generator=gen).split(BATCH):
            logits = model(xs[batch])
            loss = loss_fn(logits, ys[batch])
            if tracker is not None:
                tracker.update(logits, ys[batch], sample_ids=batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            pred[batch.numpy()] = logits.detach().argmax(1).numpy()
        preds.append(pred)
        if tracker is not None:
            results.append(tracker.end_epoch())
        for k, xe in enumerate(evals):
            eval_logits[k].append(_predict(model, xe))
    return preds, eval_logits, results


def train_run(dataset, model_name, size, epochs, noise, rate, seed, with_cleanlab):
    x, clean, given, xt, yt, shape = _prepare(dataset, size, noise, rate, seed)
    n_val = size // 10
    tr, va = np.arange(n_val, size), np.arange(n_val)
    torch.manual_seed(seed)
    model = build_model(model_name, input_shape=shape, num_classes=10, hidden=(256, 256), width=16)
    tracker = GWATracker(model, num_samples=len(tr))
    preds, (val_logits, test_logits), results = _fit(
        model, x[tr], given[tr], epochs, seed, tracker=tracker, evals=(x[va], xt)
    )
    tracker.remove()
    out = {
        "alignment": np.stack([r.scores for r in results]).astype(np.float32),
        "pred": np.stack(preds),
        "labels": given[tr],
        "clean_labels": clean[tr],
        "val_pred": np.stack([v.argmax(1) for v in val_logits]).astype(np.int16),
        "val_labels": given[va],
        "val_clean": clean[va],
        "test_acc": np.array([(t.argmax(1) == yt).mean() for t in test_logits]),
        "history": np.array(json.dumps([r.summary.metrics() for r in results])),
    }
    if with_cleanlab:
        out.update(_cleanlab_probs(x[tr], given[tr], model_name, shape, epochs, seed))
    return out


def _cleanlab_probs(x, y, model_name, shape, epochs, seed):
    """5-fold out-of-sample softmax probabilities: at each fold's last epoch, and at its best noisy accuracy on
    its held-out fold (early-stopped folds)."""
    n = len(y)
    folds = np.random.default_rng(seed).permutation(n) % 5
    last, early = np.zeros((n, 10)), np.zeros((n, 10))
    for f in range(5):
        held = folds == f
        torch.manual_seed(100 + 10 * seed + f)
        model = build_model(model_name, input_shape=shape, num_classes=10, hidden=(256, 256), width=16)
        _, (logits,), _ = _fit(model, x[~held], y[~held], epochs, seed + f, evals=(x[held],))
        probs = [torch.softmax(torch.from_numpy(lg), 1).numpy() for lg in logits]
        best = int(np.argmax([(p.argmax(1) == y[held]).mean() for p in probs]))
        last[held], early[held] = probs[-1], probs[best]
    return {"cl_probs_last": last.astype(np.float32), "cl_probs_early": early.astype(np.float32)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cache", type=Path)
    p.add_argument("--families", default="0,1,2", help="indices into FAMILIES, in order")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="seeds to train, in order")
    p.add_argument(
        "--cleanlab-seeds", default="0", help="seeds whose MLP runs also train cleanlab's five folds"
    )
    args = p.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    families = [FAMILIES[int(i)] for i in args.families.split(",")]
    cleanlab_seeds = {int(i) for i in args.cleanlab_seeds.split(",") if i}
    for seed in (
        int(i) for i in args.seeds.split(",")
    ):  # seed by seed, so that an interrupted grid has every family
        for dataset, model_name, size, epochs, with_cl in families:
            for noise, rate in NOISES:
                name = run_name(dataset, model_name, noise, rate, seed)
                path = args.cache / f"{name}.npz"
                if path.exists():
                    continue
                t0 = time.perf_counter()
                # cleanlab's five folds cost five runs: on the chosen seeds only (the machine is shared)
                out = train_run(
                    dataset, model_name, size, epochs, noise, rate, seed, with_cl and seed in cleanlab_seeds
                )
                tmp = args.cache / f"{name}.{os.getpid()}.tmp.npz"  # two processes may share a cache
                np.savez_compressed(tmp, **out)
                tmp.rename(path)
                log(f"{name}: {time.perf_counter() - t0:.0f}s, final test acc {out['test_acc'][-1]:.3f}")


if __name__ == "__main__":
    main()
