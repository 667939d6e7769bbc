"""Gradient Disparity (Forouzesh & Thiran, "Disparity Between Batches as a Signal for Early Stopping", 2021).

As in the authors' code (``find_grad_dis`` in mahf93/disparity_early_stopping): for each of ``s`` batches, the
per-sample losses are divided by their (unbiased) standard deviation, averaged, and differentiated with respect to
every trainable parameter; the flattened gradients' pairwise l2 distances are averaged over the ``s(s-1)/2``
pairs. Their code uses ``s = 5`` batches, the first ones of the training loader, in train mode.

Stop rule (the paper's; the code only logs GD): GD is a monitor to minimise; stop once it has not reached a new
minimum for ``patience`` epochs and keep the epoch of the minimum (:func:`select_epoch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

#: Epochs without a new GD minimum before the rule stops (our choice; the paper gives none we could find).
DEFAULT_PATIENCE = 5


def gradient_disparity(model, loss_fn: Callable, batches: Iterable, *, train: bool | None = None) -> float:
    """Mean pairwise l2 distance between the gradients of ``s >= 2`` batches (Forouzesh & Thiran 2021).

    Nothing visible changes: gradients come from :func:`torch.autograd.grad` (``.grad`` is never touched), buffers
    (BatchNorm running statistics) are restored, the torch RNG state (CPU and the model's CUDA device) is restored,
    and so is the train/eval mode.

    Args:
        model: a ``torch.nn.Module``.
        loss_fn: called as ``loss_fn(outputs, targets, reduction="none")``, returning per-sample losses ``(B,)``
            (e.g. ``torch.nn.functional.cross_entropy``).
        batches: ``s`` pairs ``(inputs, targets)`` already on the model's device; every batch needs >= 2 samples
            (the loss is divided by its standard deviation).
        train: run the forward passes in train mode (the authors' choice: dropout active, BatchNorm on batch
            statistics), eval mode (False), or the model's current mode (None, the default).

    Returns:
        GD as a Python float.

    Raises:
        ValueError: fewer than 2 batches, a batch of fewer than 2 samples, or a model without trainable parameters.
    """
    import torch

    batches = list(batches)
    if len(batches) < 2:
        raise ValueError(f"Expected at least 2 batches for a pairwise distance; got {len(batches)}.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("Expected `model` to have trainable parameters; got none with requires_grad=True.")
    was_training = model.training
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    cuda_devices = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    cpu_rng = torch.get_rng_state()
    cuda_rng = [torch.cuda.get_rng_state(d) for d in cuda_devices]
    grads = []
    try:
        if train is not None:
            model.train(bool(train))
        for k, (inputs, targets) in enumerate(batches):
            if len(targets) < 2:
                raise ValueError(
                    f"Expected every batch to hold >= 2 samples (the loss is divided by its std); "
                    f"batch {k} has {len(targets)}."
                )
            with torch.enable_grad():
                losses = loss_fn(model(inputs), targets, reduction="none")
                scaled = (losses / losses.std()).mean()
                g = torch.autograd.grad(scaled, params, allow_unused=True)
            grads.append(
                torch.cat(
                    [
                        (torch.zeros_like(p) if gi is None else gi).reshape(-1).double()
                        for gi, p in zip(g, params)
                    ]
                )
            )
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
        torch.set_rng_state(cpu_rng)
        for d, state in zip(cuda_devices, cuda_rng):
            torch.cuda.set_rng_state(state, d)
    return float(torch.pdist(torch.stack(grads)).mean())


def select_epoch(values: npt.ArrayLike, *, patience: int = DEFAULT_PATIENCE, warmup: int = 0) -> int:
    """GD's stop rule: the epoch of the minimum, stopping after ``patience`` epochs without a new minimum.

    An online rule (it never looks ahead of the epoch it stops at); NaN epochs count as no improvement. Ties go to
    the earliest epoch.

    Args:
        values: ``(E,)`` GD per epoch.
        patience: epochs without a new minimum before stopping.
        warmup: leading epochs that can neither be best nor count toward patience.

    Returns:
        0-based index of the chosen epoch.

    Raises:
        ValueError: when no finite value follows the warm-up.

    Example:
        >>> select_epoch([5.0, 3.0, 4.0, 4.5, 1.0], patience=2)   # stops at index 3, never sees the late 1.0
        1
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"Expected `values` of shape (E,); got shape={v.shape}.")
    best, wait = None, 0
    for epoch in range(int(warmup), v.size):
        if np.isfinite(v[epoch]) and (best is None or v[epoch] < v[best]):
            best, wait = epoch, 0
        else:
            wait += 1
            if wait >= patience:
                break
    if best is None:
        raise ValueError(
            f"Expected at least one finite value after the warm-up of {warmup} epochs; got {v.tolist()}."
        )
    return best
