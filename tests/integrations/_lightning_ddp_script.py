"""Run GWACallback under strategy="ddp" with 2 CPU processes (gloo) into RUN_DIR (float64; global batch 16).

Usage: python _lightning_ddp_script.py RUN_DIR
"""

import sys

import _lightning_setup as S

import torch
from gwa.integrations.lightning import GWACallback

if __name__ == "__main__":
    torch.set_num_threads(1)
    callback = GWACallback(run_dir=sys.argv[1], patience=5)
    trainer = S.trainer(3, [callback], devices=2, strategy="ddp", use_distributed_sampler=False)
    trainer.fit(S.ShardedModule())
