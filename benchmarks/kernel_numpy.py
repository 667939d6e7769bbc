"""Cost of the numpy reference kernel: closed form vs brute-force per-sample gradients (torch.func, CPU).

Run:  python benchmarks/kernel_numpy.py [--threads 1] [--repeats 7] [--quick]

For each shape (N, C, D) it times ``gwa.alignment`` (numpy, float64, with validation) and the oracle used by the
tests: ``vmap(grad(cross_entropy))`` over the head weight, then the cosine with the weight. Both get the same
float64 inputs; the largest score difference is printed next to the timings, so a speed-up is never reported
for wrong numbers. Medians and min/max over the repeats; all from this one run, machine printed first.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
from _machine import cpu_model  # benchmarks/ is on sys.path when a script runs

import gwa
import torch

SEED = 0


def machine() -> str:
    cpu = cpu_model()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical cores (1-min load {load:.1f}), numpy {np.__version__}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def autograd_scores(x, weight, labels):
    xt, wt, yt = torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(labels)

    def loss(w, xi, yi):
        return torch.nn.functional.cross_entropy((w @ xi)[None], yi[None])

    g = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(wt, xt, yt).reshape(len(x), -1)
    w = wt.reshape(-1)
    return (-(g @ w) / (g.norm(dim=1) * w.norm())).numpy()


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (numpy BLAS is not pinned)"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small shapes only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    print(f"seed {SEED}, {args.repeats} repeats after one warm-up; times in ms: median [min, max]\n")
    shapes = (
        [(128, 10, 64), (128, 100, 512)]
        if args.quick
        else [(128, 10, 64), (128, 100, 512), (256, 1000, 2048)]
    )
    print(
        f"{'N, C, D':>16} | {'closed form (numpy)':>24} | {'autograd per-sample':>24} | speed-up | max |diff|"
    )
    for n, c, d in shapes:
        rng = np.random.default_rng(SEED)
        x = rng.normal(size=(n, d))
        weight = rng.normal(size=(c, d)) / np.sqrt(d)
        labels = rng.integers(0, c, size=n)
        logits = x @ weight.T
        diff = np.max(np.abs(gwa.alignment(logits, labels, x, weight) - autograd_scores(x, weight, labels)))
        fast = timed(lambda z=logits, y=labels, e=x, w=weight: gwa.alignment(z, y, e, w), args.repeats)
        slow = timed(lambda e=x, w=weight, y=labels: autograd_scores(e, w, y), args.repeats)

        def fmt(t):
            return f"{1e3 * statistics.median(t):8.2f} [{1e3 * min(t):7.2f}, {1e3 * max(t):7.2f}]"

        ratio = statistics.median(slow) / statistics.median(fast)
        print(f"{(n, c, d)!s:>16} | {fmt(fast):>24} | {fmt(slow):>24} | {ratio:7.1f}x | {diff:.1e}")


if __name__ == "__main__":
    main()
