"""Run by test_jax_multidevice.py in a subprocess with 2 simulated CPU devices (XLA_FLAGS set by the caller).

Prints one JSON object: per-device-merged moments (shard_map in float32 and float64, pmap in float64) and
one-device moments of the same global batch.
"""

import json
import sys

import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

import gwa.jax as gj
import jax


def batch(n=40, c=5, d=8):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, c)) * 2
    emb = rng.normal(size=(n, d))
    weight = rng.normal(size=(c, d))
    targets = rng.integers(0, c, size=n)
    mask = np.arange(n) < n - 5  # the last 5 rows are padding of a fixed-shape batch, all on device 1
    logits[~mask] = np.nan  # padding garbage must not leak in
    return logits, targets, emb, weight, mask


def local_moments(logits, targets, emb, weight, mask):
    scores = gj.alignment(logits, targets, emb, weight)
    return gj.moments_update(gj.moments_init(), scores, mask)


def run(dtype, *, with_pmap):
    logits, targets, emb, weight, mask = batch()
    args = (
        [jnp.asarray(a, dtype) for a in (logits,)]
        + [jnp.asarray(targets)]
        + [jnp.asarray(a, dtype) for a in (emb, weight)]
        + [jnp.asarray(mask)]
    )
    one_device = gj.to_moments(jax.jit(local_moments)(*args)).state

    mesh = jax.make_mesh((2,), ("data",))

    def sharded(logits, targets, emb, weight, mask):
        return gj.moments_allgather_merge(local_moments(logits, targets, emb, weight, mask), "data")

    spec = (P("data"), P("data"), P("data"), P(), P("data"))
    placed = [jax.device_put(a, jax.NamedSharding(mesh, s)) for a, s in zip(args, spec)]
    merged = jax.jit(jax.shard_map(sharded, mesh=mesh, in_specs=spec, out_specs=P()))(*placed)
    shard_map_state = gj.to_moments(merged).state

    out = {
        "one_device": one_device,
        "shard_map": shard_map_state,
        "n_devices": len(jax.devices()),
        "dtype": str(merged.mean.dtype),
    }
    if with_pmap:  # once is enough: each compilation costs seconds on a shared CPU
        split = [jnp.stack([a, a]) if i == 3 else a.reshape(2, -1, *a.shape[1:]) for i, a in enumerate(args)]
        pmapped = jax.pmap(sharded, axis_name="data")(*split)
        out["pmap"] = [gj.to_moments(jax.tree.map(lambda v, i=i: v[i], pmapped)).state for i in range(2)]
    return out


if __name__ == "__main__":
    out = {"float32": run(jnp.float32, with_pmap=False)}
    with jax.enable_x64(True):
        out["float64"] = run(jnp.float64, with_pmap=True)
    json.dump(out, sys.stdout)
