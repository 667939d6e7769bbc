"""The JAX/Flax backend of ``gwa train``: the torch backend's loop in Flax and optax, writing the same run directory.

Interface: :func:`train` (see :mod:`gwa.runner.train`). What is the same as ``train_torch``: the data
(subset, noise, split, normalisation, the epoch's batches from (seed, epoch)), the architectures and their
initialisation distribution, the optimizers (torch's L2 ``weight_decay`` for sgd/adam, decoupled for adamw)
and the per-batch learning-rate schedules, the metrics, signals and checkpoints' meaning. What differs: the
drawn initial weights (jax's RNG) and the order of floating-point operations, so the two backends give runs
that agree like two seeds of one backend, not bit for bit (see docs/jax.md for measured numbers).

The train step is one jitted function: forward, loss, backward, alignment scores with the pre-update head,
streaming moments, per-sample signals scattered by sample id, optimizer update. The training data sits on
the device; per step only the batch's sample ids travel. Batches are padded to one shape (one compilation),
the padding masked out of the loss, moments, counters and store.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import types
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax

import gwa
import gwa.jax as gj
import jax
from gwa.runner import checkpoint
from gwa.runner.loop import EpochLoop, epoch_batches, progress_bar

log = logging.getLogger(__name__)

BACKEND = "jax"
SUFFIX = ".msgpack"
#: Evaluation batch size (padded to a fixed shape, one compilation per evaluated set).
EVAL_BATCH = 512


def resolve_device(name: str):
    """``auto``: jax's default device (a GPU when jax has one); ``cpu``/``cuda`` explicit; no ``mps`` in jax."""
    if name == "auto":
        return jax.devices()[0]
    if name == "mps":
        raise ValueError(
            "Expected `device` auto, cpu or cuda with backend 'jax'; got 'mps' (jax has no Metal "
            "backend here; use --backend torch)."
        )
    platform = "gpu" if name == "cuda" else "cpu"
    try:
        return jax.devices(platform)[0]
    except RuntimeError:
        raise ValueError(
            f"Expected an available `device`; got {name!r}, which jax does not see on this machine "
            f"(use --device auto or cpu)."
        ) from None


def lr_schedule(config, steps_per_epoch: int, *, xp=jnp):
    """The learning rate at optimizer step ``step`` (0-based, per batch): ``train_torch.lr_factor`` times lr.

    ``xp=jnp`` gives optax's schedule (traced, float32); ``xp=np`` the same formula on the host in float64,
    for the logged ``lr``.
    """
    total, warm, peak = config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch, config.lr
    dtype = xp.float32 if xp is jnp else xp.float64

    def schedule(step):
        step = xp.asarray(step, dtype)
        if config.schedule == "constant":
            return xp.full((), peak, dtype)
        start = warm if config.schedule == "warmup_cosine" else 0
        progress = xp.minimum(1.0, (step - start) / max(1, total - start))
        cosine = 0.5 * (1.0 + xp.cos(xp.pi * progress))
        if config.schedule == "warmup_cosine":
            cosine = xp.where(step < warm, (step + 1) / max(1, warm), cosine)
        return peak * cosine

    return schedule


def build_optimizer(config, schedule) -> optax.GradientTransformation:
    """torch's SGD/Adam (L2 weight decay added to the gradient) and AdamW (decoupled), with the schedule."""
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        core = optax.sgd(schedule, momentum=config.momentum or None)
    else:
        core = optax.adam(schedule)
    return optax.chain(optax.add_decayed_weights(config.weight_decay), core) if config.weight_decay else core


