"""GWA in a plain Flax/optax loop: an MLP on sklearn's digits with noisy labels, no validation split.

The train step is jitted and returns the loss, the per-sample alignment scores and the epoch's running
moments; nothing leaves the device until the epoch ends. Each epoch then goes to :class:`gwa.integrations.EpochMonitor`,
the after-epoch step of every gwa surface: the epoch to keep (and, with ``--patience``, when to stop) is gwa's
default criterion, online (its :class:`gwa.EarlyStopper`) and post hoc (:func:`gwa.select_epoch`): the same epoch,
counted from 1; with ``--out`` it also writes the run directory that ``gwa train`` and the callbacks write (``gwa
report``, ``gwa flag`` read it). The test split is only printed, never used.

    python examples/flax_loop.py                # 30 epochs, 20% of the training labels flipped
    python examples/flax_loop.py --epochs 2 --noise 0
    python examples/flax_loop.py --patience 5   # stop once gwa has had no new best for 5 epochs
    python examples/flax_loop.py --out runs/flax && gwa report runs/flax
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import gwa
import gwa.jax
import jax
from gwa.integrations import EpochMonitor


class MLP(nn.Module):
    hidden: int = 128
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        self.sow("intermediates", "gwa_embeddings", x)  # the one line gwa needs: the head's input
        return nn.Dense(self.num_classes, name="head")(x)


def make_train_step(model, optimizer):
    @jax.jit
    def train_step(params, opt_state, moments, epoch_scores, x, y, idx, valid):
        def loss_fn(params):
            logits, sown = model.apply({"params": params}, x, mutable=["intermediates"])
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return jnp.sum(losses * valid) / jnp.sum(valid), (logits, sown)

        (loss, (logits, sown)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        # Scored with the head of this forward pass, before the update (as in the paper's Algorithm 1).
        scores = gwa.jax.alignment_from_flax(logits, y, sown, params)
        moments = gwa.jax.moments_update(moments, scores, mask=valid)  # padding rows are not counted
        # Stored per sample id, not per batch position; padding rows get an out-of-range id and are dropped.
        epoch_scores = epoch_scores.at[jnp.where(valid, idx, len(epoch_scores))].set(scores, mode="drop")
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, moments, epoch_scores, loss

    return train_step


def fixed_size_batches(order, batch_size):
    """Batches of one shape (one compilation): the last is padded with ids from the start, `valid` marks real rows."""
    pad = -len(order) % batch_size
    valid = np.arange(len(order) + pad) < len(order)
    order = np.concatenate([order, order[:pad]])
    return zip(order.reshape(-1, batch_size), valid.reshape(-1, batch_size))


def flip_labels(labels, fraction, num_classes, rng):
    """Move `fraction` of the labels to another class, uniformly; returns the new labels and the flip mask."""
    flipped = rng.random(len(labels)) < fraction
    offsets = rng.integers(1, num_classes, size=len(labels))
    return np.where(flipped, (labels + offsets) % num_classes, labels), flipped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--noise", type=float, default=0.2, help="fraction of training labels flipped")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--patience", type=int, default=None, help="stop when gwa has no new best for this long"
    )
    parser.add_argument("--out", default=None, help="also write a run directory here (gwa report reads it)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.2, random_state=args.seed)
    y_noisy, flipped = flip_labels(y_train, args.noise, 10, rng)
    x_test = jnp.asarray(x_test, jnp.float32)

    model = MLP()
    params = jax.jit(model.init)(jax.random.key(args.seed), jnp.zeros((1, x.shape[1])))["params"]
    optimizer = optax.adam(args.lr)
    opt_state = optimizer.init(params)
    train_step = make_train_step(model, optimizer)
    predict = jax.jit(lambda params, x: model.apply({"params": params}, x).argmax(axis=1))

    summaries, test_accs, n = [], [], len(y_train)
    monitor = EpochMonitor(patience=args.patience, run_dir=args.out, labels=y_noisy, noise_mask=flipped)
    monitor.start(max_epochs=args.epochs, num_samples=n, write=True, framework="flax")
    print(f"{'epoch':>5} {'loss':>7} {'test_acc':>8} {'align':>7} {'gwa':>7} {'paper':>9}")
    for epoch in range(1, args.epochs + 1):
        moments, epoch_scores = gwa.jax.moments_init(), jnp.full(n, jnp.nan)
        losses = []
        for idx, valid in fixed_size_batches(rng.permutation(n), args.batch_size):
            params, opt_state, moments, epoch_scores, loss = train_step(
                params,
                opt_state,
                moments,
                epoch_scores,
                jnp.asarray(x_train[idx], jnp.float32),
                jnp.asarray(y_noisy[idx]),
                jnp.asarray(idx),
                jnp.asarray(valid),
            )
            losses.append(loss)
        summary = gwa.summarize(gwa.jax.to_moments(moments))  # the epoch's only host round trip
        summaries.append(summary)
        test_acc = float(np.mean(np.asarray(predict(params, x_test)) == y_test))
        test_accs.append(test_acc)
        loss = float(np.mean(jax.device_get(losses)))
        note = f"  (paper's value not trusted: {summary.guard.message})" if summary.flagged else ""
        print(
            f"{epoch:5d} {loss:7.4f} {test_acc:8.3f} {summary.mean:7.4f} "
            f"{summary.gwa:7.4f} {summary.gwa_paper:9.4f}{note}"
        )
        # The metrics row, the stop decision, and with --out the run directory's writes.
        _, stop = monitor.record(
            epoch,
            summary,
            extra={"train_loss": loss, "test_acc": test_acc},
            scores={"alignment": np.asarray(epoch_scores)} if args.out else None,
        )
        if stop:  # monitor.stopper.message says why
            print(monitor.stopper.message)
            break
    monitor.finish()  # summary.json (with --out) and the diagnostics (monitor.diagnostics)

    if monitor.best_epoch is not None:
        # Post hoc, over the same history and the planned epochs: the epoch the online stopper holds.
        pick = gwa.select_epoch(summaries, total_epochs=args.epochs)
        assert pick == monitor.best_epoch
        print(
            f"gwa picks epoch {pick} (test acc {test_accs[pick - 1]:.3f}); the best test acc was "
            f"{max(test_accs):.3f} at epoch {int(np.argmax(test_accs)) + 1}"
        )
    if flipped.any():
        auroc = roc_auc_score(flipped, -np.asarray(epoch_scores))  # low alignment = likely mislabeled
        print(f"last epoch's alignment finds the flipped labels with AUROC {auroc:.3f}")
    return summaries, np.asarray(epoch_scores)


if __name__ == "__main__":
    main()
