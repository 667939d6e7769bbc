"""What the per-class evidence costs the torch tracker: the deferred scoring pass with and without the predicted and
given classes, and the end of an epoch (storage reduction plus ``gwa.class_evidence``).

Run:  python benchmarks/class_overhead.py [--repeats 400]

CPU time of the calling thread (one torch thread), medians of interleaved repeats; the machine is printed first.
The deferred pass is the one place the classes cost anything during an epoch (one argmax and two casts per
``defer`` = 32 steps); nothing else runs per step.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from _machine import cpu_model  # benchmarks/ is on sys.path when a script runs

import torch
from gwa.torch import GWATracker
from gwa.torch._deferred import Deferred, score_pending, versions
from gwa.torch._kernel import Scorer, capture_split_terms


def deferred_pass(repeats: int, batch: int = 128, classes: int = 10, dim: int = 256) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    pending = []
    for _ in range(32):
        x = torch.randn(batch, dim, generator=g)
        w = torch.randn(classes, dim, generator=g) / dim**0.5
        out, y = x @ w.T, torch.randint(0, classes, (batch,), generator=g)
        ids = torch.randint(0, 50_000, (batch,), generator=g)
        terms = capture_split_terms(x, w, None, out)
        pending.append(Deferred(out, y, terms, ids, versions(out, y, ids)))
    scorer = Scorer(False)

    def once(keep: bool) -> float:
        t0 = time.thread_time()
        score_pending(pending, soft=False, scorer=scorer, signals=(), classes=keep)
        return time.thread_time() - t0

    for keep in (False, True) * 3:
        once(keep)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for keep in (False, True):
            times[keep].append(once(keep))
    return statistics.median(times[False]), statistics.median(times[True])


def end_of_epoch(n: int = 50_000, batch: int = 128) -> tuple[float, float]:
    model = torch.nn.Linear(64, 10)
    x = torch.randn(batch, 64)
    out = []
    for keep in (False, True):
        tracker = GWATracker(model, num_samples=n)
        if not keep:  # the tracker before per-class evidence: no classes in the storage
            tracker._settings = dataclasses.replace(tracker._settings, keep_classes=False)
            tracker._new_epoch()
        perm = torch.randperm(n)
        for b in range(n // batch):
            tracker.update(
                model(x), torch.randint(0, 10, (batch,)), sample_ids=perm[b * batch : (b + 1) * batch]
            )
        t0 = time.thread_time()
        tracker.end_epoch()
        out.append(time.thread_time() - t0)
        tracker.remove()
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {cpu_model()}, torch {torch.__version__}, 1 thread, CPU time of the timing thread")
    a, b = deferred_pass(args.repeats)
    print(
        f"deferred pass, 32 batches of 128 x 10: {1e6 * a:.0f} us without classes, {1e6 * b:.0f} us with "
        f"(+{1e6 * (b - a):.0f} us per 32 steps, +{1e6 * (b - a) / 32:.2f} us per step)"
    )
    a, b = end_of_epoch()
    print(f"end_epoch, N=50000, C=10: {1e3 * a:.1f} ms without classes, {1e3 * b:.1f} ms with class evidence")


if __name__ == "__main__":
    main()