def per_sample_signals(logits, labels, names) -> dict:
    """``gwa.torch``'s companion signals for hard labels: loss, margin, p_gold, el2n, pred, correct (float32)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=1)
    onehot = jax.nn.one_hot(labels, logits.shape[1], dtype=jnp.float32)
    gold_logp = jnp.sum(log_probs * onehot, axis=1)
    pred = logits.argmax(axis=1)
    out = {
        "loss": -gold_logp,
        "margin": jnp.sum(logits * onehot, axis=1) - jnp.max(jnp.where(onehot > 0, -jnp.inf, logits), axis=1),
        "p_gold": jnp.exp(gold_logp),
        "el2n": jnp.linalg.norm(jnp.exp(log_probs) - onehot, axis=1),
        "pred": pred.astype(jnp.float32),
        "correct": (pred == labels).astype(jnp.float32),
    }
    return {k: out[k] for k in names}


def make_train_step(model, optimizer, *, align_bias: bool, signals: tuple[str, ...], donate: bool):
    """The jitted step: ``(state, carry, ids, valid) -> (state, carry)``; ``carry`` holds the epoch's tallies."""

    def step(params, opt_state, carry, x_all, y_all, ids, valid):
        safe = jnp.where(valid, ids, 0)
        x, y = x_all[safe], y_all[safe]
        weight = valid.astype(jnp.float32)

        def loss_fn(params):
            logits, sown = model.apply({"params": params}, x, mutable=["intermediates"])
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return jnp.sum(losses * weight) / jnp.sum(weight), (logits, sown)

        (loss, (logits, sown)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        # Scored with the head of this forward pass, before the update (the paper's Algorithm 1).
        scores, defined = gj.alignment_from_flax(
            logits, y, sown, params, include_bias=align_bias, with_mask=True
        )
        finite = jnp.isfinite(scores)
        ok = valid & finite
        values = {"alignment": scores, **per_sample_signals(logits, y, signals)}
        where = jnp.where(ok, ids, y_all.shape[0])  # out of range: dropped by the scatter
        store = {
            k: carry["store"][k].at[where].set(v.astype(jnp.float32), mode="drop") for k, v in values.items()
        }
        n_valid = jnp.sum(weight)
        carry = {
            "moments": gj.moments_update(carry["moments"], scores, ok),
            "store": store,
            "loss_sum": carry["loss_sum"] + loss * n_valid,
            "correct": carry["correct"] + jnp.sum((logits.argmax(axis=1) == y) & valid),
            "n_undefined": carry["n_undefined"] + jnp.sum(ok & ~defined),
            "n_non_finite": carry["n_non_finite"] + jnp.sum(valid & ~finite),
        }
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, carry

    # Donating the carry lets an accelerator update the (N,) stores in place; the CPU cannot use donations.
    return jax.jit(step, donate_argnums=(2,) if donate else ())


# Runs that differ only in seed, data or noise (a benchmark grid) share one compiled step and predictor.
@functools.lru_cache(maxsize=8)
def _compiled_step(model, optimizer_key: tuple, align_bias: bool, signals: tuple[str, ...], donate: bool):
    config = types.SimpleNamespace(**dict(optimizer_key))
    optimizer = build_optimizer(config, lr_schedule(config, config.steps_per_epoch))
    step = make_train_step(model, optimizer, align_bias=align_bias, signals=signals, donate=donate)
    return step, optimizer


@functools.lru_cache(maxsize=8)
def _compiled_predict(model):
    return make_predict(model)


def _optimizer_key(config, steps_per_epoch: int) -> tuple:
    """The options the optimizer and its schedule depend on (the run length only for decaying schedules)."""
    decays = config.schedule != "constant"
    return (
        ("optimizer", config.optimizer),
        ("lr", config.lr),
        ("momentum", config.momentum),
        ("weight_decay", config.weight_decay),
        ("schedule", config.schedule),
        ("epochs", config.epochs if decays else 0),
        ("warmup_epochs", config.warmup_epochs if decays else 0),
        ("steps_per_epoch", steps_per_epoch if decays else 0),
    )


def new_carry(num_samples: int, signals: tuple[str, ...]) -> dict:
    zero_i = jnp.zeros((), jnp.int32)
    store = {k: jnp.full(num_samples, jnp.nan, jnp.float32) for k in ("alignment", *signals)}
    return {
        "moments": gj.moments_init(jnp.float32),
        "store": store,
        "loss_sum": jnp.zeros((), jnp.float32),
        "correct": zero_i,
        "n_undefined": zero_i,
        "n_non_finite": zero_i,
    }


def padded_batches(batches: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Near-equal batches as ``(B, S)`` ids and validity masks, padded to the largest batch."""
    size = max(len(b) for b in batches)
    ids = np.zeros((len(batches), size), dtype=np.int32)
    valid = np.zeros((len(batches), size), dtype=bool)
    for i, b in enumerate(batches):
        ids[i, : len(b)], valid[i, : len(b)] = b, True
    return ids, valid


def make_predict(model):
    @jax.jit
    def predict_batch(params, x):
        return model.apply({"params": params}, x).argmax(axis=1)

    def predict(params, x: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(x), EVAL_BATCH):
            chunk = x[i : i + EVAL_BATCH]
            pad = EVAL_BATCH - len(chunk) if len(x) > EVAL_BATCH else 0  # one shape for all chunks
            padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
            out.append(np.asarray(predict_batch(params, padded))[: len(chunk)])
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    return predict


def gradient_disparity(model, params, data, config, epoch: int) -> float:
    """Gradient Disparity on 5 batches drawn as ``train_torch`` draws them (see gwa.baselines.disparity)."""
    rng = np.random.default_rng([config.seed, epoch, 1])
    ids = rng.permutation(data.num_samples)
    size = min(config.batch_size, max(1, data.num_samples // 5))

    def scaled_loss(p, x, y):
        losses = optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y)
        return jnp.mean(losses / jnp.std(losses, ddof=1))

    grad_fn = jax.jit(jax.grad(scaled_loss))
    grads = []
    for k in range(5):
        rows = ids[k * size : (k + 1) * size]
        g = grad_fn(params, jnp.asarray(data.x_train[rows]), jnp.asarray(data.y_train[rows]))
        grads.append(np.concatenate([np.asarray(v, np.float64).ravel() for v in jax.tree.leaves(g)]))
    g = np.stack(grads)
    dists = [np.linalg.norm(g[i] - g[j]) for i in range(len(g)) for j in range(i + 1, len(g))]
    return float(np.mean(dists))


def _save_checkpoints(run_dir, ckpt_dir, epoch, params, opt_state, loop: EpochLoop, is_best: bool) -> None:
    from flax import serialization

    if is_best:
        payload = serialization.msgpack_serialize(
            {"epoch": epoch, "params": serialization.to_state_dict(jax.device_get(params))}
        )
        checkpoint.commit(
            run_dir,
            f"best_{gwa.DEFAULT_CRITERION}",
            epoch=epoch,
            backend=BACKEND,
            suffix=SUFFIX,
            write=lambda fh: fh.write(payload),
        )
    state = {
        "epoch": epoch,
        "params": serialization.to_state_dict(jax.device_get(params)),
        "opt_state": serialization.to_state_dict(jax.device_get(opt_state)),
        "loop": json.dumps(loop.state_dict()),
    }
    payload = serialization.msgpack_serialize(state)
    checkpoint.commit(
        run_dir, "last", epoch=epoch, backend=BACKEND, suffix=SUFFIX, write=lambda fh: fh.write(payload)
    )


def _load_last(path: Path, start_epoch: int, params, opt_state):
    from flax import serialization

    state = serialization.msgpack_restore(path.read_bytes())
    if int(state["epoch"]) != start_epoch:
        raise ValueError(f"{path} holds epoch {state['epoch']}, but last.json says {start_epoch}.")
    params = serialization.from_state_dict(params, state["params"])
    opt_state = serialization.from_state_dict(opt_state, state["opt_state"])
    return params, opt_state, json.loads(state["loop"])


def train(config, data, loop: EpochLoop, *, start_epoch: int = 0, progress: bool = True) -> None:
    """Train epochs ``start_epoch + 1 .. config.epochs``; see :mod:`gwa.runner.train` for the contract."""
    from gwa.runner.models_jax import build_model, init_params

    if config.init_checkpoint:
        raise ValueError(
            "`init_checkpoint` (a torch state_dict) cannot initialise the jax backend; use --backend torch."
        )
    if config.amp:
        log.warning("--amp is not implemented by the jax backend; training in float32.")
    model = build_model(
        config.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        hidden=config.hidden,
        width=config.width,
    )
    device = resolve_device(config.device)
    n = data.num_samples
    steps_per_epoch = len(epoch_batches(n, config.batch_size, config.seed, 1))
    host_schedule = lr_schedule(config, steps_per_epoch, xp=np)
    signals = tuple(dict.fromkeys((*config.signals, "pred")))
    train_step, optimizer = _compiled_step(
        model, _optimizer_key(config, steps_per_epoch), config.align_bias, signals, device.platform != "cpu"
    )
    run_dir = loop.writer.path
    ckpt_dir = checkpoint.checkpoint_dir(run_dir)
    with jax.default_device(device):
        params = init_params(model, data.input_shape, config.seed)
        opt_state = optimizer.init(params)
        if start_epoch > 0:
            last = checkpoint.marked_file(run_dir, "last")
            with checkpoint.restoring(last):  # a checkpoint that does not fit: one line naming it
                params, opt_state, loop_state = _load_last(last, start_epoch, params, opt_state)
                loop.load_state_dict(loop_state)
            if loop.stopper.should_stop:
                return
        predict = _compiled_predict(model)
        x_all, y_all = jnp.asarray(data.x_train), jnp.asarray(data.y_train.astype(np.int32))
        step = start_epoch * steps_per_epoch
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            lr = float(host_schedule(step))
            carry = new_carry(n, signals)
            ids, valid = padded_batches(epoch_batches(n, config.batch_size, config.seed, epoch))
            with progress_bar(len(ids), desc=f"epoch {epoch}/{config.epochs}", enabled=progress) as bar:
                for b in range(len(ids)):
                    params, opt_state, carry = train_step(
                        params, opt_state, carry, x_all, y_all, jnp.asarray(ids[b]), jnp.asarray(valid[b])
                    )
                    step += 1
                    bar.update(1)
            host = jax.device_get({k: v for k, v in carry.items() if k != "moments"})
            summary = gwa.summarize(gj.to_moments(carry["moments"]), n_undefined=int(host["n_undefined"]))
            if host["n_non_finite"]:
                log.warning(
                    "epoch %d: %d sample(s) with non-finite alignment left out (NaN/Inf logits).",
                    epoch,
                    int(host["n_non_finite"]),
                )
            outcome = loop.end_epoch(
                epoch=epoch,
                step=step,
                lr=lr,
                train_loss=float(host["loss_sum"]) / n,
                train_acc=int(host["correct"]) / n,
                summary=summary,
                n_duplicates=0,
                n_non_finite=int(host["n_non_finite"]),
                pred_train=host["store"]["pred"],
                seconds=time.perf_counter() - t0,
                scores={s: host["store"][s] for s in ("alignment", *config.signals)},
                predict=functools.partial(predict, params),
                grad_disparity=functools.partial(gradient_disparity, model, params, data, config, epoch)
                if config.gradient_disparity
                else None,
            )
            _save_checkpoints(run_dir, ckpt_dir, epoch, params, opt_state, loop, outcome.is_best)
            if outcome.stop:
                break
