"""Training-batch augmentation of the paper's regime: random crops (zero padding) and horizontal flips.

Images (``(B, C, H, W)`` model input): shift by up to :data:`PAD` pixels in each direction with zero padding, and
flip left-right with probability 1/2 (as for CIFAR-10 and Fashion-MNIST in the paper). 1-D signals (``(B, L)`` or
``(B, 1, L)``): shift by up to :data:`PAD` samples, no flip. Random numbers come from a generator seeded by
``(seed, epoch)``, so a run is reproducible and a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import torch

#: Largest shift in pixels (images) or samples (signals): 2 of 28 pixels for Fashion-MNIST.
PAD = 2


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of one epoch's augmentation."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def _shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Each sample of ``(B, C, H, W)`` shifted by its (dy, dx) in [-PAD, PAD], zero-filled (a crop of the padded
    image)."""
    b, _c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    rows = (dy + PAD)[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = (dx + PAD)[:, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # advanced indexing on dims 0, 2, 3 puts them first: (B, H, W, C) -> (B, C, H, W)
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A randomly shifted (and, for images, flipped) copy of a batch of model inputs."""
    b = x.shape[0]
    if x.ndim == 4:
        dy, dx = (torch.randint(-PAD, PAD + 1, (b,), generator=generator).to(x.device) for _ in range(2))
        flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        out = _shift(x, dy, dx)
        return torch.where(flip[:, None, None, None], out.flip(-1), out)
    if x.ndim in (2, 3):
        signal = x if x.ndim == 3 else x[:, None, :]
        dx = torch.randint(-PAD, PAD + 1, (b,), generator=generator).to(x.device)
        out = _shift(signal[:, :, None, :], torch.zeros_like(dx), dx)[:, :, 0, :]
        return out if x.ndim == 3 else out[:, 0, :]
    raise ValueError(
        f"Expected a batch of images (B, C, H, W) or signals (B, L) / (B, 1, L); got shape {tuple(x.shape)}."
    )
