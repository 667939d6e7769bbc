"""cleanlab as a mislabel-detection baseline: Confident Learning on K-fold out-of-sample probabilities.

For a bench run's configuration (same data subset, same noisy labels), the training set is split into K
stratified folds; for each fold the run's recipe (model, initialisation seed, optimizer, learning-rate schedule,
epochs, batch size, batch order) is trained on the other K-1 folds with the runner's own building blocks, and
predicts softmax probabilities for the held-out fold at its last epoch (the published recipe) and, beside it, at
the epoch of its best accuracy on the held-out fold's noisy labels (early-stopped folds: no clean label needed,
the stronger baseline; issue 19). cleanlab then flags
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


def _probabilities(model, x: np.ndarray, device) -> np.ndarray:
    import torch
    from gwa.runner.train_torch import to_model_input

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), 512):
            xb = to_model_input(torch.from_numpy(x[i : i + 512]).to(device))
            out.append(torch.softmax(model(xb).float(), dim=1).cpu().numpy())
    model.train()
    return np.concatenate(out).astype(np.float64)


def _train_and_predict(config, x_tr, y_tr, x_te, y_te, num_classes: int, input_shape) -> dict:
    """The run's recipe on ``(x_tr, y_tr)`` (torch, CPU or the config's device), scored on the held-out fold after
    every epoch: ``{"last": probs at the last epoch, "early_stopped": probs at the epoch of best accuracy on the
    fold's noisy labels ``y_te`` (earliest on ties), "epoch": that epoch (1-based), "fold_acc": (epochs,)}``."""
    import torch.nn.functional as F

    import torch
    from gwa.runner import augment
    from gwa.runner.loop import epoch_batches
    from gwa.runner.models import build_model, perturb_parameters
    from gwa.runner.train_torch import build_optimizer, lr_factor, resolve_device, to_model_input

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = build_model(
        config.model,
        input_shape=input_shape,
        num_classes=num_classes,
        hidden=config.hidden,
        width=config.width,
    )
    if getattr(config, "init_perturb", 0.0):
        perturb_parameters(model, config.init_perturb, seed=config.seed)
    model = model.to(device)
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
    best_acc, best_probs, best_epoch = -1.0, None, 0  # the fold model at its best noisy held-out accuracy
    fold_acc = []
    probs = np.zeros((len(x_te), num_classes))
    for epoch in range(1, config.epochs + 1):
        aug_rng = augment.epoch_generator(config.seed, epoch) if getattr(config, "augment", False) else None
        for ids in epoch_batches(n, config.batch_size, config.seed, epoch):
            idx = torch.from_numpy(ids)
            xb = to_model_input(x_tr_t[idx].to(device))
            if aug_rng is not None:
                xb = augment.augment_batch(xb, aug_rng)
            loss = F.cross_entropy(model(xb), y_tr_t[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        probs = _probabilities(model, x_te, device)
        acc = float((probs.argmax(axis=1) == y_te).mean())
        fold_acc.append(acc)
        if acc > best_acc:
            best_acc, best_probs, best_epoch = acc, probs, epoch
    return {
        "last": probs,
        "early_stopped": best_probs,
        "epoch": best_epoch,
        "fold_acc": np.array(fold_acc),
    }


def out_of_fold_probs(config, *, k: int = K_FOLDS) -> dict:
    """Out-of-fold probabilities for the full run of ``config`` (val_frac 0): ``{"last", "early_stopped"
    (N, C), "labels" (N,) noisy, "es_epochs" (k,), "fold_acc" (k, epochs), "seconds"}``."""
    from gwa.runner.data import prepare

    if config.val_frac:
        raise ValueError(
            f"Expected the configuration of a full run (val_frac 0); got val_frac={config.val_frac}."
        )
    data = prepare(config)
    last = np.zeros((data.num_samples, data.num_classes))
    early = np.zeros_like(last)
    es_epochs, fold_acc = [], []
    t0 = time.perf_counter()
    for held in fold_ids(data.y_train, k, config.seed):
        train = np.setdiff1d(np.arange(data.num_samples), held)
        fold = _train_and_predict(
            config,
            data.x_train[train],
            data.y_train[train],
            data.x_train[held],
            data.y_train[held],
            data.num_classes,
            data.input_shape,
        )
        last[held], early[held] = fold["last"], fold["early_stopped"]
        es_epochs.append(fold["epoch"])
        fold_acc.append(fold["fold_acc"])
    return {
        "last": last,
        "early_stopped": early,
        "labels": data.y_train,
        "es_epochs": np.array(es_epochs, dtype=np.int64),
        "fold_acc": np.array(fold_acc),
        "seconds": time.perf_counter() - t0,
    }


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
    """Cross-validate, run cleanlab on both recipes, and store as ``root/cleanlab/<run>.npz``: ``flagged``,
    ``quality``, ``pred_probs`` (folds at their last epoch, the published recipe), ``flagged_es``, ``quality_es``,
    ``pred_probs_es``, ``es_epochs`` (folds early-stopped on their held-out fold's noisy labels), ``fold_acc``,
    ``k``, ``seconds``, ``sample_passes`` (training epochs x samples, summed over folds: the same for both
    recipes, which share the trainings) and ``eval_passes`` (the per-epoch scoring of the held-out folds that
    early stopping needs)."""
    folds = out_of_fold_probs(config, k=k)
    labels = folds["labels"]
    flagged, quality = label_issues(labels, folds["last"])
    flagged_es, quality_es = label_issues(labels, folds["early_stopped"])
    path = result_path(root, config.run_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        flagged=flagged,
        quality=quality,
        pred_probs=folds["last"],
        flagged_es=flagged_es,
        quality_es=quality_es,
        pred_probs_es=folds["early_stopped"],
        es_epochs=folds["es_epochs"],
        fold_acc=folds["fold_acc"],
        k=np.int64(k),
        seconds=np.float64(folds["seconds"]),
        sample_passes=np.int64(config.epochs * len(labels) * (k - 1)),
        eval_passes=np.int64(config.epochs * len(labels)),
    )
    tmp.replace(path)
    return path


def cleanlab_flags(result: dict, mask: np.ndarray) -> dict[str, dict[str, float]]:
    """Flag quality of a stored cleanlab result against the noise mask: ``{"cleanlab": last-epoch folds,
    "cleanlab_es": early-stopped folds (results stored before they existed have none)}``; AUROC ranks by low
    label quality (the suspicious end)."""
    from sklearn.metrics import roc_auc_score

    mask = np.asarray(mask, dtype=bool)
    out = {}
    for name, suffix in (("cleanlab", ""), ("cleanlab_es", "_es")):
        if f"flagged{suffix}" not in result:
            continue
        out[name] = {
            **flag_quality(result[f"flagged{suffix}"], mask),
            "auroc": float(roc_auc_score(mask, -np.asarray(result[f"quality{suffix}"]))),
            "sample_passes": float(result["sample_passes"]),
        }
    return out


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
