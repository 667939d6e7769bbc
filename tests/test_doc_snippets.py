"""Every ```python snippet of README.md and docs/*.md runs, on tiny data, with the names it assumes defined.

Each snippet gets a prelude (imports and the user's own objects: a model, a loader, ...) chosen by the section it
stands in; after it runs, a check asserts what the snippet promises.
"""

import re
import socket
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
import gwa, gwa.jax
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


#: (document, section heading) -> (prelude, check)
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


SETUPS = {
    ("README.md", "In your PyTorch loop"): (TORCH, _check_loop),
    ("README.md", "Reports from your own loop"): (TORCH, _check_recorder),
    ("soft-targets.md", "Label smoothing"): (SOFT, _check_soft),
    ("soft-targets.md", "Mixup and CutMix"): (SOFT, _check_soft),
    ("soft-targets.md", "Distillation"): (SOFT, _check_soft),
    ("README.md", "With Lightning"): (LIGHTNING, _check_lightning),
    ("README.md", "With Hugging Face"): (HF, _check_hf),
    ("README.md", "With torchrun"): (TORCHRUN, _check_torchrun),
    ("README.md", "With Flax"): (FLAX_LOOP, _check_flax_loop),
    ("jax.md", "The one line in your model"): (FLAX, _check_module),
    ("jax.md", "A train step"): (FLAX_STEP, _check_flax_step),
    ("jax.md", "A train step#2"): (SHARD, _check_shard),
    ("noise-map.md", "API"): (NOISE_MAP, _check_noise_map),
}


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
            out.append(pytest.param(key, block.group(2), id=f"{key[0]}:{key[1]}"))
    return out


def test_every_snippet_has_a_setup():
    keys = {p.values[0] for p in _snippets()}
    assert keys == set(SETUPS), (
        f"snippets without a setup: {keys - set(SETUPS)}; stale setups: {set(SETUPS) - keys}"
    )


@pytest.mark.parametrize(("key", "code"), _snippets())
def test_snippet_runs(key, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if key[1].startswith("With Lightning"):
        pytest.importorskip("lightning")
    if key[1].startswith("With Hugging Face"):
        pytest.importorskip("transformers")
    if key[0] == "jax.md" or key[1] == "With Flax":
        pytest.importorskip("flax")
    prelude, check = SETUPS[key]
    ns: dict = {}
    exec(prelude.replace("{port}", str(_free_port())), ns)
    exec(compile(code, f"{key[0]}:{key[1]}", "exec"), ns)
    check(ns)
