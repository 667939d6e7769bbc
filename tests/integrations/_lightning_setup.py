"""A tiny classification task and LightningModule shared by the Lightning tests and their DDP subprocess script."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import gwa
import torch
from torch import nn

N, D, C, HIDDEN = 64, 8, 3, 16


def data(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(N, generator=g, dtype=torch.float64) > 0).long() + (x[:, 1] > 1).long()
    return x.to(dtype), y


def make_net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(D, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, C)).to(dtype)


class Module(L.LightningModule):
    def __init__(self, dtype=torch.float32, lr: float = 0.5):
        super().__init__()
        self.net, self.lr = make_net(dtype), lr

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return {"loss": loss, "logits": logits}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class ShardedModule(Module):
    """Float64, with its own seeded ``DistributedSampler`` (Lightning's own would differ between 1 and 2 ranks):
    the same permutation for any world size, rank r taking every W-th sample, global batch 16."""

    def __init__(self):
        super().__init__(torch.float64)

    def train_dataloader(self):
        x, y = data(torch.float64)
        dataset = TensorDataset(x, y, torch.arange(N))
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=0)
        return DataLoader(dataset, batch_size=16 // world, sampler=sampler)


def loader(batch_size: int, dtype=torch.float32, with_ids: bool = True) -> DataLoader:
    x, y = data(dtype)
    tensors = (x, y, torch.arange(N)) if with_ids else (x, y)
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=False)


def trainer(max_epochs: int, callbacks, **kwargs) -> L.Trainer:
    opts = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
    }
    opts.update(kwargs)
    return L.Trainer(max_epochs=max_epochs, callbacks=callbacks, **opts)


def oracle(epochs: int, batch_size: int, dtype=torch.float32, lr: float = 0.5):
    """Plain loop, scored by the numpy core on the pre-step weights: per-epoch (N,) scores and weights after."""
    x, y = data(dtype)
    net = make_net(dtype)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    scores, weights = [], []
    for _ in range(epochs):
        epoch_scores = np.full(N, np.nan)
        for start in range(0, N, batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            emb = net[1](net[0](xb))
            logits = net[2](emb)
            epoch_scores[start : start + batch_size] = gwa.alignment(
                logits.detach().double().numpy(),
                yb.numpy(),
                emb.detach().double().numpy(),
                net[2].weight.detach().double().numpy(),
            )
            opt.zero_grad()
            F.cross_entropy(logits, yb).backward()
            opt.step()
        scores.append(epoch_scores)
        weights.append({k: v.clone() for k, v in net.state_dict().items()})
    return scores, weights
