"""Cost of gwa.torch: the closed-form kernel vs per-sample autograd, and the tracker's share of a training step.

Run:  python benchmarks/torch_overhead.py [--threads 1] [--rounds 100] [--quick]

Prints (a) kernel vs brute-force per-sample gradients at C=1000, D=2048 (the public ``alignment()`` with and
without ``head_output=``, and the tracker's per-step kernel); (b) a full training step (forward, loss, backward,
SGD step) of an MLP and a small CNN at batch 128 and 512: plain, the paper's example (the seed README's
``compute_alignment``: a module that stores the head input, 8 operations after the step), gwa default
(``GWATracker(model, num_samples=...)``: the batches of 32 updates scored together), gwa eager (``defer=0``: each
batch scored in its update) and gwa fused (``defer=0, compile=True``), rounds interleaved, medians and ratios to
plain; (c) where the tracker's time goes (torch profiler, MLP batch 128, default and eager); (d) the
host-synchronisation check of update(). All numbers come from this one run;
the machine is printed first.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch.nn.functional as F
from _machine import cpu_model, stable_malloc  # benchmarks/ is on sys.path when a script runs

import torch
from gwa.torch import DEFAULT_DEFER, GWATracker, alignment
from gwa.torch._kernel import capture_terms, fused_scores, head_terms, scores_from_head_terms
from torch import nn


def machine() -> str:
    cpu = cpu_model()
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} "
        f"intra-op threads), Python {platform.python_version()}, "
        f"CUDA {'available: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'not available'}"
    )


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
    w = torch.randn(c, d, generator=g) / d**0.5
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

    def from_output():  # the public function given the head's output: W x read from it, not recomputed
        return alignment(logits, y, x, w, head_output=logits)

    def unchecked():  # the two halves from embeddings (W x recomputed), no validation
        terms = head_terms(x, w, dtype=torch.float32)
        return scores_from_head_terms(logits, y, terms, soft=False)[0]

    index = y[:, None]

    def tracker_kernel():  # what the tracker runs per step: W x read off the head's output (hook + update)
        terms = capture_terms(x, w, b, logits, include_bias=False, dtype=torch.float32)
        return fused_scores(logits, index, terms)

    reference = brute()
    err = float((reference - kernel()).abs().max())
    err_fused = float((reference - tracker_kernel()).abs().max())
    err_output = float((reference - from_output()).abs().max())
    t_brute = statistics.median(timed(brute, repeats))
    t_kernel = statistics.median(timed(kernel, repeats * 5))
    t_unchecked = statistics.median(timed(unchecked, repeats * 5))
    t_output = statistics.median(timed(from_output, repeats * 20))
    t_fused = statistics.median(timed(tracker_kernel, repeats * 20))
    return {
        "n": n,
        "brute_ms": 1e3 * t_brute,
        "kernel_ms": 1e3 * t_kernel,
        "speedup": t_brute / t_kernel,
        "unchecked_ms": 1e3 * t_unchecked,
        "unchecked_speedup": t_brute / t_unchecked,
        "max_abs_diff": err,
        "output_ms": 1e3 * t_output,
        "output_speedup": t_brute / t_output,
        "output_diff": err_output,
        "fused_ms": 1e3 * t_fused,
        "fused_speedup": t_brute / t_fused,
        "fused_diff": err_fused,
    }


# ------------------------------------------------------------------------------------------- (b) train step
def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


INPUTS = {
    "MLP (784-512-256-10)": (mlp, (1, 28, 28)),
    "small CNN (3 conv + linear, 32x32x3)": (small_cnn, (3, 32, 32)),
}


class StoreInput(nn.Module):
    """The paper's example: the head wrapped in a module that keeps ``x.detach()`` of its input."""

    def __init__(self, head: nn.Linear):
        super().__init__()
        self.head = head
        self.x = None

    def forward(self, x):
        self.x = x.detach()
        return self.head(x)


#: "gwa default" is ``GWATracker(model, num_samples=...)`` (batches of DEFAULT_DEFER updates scored together);
#: "gwa eager" and "gwa fused" score each batch in its ``update()`` (``defer=0``), fused with ``compile=True``.
#: "plain (control)" is plain again: the spread between the two plain rows is the measurement's own noise.
VARIANTS = ("plain", "paper's example", "gwa default", "gwa eager", "gwa fused", "plain (control)")
DEFER = DEFAULT_DEFER


