"""Overhead of the trainer integrations: a training epoch with the GWA callback vs the same trainer without it.

Run:  python benchmarks/integrations_overhead.py [--repeats 5] [--epochs 4] [--threads 1]

For each trainer (a Lightning fit of an MLP, a Hugging Face Trainer run of a tiny random BERT classifier, both
on CPU), fits with and without the callback alternate ``--repeats`` times. A timing callback placed after the
GWA callback measures each training epoch from its start to the end of ``on_train_epoch_end`` / ``on_epoch_end``
(so the callback's per-batch update and its end-of-epoch reduction and logging are inside), in CPU time of
the training thread (``time.thread_time``, torch single-threaded), which other processes on a shared machine do
not inflate; the first epoch of each fit is dropped (warm-up). Prints the machine, then per trainer the median seconds per step without and with
the callback, the spread (min-max over repeats of the per-fit medians), the ratio of the medians and the ratio of
the minima (less sensitive to interference from other jobs). One run, one machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings

from _machine import cpu_model, stable_malloc  # benchmarks/ is on sys.path when a script runs

import torch

#: CPU time of the training thread: other processes on a shared machine do not inflate it (torch single-threaded).
CLOCK = time.thread_time


def machine() -> str:
    cpu = cpu_model()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical cores (load average {load:.1f} at start), torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads), Python {platform.python_version()}"
    )


# ------------------------------------------------------------------------------------------------ Lightning
def lightning_epoch_times(with_gwa: bool, epochs: int) -> tuple[list[float], int]:
    import lightning as L
    import torch.nn.functional as F
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader, TensorDataset

    from gwa.integrations.lightning import GWACallback
    from torch import nn

    # The MLP of benchmarks/torch_overhead.py (784-512-256-10) at batch 128, as issue 13 asks.
    n, d, c, batch = 128 * 48, 784, 10, 128
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)
    loader = DataLoader(TensorDataset(x, y, torch.arange(n)), batch_size=batch, shuffle=True)

    class MLP(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(d, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, c)
            )

        def training_step(self, b, i):
            logits = self.net(b[0])
            return {"loss": F.cross_entropy(logits, b[1]), "logits": logits}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class Timer(Callback):
        def __init__(self):
            self.times = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.t0 = CLOCK()

        def on_train_epoch_end(self, trainer, pl_module):
            self.times.append(CLOCK() - self.t0)

    timer = Timer()
    callbacks = [GWACallback(), timer] if with_gwa else [timer]
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=callbacks,
    )
    trainer.fit(MLP(), loader)
    return timer.times[1:], len(loader)


# ------------------------------------------------------------------------------------------- Hugging Face
def huggingface_epoch_times(with_gwa: bool, epochs: int) -> tuple[list[float], int]:
    from transformers import (
        AutoModelForSequenceClassification,
        BertConfig,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from gwa.integrations.huggingface import GWATrainerCallback

    n, length, batch = 512, 16, 16
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 1000, (n, length), generator=g)

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return {
                "input_ids": tokens[i],
                "attention_mask": torch.ones(length, dtype=torch.long),
                "labels": int(tokens[i, 0]) % 3,
                "sample_id": i,
            }

    class Timer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.t0 = CLOCK()

        def on_epoch_end(self, args, state, control, **kwargs):
            self.times.append(CLOCK() - self.t0)

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=3,
        max_position_embeddings=32,
    )
    model = AutoModelForSequenceClassification.from_config(config)
    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch,
            num_train_epochs=epochs,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            remove_unused_columns=False,
            disable_tqdm=True,
            logging_strategy="no",
            seed=0,
        )
        callbacks = [GWATrainerCallback(), timer] if with_gwa else [timer]
        Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=callbacks).train()
    return timer.times[1:], (n + batch - 1) // batch


def measure(name: str, fn, repeats: int, epochs: int) -> dict:
    per_fit = {False: [], True: []}
    steps = 1
    for _ in range(repeats):
        for with_gwa in (False, True):  # interleaved, so that drifting machine load hits both alike
            times, steps = fn(with_gwa, epochs)
            per_fit[with_gwa].append(statistics.median(times))
    base, gwa = statistics.median(per_fit[False]), statistics.median(per_fit[True])
    return {
        "name": name,
        "steps": steps,
        "base_ms": 1e3 * base / steps,
        "gwa_ms": 1e3 * gwa / steps,
        "base_spread": [1e3 * min(per_fit[False]) / steps, 1e3 * max(per_fit[False]) / steps],
        "gwa_spread": [1e3 * min(per_fit[True]) / steps, 1e3 * max(per_fit[True]) / steps],
        "ratio": gwa / base,
        "ratio_min": min(per_fit[True]) / min(per_fit[False]),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4, help="epochs per fit (the first is dropped)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=("lightning", "hf"), help="run one trainer only")
    p.add_argument(
        "--system-malloc",
        action="store_true",
        help="keep glibc's moving mmap/trim thresholds (default: fixed)",
    )
    args = p.parse_args(argv)
    allocator = "malloc: system defaults" if args.system_malloc else stable_malloc()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print("machine:", machine())
    print(allocator)
    print(
        f"repeats {args.repeats}, epochs per fit {args.epochs} (first dropped); ms per training step, median "
        "of per-fit medians [min-max over fits], thread CPU time\n"
    )
    rows = []
    if args.only in (None, "lightning"):
        rows.append(
            measure(
                "Lightning, MLP 784-512-256-10, batch 128, 48 steps/epoch",
                lightning_epoch_times,
                args.repeats,
                args.epochs,
            )
        )
    if args.only in (None, "hf"):
        rows.append(
            measure(
                "HF Trainer, BERT 2x64 (seq 16), batch 16, 32 steps/epoch",
                huggingface_epoch_times,
                args.repeats,
                args.epochs,
            )
        )
    print("| trainer | without GWA (ms/step) | with GWA (ms/step) | ratio of medians | ratio of minima |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['base_ms']:.2f} [{r['base_spread'][0]:.2f}-{r['base_spread'][1]:.2f}] | "
            f"{r['gwa_ms']:.2f} [{r['gwa_spread'][0]:.2f}-{r['gwa_spread'][1]:.2f}] | {r['ratio']:.3f} | "
            f"{r['ratio_min']:.3f} |"
        )
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
