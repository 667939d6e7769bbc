r"""Per-sample gradient-weight alignment in closed form: the numpy reference kernel.

For softmax cross-entropy the loss gradient on the head weight ``W`` (C x D) of sample i is the rank-one
matrix :math:`(p_i - y_i) x_i^\top`, so

.. math::

    \gamma_i = \cos(-\nabla_W \ell_i, W) = \frac{-(p_i - y_i)^\top W x_i}{\lVert p_i - y_i\rVert\,\lVert x_i\rVert\,\lVert W\rVert_F}

with no backward pass. With ``bias`` the cosine is taken between ``[W b]`` and ``-[d x^T, d]``.

References:
    Hölzl, Rueckert, Kaissis. Gradient-Weight Alignment as a Train-Time Proxy for Generalization in
    Classification Tasks. NeurIPS 2025 (arXiv 2510.25480).
"""

from __future__ import annotations

import importlib

import numpy as np

from gwa._validation import check_numpy_inputs

#: Value given to a sample whose cosine is undefined (zero embedding, zero gradient or zero head), as in the
#: paper's code, where ``dot / (norms + 1e-12)`` yields 0. Such samples are counted by the trackers.
UNDEFINED_SCORE = 0.0


def alignment(logits, targets, embeddings, weight, bias=None):
    """Per-sample alignment between the negative loss gradient on the head and the head's weights.

    Dispatches on the array type: torch tensors go to :func:`gwa.torch.alignment`, jax arrays to
    :func:`gwa.jax.alignment`; anything else is computed here in float64 with numpy.

    Args:
        logits: ``(N, C)`` pre-softmax outputs of the head for the batch.
        targets: ``(N,)`` integer class ids, or ``(N, C)`` probabilities (label smoothing, mixup).
        embeddings: ``(N, D)`` inputs of the head (penultimate features) from the same forward pass.
        weight: ``(C, D)`` head weight **used in that forward pass** (torch layout).
        bias: optional ``(C,)`` head bias; when given it joins the cosine. The paper leaves it out.

    Returns:
        ``(N,)`` scores in ``[-1, 1]``, same array type as the input. Undefined cosines are
        :data:`UNDEFINED_SCORE`.

    Raises:
        ValueError: on mismatched shapes, class ids out of range, soft targets that are not
            probabilities, NaN/Inf inputs, or an empty batch.
        TypeError: on non-numeric inputs or non-integer class ids.

    Example:
        >>> import numpy as np, gwa
        >>> W = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> x = np.array([[1.0, 0.0]])
        >>> float(gwa.alignment(x @ W.T, np.array([0]), x, W)[0]).__round__(4)
        0.5
    """
    adapter = _adapter_for(logits)
    if adapter is not None:
        return adapter(logits, targets, embeddings, weight, bias)
    scores, _ = alignment_with_mask(logits, targets, embeddings, weight, bias)
    return scores


#: Array libraries with an adapter: the top-level module of the array's type -> the adapter package, looked up by
#: name at call time (a plugin table, not an import: the core never imports an adapter, so no import circle).
ADAPTERS = {"torch": "gwa.torch", "jax": "gwa.jax", "jaxlib": "gwa.jax"}


def _adapter_for(array):
    package = ADAPTERS.get(type(array).__module__.split(".")[0])
    return None if package is None else importlib.import_module(package).alignment


def alignment_with_mask(logits, targets, embeddings, weight, bias=None):
    """Like :func:`alignment` for numpy inputs, and also return a boolean mask of defined cosines."""
    checked = check_numpy_inputs(logits, targets, embeddings, weight, bias)
    return _alignment_unchecked(*checked)


def loss_gradient_wrt_logits(logits: np.ndarray, targets: np.ndarray, soft: bool) -> np.ndarray:
    """``softmax(logits) - targets`` without cancellation in the target entry for hard labels."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    if soft:
        diff = probs - targets
        # An entry below the rounding error of its operands is zero: otherwise a target equal to the prediction
        # (a zero gradient) leaves rounding noise that the row rescaling below turns into a full direction.
        diff[np.abs(diff) <= 4 * np.finfo(np.float64).eps * np.maximum(probs, np.abs(targets))] = 0.0
        return diff
    rows = np.arange(len(targets))
    diff = probs.copy()
    diff[rows, targets] = 0.0
    # p_y - 1 = -sum_{k != y} p_k: exact even when p_y rounds to 1.
    diff[rows, targets] = -diff.sum(axis=1)
    return diff


def _alignment_unchecked(logits, targets, embeddings, weight, bias, soft):
    diff = loss_gradient_wrt_logits(logits, targets, soft)
    # Rescale rows so that tiny gradients (confident samples) do not underflow in the norm.
    diff = diff / _row_scale(diff)
    # The cosine is invariant to scaling [W b] as a whole: rescale it so ||W||_F^2 neither overflows nor
    # underflows for extreme (finite) weights.
    head_scale = float(np.max(np.abs(weight)))
    if bias is not None:
        head_scale = max(head_scale, float(np.max(np.abs(bias))))
    if head_scale > 0:
        weight = weight / head_scale
        bias = None if bias is None else bias / head_scale
    scale = _row_scale(embeddings)
    if bias is not None:
        # The row is [x, 1]: its max-abs is at least 1, so that 1 / s cannot overflow for tiny x.
        scale = np.maximum(scale, 1.0)
    emb = embeddings / scale
    head_out = emb @ weight.T  # W x, up to the row scale of x
    weight_norm_sq = float(np.sum(weight * weight))
    emb_norm_sq = np.sum(emb * emb, axis=1)
    if bias is not None:
        scale = scale[:, 0]
        # [W b] . [d x^T, d] = d.(W x + b); rescaling x by s rescales the bias slot by 1/s too.
        head_out = head_out + bias[None, :] / scale[:, None]
        weight_norm_sq += float(np.sum(bias * bias))
        emb_norm_sq = emb_norm_sq + 1.0 / (scale * scale)
    numerator = -np.sum(diff * head_out, axis=1)
    denominator = np.sqrt(np.sum(diff * diff, axis=1) * emb_norm_sq * weight_norm_sq)
    defined = denominator > 0
    scores = np.full(len(numerator), UNDEFINED_SCORE, dtype=np.float64)
    scores[defined] = np.clip(numerator[defined] / denominator[defined], -1.0, 1.0)
    return scores, defined


def _row_scale(a: np.ndarray) -> np.ndarray:
    """Max-abs of each row (1 for all-zero rows), shape (N, 1)."""
    scale = np.max(np.abs(a), axis=1, keepdims=True)
    return np.where(scale > 0, scale, 1.0)
