"""Scores of many GWATracker configurations on fixed seeds, saved to an .npz, and a byte-for-byte comparison.

Run:  python experiments/tracker_split_parity.py run OUT.npz
      python experiments/tracker_split_parity.py compare BEFORE.npz AFTER.npz

Written for issue 21's tracker split: run it on the code before a refactoring of ``gwa.torch`` and after, and
``compare`` says whether every array is identical (``np.array_equal`` with NaN positions equal, same dtype and
shape). The configurations cross the tracker's paths: ``defer`` 0 / 3 / 32, hard, label-smoothed and mixup
targets, sample ids / positions / duplicates, bias in or out of the cosine, float32 / float64, the three
storages and float16 storage, signals, ``paused()``, logits that are not the head's output (``logits / T``), the
explicit path, NaN inputs and zero embeddings, a mid-epoch ``state_dict()`` resumed by a new tracker, and
several epochs of SGD. ``compile`` stays off (it is not bit-identical to the eager kernel by design).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings

import numpy as np
import torch.nn.functional as F

import torch
from gwa.torch import GWATracker
from torch import nn

N, BATCH, CLASSES, EPOCHS = 96, 16, 5, 3
SIGNALS = ("loss", "margin", "p_gold", "el2n", "pred", "correct")


def model_for(bias: bool, dtype: torch.dtype, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, CLASSES, bias=bias))
    return model.to(dtype)


def data(dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 6, generator=g).to(dtype)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    x[
        7
    ] = -50.0  # with the first layer's weights below, a row whose embedding is probably all zero after ReLU
    return x, y, g


def run_config(name: str, cfg: dict, out: dict) -> None:
    dtype = cfg["dtype"]
    model = model_for(cfg["bias"], dtype, seed=cfg["seed"])
    x, y, g = data(dtype, cfg["seed"])
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    kwargs = {
        "defer": cfg["defer"],
        "bias": cfg["bias_in"],
        "label_smoothing": cfg["smoothing"],
        "signals": SIGNALS if cfg["signals"] else (),
        "unpaired": "skip" if cfg["unpaired_skip"] else "raise",
    }
    if cfg["storage"] == "indexed":
        kwargs["num_samples"] = N
    elif cfg["storage"] == "moments":
        kwargs["store_scores"] = False
    if cfg["half"]:
        kwargs["score_dtype"] = torch.float16
    explicit = cfg["explicit"]
    tracker = GWATracker(None if explicit else model, **kwargs)
    returned = []
    for epoch in range(EPOCHS):
        order = torch.randperm(N, generator=g)
        if cfg["duplicates"]:
            order = torch.cat([order, order[:24]])  # 24 samples seen twice
        for step, start in enumerate(range(0, len(order), BATCH)):
            idx = order[start : start + BATCH]
            xb = x[idx].clone()
            if cfg["nan"] and epoch == 1 and step == 2:
                xb[3] = float("nan")
            yb = y[idx]
            if cfg["targets"] == "soft":
                yb = F.one_hot(yb, CLASSES).to(dtype) * 0.7 + 0.3 / CLASSES
            elif cfg["targets"] == "mixup":
                lam = 0.6
                perm = torch.randperm(len(idx), generator=g)
                onehot = F.one_hot(yb, CLASSES).to(dtype)
                yb = lam * onehot + (1 - lam) * onehot[perm]
            if cfg["paused"] and step % 2 == 0:
                with tracker.paused():
                    model(xb * 0.5)  # an extra augmented view: not captured
            if cfg["double"] and step % 3 == 1:
                model(xb)  # a forward without its own update(): the next update must pair past it or skip
            embeddings = model[1](model[0](xb))
            logits = model[2](embeddings)
            model.eval()
            with torch.no_grad():
                model(xb)  # an evaluation forward in between: not captured
            model.train()
            loss = F.cross_entropy(logits, yb, label_smoothing=cfg["smoothing"])
            poisoned = bool(torch.isnan(xb).any())
            given = logits / 2.0 if cfg["scaled"] else logits
            ids = None if cfg["positions"] else idx
            if explicit:
                bias = model[2].bias if cfg["bias_in"] else None
                r = tracker.update(given, yb, ids, embeddings=embeddings, weight=model[2].weight, bias=bias)
            else:
                r = tracker.update(given, yb, ids)
            if r is not None:
                returned.append(r.detach().cpu().numpy().copy())
            opt.zero_grad()
            if not poisoned:  # a NaN row's gradient would make every later score NaN
                loss.backward()
                opt.step()
            if cfg["resume"] and epoch == 1 and step == 3:
                state = tracker.state_dict()
                tracker.remove()
                tracker = GWATracker(None if explicit else model, **kwargs)
                tracker.load_state_dict(state)
        result = tracker.end_epoch()
        key = f"{name}/e{epoch}"
        s = result.summary
        out[f"{key}/summary"] = np.array(
            [s.n, s.n_undefined, s.mean, s.std, s.excess_kurtosis, s.gwa, s.gwa_paper, s.denominator],
            dtype=np.float64,
        )
        out[f"{key}/counts"] = np.array([result.n_duplicates, result.n_non_finite, result.n_unpaired])
        for field in ("scores", "sample_ids", "predictions", "labels"):
            value = getattr(result, field)
            if value is not None:
                out[f"{key}/{field}"] = value
        for signal, value in result.signals.items():
            out[f"{key}/signal_{signal}"] = value
        if result.class_evidence is not None:
            out[f"{key}/class_mean"] = np.asarray(result.class_evidence.mean)
    if returned:
        out[f"{name}/returned"] = np.concatenate(returned)
    tracker.remove()


def configs():
    base = {
        "defer": 32,
        "targets": "hard",
        "smoothing": 0.0,
        "positions": False,
        "bias": True,
        "bias_in": False,
        "dtype": torch.float32,
        "storage": "indexed",
        "half": False,
        "signals": False,
        "duplicates": False,
        "paused": False,
        "scaled": False,
        "explicit": False,
        "nan": False,
        "resume": False,
        "unpaired_skip": False,
        "double": False,
        "seed": 0,
    }
    grid = itertools.product(
        (0, 3, 32),
        ("hard", "soft", "mixup"),
        (False, True),  # positions
        ((True, False), (True, True), (False, False)),  # (head has a bias, bias in the cosine)
        (torch.float32, torch.float64),
    )
    for k, (defer, targets, positions, (bias, bias_in), dtype) in enumerate(grid):
        cfg = dict(
            base,
            defer=defer,
            targets=targets,
            positions=positions,
            bias=bias,
            bias_in=bias_in,
            dtype=dtype,
            smoothing=0.1 if targets == "hard" and k % 2 else 0.0,
            signals=k % 3 == 0,
            duplicates=k % 4 == 1 and not positions,  # positions past N would be out of range
            paused=k % 5 == 2,
            nan=k % 6 == 3,
            seed=k,
        )
        yield f"grid{k:03d}", cfg
    extras = {
        "sparse": {"storage": "sparse", "duplicates": True, "signals": True},
        "sparse_defer0": {"storage": "sparse", "defer": 0, "duplicates": True, "signals": True},
        "moments": {"storage": "moments"},
        "moments_defer0": {"storage": "moments", "defer": 0},
        "half": {"half": True, "signals": True, "duplicates": True},
        "half_defer0": {"half": True, "signals": True, "defer": 0},
        "scaled": {"scaled": True},
        "scaled_defer0": {"scaled": True, "defer": 0, "signals": True},
        "explicit": {"explicit": True},
        "explicit_defer0_bias": {"explicit": True, "defer": 0, "bias_in": True, "targets": "soft"},
        "resume": {"resume": True, "duplicates": True, "signals": True},
        "resume_defer0": {"resume": True, "defer": 0, "duplicates": True, "signals": True},
        "resume_positions_soft": {"resume": True, "positions": True, "targets": "soft", "defer": 3},
        "resume_sparse": {"resume": True, "storage": "sparse", "defer": 0},
        "resume_moments": {"resume": True, "storage": "moments"},
        "double": {"double": True},
        "double_defer0": {"double": True, "defer": 0},
        "unpaired_skip": {"double": True, "scaled": True, "unpaired_skip": True},
        "unpaired_skip_defer0": {"double": True, "scaled": True, "unpaired_skip": True, "defer": 0},
        "nan_defer0_f64": {"nan": True, "defer": 0, "dtype": torch.float64, "signals": True},
    }
    for k, (name, extra) in enumerate(extras.items()):
        yield name, dict(base, seed=1000 + k, **extra)


def run(path: str) -> None:
    torch.set_num_threads(1)
    out: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, cfg in configs():
            run_config(name, cfg, out)
    np.savez(path, **out)
    print(f"{len(out)} arrays from {len({k.split('/')[0] for k in out})} configurations -> {path}")


def compare(before: str, after: str) -> int:
    a, b = np.load(before), np.load(after)
    keys_a, keys_b = set(a.files), set(b.files)
    problems = [f"only in {before}: {k}" for k in sorted(keys_a - keys_b)]
    problems += [f"only in {after}: {k}" for k in sorted(keys_b - keys_a)]
    for k in sorted(keys_a & keys_b):
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape:
            problems.append(f"{k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
        elif not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            problems.append(f"{k}: values differ (max |diff| {np.nanmax(np.abs(x - y))})")
        elif x.dtype.kind == "f" and not np.array_equal(np.isnan(x), np.isnan(y)):
            problems.append(f"{k}: NaN positions differ")
    shared = sorted(keys_a & keys_b)
    nan = sum(int(np.isnan(a[k]).sum()) for k in shared if a[k].dtype.kind == "f")
    print(f"before: {before} ({len(keys_a)} arrays)")
    print(f"after:  {after} ({len(keys_b)} arrays)")
    print(f"configurations: {len({k.split('/')[0] for k in keys_a | keys_b})}")
    print(f"values compared: {sum(a[k].size for k in shared)} (NaN among them: {nan})")
    if problems:
        print(f"DIFFERENT: {len(problems)} array(s)")
        print("\n".join(problems))
        return 1
    print("identical: every array has the same dtype, shape, values and NaN positions (np.array_equal)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run").add_argument("out")
    cmp = sub.add_parser("compare")
    cmp.add_argument("before")
    cmp.add_argument("after")
    args = parser.parse_args()
    if args.command == "run":
        run(args.out)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
