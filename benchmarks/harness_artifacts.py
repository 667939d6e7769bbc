"""The two measurement artefacts that benchmarks/torch_overhead.py now avoids, measured on the MLP step.

Run:  python benchmarks/harness_artifacts.py [--steps 640] [--rounds 40]

(1) Page faults per training step (``getrusage``, this thread): plain, ``GWATracker`` default and ``defer=0``, at
batch 128 and 512, each in a fresh process, with glibc's moving malloc thresholds and with them fixed
(``_machine.stable_malloc``). (2) An A/A test: four separate but identical plain models, interleaved rounds of 32
steps, each one's median step against the first's: what comparing variants on separate model instances costs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import torch.nn.functional as F
from _machine import cpu_model, stable_malloc  # benchmarks/ is on sys.path when a script runs

import torch
from torch import nn


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def stepper(model: nn.Module, batch: int, tracker=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    ids = torch.randperm(50_000)[:batch]

    def step() -> None:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tracker is not None:
            tracker.update(logits, y, ids)
        opt.step()

    return step


def faults(batch: int, variant: str, steps: int) -> str:
    """One configuration, in this process: minor faults and system time per step after 100 warm-up steps."""
    from gwa.torch import GWATracker

    torch.manual_seed(0)
    model = mlp()
    tracker = None if variant == "plain" else GWATracker(model, num_samples=50_000, defer=int(variant))
    step = stepper(model, batch, tracker)
    for _ in range(100):
        step()
    before = resource.getrusage(resource.RUSAGE_THREAD)
    for _ in range(steps):
        step()
    after = resource.getrusage(resource.RUSAGE_THREAD)
    return (
        f"{(after.ru_minflt - before.ru_minflt) / steps:.1f} faults/step, "
        f"{1e3 * (after.ru_stime - before.ru_stime) / steps:.3f} ms system time/step"
    )


def a_a(batch: int, rounds: int) -> list[float]:
    """Median step of four identical plain models (interleaved, rotating order) relative to the first's."""
    torch.manual_seed(0)
    models = [mlp() for _ in range(4)]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    steps = [stepper(m, batch) for m in models]
    for s in steps:
        for _ in range(5):
            s()
    times: list[list[float]] = [[] for _ in models]
    for r in range(rounds):
        for i in [(r + k) % 4 for k in range(4)]:
            t0 = time.thread_time()
            for _ in range(32):
                steps[i]()
            times[i].append((time.thread_time() - t0) / 32)
    med = [statistics.median(t) for t in times]
    return [m / med[0] - 1.0 for m in med]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=640, help="measured steps per page-fault configuration")
    p.add_argument("--rounds", type=int, default=40, help="interleaved rounds of the A/A test")
    p.add_argument("--child", nargs=3, metavar=("BATCH", "VARIANT", "MALLOC"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.child:
        batch, variant, malloc = args.child
        if malloc == "fixed":
            stable_malloc()
        print(faults(int(batch), variant, args.steps))
        return
    print(f"machine: {cpu_model()}, torch {torch.__version__}, 1 intra-op thread")
    print("\n(1) page faults per MLP training step (each configuration in a fresh process)")
    print(f"{'batch':>5} {'variant':>18} {'glibc defaults':>42} {'thresholds fixed':>42}")
    names = {"plain": "plain", "32": "gwa default", "0": "gwa defer=0"}
    for batch in (128, 512):
        for variant in ("plain", "32", "0"):
            cells = [
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--steps",
                        str(args.steps),
                        "--child",
                        str(batch),
                        variant,
                        malloc,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                for malloc in ("system", "fixed")
            ]
            print(f"{batch:>5} {names[variant]:>18} {cells[0]:>42} {cells[1]:>42}", flush=True)
    stable_malloc()
    print(f"\n(2) A/A: four identical plain MLPs, batch 128, {args.rounds} interleaved rounds of 32 steps")
    print(
        "median step relative to the first model's: "
        + " / ".join(f"{100 * d:+.2f} %" for d in a_a(128, args.rounds))
    )


if __name__ == "__main__":
    main()
