"""GPU check of gwa.torch: overhead on ResNet-18 and a timm ConvNeXt, no host sync, scores vs a CPU reference.

Run (one CUDA GPU, under 5 minutes):  python benchmarks/gpu_check.py
Dry run on the CPU at tiny size (what the test suite runs):  python benchmarks/gpu_check.py --dry-run

For each model (torchvision ResNet-18, timm ConvNeXt) at batch 512 and each precision (fp32, bf16 autocast):

1. **Overhead**: training steps (forward, cross-entropy, backward, SGD momentum step) of three identical
   models: plain; ``GWATracker(model, num_samples=...)`` (the default: batches scored together, every 32nd
   ``update``); and ``GWATracker(..., defer=0)`` (each batch scored in its ``update``), in interleaved rounds;
   each round is timed with ``torch.cuda.synchronize`` before and after; medians; ratios to plain.
2. **No host sync**: after the epoch's first ``update`` (which checks its inputs eagerly), tracked steps run
   under ``torch.cuda.set_sync_debug_mode("error")``, which raises on any synchronising CUDA call (the plain
   step is checked the same way first, so that a sync of the training step itself is told apart); the default
   tracker runs 33 steps there, so that a scoring of 32 kept batches is among them.
3. **Scores vs the CPU reference**: one more tracked forward for each tracker; its head input, logits and head
   weight are copied to the CPU and scored by the numpy core ``gwa.alignment`` in float64 (the default
   tracker's scores are read from ``end_epoch``); the largest absolute difference must stay below 1e-4 (fp32)
   or 2e-3 (bf16 autocast, where the logits themselves are bf16).

Prints the machine and one table; exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch.nn.functional as F

import torch
from torch import nn

TOLERANCE = {"fp32": 1e-4, "bf16": 2e-3}


def build(name: str, num_classes: int) -> nn.Module:
    if name == "resnet18":
        import torchvision

        return torchvision.models.resnet18(num_classes=num_classes)
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_classes)


class HeadInput:
    """Forward hook that keeps the last training forward's head input (for the CPU reference only)."""

    def __init__(self, head: nn.Linear):
        self.x = None
        self.handle = head.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.x = inputs[0].detach()


def reference_check(
    model: nn.Module, tracker, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, precision: str
) -> float:
    """Max |tracker score - numpy float64 reference| for one tracked forward of ``x`` (any device).

    The tracker must be at the start of an epoch; with ``defer`` the scores are read from its ``end_epoch``.
    """
    import gwa

    grab = HeadInput(tracker.head)
    try:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        scores = tracker.update(logits, y, ids)
        if tracker.defer:
            scores = torch.from_numpy(tracker.end_epoch().scores[ids.cpu().numpy()])
        expected = gwa.alignment(
            logits.detach().double().cpu().numpy(),
            y.cpu().numpy(),
            grab.x.double().cpu().numpy(),
            tracker.head.weight.detach().double().cpu().numpy(),
        )
    finally:
        grab.handle.remove()
    return float(np.max(np.abs(scores.double().cpu().numpy() - expected)))


def train_step(model, opt, x, y, precision: str, tracker=None, ids=None) -> None:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if tracker is not None:
        tracker.update(logits, y, ids)
    opt.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sync_debug(device: torch.device, mode: str) -> None:
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode(mode)