def step_overhead(
    make_model, shape, batch: int, rounds: int, steps_per_round: int, budget_s: float, variants=VARIANTS
) -> dict:
    """Median step of each variant over interleaved rounds, all on one model and one optimizer.

    One model for all variants: separate but identical model instances differ in speed by up to about a point here
    (``benchmarks/harness_artifacts.py``), comparable to what is measured. Each variant is installed at the
    start of its part of a round (a fresh tracker, or the paper's wrapper around the head), runs one untimed step
    (a tracker's first update of an epoch checks its inputs eagerly), ``steps_per_round`` timed steps, and is
    removed (``end_epoch``, the paper's end-of-epoch concatenation) untimed.
    """
    torch.manual_seed(0)
    model = make_model()
    head = model[-1]
    paper = StoreInput(head)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    num_samples = 50_000
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    ids = torch.randperm(num_samples)[:batch]
    paper_scores: list[torch.Tensor] = []
    compile_failed = None

    def install(v):
        if v == "paper's example":
            model[-1] = paper
        if not v.startswith("gwa"):
            return None
        return GWATracker(
            model, num_samples=num_samples, compile=v == "gwa fused", defer=DEFER if v == "gwa default" else 0
        )

    def uninstall(tracker) -> None:
        nonlocal compile_failed
        if tracker is not None:
            tracker.end_epoch()
            tracker.remove()
            compile_failed = compile_failed or tracker._scorer.failed
        model[-1] = head
        if paper_scores:
            torch.cat(paper_scores).numpy()  # the paper's example concatenates at the end of the epoch
            paper_scores.clear()

    def step(v, tracker):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tracker is not None:
            tracker.update(logits, y, ids)
        opt.step()
        if v == "paper's example":  # compute_alignment of the seed README's gwa_torch.py, post-step weights
            with torch.no_grad():
                w, emb = paper.head.weight, paper.x
                diff = torch.softmax(logits, dim=-1) - F.one_hot(y, logits.shape[-1])
                v_ = diff @ w
                dot = -(emb * v_).sum(-1)
                paper_scores.append(dot / (emb.norm(dim=-1) * diff.norm(dim=-1) * w.norm() + 1e-12))

    for v in variants:  # warm-up (and the fused variant's compilation)
        tracker = install(v)
        for _ in range(3):
            step(v, tracker)
        uninstall(tracker)
    # Fewer rounds for slow steps, so that every configuration takes about budget_s (never fewer than 6).
    step_s = statistics.median(timed(lambda: step("plain", None), 3))
    rounds = int(min(rounds, max(6, budget_s / (len(variants) * (steps_per_round + 1) * step_s))))
    times = {v: [] for v in variants}
    for r in range(rounds):
        # Rotate which variant goes first so that drift in machine load hits all alike.
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            tracker = install(v)
            step(v, tracker)  # untimed: the epoch's first update checks its inputs eagerly (one host read)
            # One value per round: its mean step. With rounds of DEFER steps, each round of the default
            # variant holds exactly one scoring of DEFER batches, so its cost is in every value, not an outlier
            # that a median over single steps would drop.
            times[v].append(statistics.fmean(timed(lambda v=v, t=tracker: step(v, t), steps_per_round)))
            uninstall(tracker)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    return {
        "batch": batch,
        "rounds": rounds,
        "ms": {v: 1e3 * m for v, m in med.items()},
        "ratio": {v: m / med["plain"] for v, m in med.items()},
        "compile_failed": compile_failed if "gwa fused" in variants else None,
    }


