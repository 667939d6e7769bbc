"""gwa for JAX and Flax: the alignment kernel, streaming moments as a pure state, and Flax capture.

Everything here is pure and ``jit``-able, so a train step can return its alignment scores and updated
moments without a host round trip; convert the moments once per epoch with :func:`to_moments` and pass
them to :func:`gwa.summarize`. See docs/jax.md and examples/flax_loop.py.

Example:
    >>> import jax, jax.numpy as jnp, gwa, gwa.jax
    >>> W = jnp.eye(2, 3); x = jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]); y = jnp.array([0, 0])
    >>> scores = jax.jit(gwa.jax.alignment)(x @ W.T, y, x, W)
    >>> state = gwa.jax.moments_update(gwa.jax.moments_init(), scores)
    >>> gwa.jax.to_moments(state).n
    2
"""

from gwa.jax._flax import SOWN_NAME, alignment_from_flax, head_bias, head_weight, sown_embeddings
from gwa.jax._kernel import alignment, alignment_with_mask
from gwa.jax._moments import (
    MomentsState,
    from_moments,
    moments_allgather_merge,
    moments_init,
    moments_merge,
    moments_of,
    moments_update,
    to_moments,
)

__all__ = [
    "SOWN_NAME",
    "MomentsState",
    "alignment",
    "alignment_from_flax",
    "alignment_with_mask",
    "from_moments",
    "head_bias",
    "head_weight",
    "moments_allgather_merge",
    "moments_init",
    "moments_merge",
    "moments_of",
    "moments_update",
    "sown_embeddings",
    "to_moments",
]