def check(
    name: str,
    precision: str,
    *,
    device,
    batch: int,
    image: int,
    rounds: int,
    steps: int,
    num_classes: int = 1000,
) -> dict:
    from gwa.torch import GWATracker

    torch.manual_seed(0)
    models = {which: build(name, num_classes).to(device).train() for which in ("plain", "default", "defer=0")}
    for model in models.values():
        model.load_state_dict(models["plain"].state_dict())
    opts = {which: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for which, m in models.items()}
    num_samples = 100 * batch
    trackers = {
        "default": GWATracker(models["default"], num_samples=num_samples),
        "defer=0": GWATracker(models["defer=0"], num_samples=num_samples, defer=0),
    }
    x = torch.randn(batch, 3, image, image, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    ids = torch.randperm(num_samples, device=device)[:batch]

    def step(which: str) -> None:
        train_step(models[which], opts[which], x, y, precision, trackers.get(which), ids)

    for _ in range(2):  # warm-up (cuDNN autotuning); the tracker's first update checks its inputs eagerly
        for which in models:
            step(which)
    sync(device)
    # 2. no host sync: the plain step first, so that a sync of the training step itself is told apart; the
    # default tracker for DEFAULT_DEFER + 1 steps, so that one scoring of the kept batches runs under the check
    syncs = {}
    for which in models:
        sync_debug(device, "error")
        try:
            for _ in range(trackers[which].defer + 1 if which in trackers else 1):
                step(which)
            syncs[which] = None
        except RuntimeError as e:
            syncs[which] = str(e).splitlines()[0]
        finally:
            sync_debug(device, "default")
    # 1. overhead: interleaved rounds (the order rotates), each timed between two synchronisations
    times = {which: [] for which in models}
    order = list(models)
    for r in range(rounds):
        for which in order[r % 3 :] + order[: r % 3]:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step(which)
            sync(device)
            times[which].append((time.perf_counter() - t0) / steps)
    # 3. scores vs the CPU reference, on a fresh epoch of each tracker
    small = min(batch, 64)
    diffs = {}
    for which, tracker in trackers.items():
        tracker.end_epoch()
        diffs[which] = reference_check(
            models[which], tracker, x[:small], y[:small], torch.arange(small, device=device), precision
        )
        if not tracker.defer:
            tracker.end_epoch()
        tracker.remove()
    median = {which: statistics.median(t) for which, t in times.items()}
    diff = max(diffs.values())
    tracked_syncs = syncs["default"] or syncs["defer=0"]
    return {
        "model": name,
        "precision": precision,
        "plain_ms": 1e3 * median["plain"],
        "tracked_ms": 1e3 * median["default"],
        "overhead": median["default"] / median["plain"] - 1.0,
        "eager_ms": 1e3 * median["defer=0"],
        "eager_overhead": median["defer=0"] / median["plain"] - 1.0,
        "plain_sync": syncs["plain"],
        "tracked_sync": tracked_syncs,
        "max_diff": diff,
        "ok": tracked_syncs is None or syncs["plain"] is not None,
        "diff_ok": diff <= TOLERANCE[precision],
    }


def machine(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU (CPU dry run)"
    return (
        f"{gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}, Python {platform.python_version()}, "
        f"{os.cpu_count()} logical CPU cores"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--image", type=int, default=224, help="input resolution (default 224)")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds per configuration")
    p.add_argument("--steps", type=int, default=5, help="training steps per round")
    p.add_argument(
        "--convnext", default="convnext_tiny", help="timm ConvNeXt variant (default convnext_tiny)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU, tiny sizes (batch 4, 32x32, convnext_atto, 1 round): checks the script, not the GPU",
    )
    args = p.parse_args(argv)
    if args.dry_run:
        device = torch.device("cpu")
        args.batch, args.image, args.rounds, args.steps, args.convnext = 4, 32, 1, 1, "convnext_atto"
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --dry-run to check the script on the CPU.", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    print("machine:", machine(device))
    print(
        f"batch {args.batch}, {args.image}x{args.image} inputs, {args.rounds} interleaved rounds x {args.steps} "
        "steps, medians of per-round step times (wall, synchronised)\n"
    )
    print(
        "| model | precision | plain ms/step | gwa (default) ms/step | overhead | gwa (`defer=0`) ms/step | "
        "overhead | host sync in tracked steps | max abs diff vs CPU float64 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---:|")
    failed = False
    started = time.perf_counter()
    for name in ("resnet18", args.convnext):
        for precision in ("fp32", "bf16"):
            r = check(
                name,
                precision,
                device=device,
                batch=args.batch,
                image=args.image,
                rounds=args.rounds,
                steps=args.steps,
            )
            sync_note = (
                "none"
                if r["tracked_sync"] is None
                else f"raised: {r['tracked_sync']}" + (" (the plain step too)" if r["plain_sync"] else "")
            )
            print(
                f"| {name} | {precision} | {r['plain_ms']:.2f} | {r['tracked_ms']:.2f} | "
                f"{100 * r['overhead']:+.2f}% | {r['eager_ms']:.2f} | {100 * r['eager_overhead']:+.2f}% | {sync_note if device.type == 'cuda' else 'n/a (CPU)'} | "
                f"{r['max_diff']:.1e}{'' if r['diff_ok'] else ' FAIL'} |",
                flush=True,
            )
            failed |= not (r["ok"] and r["diff_ok"])
    print(f"\ntotal {time.perf_counter() - started:.0f} s; {'FAILED' if failed else 'all checks passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