def profile_tracker(make_model, shape, batch: int, defer: int, steps: int = 200) -> str:
    """The tracker's own operations inside training steps (torch profiler, self CPU time per step).

    The hook and ``update()`` run inside ``record_function`` ranges; every ATen op under them is charged to
    its name. The profiler adds its own cost to each op, so the absolute times are inflated; the shares show
    where the tracker's time goes.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tracker = GWATracker(model, num_samples=50_000, defer=defer)
    pairing = tracker._pairing
    pairing.handle.remove()
    capture = pairing.hook

    def hook(module, inputs, output):
        with record_function("gwa hook"):
            capture(module, inputs, output)

    pairing.handle = tracker.head.register_forward_hook(hook)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    ids = torch.randperm(50_000)[:batch]

    def step():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with record_function("gwa update()"):
            tracker.update(logits, y, ids)
        opt.step()

    for _ in range(5):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    tracker.end_epoch()
    events = prof.events()
    ranges = {"gwa hook": 0.0, "gwa update()": 0.0}
    ops: dict[tuple[str, str], list] = {}
    total = sum(e.self_cpu_time_total for e in events)
    for e in events:
        if e.name in ranges:
            ranges[e.name] += e.cpu_time_total
            key = (e.name, "(Python, dispatch)")
            ops.setdefault(key, [0, 0.0])
            ops[key][1] += e.self_cpu_time_total
            ops[key][0] += 1
            continue
        parent = e.cpu_parent
        while parent is not None and parent.name not in ranges:
            parent = parent.cpu_parent
        if parent is not None:
            ops.setdefault((parent.name, e.name), [0, 0.0])
            ops[parent.name, e.name][0] += 1
            ops[parent.name, e.name][1] += e.self_cpu_time_total
    rows = sorted(ops.items(), key=lambda kv: -kv[1][1])
    lines = [
        (
            f"profiled step {total / steps / 1e3:.2f} ms (profiler included); gwa hook "
            f"{ranges['gwa hook'] / steps:.1f} us/step, gwa update() {ranges['gwa update()'] / steps:.1f} us/step"
        ),
        f"{'range':<14} {'op':<34} {'calls/step':>10} {'self us/step':>12} {'% of step':>9}",
    ]
    for (where, name), (calls, self_us) in rows:
        lines.append(
            f"{where:<14} {name:<34} {calls / steps:>10.1f} {self_us / steps:>12.1f} "
            f"{100 * self_us / total:>8.2f}%"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- (c) syncs
def sync_check() -> str:
    if not torch.cuda.is_available():
        return (
            "CUDA not available: checked by construction and by tests/torch/test_torch_tracker.py::"
            "test_update_does_not_read_values_on_the_host (Tensor.item/tolist/cpu/numpy/bool/int/float/nonzero "
            "patched to raise inside update() after the epoch's first update, which checks its inputs eagerly)."
        )
    model = mlp().cuda()
    x = torch.randn(64, 1, 28, 28, device="cuda")
    y = torch.randint(0, 10, (64,), device="cuda")
    ids = torch.randperm(1000, device="cuda")[:64]
    for defer in (DEFER, 0):
        tracker = GWATracker(
            model,
            num_samples=1000,
            signals=("loss", "margin", "p_gold", "el2n", "pred", "correct"),
            defer=defer,
        )
        tracker.update(model(x), y, ids)  # the epoch's first update checks its inputs eagerly (one host read)
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(DEFER + 1):  # the default scores the kept batches once among these
                tracker.update(model(x), y, ids)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        tracker.end_epoch()
        tracker.remove()
    return (
        f"CUDA: {DEFER + 1} update() calls under torch.cuda.set_sync_debug_mode('error') raised nothing, with the "
        "default tracker and with defer=0."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=100, help="interleaved rounds per configuration")
    parser.add_argument(
        "--steps-per-round",
        type=int,
        default=None,
        help=f"steps of each variant per round (default {DEFER} for the MLP: one deferred scoring per round; "
        "3 for the CNN, whose steps are 20-40x longer)",
    )
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per training-step configuration")
    parser.add_argument("--quick", action="store_true", help="few repeats, for a smoke run")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiler table (c)")
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated subset of mlp,cnn for (b)")
    parser.add_argument("--no-kernel", action="store_true", help="skip the kernel comparison (a)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS[1:]), help="comma-separated variants of (b) besides plain"
    )
    parser.add_argument(
        "--clock",
        choices=("thread", "wall"),
        default="thread",
        help="thread: CPU time of the timing thread (needs --threads 1); wall: elapsed time",
    )
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="keep glibc's moving mmap/trim thresholds (default: fixed, so that page faults per step do not "
        "depend on the allocation history)",
    )
    args = parser.parse_args()
    allocator = "malloc: system defaults" if args.system_malloc else stable_malloc()
    global CLOCK
    if args.clock == "wall":
        CLOCK = time.perf_counter
    elif args.threads != 1:
        parser.error("--clock thread measures one thread: use --threads 1 or --clock wall")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    rounds = 3 if args.quick else args.rounds
    print("machine:", machine())
    print(allocator)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"clock: {'CPU time of the timing thread' if args.clock == 'thread' else 'wall'}; "
        f"load average at start: {load:.1f}"
    )
    print("\n(a) kernel vs per-sample autograd gradients, C=1000, D=2048, float32, medians")
    print(
        f"{'N':>4} {'autograd ms':>12} {'alignment() ms':>15} {'speedup':>8} {'unchecked ms':>13} {'speedup':>8} "
        f"{'max |diff|':>11} {'head_output= ms':>16} {'speedup':>8} {'max |diff|':>11} "
        f"{'tracker ms':>11} {'speedup':>8} {'max |diff|':>11}"
    )
    for n in () if args.no_kernel else (32, 128):
        r = kernel_vs_autograd(n, 1000, 2048, repeats=2 if args.quick else 5)
        print(
            f"{r['n']:>4} {r['brute_ms']:>12.2f} {r['kernel_ms']:>15.3f} {r['speedup']:>7.0f}x "
            f"{r['unchecked_ms']:>13.3f} {r['unchecked_speedup']:>7.0f}x {r['max_abs_diff']:>11.1e} "
            f"{r['output_ms']:>16.3f} {r['output_speedup']:>7.0f}x {r['output_diff']:>11.1e} "
            f"{r['fused_ms']:>11.3f} {r['fused_speedup']:>7.0f}x {r['fused_diff']:>11.1e}"
        )
    print(
        f"\n(b) training step (forward, CE loss, backward, SGD momentum step): plain, the paper's example "
        f"(post-step weights, scores kept on device), GWATracker(num_samples=50000) default (defer={DEFER}), "
        f"eager (defer=0) and fused (defer=0, torch.compile); up to {rounds} interleaved rounds of "
        f"{args.steps_per_round or DEFER} (MLP) or {args.steps_per_round or 3} (CNN) steps, median over rounds of the "
        "round's mean step, ratio to plain"
    )
    variants = ("plain", *(v for v in VARIANTS[1:] if v in args.variants.split(",")))
    # torch.compile's variant goes last, in its own rounds against plain: once a compiled function has run in a
    # process, every other variant's overhead rose by 1-2 points here (the paper's example, eager and default
    # alike), which would charge Dynamo's presence to them.
    first = tuple(v for v in variants if v != "gwa fused")
    chosen = [
        k
        for k in INPUTS
        if k.split(" ")[0].lower().replace("small", "cnn") in args.models.split(",")
        or ("cnn" in args.models.split(",") and "CNN" in k)
    ]
    configs = [(name, batch) for name in chosen for batch in (128, 512)]

    def measure(name: str, batch: int, which: tuple) -> dict:
        make, shape = INPUTS[name]
        return step_overhead(
            make,
            shape,
            batch,
            rounds,
            args.steps_per_round or (DEFER if make is mlp else 3),
            5.0 if args.quick else args.budget,
            which,
        )

    results = {c: measure(*c, first) for c in configs}
    profiles = []
    if not args.no_profile:
        profiles = [
            f"the default, GWATracker(defer={DEFER}) (update() keeps the batch; every {DEFER}th scores {DEFER})",
            profile_tracker(mlp, (1, 28, 28), 128, defer=DEFER),
            "\nthe same with GWATracker(defer=0) (each update() scores its batch)",
            profile_tracker(mlp, (1, 28, 28), 128, defer=0),
        ]
    if "gwa fused" in variants:
        for c in configs:
            fused = measure(*c, ("plain", "gwa fused", "plain (control)"))
            results[c]["ratio"]["gwa fused"] = fused["ratio"]["gwa fused"]
            results[c]["fused_rounds"] = fused["rounds"]
            results[c]["fused_control"] = fused["ratio"]["plain (control)"]
            results[c]["compile_failed"] = fused["compile_failed"]
    print(
        f"{'model':<38} {'batch':>5} {'rounds':>6} {'plain ms':>9} "
        + " ".join(f"{v:>16}" for v in variants[1:])
    )
    for (name, batch), r in results.items():
        cells = " ".join(
            f"{r['ratio'][v]:>9.4f} ({100 * (r['ratio'][v] - 1):+5.1f}%)"[:16].rjust(16) for v in variants[1:]
        )
        print(f"{name:<38} {batch:>5} {r['rounds']:>6} {r['ms']['plain']:>9.2f} {cells}", flush=True)
        if "fused_rounds" in r:
            print(
                f"    (gwa fused: {r['fused_rounds']} rounds of its own, after the others, against plain; its "
                f"control {100 * (r['fused_control'] - 1):+.1f}%)"
            )
        if r.get("compile_failed"):
            print(f"    (torch.compile failed: {r['compile_failed']}; 'gwa fused' ran the eager path)")
    if profiles:
        print(
            "\n(c) where the tracker's time goes: torch profiler over 200 MLP training steps at batch 128, the "
            "tracker's ops only (self CPU time per step), measured before any torch.compile in this process"
        )
        print("\n".join(profiles))
    print("\n(d) host synchronisation in update():", sync_check())


if __name__ == "__main__":
    main()
