"""cleanlab as a mislabel-detection baseline: Confident Learning on K-fold out-of-sample probabilities.

For a bench run's configuration (same data subset, same noisy labels), the training set is split into K
stratified folds; for each fold the run's recipe (model, initialisation seed, optimizer, learning-rate schedule,
epochs, batch size, batch order) is trained on the other K-1 folds with the runner's own building blocks, and
predicts softmax probabilities for the held-out fold at its last epoch. cleanlab then flags
(``cleanlab.filter.find_label_issues``, defaults) and ranks (``cleanlab.rank.get_label_quality_scores``,
defaults) the samples. The result is stored next to the run directories as ``cleanlab/<run name>.npz``
(numeric arrays only) so that ``gwa bench --from-runs`` can tabulate it without training.

Compute: K trainings on (K-1)/K of the data, i.e. ``K - 1`` times the sample-passes of the single gwa run for
K = 5 (4x); reported beside the scores.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

K_FOLDS = 5
RESULT_DIR = "cleanlab"


def fold_ids(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Held-out sample ids of each of ``k`` stratified folds (on the given, possibly noisy, labels)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [np.sort(test) for _, test in splitter.split(np.zeros(len(labels)), labels)]


def _train_and_predict(config, x_tr, y_tr, x_te, num_classes: int, input_shape) -> np.ndarray:
    """The run's recipe on ``(x_tr, y_tr)`` (torch, CPU or the config's device); softmax probabilities on x_te."""
    import torch.nn.functional as F

    import torch
    from gwa.runner.loop import epoch_batches
    from gwa.runner.models import build_model
    from gwa.runner.train_torch import build_optimizer, lr_factor, resolve_device, to_model_input

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = build_model(
        config.model,
        input_shape=input_shape,
        num_classes=num_classes,
        hidden=config.hidden,
        width=config.width,
    ).to(device)
    optimizer = build_optimizer(config, model.parameters())
    n = len(y_tr)
    steps = len(epoch_batches(n, config.batch_size, config.seed, 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(
            s,
            schedule=config.schedule,
            total_steps=config.epochs * steps,
            warmup_steps=config.warmup_epochs * steps,
        ),
    )
    x_tr_t, y_tr_t = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    model.train()
    for epoch in range(1, config.epochs + 1):
        for ids in epoch_batches(n, config.batch_size, config.seed, epoch):
            idx = torch.from_numpy(ids)
            loss = F.cross_entropy(model(to_model_input(x_tr_t[idx].to(device))), y_tr_t[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x_te), 512):
            xb = to_model_input(torch.from_numpy(x_te[i : i + 512]).to(device))
            out.append(torch.softmax(model(xb).float(), dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def out_of_fold_probs(config, *, k: int = K_FOLDS) -> tuple[np.ndarray, np.ndarray, float]:
    """``(pred_probs (N, C), noisy labels (N,), training seconds)`` for the full run of ``config`` (val_frac 0)."""
    from gwa.runner.data import prepare

    if config.val_frac:
        raise ValueError(
            f"Expected the configuration of a full run (val_frac 0); got val_frac={config.val_frac}."
        )
    data = prepare(config)
    probs = np.zeros((data.num_samples, data.num_classes))
    t0 = time.perf_counter()
    for held in fold_ids(data.y_train, k, config.seed):
        train = np.setdiff1d(np.arange(data.num_samples), held)
        probs[held] = _train_and_predict(
            config,
            data.x_train[train],
            data.y_train[train],
            data.x_train[held],
            data.num_classes,
            data.input_shape,
        )
    return probs, data.y_train, time.perf_counter() - t0


def label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's defaults: ``(flagged (N,) bool, label quality (N,) in [0, 1], lower = more suspicious)``."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    return (
        np.asarray(find_label_issues(labels, pred_probs), dtype=bool),
        np.asarray(get_label_quality_scores(labels, pred_probs), dtype=np.float64),
    )


def result_path(root: Path, run_name: str) -> Path:
    return Path(root) / RESULT_DIR / f"{run_name}.npz"


def run_cleanlab(config, root: Path, *, k: int = K_FOLDS) -> Path:
    """Cross-validate, run cleanlab, and store ``flagged``, ``quality``, ``pred_probs``, ``k``, ``seconds`` and
    ``sample_passes`` (training epochs x samples, summed over folds) as ``root/cleanlab/<run>.npz``."""
    probs, labels, seconds = out_of_fold_probs(config, k=k)
    flagged, quality = label_issues(labels, probs)
    path = result_path(root, config.run_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        flagged=flagged,
        quality=quality,
        pred_probs=probs,
        k=np.int64(k),
        seconds=np.float64(seconds),
        sample_passes=np.int64(config.epochs * len(labels) * (k - 1)),
    )
    tmp.replace(path)
    return path


def load_result(root: Path, run_name: str) -> dict | None:
    path = result_path(root, run_name)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


def flag_quality(flagged: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of a flag set against the noise mask (F1 = 0 when nothing is flagged or found;
    precision NaN when nothing is flagged)."""
    flagged, mask = np.asarray(flagged, dtype=bool), np.asarray(mask, dtype=bool)
    if flagged.shape != mask.shape:
        raise ValueError(
            f"Expected `flagged` and `mask` of the same shape; got {flagged.shape} and {mask.shape}."
        )
    tp = int((flagged & mask).sum())
    precision = tp / flagged.sum() if flagged.any() else float("nan")
    recall = tp / mask.sum() if mask.any() else float("nan")
    f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
