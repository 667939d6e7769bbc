"""Cost of gwa.jax inside a jitted Flax train step: the MLP 784-512-256-10 at batch 128, with and without GWA.

Run:  python benchmarks/jax_overhead.py [--rounds 40] [--steps-per-round 5]

Two jitted train steps (forward, cross-entropy, gradients, optax SGD-momentum update) of the same linen MLP,
one of which also scores the batch with ``gwa.jax.alignment_from_flax`` (pre-update head, sown embeddings) and
accumulates the scores' sum and count in its carry, so XLA cannot drop the work. Rounds alternate between the
two (order flipped every round); each round is timed in CPU time of the whole process (``time.process_time``,
all threads: XLA may run the step on its own thread), up to ``block_until_ready``, so other processes on a
shared machine do not count; XLA runs single-threaded (flags set below); medians. One run, one machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import platform
import statistics
import time

import jax.numpy as jnp
import optax
from _machine import cpu_model  # benchmarks/ is on sys.path when a script runs
from flax import linen as nn

import gwa.jax as gj
import jax


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(512)(x))
        x = nn.relu(nn.Dense(256)(x))
        self.sow("intermediates", "gwa_embeddings", x)
        return nn.Dense(10, name="head")(x)


def make_steps(model, tx):
    def loss_fn(params, x, y):
        logits, state = model.apply({"params": params}, x, mutable=["intermediates"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, state)

    def plain(params, opt_state, x, y, carry):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, carry + jnp.stack([loss, 0.0])

    def tracked(params, opt_state, x, y, carry):
        (_, (logits, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        scores, defined = gj.alignment_from_flax(logits, y, state, params, with_mask=True)  # pre-update head
        updates, opt_state = tx.update(grads, opt_state, params)
        return (
            optax.apply_updates(params, updates),
            opt_state,
            carry + jnp.stack([jnp.sum(jnp.where(defined, scores, 0.0)), jnp.sum(defined)]),
        )

    return jax.jit(plain), jax.jit(tracked)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--steps-per-round", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args(argv)
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} logical cores (load average {os.getloadavg()[0]:.1f} at "
        f"start), jax {jax.__version__} on {jax.devices()[0].platform} (XLA single-threaded), Python "
        f"{platform.python_version()}"
    )
    model, tx = MLP(), optax.sgd(0.01, momentum=0.9)
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (args.batch, 28, 28, 1))
    y = jax.random.randint(jax.random.PRNGKey(1), (args.batch,), 0, 10)
    params = model.init(key, x)["params"]
    plain, tracked = make_steps(model, tx)
    state = {"plain": (params, tx.init(params), jnp.zeros(2)), "gwa": (params, tx.init(params), jnp.zeros(2))}
    steps = {"plain": plain, "gwa": tracked}

    def run(name, n):
        p_, o_, c_ = state[name]
        for _ in range(n):
            p_, o_, c_ = steps[name](p_, o_, x, y, c_)
        jax.block_until_ready(c_)
        state[name] = (p_, o_, c_)

    for name in steps:
        run(name, 3)  # compile and warm up
    times = {name: [] for name in steps}
    for r in range(args.rounds):
        for name in ("plain", "gwa") if r % 2 == 0 else ("gwa", "plain"):
            t0 = time.process_time()
            run(name, args.steps_per_round)
            times[name].append((time.process_time() - t0) / args.steps_per_round)
    plain_ms, gwa_ms = (1e3 * statistics.median(times[n]) for n in ("plain", "gwa"))
    print(
        f"\nFlax MLP 784-512-256-10, batch {args.batch}, optax SGD momentum, jitted step; {args.rounds} "
        f"interleaved rounds x {args.steps_per_round} steps, medians of process CPU time"
    )
    print(
        f"plain {plain_ms:.3f} ms/step, with gwa.jax {gwa_ms:.3f} ms/step: overhead "
        f"{100 * (gwa_ms / plain_ms - 1):+.2f}%"
    )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
