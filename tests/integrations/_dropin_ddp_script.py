"""GWACallback under strategy="ddp" (2 CPU processes, gloo) with the common style: ``training_step`` returns the
loss tensor and the dataset yields ``(x, y)`` without ids. Writes RUN_DIR; float64, global batch 16.

Usage: python _dropin_ddp_script.py RUN_DIR
"""

import sys

import _lightning_setup as S
import torch.nn.functional as F

import torch
from gwa.integrations.lightning import GWACallback


class LossOnly(S.ShardedModule):
    """The sharded float64 module of the Lightning tests, returning the loss alone from ``(x, y)`` batches."""

    def train_dataloader(self):
        loader = super().train_dataloader()  # (x, y, ids) with a seeded DistributedSampler
        x, y = S.data(torch.float64)
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=loader.batch_size, sampler=loader.sampler
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)


if __name__ == "__main__":
    torch.set_num_threads(1)
    callback = GWACallback(run_dir=sys.argv[1], patience=5)
    trainer = S.trainer(
        3,
        [callback],
        devices=int(sys.argv[2]) if len(sys.argv) > 2 else 2,
        strategy="ddp",
        use_distributed_sampler=False,
    )
    trainer.fit(LossOnly())
