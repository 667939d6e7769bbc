r"""Per-sample gradient-weight alignment in JAX: the numpy reference kernel, pure and ``jit``-able.

Same closed form and the same numerical care as :mod:`gwa._kernel`: the hard-label entry of
``softmax(z) - y`` is ``-sum`` of the other probabilities (no cancellation when ``p_y`` rounds to 1),
rows of the gradient and the embeddings are rescaled by their max-abs before norms (confident samples do not
underflow; with a bias the row ``[x, 1]``, so ``1 / s`` cannot overflow), ``[W b]`` is rescaled as a whole
(``||W||_F^2`` neither overflows nor underflows for extreme heads), and an undefined
cosine (zero embedding, zero gradient or zero head) is :data:`gwa.UNDEFINED_SCORE`.

Shapes and dtypes are checked at trace time. Values cannot be checked inside ``jit``; there, a class id
outside ``[0, C)`` or a NaN/Inf input gives a NaN score, which :func:`gwa.jax.to_moments` refuses on the
host, so a bad batch is never averaged in silently. Called eagerly (concrete arrays) the values are checked
up front with the same rules and messages as the numpy core.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import jax
from gwa._kernel import UNDEFINED_SCORE
from gwa._validation import check_class_ids, check_shapes, check_soft_targets, describe

#: ``weight_layout`` values: torch's ``nn.Linear.weight`` layout ``(C, D)`` (what :func:`head_weight` returns), or a
#: raw Flax ``Dense`` kernel ``(D, C)``.
WEIGHT_LAYOUTS = ("CD", "DC")
#: Logits within this relative distance of ``x @ W.T`` (eagerly, square heads) come from a ``(C, D)`` weight.
_SAME_LOGITS_RTOL = 1e-3


def alignment(logits, targets, embeddings, weight, bias=None, *, weight_layout=None):
    """Per-sample alignment between the negative loss gradient on the head and the head's weights.

    Args:
        logits: ``(N, C)`` pre-softmax outputs of the head.
        targets: ``(N,)`` integer class ids, or ``(N, C)`` probabilities (label smoothing, mixup).
        embeddings: ``(N, D)`` inputs of the head from the same forward pass.
        weight: ``(C, D)`` head weight used in that forward pass (torch layout). A Flax ``Dense`` kernel is
            ``(D, C)``: pass ``gwa.jax.head_weight(params)`` instead of transposing by hand.
        bias: optional ``(C,)`` head bias; when given it joins the cosine. The paper leaves it out.
        weight_layout: ``"CD"`` (``weight`` is ``(C, D)``) or ``"DC"`` (a raw Flax kernel). Needed for a square
            head (D == C) under ``jit``, where the two layouts cannot be told apart by shape; called eagerly, a
            square weight is checked against the logits instead (a kernel passed as ``(C, D)`` is refused).

    Returns:
        ``(N,)`` scores in ``[-1, 1]`` in the inputs' floating dtype; undefined cosines are
        :data:`gwa.UNDEFINED_SCORE`.

    Raises:
        ValueError: on mismatched shapes (at trace time); eagerly also on class ids out of range, soft
            targets that are not probabilities and NaN/Inf inputs.
        TypeError: on non-numeric inputs or class ids that are not integers.

    Example:
        >>> import jax.numpy as jnp, gwa.jax
        >>> W = jnp.eye(2, 3); x = jnp.array([[1.0, 0.0, 0.0]])
        >>> round(float(gwa.jax.alignment(x @ W.T, jnp.array([0]), x, W)[0]), 4)
        0.5
    """
    scores, _ = alignment_with_mask(logits, targets, embeddings, weight, bias, weight_layout=weight_layout)
    return scores


def alignment_with_mask(logits, targets, embeddings, weight, bias=None, *, weight_layout=None):
    """Like :func:`alignment`, and also return the ``(N,)`` boolean mask of defined cosines.

    ``~mask`` marks the samples given :data:`gwa.UNDEFINED_SCORE`; ``jnp.sum(~mask)`` is the epoch's
    ``n_undefined`` for :func:`gwa.summarize`.
    """
    logits, targets, embeddings, weight, bias, soft = _check_inputs(
        logits, targets, embeddings, weight, bias, weight_layout
    )
    return _alignment_jit(logits, targets, embeddings, weight, bias, soft)


def loss_gradient_wrt_logits(logits, targets, soft: bool):
    """``softmax(logits) - targets`` with the target entry (for probability rows: a target >= 3/4) as
    ``-sum`` of the other entries, as in the numpy core: no cancellation when ``p`` and the target round to 1."""
    probs = jax.nn.softmax(logits, axis=1)
    if soft:
        targets = targets.astype(probs.dtype)
        diff = probs - targets
        # As the numpy core: an entry within rounding of its operands is zero (a target equal to the prediction is
        # a zero gradient, undefined), not rounding noise rescaled into a direction.
        tol = 4 * jnp.finfo(probs.dtype).eps * jnp.maximum(probs, jnp.abs(targets))
        diff = jnp.where(jnp.abs(diff) <= tol, 0.0, diff)
        # The row of the gradient sums to 0: the entry of a target >= 3/4 (at most one a row; only an entry whose
        # target is near 1 can cancel) is minus the others, p_k - t_k without cancellation.
        major = targets >= 0.75
        others = jnp.where(major, 0.0, diff)
        return jnp.where(major, -others.sum(axis=1, keepdims=True), others)
    is_target = targets[:, None] == jnp.arange(logits.shape[1])
    others = jnp.where(is_target, 0.0, probs)
    # p_y - 1 = -sum_{k != y} p_k: exact even when p_y rounds to 1.
    return jnp.where(is_target, -others.sum(axis=1, keepdims=True), others)


def _alignment_unchecked(logits, targets, embeddings, weight, bias, soft):
    diff = loss_gradient_wrt_logits(logits, targets, soft)
    # Rescale rows so that tiny gradients (confident samples) do not underflow in the norm.
    diff = diff / _row_scale(diff)
    # The cosine is invariant to scaling [W b] as a whole: rescale it so ||W||_F^2 neither overflows nor
    # underflows for extreme (finite) weights.
    head_scale = jnp.max(jnp.abs(weight))
    if bias is not None:
        head_scale = jnp.maximum(head_scale, jnp.max(jnp.abs(bias)))
    head_scale = jnp.where(head_scale > 0, head_scale, 1.0)
    weight = weight / head_scale
    scale = _row_scale(embeddings)
    if bias is not None:
        bias = bias / head_scale
        # The row is [x, 1]: its max-abs is at least 1, so that 1 / s cannot overflow for tiny x.
        scale = jnp.maximum(scale, 1.0)
    emb = embeddings / scale
    head_out = emb @ weight.T  # W x, up to the row scale of x
    weight_norm_sq = jnp.sum(weight * weight)
    emb_norm_sq = jnp.sum(emb * emb, axis=1)
    if bias is not None:
        scale = scale[:, 0]
        # [W b] . [d x^T, d] = d.(W x + b); rescaling x by s rescales the bias slot by 1/s too.
        head_out = head_out + bias[None, :] / scale[:, None]
        weight_norm_sq = weight_norm_sq + jnp.sum(bias * bias)
        emb_norm_sq = emb_norm_sq + 1.0 / (scale * scale)
    numerator = -jnp.sum(diff * head_out, axis=1)
    denominator = jnp.sqrt(jnp.sum(diff * diff, axis=1) * emb_norm_sq * weight_norm_sq)
    # Only an exact zero is "undefined"; NaN (bad inputs under jit) must propagate, not become 0.
    undefined = denominator == 0
    ratio = jnp.clip(numerator / jnp.where(undefined, 1.0, denominator), -1.0, 1.0)
    scores = jnp.where(undefined, jnp.asarray(UNDEFINED_SCORE, ratio.dtype), ratio)
    if not soft:
        # A class id outside [0, C) has no one-hot row: its score is meaningless, so make it loud.
        in_range = (targets >= 0) & (targets < logits.shape[1])
        scores = jnp.where(in_range, scores, jnp.nan)
    return scores, ~undefined


# Compiled once per shape: eager calls run one fused kernel instead of dozens of dispatched ops; inside an
# outer jit this is inlined.
_alignment_jit = jax.jit(_alignment_unchecked, static_argnums=5)


def _row_scale(a):
    """Max-abs of each row (1 for all-zero rows), shape (N, 1)."""
    scale = jnp.max(jnp.abs(a), axis=1, keepdims=True)
    return jnp.where(scale > 0, scale, 1.0)


def _check_inputs(logits, targets, embeddings, weight, bias, weight_layout=None):
    logits = _float_array("logits", logits)
    embeddings = _float_array("embeddings", embeddings)
    weight = _float_array("weight", weight)
    bias = None if bias is None else _float_array("bias", bias)
    if weight_layout not in (None, *WEIGHT_LAYOUTS):
        raise ValueError(f"Expected `weight_layout` to be one of None, 'CD', 'DC'; got {weight_layout!r}.")
    if weight_layout == "DC":
        weight = weight.T
    targets = _class_ids_exact(targets, logits)
    try:
        soft = check_shapes(
            logits.shape, targets.shape, embeddings.shape, weight.shape, None if bias is None else bias.shape
        )
    except ValueError as exc:
        d, c = embeddings.shape[-1], logits.shape[-1]
        if weight.ndim == 2 and weight.shape == (d, c) and d != c:
            raise ValueError(
                f"{exc} A Flax Dense kernel is (D, C): use gwa.jax.head_weight(params) or pass kernel.T."
            ) from None
        raise
    if weight_layout is None and weight.shape[0] == weight.shape[-1]:
        _check_square_weight(logits, embeddings, weight, bias)
    if soft:
        targets = _float_array("targets", targets)
    elif not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(
            f"Expected `targets` of shape (N,) to hold integer class ids; got {describe(targets)} "
            f"(cast with targets.astype(jnp.int32))."
        )
    dtype = jnp.result_type(
        logits, embeddings, weight, *(() if bias is None else (bias,)), *((targets,) if soft else ())
    )
    # Half precision (bf16 mixed-precision training) is too coarse for cosines near +-1: compute in >= f32.
    dtype = jnp.promote_types(dtype, jnp.float32)
    cast = [None if a is None else a.astype(dtype) for a in (logits, embeddings, weight, bias)]
    logits, embeddings, weight, bias = cast
    if soft:
        targets = targets.astype(dtype)
    if not any(isinstance(a, jax.core.Tracer) for a in (logits, targets, embeddings, weight, bias)):
        _check_values(logits, targets, embeddings, weight, bias, soft)
    return logits, targets, embeddings, weight, bias, soft


def _class_ids_exact(targets, logits):
    """``targets`` as a jax array; host integer class ids are range-checked first, as they are.

    With x64 off, ``jnp.asarray`` truncates int64 to int32: the id 2**32 + 3 would become class 3.
    """
    if isinstance(targets, (jax.Array, jax.core.Tracer)):
        return targets
    host = np.asarray(targets)
    if host.ndim == 1 and host.size and np.issubdtype(host.dtype, np.integer) and logits.ndim == 2:
        check_class_ids(host, logits.shape[1])
    return jnp.asarray(host)


def _check_square_weight(logits, embeddings, weight, bias):
    """A square weight (D == C) is ``(C, D)`` or a Flax kernel ``(D, C)``: the shapes cannot say which.

    Under ``jit`` it is refused without ``weight_layout``; eagerly the logits say: a kernel given as the weight
    (``x @ W`` matches them, ``x @ W.T`` does not) is refused, anything else goes on as ``(C, D)``.
    """
    k = weight.shape[0]
    if any(isinstance(a, jax.core.Tracer) for a in (logits, embeddings, weight)):
        raise ValueError(
            f"Expected `weight_layout='CD'` (weight is (C, D), as nn.Linear.weight and gwa.jax.head_weight give) or "
            f"'DC' (a raw Flax Dense kernel) with a square head (D == C == {k}); got none, and under jit the "
            "layout cannot be read from the shape."
        )
    z = np.asarray(logits, np.float64)
    if bias is not None:
        z = z - np.asarray(bias, np.float64)
    x, w = np.asarray(embeddings, np.float64), np.asarray(weight, np.float64)

    def near(a):  # also up to a per-class offset (a bias the caller left out): compare centred columns
        tol = _SAME_LOGITS_RTOL * max(float(np.linalg.norm(z)), 1e-300)
        centred = _SAME_LOGITS_RTOL * max(float(np.linalg.norm(z - z.mean(0))), 1e-300)
        return float(np.linalg.norm(z - a)) <= tol or (
            len(z) > 1 and float(np.linalg.norm((z - a) - (z - a).mean(0))) <= centred
        )

    if near(x @ w) and not near(x @ w.T):
        raise ValueError(
            f"Expected `weight` of shape (C, D) = ({k}, {k}); got a square weight whose transpose produced the "
            "logits: a Flax Dense kernel is (D, C). Pass gwa.jax.head_weight(params), kernel.T, or "
            "weight_layout='DC'."
        )


def _check_values(logits, targets, embeddings, weight, bias, soft):
    """Eager-only checks, the numpy core's rules: ranges, probabilities, finiteness."""
    if soft:
        check_soft_targets(np.asarray(targets))
    else:
        check_class_ids(np.asarray(targets), logits.shape[1])
    for name, arr in (("logits", logits), ("embeddings", embeddings), ("weight", weight), ("bias", bias)):
        if arr is not None:
            finite = np.isfinite(np.asarray(arr))
            if not finite.all():
                raise ValueError(
                    f"Expected finite `{name}`; got {int(finite.size - finite.sum())} NaN/Inf "
                    f"value(s) in {describe(arr)}."
                )


def _float_array(name: str, x):
    try:
        arr = jnp.asarray(x)
    except TypeError:
        raise TypeError(f"Expected `{name}` to be a real-valued array; got {describe(x)}.") from None
    if jnp.issubdtype(arr.dtype, jnp.floating):
        return arr
    if jnp.issubdtype(arr.dtype, jnp.integer) and arr.dtype != jnp.bool_:
        return arr.astype(jnp.result_type(float))
    raise TypeError(f"Expected `{name}` to be a real-valued array; got {describe(arr)}.")
