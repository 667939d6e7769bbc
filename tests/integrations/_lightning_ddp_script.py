"""Run GWACallback with 1 or 2 CPU processes (gloo); float64 so that only the gradient-sum order differs.

Usage: python _lightning_ddp_script.py RUN_DIR DEVICES   (global batch 16: 16 per rank alone, 8 per rank with 2)
"""

import sys

import _lightning_setup as S
import torch

from gwa.integrations.lightning import GWACallback

if __name__ == "__main__":
    torch.set_num_threads(1)
    run_dir, devices = sys.argv[1], int(sys.argv[2])
    callback = GWACallback(run_dir=run_dir, patience=5)
    trainer = S.trainer(3, [callback], devices=devices, precision="64-true",
                        strategy="ddp" if devices > 1 else "auto")
    # Lightning adds a DistributedSampler (shuffle=False here): rank r gets ids r, r+2, ..., so each global batch
    # holds the same 16 samples as the single-process batch.
    trainer.fit(S.Module(torch.float64), S.loader(16 // devices, torch.float64))
