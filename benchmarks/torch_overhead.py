"""Cost of gwa.torch: the closed-form kernel vs per-sample autograd, and the tracker's share of a training step.

Run:  python benchmarks/torch_overhead.py [--threads 1] [--rounds 40] [--quick]

Prints (a) kernel vs brute-force per-sample gradients at C=1000, D=2048; (b) a full training step (forward,
loss, backward, SGD step) of an MLP and a small CNN at batch 128 and 512 with and without the tracker, rounds
interleaved, medians and ratios; (c) the host-synchronisation check of update(). All numbers come from this
one run; the machine is printed first.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from gwa.torch import GWATracker, alignment
from gwa.torch._kernel import head_terms, scores_from_head_terms
from _machine import cpu_model  # benchmarks/ is on sys.path when a script runs


def machine() -> str:
    cpu = cpu_model()
    return (f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} "
            f"intra-op threads), Python {platform.python_version()}, "
            f"CUDA {'available: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'not available'}")


#: Clock for all timings: CPU time of this thread by default, so that other processes competing for the cores
#: of a shared machine do not count (torch runs single-threaded here, in the calling thread); --clock wall
#: switches to wall-clock time.
CLOCK = time.thread_time


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        out.append(CLOCK() - t0)
    return out


# ------------------------------------------------------------------------------------------------ (a) kernel
def kernel_vs_autograd(n: int, c: int, d: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(c, d, generator=g) / d ** 0.5
    b = torch.zeros(c)
    y = torch.randint(0, c, (n,), generator=g)
    logits = x @ w.T + b

    def loss(wi, xi, yi):
        return F.cross_entropy((xi @ wi.T + b)[None], yi[None])

    per_sample_grad = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))

    def brute():
        grads = per_sample_grad(w, x, y).flatten(1)  # (N, C*D) per-sample gradients
        return -(grads @ w.flatten()) / (grads.norm(dim=1) * w.norm())

    def kernel():  # the public function: validates its inputs eagerly (reads them on the host)
        return alignment(logits, y, x, w)

    def unchecked():  # what the tracker runs per step: the two halves, no validation
        terms = head_terms(x, w, dtype=torch.float32)
        return scores_from_head_terms(logits, y, terms, soft=False)[0]

    err = float((brute() - kernel()).abs().max())
    t_brute = statistics.median(timed(brute, repeats))
    t_kernel = statistics.median(timed(kernel, repeats * 5))
    t_unchecked = statistics.median(timed(unchecked, repeats * 5))
    return {"n": n, "brute_ms": 1e3 * t_brute, "kernel_ms": 1e3 * t_kernel, "speedup": t_brute / t_kernel,
            "unchecked_ms": 1e3 * t_unchecked, "unchecked_speedup": t_brute / t_unchecked, "max_abs_diff": err}


# ------------------------------------------------------------------------------------------- (b) train step
def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 10))


INPUTS = {"MLP (784-512-256-10)": (mlp, (1, 28, 28)), "small CNN (3 conv + linear, 32x32x3)": (small_cnn, (3, 32, 32))}


def step_overhead(make_model, shape, batch: int, rounds: int, steps_per_round: int, budget_s: float) -> dict:
    torch.manual_seed(0)
    plain, tracked = make_model(), make_model()
    tracked.load_state_dict(plain.state_dict())
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)
    opt_tracked = torch.optim.SGD(tracked.parameters(), lr=0.01, momentum=0.9)
    num_samples = 50_000
    tracker = GWATracker(tracked, num_samples=num_samples)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    ids = torch.randperm(num_samples)[:batch]

    def step(model, opt, track):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if track:
            tracker.update(logits, y, ids)
        opt.step()

    for _ in range(3):  # warm-up
        step(plain, opt_plain, False)
        step(tracked, opt_tracked, True)
    # Fewer rounds for slow steps, so that every configuration takes about budget_s (never fewer than 6).
    step_s = statistics.median(timed(lambda: step(plain, opt_plain, False), 3))
    rounds = int(min(rounds, max(6, budget_s / (2 * steps_per_round * step_s))))
    times = {False: [], True: []}
    for r in range(rounds):
        # Alternate which variant goes first so that drift in machine load hits both alike.
        for track in ((False, True) if r % 2 == 0 else (True, False)):
            model, opt = (tracked, opt_tracked) if track else (plain, opt_plain)
            times[track] += timed(lambda m=model, o=opt, t=track: step(m, o, t), steps_per_round)
    tracker.end_epoch()

    # The tracker's own work, timed alone: the forward hook's capture and update().
    head = tracked[-1]
    emb = tracked[:-1](x).detach()
    out = head(emb)
    tracker._captures.clear()
    def one_capture():
        tracker._capture(head, (emb,), out)
        tracker._captures.clear()

    capture = statistics.median(timed(one_capture, rounds * steps_per_round))

    def one_update():
        tracker._capture(head, (emb,), out)
        tracker.update(out, y, ids)

    both = statistics.median(timed(one_update, rounds * steps_per_round))
    tracker.remove()
    without, with_ = statistics.median(times[False]), statistics.median(times[True])
    return {"batch": batch, "rounds": rounds, "step_ms": 1e3 * without, "tracked_step_ms": 1e3 * with_,
            "end_to_end_overhead": with_ / without - 1.0, "capture_ms": 1e3 * capture,
            "update_ms": 1e3 * (both - capture), "component_overhead": both / without}


# ----------------------------------------------------------------------------------------------- (c) syncs
def sync_check() -> str:
    if not torch.cuda.is_available():
        return ("CUDA not available: checked by construction and by tests/torch/test_torch_tracker.py::"
                "test_update_does_not_read_values_on_the_host (Tensor.item/tolist/cpu/numpy/bool/int/float/nonzero "
                "patched to raise inside update()).")
    model = mlp().cuda()
    tracker = GWATracker(model, num_samples=1000, signals=("loss", "margin", "p_gold", "el2n", "pred", "correct"))
    x = torch.randn(64, 1, 28, 28, device="cuda")
    y = torch.randint(0, 10, (64,), device="cuda")
    ids = torch.randperm(1000, device="cuda")[:64]
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            tracker.update(model(x), y, ids)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    tracker.end_epoch()
    return "CUDA: 3 update() calls under torch.cuda.set_sync_debug_mode('error') raised nothing."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds per configuration")
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--budget", type=float, default=40.0, help="seconds per training-step configuration")
    parser.add_argument("--quick", action="store_true", help="few repeats, for a smoke run")
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread",
                        help="thread: CPU time of the timing thread (needs --threads 1); wall: elapsed time")
    args = parser.parse_args()
    global CLOCK
    if args.clock == "wall":
        CLOCK = time.perf_counter
    elif args.threads != 1:
        parser.error("--clock thread measures one thread: use --threads 1 or --clock wall")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    rounds = 3 if args.quick else args.rounds
    print("machine:", machine())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"clock: {'CPU time of the timing thread' if args.clock == 'thread' else 'wall'}; "
          f"load average at start: {load:.1f}")
    print("\n(a) kernel vs per-sample autograd gradients, C=1000, D=2048, float32, medians")
    print(f"{'N':>4} {'autograd ms':>12} {'alignment() ms':>15} {'speedup':>8} {'unchecked ms':>13} {'speedup':>8} "
          f"{'max |diff|':>11}")
    for n in (32, 128):
        r = kernel_vs_autograd(n, 1000, 2048, repeats=2 if args.quick else 5)
        print(f"{r['n']:>4} {r['brute_ms']:>12.2f} {r['kernel_ms']:>15.3f} {r['speedup']:>7.0f}x "
              f"{r['unchecked_ms']:>13.3f} {r['unchecked_speedup']:>7.0f}x {r['max_abs_diff']:>11.1e}")
    print(f"\n(b) training step (forward, CE loss, backward, SGD momentum step) with vs without GWATracker "
          f"(num_samples=50000), up to {rounds} interleaved rounds x {args.steps_per_round} steps, medians")
    print(f"{'model':<38} {'batch':>5} {'rounds':>6} {'step ms':>8} {'tracked ms':>10} {'end-to-end':>10} "
          f"{'capture ms':>10} {'update ms':>9} {'tracker/step':>12}")
    for name, (make, shape) in INPUTS.items():
        for batch in (128, 512):
            r = step_overhead(make, shape, batch, rounds, args.steps_per_round, 5.0 if args.quick else args.budget)
            print(f"{name:<38} {batch:>5} {r['rounds']:>6} {r['step_ms']:>8.2f} {r['tracked_step_ms']:>10.2f} "
                  f"{100 * r['end_to_end_overhead']:>9.2f}% {r['capture_ms']:>10.3f} {r['update_ms']:>9.3f} "
                  f"{100 * r['component_overhead']:>11.2f}%")
    print("\n(c) host synchronisation in update():", sync_check())


if __name__ == "__main__":
    main()
