"""Write ``state_9db5a86.pt``: a GWATracker state saved mid-epoch by gwa at commit 9db5a86, and what that code did next.

Run with that commit's code (``PYTHONPATH=<checkout of 9db5a86>/src python tests/data/make_state_9db5a86.py``).
For two trackers (the default: indexed, deferred, signals; and ``defer=0`` without ``num_samples``) it saves
the model's weights and the tracker's state at the same moment, the batches that followed, the state after the
first of them, and the epoch's result once they were all given, so that ``tests/torch/test_torch_state_compat.py``
can check that later code resumes the state and gives the same scores, and writes the same state.
"""

from pathlib import Path

import torch.nn.functional as F

import torch
from gwa.torch import GWATracker
from torch import nn

N, BATCH, CLASSES = 40, 8, 4
SETTINGS = {
    "default": {"num_samples": N, "signals": ("loss", "margin", "pred")},
    "defer0_sparse": {"defer": 0},
}


def _step(model, opt, tracker, x, y, ids) -> None:
    logits = model(x)
    tracker.update(logits, y, ids)
    opt.zero_grad()
    F.cross_entropy(logits, y).backward()
    opt.step()


def main() -> None:
    torch.set_num_threads(1)  # the test resumes on one thread: matmul results may depend on the thread count
    out = {"commit": "9db5a86"}
    for name, settings in SETTINGS.items():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, CLASSES)).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.3)
        x, y = torch.randn(N, 5, dtype=torch.float64), torch.randint(0, CLASSES, (N,))
        tracker = GWATracker(model, **settings)
        batches = [torch.randperm(N)[:BATCH] for _ in range(7)]  # an epoch of 4 steps, then 3 of the next

        for ids in batches[:4]:
            _step(model, opt, tracker, x[ids], y[ids], ids)
        tracker.end_epoch()
        for ids in batches[4:6]:
            _step(model, opt, tracker, x[ids], y[ids], ids)
        saved = {
            "state": tracker.state_dict(),
            "model": {k: v.clone() for k, v in model.state_dict().items()},
        }
        _step(model, opt, tracker, x[batches[6]], y[batches[6]], batches[6])
        saved["state_after_one"] = tracker.state_dict()
        rest = [torch.randperm(N)[:BATCH] for _ in range(3)]
        for ids in rest:
            _step(model, opt, tracker, x[ids], y[ids], ids)
        result = tracker.end_epoch()
        saved.update(
            x=x,
            y=y,
            batches=[batches[6], *rest],
            scores=torch.from_numpy(result.scores),
            sample_ids=None if result.sample_ids is None else torch.from_numpy(result.sample_ids),
            signals={k: torch.from_numpy(v) for k, v in result.signals.items()},
            mean=result.summary.mean,
            gwa=result.summary.gwa,
        )
        out[name] = saved
    path = Path(__file__).with_name("state_9db5a86.pt")
    torch.save(out, path)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
