"""Every ```python snippet of README.md and docs/*.md runs, on tiny data, with the names it assumes defined.

Each snippet gets a prelude (imports and the user's own objects: a model, a loader, ...) chosen by the section it
stands in; after it runs, a check asserts what the snippet promises. Each runs in a fresh interpreter, so a name
that only an earlier test imported (``gwa.jax`` bound by ``import gwa.jax`` elsewhere) cannot hide a missing import.
"""

import importlib.util
import inspect
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

TORCH = """
import torch, torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
torch.manual_seed(0)
X, Y = torch.randn(64, 8), torch.randint(0, 3, (64,))
train_set = TensorDataset(X, Y, torch.arange(64))
loader = DataLoader(train_set, batch_size=16, shuffle=True)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
opt = optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
epochs = 12
"""
LIGHTNING = TORCH + "import lightning as L\nfrom lightning.pytorch.callbacks import ModelCheckpoint\n"
HF = """
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, Trainer, TrainingArguments
torch.manual_seed(0)
hf_model = AutoModelForSequenceClassification.from_config(BertConfig(
    vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3,
    max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
tokens = torch.randint(3, 50, (24, 6), generator=torch.Generator().manual_seed(0))
hf_train_set = [{"input_ids": t, "attention_mask": torch.ones(6, dtype=torch.long), "labels": int(t[0]) % 3}
                for t in tokens]
"""
SOFT = TORCH + "from gwa.torch import GWATracker\n"
TORCHRUN = (
    TORCH
    + """
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
import gwa
from gwa.torch import GWATracker
from gwa.rundir import RunWriter
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)
epochs = 2
"""
)
FLAX = """
import jax, jax.numpy as jnp, optax, flax.linen as nn
import gwa
"""
FLAX_STEP = (
    FLAX
    + """
class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x))
        self.sow("intermediates", "gwa_embeddings", x)
        return nn.Dense(10, name="head")(x)
model = MLP()
x, y = jax.random.normal(jax.random.key(0), (16, 8)), jnp.arange(16) % 10
params = model.init(jax.random.key(1), x)["params"]
optimizer = optax.sgd(0.1)
opt_state, moments = optimizer.init(params), gwa.jax.moments_init()
"""
)
FLAX_LOOP = (
    FLAX_STEP
    + """
@jax.jit
def train_step(params, opt_state, moments, x, y):
    def loss_fn(params):
        logits, sown = model.apply({"params": params}, x, mutable=["intermediates"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, sown)
    (loss, (logits, sown)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    moments = gwa.jax.moments_update(moments, gwa.jax.alignment_from_flax(logits, y, sown, params))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, moments, loss
batches = [(x[:8], y[:8]), (x[8:], y[8:])]
epochs = 4
"""
)
SHARD = (
    FLAX
    + """
import numpy as np
from jax.sharding import PartitionSpec as P
rng = np.random.default_rng(0)
n = 4 * jax.device_count()
logits, emb, W = rng.normal(size=(n, 3)), rng.normal(size=(n, 5)), rng.normal(size=(3, 5))
logits = emb @ W.T
y, valid = rng.integers(0, 3, n), np.ones(n, bool)
"""
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_loop(ns):
    assert ns["best"] == ns["stopper"].best_epoch and 1 <= ns["best"] <= ns["epochs"]
    assert len(ns["tracker"].history) == ns["stopper"].epoch


def _check_lightning(ns):
    import re

    ckpt, cb = ns["best_ckpt"], ns["gwa_cb"]
    lightning_epoch = (
        int(re.search(r"epoch=(\d+)", ckpt.best_model_path).group(1)) + 1
    )  # Lightning counts from 0
    assert cb.best_epoch == lightning_epoch


def _check_hf(ns):
    import torch

    cb = ns["gwa_cb"]
    assert cb.best_epoch in (1, 2, 3) and len(cb.rows) == 3
    assert (cb.best_model_dir / "model.safetensors").exists()
    restored = ns["hf_model"].state_dict()
    assert all(torch.equal(v, restored[k]) for k, v in ns["best"].state_dict().items())


def _check_recorder(ns):
    import numpy as np

    from gwa.rundir import load_run

    run = load_run("runs/mine")
    assert run.complete and run.summary["best_epoch"] == ns["recorder"].best_epoch
    np.testing.assert_array_equal(run.labels, ns["Y"].numpy())
    assert "pred" in run.signals() and run.previews.shape == (64, 8)


def _check_soft(ns):
    import numpy as np

    result = ns["result"]
    assert result.summary.n == 64 and np.isfinite(result.scores).all()


def _check_torchrun(ns):
    import torch.distributed as dist

    from gwa.rundir import load_run

    try:
        assert load_run("runs/ddp").epochs == [1, 2]
    finally:
        dist.destroy_process_group()


def _check_flax_step(ns):
    import gwa

    out = ns["train_step"](ns["params"], ns["opt_state"], ns["moments"], ns["x"], ns["y"])
    assert gwa.summarize(ns["gwa"].jax.to_moments(out[2])).n == 16


def _check_flax_loop(ns):
    assert ns["stopper"].epoch == 4 and ns["stopper"].best_epoch in (1, 2, 3, 4)


def _check_shard(ns):
    import numpy as np

    import gwa

    expected = gwa.Moments.from_values(gwa.alignment(ns["logits"], ns["y"], ns["emb"], ns["W"]))
    assert np.isclose(gwa.jax.to_moments(ns["moments"]).mean, expected.mean, atol=1e-5)


def _check_module(ns):
    import jax

    variables = ns["MLP"]().init(jax.random.key(0), jax.numpy.ones((2, 4)))
    assert variables["params"]["head"]["kernel"].shape == (32, 10)


NOISE_MAP = """
import numpy as np
import gwa
E, num_classes, class_names = 10, 4, ["cat", "dog", "car", "bus"]
_rng = np.random.default_rng(0)
_truth = np.repeat(np.arange(4), 100)
_labels = _truth.copy()
_labels[:30], _labels[100:130] = 1, 0   # 30% of cats labelled dog and of dogs labelled cat


def one_epoch(epoch):
    fitted = _rng.random(_labels.size) < max(0.0, (epoch - 5) / 4)   # the flipped labels get memorised late
    flipped = (_labels != _truth) & ~fitted
    scores = np.where(flipped, -1, 1) * _rng.uniform(0.04, 0.08, _labels.size)
    predictions = np.where(flipped, _truth, _labels)
    split_acc = float(_rng.uniform(0.6, 0.9))
    return scores, _labels, predictions, gwa.summarize(scores), float((predictions == _labels).mean()), split_acc
"""


def _check_noise_map(ns):
    nm, policy = ns["nm"], ns["policy"]
    # 15% of the labels are flipped; gwa's window here runs into the memorised epochs, so the map reads fewer
    assert {(g, t) for g, t, _ in nm.pairs} == {(0, 1), (1, 0)} and 0.08 < nm.rate <= 0.15
    assert "class_conditional" in ns["codes"] and ns["summary_json"]["noise_estimate"]["pairs"]
    assert ns["kept"] == ns["stopper"].best_epoch
    assert ns["kept"] in {policy.select_epoch(ns["rows"], c, total_epochs=10) for c in policy.VETO_CANDIDATES}


#: (document, section heading) -> (prelude, check); the pages under docs/guide/ are tests/test_site.py's
SETUPS = {
    ("README.md", "In your PyTorch loop"): (TORCH, _check_loop),
    ("soft-targets.md", "Label smoothing"): (SOFT, _check_soft),
    ("soft-targets.md", "Mixup and CutMix"): (SOFT, _check_soft),
    ("soft-targets.md", "Distillation"): (SOFT, _check_soft),
    ("jax.md", "The one line in your model"): (FLAX, _check_module),
    ("jax.md", "A train step"): (FLAX_STEP, _check_flax_step),
    ("jax.md", "A train step#2"): (SHARD, _check_shard),
    ("noise-map.md", "API"): (NOISE_MAP, _check_noise_map),
}


#: Snippets that train with Flax or Hugging Face's Trainer: seconds each, so outside the fast loop.
SLOW_SNIPPETS = {("README.md", "With Flax"), ("README.md", "With Hugging Face"), ("jax.md", "A train step")}


def _snippets():
    out = []
    for doc in DOCS:
        section, seen = None, {}
        for block in re.finditer(r"^(## [^\n]*)$|^```python\n(.*?)^```$", doc.read_text(), re.M | re.S):
            if block.group(1):
                section = block.group(1)[3:].strip()
                continue
            n = seen[section] = seen.get(section, 0) + 1
            key = (doc.name, section if n == 1 else f"{section}#{n}")
            marks = pytest.mark.slow if key in SLOW_SNIPPETS else ()
            out.append(pytest.param(key, block.group(2), id=f"{key[0]}:{key[1]}", marks=marks))
    return out


def test_every_snippet_has_a_setup():
    keys = {p.values[0] for p in _snippets()}
    assert keys == set(SETUPS), (
        f"snippets without a setup: {keys - set(SETUPS)}; stale setups: {set(SETUPS) - keys}"
    )


def _program(key, code) -> str:
    """The prelude, the snippet (compiled under its own name, for tracebacks) and its check, as one program."""
    prelude, check = SETUPS[key]
    return "\n".join(
        [
            prelude.replace("{port}", str(_free_port())),
            f"exec(compile({code!r}, {f'{key[0]}:{key[1]}'!r}, 'exec'))",
            inspect.getsource(check),
            f"{check.__name__}(globals())",
        ]
    )


#: Runs one document's snippets in one interpreter (torch, jax, lightning are imported once per document, not once
#: per snippet), each in a namespace of its own, its own folder, and with gwa imported afresh: an ``import gwa.x``
#: that only an earlier snippet made would otherwise bind ``gwa.x`` for the later ones.
_RUNNER = """
import os, sys, traceback
failed = []
for i, (key, program) in enumerate(SNIPPETS):
    for name in [m for m in sys.modules if m == "gwa" or m.startswith("gwa.")]:
        del sys.modules[name]
    os.makedirs(str(i)); os.chdir(str(i))
    try:
        exec(program, {"__name__": "__snippet__"})
    except BaseException:
        failed.append(key)
        print(f"--- {key} failed:", file=sys.stderr)
        traceback.print_exc()
    os.chdir("..")
sys.exit(1 if failed else 0)
"""


def _needs(key) -> tuple[str, ...]:
    if key[1].startswith("With Lightning"):
        return ("lightning",)
    if key[1].startswith("With Hugging Face"):
        return ("transformers",)
    if key[0] == "jax.md" or key[1] == "With Flax":
        return ("flax",)
    return ()


@pytest.mark.parametrize("doc", sorted({p.values[0][0] for p in _snippets()}))
def test_snippets_run_in_a_fresh_interpreter(doc, tmp_path):
    snippets = [p.values for p in _snippets() if p.values[0][0] == doc]
    runnable = [(k, c) for k, c in snippets if all(importlib.util.find_spec(m) for m in _needs(k))]
    if not runnable:
        pytest.skip(f"{doc}: no snippet's framework is installed")
    programs = [(f"{k[0]}:{k[1]}", _program(k, c)) for k, c in runnable]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(
        [sys.executable, "-c", f"SNIPPETS = {programs!r}\n{_RUNNER}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"{doc}: snippets failed in a fresh interpreter:\n{proc.stderr[-6000:]}"
    if len(runnable) < len(snippets):  # visible, as importorskip was: the others ran and passed
        missing = sorted({m for k, _ in snippets for m in _needs(k) if not importlib.util.find_spec(m)})
        pytest.skip(
            f"{doc}: {len(snippets) - len(runnable)} snippet(s) not run, {', '.join(missing)} missing"
        )


@pytest.mark.slow
def test_import_gwa_loads_no_framework_and_the_adapters_on_first_use():
    code = (
        "import sys, gwa\n"
        "assert not {'torch', 'jax', 'gwa.torch', 'gwa.jax'} & set(sys.modules), sorted(sys.modules)\n"
        "gwa.jax.alignment; gwa.torch.GWATracker\n"
        "assert gwa.torch is sys.modules['gwa.torch'] and 'jax' in dir(gwa)\n"
        "try:\n    gwa.nonexistent\nexcept AttributeError as e:\n    assert 'nonexistent' in str(e)\n"
        "else:\n    raise AssertionError('no AttributeError')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
