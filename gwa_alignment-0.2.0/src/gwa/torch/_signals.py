"""Companion per-sample signals from the same logits: loss, AUM margin, gold probability, EL2N, prediction.

They let users compare GWA's ranking of samples with the usual baselines (Pleiss et al. 2020 for the margin,
Paul et al. 2021 for EL2N) without a second pass. All are computed on device, without a host sync.
"""

from __future__ import annotations

import torch

#: The signals :class:`gwa.torch.GWATracker` can store, with what they are.
SIGNAL_NAMES = ("loss", "margin", "p_gold", "el2n", "pred", "correct")


def check_signal_names(signals) -> tuple[str, ...]:
    if isinstance(signals, str):
        signals = (signals,)
    names = tuple(signals)
    unknown = [s for s in names if s not in SIGNAL_NAMES]
    if unknown:
        raise ValueError(f"Expected `signals` among {list(SIGNAL_NAMES)}; got unknown {unknown}.")
    if len(set(names)) != len(names):
        raise ValueError(f"Expected distinct `signals`; got {list(names)}.")
    return names


def compute_signals(
    logits: torch.Tensor, targets: torch.Tensor, names, *, soft: bool
) -> dict[str, torch.Tensor]:
    """Per-sample signals, each ``(N,)`` float.

    Args:
        logits: ``(N, C)`` logits (any float dtype; computed in float32 or float64).
        targets: ``(N,)`` class ids or ``(N, C)`` probabilities.
        names: which of :data:`SIGNAL_NAMES` to compute.
        soft: whether ``targets`` are probabilities. Then ``loss`` is the soft cross-entropy and ``el2n``
            ``||softmax - targets||``; margin, p_gold, pred and correct use the target's argmax as the label.

    Returns:
        ``loss`` (cross-entropy), ``margin`` (logit of the label minus the largest other logit), ``p_gold``
        (softmax probability of the label), ``el2n`` (``||softmax - onehot(label)||_2``), ``pred`` (argmax of
        the logits, as float) and ``correct`` (1.0 where pred equals the label, else 0.0).
    """
    if not names:
        return {}
    with torch.no_grad():
        z = logits.detach()
        z = z if z.dtype in (torch.float32, torch.float64) else z.float()
        labels = (targets.argmax(dim=1) if soft else targets).long()[:, None]
        log_probs = torch.log_softmax(z, dim=1)
        out = {}
        for name in names:
            if name == "loss":
                out[name] = (
                    -(targets.to(z.dtype) * log_probs).sum(dim=1)
                    if soft
                    else -log_probs.gather(1, labels)[:, 0]
                )
            elif name == "margin":
                others = z.scatter(1, labels, float("-inf")).amax(dim=1)
                out[name] = z.gather(1, labels)[:, 0] - others
            elif name == "p_gold":
                out[name] = log_probs.gather(1, labels)[:, 0].exp()
            elif name == "el2n":
                target = targets.to(z.dtype) if soft else torch.zeros_like(z).scatter_(1, labels, 1.0)
                out[name] = torch.linalg.vector_norm(log_probs.exp() - target, dim=1)
            elif name == "pred":
                out[name] = z.argmax(dim=1).to(z.dtype)
            elif name == "correct":
                out[name] = (z.argmax(dim=1) == labels[:, 0]).to(z.dtype)
    return out
