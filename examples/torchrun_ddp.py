"""GWA in a plain PyTorch DDP loop: an MLP on sklearn's digits, one process per rank, rank 0 writes the run dir.

Run:
    torchrun --nproc_per_node=2 examples/torchrun_ddp.py --out runs/ddp      # 2 CPU processes (gloo)
    python examples/torchrun_ddp.py --out runs/single                       # the same run in one process
    gwa report runs/ddp

Every rank gets the same merged epoch summary, so every rank's :class:`gwa.integrations.RunRecorder` (its
:class:`gwa.EarlyStopper` on gwa's default criterion) makes the same decision: with ``--patience`` all ranks stop
at the same epoch without exchanging anything. The recorder is the after-epoch step of every gwa surface: rank 0's
writes the run directory and its ``summary.json`` as ``gwa train`` and the callbacks do.

What makes the two runs give the same numbers: ``--batch-size`` is the *global* batch; each of the W ranks
takes ``batch_size / W`` samples of it through a ``DistributedSampler`` (the same seeded permutation for every
W, so rank r holds every W-th sample of it), and DDP averages the ranks' mean-loss gradients, which is the
gradient of the global batch's mean loss. So every step starts from the same weights in both runs, each
sample is scored against the same weights, and the tracker merges the ranks' moments exactly and stores the
scores by sample id. The one difference is the order in which the gradient is summed (per rank, then across
ranks), so weights agree to rounding: about 1e-16 relative per step in float64 (``--double``), 1e-7 in float32.
The training set is cut to a multiple of the global batch's rank count so that the sampler pads nothing (a
padded, repeated sample would count twice in the DDP gradient; its score would still be stored once).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch.distributed as dist
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import torch
from gwa.integrations import RunRecorder
from gwa.torch import GWATracker
from torch import nn


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run directory (written by rank 0)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size (split across ranks)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument(
        "--n-train", type=int, default=1440, help="training samples (the rest of digits is the test set)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--patience", type=int, default=None, help="stop when gwa has no new best for this many epochs"
    )
    p.add_argument("--double", action="store_true", help="float64 model and data")
    p.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if args.batch_size % world:
        raise ValueError(f"Expected --batch-size divisible by the {world} ranks; got {args.batch_size}.")
    dtype = torch.float64 if args.double else torch.float32

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=dtype)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed))
    train_ids, test_ids = order[: args.n_train], order[args.n_train :]
    n = len(train_ids)
    train = TensorDataset(x[train_ids], y[train_ids], torch.arange(n))  # sample id = index in the train set
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(train, batch_size=args.batch_size // world, sampler=sampler)

    torch.manual_seed(args.seed)  # same initial weights on every rank and in the single-process run
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(dtype)
    tracker = GWATracker(model, num_samples=n)  # hooks the head (the last Linear) before DDP wraps the model
    net = DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    recorder = RunRecorder(  # on every rank; rank 0 writes
        args.out,
        tracker,
        total_epochs=args.epochs,
        patience=args.patience,
        config={
            "name": "torchrun_ddp",
            "framework": "torch",
            "world_size": world,
            **{k: v for k, v in vars(args).items() if k not in ("out", "overwrite")},
        },
        labels=y[train_ids].numpy(),
        previews=False,
        overwrite=args.overwrite,
    )
    step = 0
    for epoch in range(1, args.epochs + 1):
        sampler.set_epoch(epoch)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        for xb, yb, ids in loader:
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            recorder.update(logits, yb, ids)  # tracker.update: head weights were captured in the forward
            optimizer.step()
            loss_sum += loss.detach().double() * len(yb)
            step += 1
        result = tracker.end_epoch()  # moments merged across ranks, scores gathered by sample id
        if distributed:
            dist.all_reduce(loss_sum)
        model.eval()
        with torch.no_grad():
            test_acc = (model(x[test_ids]).argmax(1) == y[test_ids]).double().mean().item()
        # The same on every rank: the summary is merged across ranks.
        stop = recorder.end_epoch(result, step=step, train_loss=loss_sum.item() / n, test_acc=test_acc)
        if rank == 0:
            print(
                f"epoch {epoch}: gwa {result.summary.gwa:.4f} (paper {result.summary.gwa_paper:.4f}) "
                f"align_mean {result.summary.mean:.4f} test_acc {test_acc:.3f}; {recorder.message}",
                flush=True,
            )
        if stop:
            break
    recorder.finish()  # summary.json (rank 0) and the diagnostics as warnings
    if rank == 0:
        print(f"best epoch by gwa's default criterion: {recorder.best_epoch}", flush=True)
    if distributed:
        dist.barrier()  # tear the group down together: gloo can abort a rank whose peer left first
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    if "TORCHELASTIC_RUN_ID" in os.environ:
        # A torchrun worker whose work is done: skip the interpreter's teardown, as multiprocessing does for its
        # children (a gloo rank could abort there under load: "terminate called without an active exception").
        sys.stdout.flush()
        os._exit(0)
