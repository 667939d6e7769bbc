r"""The closed-form alignment kernel in torch: same math and checks as the numpy reference :mod:`gwa._kernel`.

The kernel is split in two halves so that the tracker can take the head's half at forward time, with the
weights of that forward pass, and the loss's half later from the logits alone:

* the head's half, :class:`HeadTerms` — from embeddings ``x`` and the head ``(W, b)``: ``-W x`` and the product
  of the norms ``||x|| ||W||_F`` (plus the bias terms). :func:`head_terms` for :func:`alignment`,
  :func:`capture_terms` and :func:`capture_split_terms` for the tracker's forward hook.
* the loss's half — from logits and targets: the loss gradient and the cosine. :func:`scores_from_head_terms` for
  :func:`alignment` (the numpy reference's arithmetic), :func:`fused_scores` and :func:`fused_soft_scores` for
  the tracker (fewer operations, the same numbers up to rounding).

Both halves run on the inputs' device without a host synchronisation. The public :func:`alignment`
validates eagerly (it may synchronise); the tracker calls the unchecked halves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from gwa._kernel import UNDEFINED_SCORE
from gwa.torch._checks import check_tensor_inputs, class_id_error


class HeadTerms(NamedTuple):
    """The head's half of the cosine, captured with the weights of one forward pass.

    The cosine of sample ``i`` is ``g_i . neg_head_out[i] / (||g_i|| norm[i])`` for its loss gradient ``g_i``; both
    fields may carry the same positive factor per row (:func:`head_terms` divides ``x`` by its max-abs).

    Attributes:
        neg_head_out: ``(N, C)`` ``-W x`` (``-(W x + b)`` when the bias joins the cosine), compute dtype.
        norm: ``(N,)`` ``||x|| ||W||_F`` (``||[x, 1]|| ||[W b]||_F`` with the bias), compute dtype. The tracker's
            terms add ``tiny`` (the dtype's smallest normal number), so that an undefined cosine is ``0 / tiny = 0``
            without a mask: undefined where ``norm <= tiny`` (:func:`undefined_from_norm`). With
            :attr:`weight_norm`, ``||x||`` alone.
        weight_norm: None, or ``()`` ``||W||_F`` not yet multiplied into :attr:`norm` (:func:`capture_split_terms`:
            the deferred tracker multiplies it in for many batches at once, :func:`join_norms`).
    """

    neg_head_out: torch.Tensor
    norm: torch.Tensor
    weight_norm: torch.Tensor | None = None


def compute_dtype(*tensors: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.dtype:
    """float64 if ``dtype`` says so or any input is float64, else float32 (bf16/fp16 are upcast)."""
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Expected `dtype` to be torch.float32 or torch.float64; got {dtype}.")
        return dtype
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def alignment(
    logits, targets, embeddings, weight, bias=None, *, head_output=None, dtype=None
) -> torch.Tensor:
    """Per-sample alignment of the negative loss gradient on the head with the head's weights.

    Args:
        logits: ``(N, C)`` pre-softmax outputs of the head.
        targets: ``(N,)`` integer class ids, or ``(N, C)`` probabilities (label smoothing, mixup).
        embeddings: ``(N, D)`` inputs of the head from the same forward pass.
        weight: ``(C, D)`` head weight used in that forward pass.
        bias: optional ``(C,)`` head bias; when given it joins the cosine.
        head_output: optional ``(N, C)`` ``embeddings @ weight.T`` (``+ bias`` when ``bias`` is given) from the
            same forward pass, typically the logits themselves: ``W x`` is then read from it instead of
            recomputed (the kernel's one large product, ``N x C x D`` multiply-adds). For an ``nn.Linear`` head
            with a bias that stays out of the cosine, pass ``logits - head.bias``. Its first row is checked
            against the product on its first 16 classes (relative tolerance 1e-2, which admits a bf16/fp16
            autocast output).
        dtype: compute dtype; default float64 if any input is float64, else float32.

    Returns:
        ``(N,)`` scores in ``[-1, 1]`` on the inputs' device, in the compute dtype; undefined cosines are
        :data:`gwa.UNDEFINED_SCORE`.

    Raises:
        TypeError: on non-tensor or non-floating inputs, or non-integer class ids.
        ValueError: on mismatched shapes, class ids out of range, soft targets that are not probabilities,
            NaN/Inf inputs, inputs on different devices, or a ``head_output`` that is not the head's product.

    Example:
        >>> import torch, gwa.torch
        >>> W = torch.eye(2); x = torch.tensor([[1.0, 0.0]])
        >>> round(float(gwa.torch.alignment(x @ W.T, torch.tensor([0]), x, W)[0]), 4)
        0.5
        >>> logits = x @ W.T
        >>> round(float(gwa.torch.alignment(logits, torch.tensor([0]), x, W, head_output=logits)[0]), 4)
        0.5
    """
    scores, _ = alignment_with_mask(
        logits, targets, embeddings, weight, bias, head_output=head_output, dtype=dtype
    )
    return scores


def alignment_with_mask(logits, targets, embeddings, weight, bias=None, *, head_output=None, dtype=None):
    """Like :func:`alignment`, and also return the ``(N,)`` boolean mask of defined cosines."""
    soft = check_tensor_inputs(logits, targets, embeddings, weight, bias, head_output)
    dtype = compute_dtype(logits, embeddings, weight, bias, dtype=dtype)
    terms = head_terms(embeddings, weight, bias, dtype=dtype, output=head_output)
    scores, undefined = scores_from_head_terms(logits, targets, terms, soft=soft)
    return scores, ~undefined


def head_terms(
    embeddings: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    dtype: torch.dtype,
    output: torch.Tensor | None = None,
) -> HeadTerms:
    """The head's half of the cosine (no checks, no host sync; detached inputs, so no autograd graph).

    ``output``: ``W x`` (``W x + b`` with ``bias``) of these embeddings, read instead of recomputed.
    """
    x = _as(embeddings.detach(), dtype)
    w = _as(weight.detach(), dtype)
    scale = _row_scale(x)
    if bias is not None:
        # The row is [x, 1]: its max-abs is at least 1, so that 1 / s cannot overflow for tiny x.
        scale = scale.clamp_min(1.0)
    # Rescaled rows keep ||x||^2 in range; W (x / s) = (W x) / s because the head is linear.
    x = x / scale
    # A given output is W x (+ b): read, not recomputed (the one N x C x D product of this function).
    neg_head_out = (x @ w.T).neg_() if output is None else _as(output.detach(), dtype).div(scale).neg_()
    emb_norm_sq = torch.linalg.vecdot(x, x)
    flat = w.reshape(-1)
    weight_norm_sq = torch.dot(flat, flat)
    if bias is not None:
        b = _as(bias.detach(), dtype)
        inv_scale = scale.reciprocal()
        # [W b] . [d x^T, d] = d . (W x + b); rescaling x by 1/s rescales the bias slot by 1/s too.
        if output is None:  # a given output already holds the bias
            neg_head_out = torch.addcmul(neg_head_out, inv_scale, b[None, :], value=-1.0)
        emb_norm_sq = emb_norm_sq + inv_scale[:, 0].square()
        weight_norm_sq = weight_norm_sq + torch.dot(b, b)
    return HeadTerms(neg_head_out, emb_norm_sq.mul_(weight_norm_sq).sqrt_())


def soft_loss_gradient(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``softmax(logits) - targets`` for ``(N, C)`` probabilities; the entry of a target >= 3/4 is ``-sum`` of the
    others, as in the numpy core: no cancellation when ``p`` and the target both round to 1."""
    probs = torch.softmax(logits, dim=1)
    targets = targets.to(probs.dtype)
    diff = probs - targets
    # As the numpy core: an entry within rounding of its operands is zero, so a target equal to the
    # prediction is a zero gradient (undefined), not rounding noise rescaled into a direction.
    tol = 4 * torch.finfo(probs.dtype).eps * torch.maximum(probs, targets.abs())
    return _largest_target_entry_exact(diff.masked_fill_(diff.abs() <= tol, 0.0), targets)


def _largest_target_entry_exact(diff: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``diff`` (in place) with the entry of each target >= 3/4 (at most one a row) as ``-sum`` of the others.

    A row of softmax cross-entropy's gradient sums to 0, so this is ``p_k - t_k``, computed without the
    cancellation of ``p_k - t_k`` when both round to 1 (one-hot rows of confident samples); only an entry whose
    target is near 1 can cancel like that. Float arithmetic, not a boolean mask or ``argmax``: on a CPU those cost
    10-100x more than these five elementwise operations. ``floor(t + 1/4)`` is 1 for ``t`` in ``[3/4, 1]`` and 0
    for ``t`` in ``[0, 3/4)`` (also for the checks' tolerance of ``-1e-4``).
    """
    major = targets.add(0.25).floor_()
    others = diff.addcmul_(diff, major, value=-1.0)  # the major entry set to 0
    return others.addcmul_(major, others.sum(dim=1, keepdim=True), value=-1.0)


def scores_from_head_terms(logits: torch.Tensor, targets: torch.Tensor, terms: HeadTerms, *, soft: bool):
    """The loss's half of the cosine: ``(scores, undefined)``, both ``(N,)`` (no checks, no host sync).

    ``undefined`` marks zero gradients, embeddings or heads (score :data:`gwa.UNDEFINED_SCORE`). Scores are
    NaN where an input (logits, embeddings, head, soft targets) holds NaN or Inf.
    """
    z = _as(logits.detach(), terms.neg_head_out.dtype)
    if soft:
        diff = soft_loss_gradient(z, targets.detach())
        scale = _row_scale(diff)
    else:
        # p_y - 1 = -sum_{k != y} p_k (exact even when p_y rounds to 1), keeping rest = sum_{k != y} p_k =
        # |p_y - 1|: the max-abs entry of the row, as in the numpy core.
        index = targets.detach().long()[:, None]
        diff = torch.softmax(z, dim=1).scatter_(1, index, 0.0)
        rest = diff.sum(dim=1, keepdim=True)
        diff.scatter_(1, index, rest.neg())
        scale = rest.clamp_min_(torch.finfo(z.dtype).tiny)
    # Rescale so that the tiny gradients of confident samples do not underflow in the norm.
    diff = diff.div_(scale)
    numerator = torch.linalg.vecdot(diff, terms.neg_head_out)
    denominator = torch.linalg.vector_norm(diff, dim=1).mul_(terms.norm)
    # NaN/Inf inputs give a NaN ratio, which stays NaN; zero vectors give 0/0 and are undefined.
    undefined = denominator == 0
    scores = numerator.div_(denominator).clamp_(-1.0, 1.0).masked_fill_(undefined, UNDEFINED_SCORE)
    return scores, undefined


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _row_scale(a: torch.Tensor) -> torch.Tensor:
    """Max-abs of each row, shape (N, 1); all-zero rows get the smallest normal number so they stay zero."""
    return a.abs().amax(dim=1, keepdim=True).clamp_min_(torch.finfo(a.dtype).tiny)


# ------------------------------------------------------------------------------------------ fused tracker path
# The tracker's per-step path: the fewest tensor operations that give the reference's numbers. On a CPU each
# operation costs a few microseconds of dispatch whatever its size, and much more inside a training step, where
# the backward pass has evicted the operation's code and data from the caches: the op count is the cost.
#
# Hard labels, with u = softmax over the classes other than y (z_y masked to -inf) and r = 1 - p_y:
#   p - onehot(y) = r (u - onehot(y)),
# so g = u with g_y = -1 is the loss gradient divided by r > 0 (the cosine ignores the factor). ||g|| >= 1, so
# neither ||g|| nor g . (W x) underflows for confident samples, and p_y - 1 never appears (no cancellation when
# p_y rounds to 1). Where the float gradient itself would underflow to zero (the label logit ahead of all others
# by more than ~100 in float32, ~740 in float64), g still gives the limit direction: the reference calls such a
# sample undefined, the fused path scores it.


_TINY: dict = {}


def _tiny(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (dtype, device)
    if key not in _TINY:
        _TINY[key] = torch.tensor(torch.finfo(dtype).tiny, dtype=dtype, device=device)
    return _TINY[key]


def capture_terms(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    output: torch.Tensor | None,
    *,
    include_bias: bool,
    dtype: torch.dtype,
) -> HeadTerms:
    """The head's half for the fused path (four operations, no host sync, no autograd graph).

    ``output`` is the head's own output ``W x + b`` when it is exact in ``dtype`` (not autocast, same dtype):
    then ``W x`` is read from it instead of recomputed. ``bias`` is the head's bias (None if it has none);
    ``include_bias`` puts it into the cosine.
    """
    # Grad mode off instead of four detach() calls: each op counts here.
    grad = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    try:
        x, w = _as(x, dtype), _as(weight, dtype)
        b = None if bias is None else _as(bias, dtype)
        if output is not None and output.dtype == dtype:
            # -W x = b - (W x + b): one op, and exact in W x up to one rounding of |b|.
            neg = output.neg() if b is None or include_bias else torch.sub(b, output)
        else:
            neg = (
                torch.matmul(x, w.T).neg_()
                if b is None or not include_bias
                else torch.addmm(b, x, w.T).neg_()
            )
        tiny = _tiny(dtype, x.device)
        if include_bias and b is not None:
            # ||[x, 1]|| ||[W b]||: the bias is one more weight column whose input is 1.
            x_norm = torch.linalg.vecdot(x, x).add_(1.0).sqrt_()
            w_norm = torch.sqrt(torch.linalg.vector_norm(w).square() + torch.dot(b, b))
            return HeadTerms(neg, torch.addcmul(tiny, x_norm, w_norm))
        return HeadTerms(
            neg, torch.addcmul(tiny, torch.linalg.vector_norm(x, dim=1), torch.linalg.vector_norm(w))
        )
    finally:
        torch._C._set_grad_enabled(grad)


def capture_split_terms(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, output: torch.Tensor
) -> HeadTerms:
    """:func:`capture_terms` with ``||W||_F`` left in :attr:`HeadTerms.weight_norm` (three operations, not four).

    For heads whose bias stays out of the cosine, with ``x``, ``weight`` and ``output`` in the compute dtype and
    ``output`` exact (not autocast). :func:`join_norms` later gives the same numbers as :func:`capture_terms`.
    """
    grad = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    try:
        neg = output.neg() if bias is None else torch.sub(bias, output)
        return HeadTerms(neg, torch.linalg.vector_norm(x, dim=1), torch.linalg.vector_norm(weight))
    finally:
        torch._C._set_grad_enabled(grad)


def join_norms(terms: list[HeadTerms]) -> torch.Tensor:
    """The ``(N,)`` :attr:`HeadTerms.norm` of several captures, ``weight_norm`` multiplied in, concatenated."""
    weight_norms = [t.weight_norm for t in terms if t.weight_norm is not None]
    if len(weight_norms) == len(terms):
        tiny = _tiny(terms[0].norm.dtype, terms[0].norm.device)
        if len(terms) == 1:
            return torch.addcmul(tiny, terms[0].norm, weight_norms[0])
        x_norm = torch.cat([t.norm for t in terms])
        w_norm = torch.stack(weight_norms)
        rows = terms[0].norm.shape[0]
        if all(t.norm.shape[0] == rows for t in terms):  # equal batches: one broadcast, no per-batch op
            return torch.addcmul(tiny, x_norm.view(len(terms), rows), w_norm.view(-1, 1)).view(-1)
        w_rows = torch.cat([w.expand(t.norm.shape[0]) for t, w in zip(terms, weight_norms, strict=True)])
        return torch.addcmul(tiny, x_norm, w_rows)
    parts = [t.norm if t.weight_norm is None else join_norms([t]) for t in terms]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def undefined_from_norm(norm: torch.Tensor) -> torch.Tensor:
    """Undefined cosines (zero embedding or head) from a joined :attr:`HeadTerms.norm` of the tracker's terms."""
    return norm <= torch.finfo(norm.dtype).tiny


def _softmax_rows(z: torch.Tensor) -> torch.Tensor:
    """``softmax(z, dim=1)``; on a CPU with few classes, through the transposed view (same values).

    PyTorch's CPU kernel for a softmax over a last dimension narrower than its vector width runs row by row
    (about 15 us for 128 x 10, 500 us for 4096 x 10 here); over the first dimension of the transposed view it
    vectorises across rows instead (4 us, 50 us), for float64 up to about 32 classes. The result is made
    contiguous again: the row reductions that follow are several times slower on the transposed layout.
    """
    c = z.shape[1]
    if z.device.type == "cpu" and (c < 16 or (c <= 32 and z.dtype == torch.float64)):
        return torch.softmax(z.t(), dim=0).t().contiguous()
    return torch.softmax(z, dim=1)


def fused_scores(logits: torch.Tensor, index: torch.Tensor, terms: HeadTerms) -> torch.Tensor:
    """Hard-label scores from the logits, ``(N, 1)`` int64 class ids and the captured terms, norms joined (eight
    operations).

    Undefined cosines come out as ``0 = UNDEFINED_SCORE`` (see :func:`undefined_from_norm`); NaN/Inf in any
    input give NaN (``z_y + (-inf)`` stays NaN when ``z_y`` is NaN or +inf, so a non-finite label logit is not
    masked away). No host sync. Needs C >= 2.
    """
    g = _softmax_rows(logits.scatter(1, index, float("-inf"), reduce="add")).scatter_(1, index, -1.0)
    numerator = torch.linalg.vecdot(g, terms.neg_head_out)
    return numerator.div_(torch.linalg.vector_norm(g, dim=1).mul_(terms.norm)).clamp_(-1.0, 1.0)


def fused_soft_scores(
    logits: torch.Tensor, targets: torch.Tensor, terms: HeadTerms
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-target scores (``(N, C)`` probabilities) and the undefined mask: ``softmax(z) - t`` with its
    largest-target entry exact (as :func:`soft_loss_gradient`), rescaled by its row max-abs; norms joined."""
    norm = terms.norm
    g = _largest_target_entry_exact(_softmax_rows(logits).sub_(targets), targets)
    g = g.div_(_row_scale(g))  # tiny gradients of confident samples must not underflow in ||g||
    numerator = torch.linalg.vecdot(g, terms.neg_head_out)
    denominator = torch.linalg.vector_norm(g, dim=1).mul_(norm)
    # g = 0 (softmax equal to the targets) or a zero embedding or head: undefined.
    undefined = (denominator == 0) | undefined_from_norm(norm)
    return numerator.div_(denominator).clamp_(-1.0, 1.0).masked_fill_(undefined, UNDEFINED_SCORE), undefined


def _fused_scores_functional(logits, index, neg_head_out, norm):
    """:func:`fused_scores` without in-place ops or scalar-reduce scatter, for ``torch.compile`` to fuse."""
    onehot = torch.zeros_like(logits, dtype=torch.bool).scatter(1, index, True)
    masked = torch.where(onehot, logits + float("-inf"), logits)
    g = torch.where(onehot, -1.0, torch.softmax(masked, dim=1))
    numerator = (g * neg_head_out).sum(dim=1)
    denominator = (g * g).sum(dim=1).sqrt() * norm
    return (numerator / denominator).clamp(-1.0, 1.0)


class Scorer:
    """The hard-label fused scorer, eager or through ``torch.compile``.

    ``compile=True`` compiles :func:`_fused_scores_functional` on first use; if ``torch.compile`` is missing or
    fails (no compiler toolchain, unsupported device), it warns once and falls back to the eager
    :func:`fused_scores`, which gives the same numbers up to the order of floating-point reductions.
    """

    def __init__(self, compile: bool = False):
        self.compile = bool(compile)
        self._compiled: Callable | None = None
        self.failed: str | None = None

    def score_ids(self, logits, targets, terms: HeadTerms) -> torch.Tensor:
        """Scores for ``(N,)`` integer class ids; an id out of range raises a ``ValueError`` naming `targets`.

        On a CPU the eager kernel's indexing raises at once; elsewhere (and compiled) the range is asserted on the
        device, without a host sync.
        """
        num_classes = logits.shape[1]
        index = targets.view(-1, 1)
        if index.dtype != torch.int64:
            index = index.long()
        if logits.device.type != "cpu" or self.compile:
            torch._assert_async(
                ((targets >= 0) & (targets < num_classes)).all(),
                f"gwa: `targets` class ids out of range [0, {num_classes - 1}]",
            )
        try:
            return self(logits, index, terms)
        except (RuntimeError, IndexError) as error:
            raise class_id_error(error, num_classes) from None

    def __call__(self, logits, index, terms: HeadTerms):
        if self.compile and self.failed is None:
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(_fused_scores_functional, dynamic=None, fullgraph=True)
                return self._compiled(logits, index, terms.neg_head_out, terms.norm)
            except Exception as error:
                self.failed = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                import warnings

                warnings.warn(
                    f"gwa: torch.compile of the fused scorer failed ({self.failed}); using the eager "
                    "path (same numbers).",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return fused_scores(logits, index, terms)
