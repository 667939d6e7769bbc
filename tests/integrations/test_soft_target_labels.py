"""Mixup/CutMix through the run-directory writers (issue 20): the stored labels are the dataset's, never the argmax
of a mixed target, and the thumbnails are unmixed inputs or none."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import torch
from gwa.integrations import RECOMMENDED_SIGNALS, RunRecorder, WithIndex
from gwa.rundir import load_run
from gwa.torch import GWATracker

torch.set_num_threads(1)
N, C = 96, 4
refused = pytest.mark.hostile("refused")
accepted = pytest.mark.hostile("accepted")


def _images():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % C
    x = torch.randn(N, 1, 8, 8, generator=g) * 0.5
    x[:, 0, :, :2] += y[:, None, None].float()
    return x, y


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, C)
    )


def _mixup_loop(path, *, pass_labels: bool, epochs: int = 2):
    """The docs' mixup recipe (lam ~ Beta(0.4, 0.4), partner = a shuffled batch) through RunRecorder."""
    x, y = _images()
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    loader = DataLoader(
        WithIndex(TensorDataset(x, y)),
        batch_size=16,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    g = torch.Generator().manual_seed(1)
    beta = torch.distributions.Beta(0.4, 0.4)
    wrong_argmax = 0
    tracker = GWATracker(model, num_samples=N, signals=RECOMMENDED_SIGNALS)
    with RunRecorder(path, tracker, total_epochs=epochs) as recorder:
        for _ in range(epochs):
            for xb, yb, ids in loader:
                lam = float(beta.sample())
                perm = torch.randperm(len(xb), generator=g)
                mixed_x = lam * xb + (1 - lam) * xb[perm]
                mixed_t = lam * F.one_hot(yb, C).float() + (1 - lam) * F.one_hot(yb[perm], C).float()
                wrong_argmax += int((mixed_t.argmax(1) != yb).sum())
                logits = model(mixed_x)
                loss = torch.sum(-mixed_t * F.log_softmax(logits, 1), 1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                if pass_labels:
                    recorder.update(logits, mixed_t, ids, labels=yb, inputs=xb)
                else:
                    recorder.update(logits, mixed_t, ids, inputs=mixed_x)
            recorder.end_epoch(tracker.end_epoch())
    return y, x, wrong_argmax


@accepted
def test_a_mixup_loop_through_run_recorder_stores_the_dataset_labels_and_unmixed_previews(tmp_path):
    y, x, wrong_argmax = _mixup_loop(tmp_path / "run", pass_labels=True)
    assert wrong_argmax > 10  # the argmax of the mixed target would have been wrong for these
    run = load_run(tmp_path / "run")
    np.testing.assert_array_equal(run.labels, y.numpy())
    np.testing.assert_array_equal(run.preview_ids, np.arange(N))
    np.testing.assert_allclose(run.previews, x.numpy())  # the unmixed inputs


@refused
def test_soft_targets_without_labels_are_refused_not_guessed(tmp_path):
    with pytest.raises(
        ValueError, match=r"Expected `labels=` .* soft targets of shape \(16, 4\).*partner's label"
    ):
        _mixup_loop(tmp_path / "run", pass_labels=False)


@accepted
def test_with_labels_given_up_front_soft_batches_keep_no_mixed_previews(tmp_path):
    x, y = _images()
    model = _net()
    tracker = GWATracker(model, num_samples=N, defer=0)
    with RunRecorder(tmp_path / "run", tracker, total_epochs=1, labels=y.numpy()) as recorder:
        ids = torch.arange(N)
        mixed = 0.5 * x + 0.5 * x.flip(0)
        logits = model(mixed)
        F.cross_entropy(logits, y).backward()
        recorder.update(logits, F.one_hot(y, C).float() * 0.6 + 0.1, ids, inputs=mixed)
        recorder.end_epoch(tracker.end_epoch())
    run = load_run(tmp_path / "run")
    np.testing.assert_array_equal(run.labels, y.numpy())
    assert run.previews is None  # mixed inputs are not the samples' pictures


@refused
@pytest.mark.parametrize("bad", [torch.zeros(16, 4), torch.zeros(3, dtype=torch.long), torch.zeros(16)])
def test_batch_labels_must_be_class_ids_of_the_batch(tmp_path, bad):
    model = _net()
    tracker = GWATracker(model, num_samples=N, defer=0)
    recorder = RunRecorder(tmp_path / "run", tracker, total_epochs=1)
    logits = model(torch.zeros(16, 1, 8, 8))
    with pytest.raises(
        ValueError, match=r"Expected `labels` as the batch's integer class ids of shape \(16,\)"
    ):
        recorder.update(logits, torch.full((16, C), 0.25), torch.arange(16), labels=bad)
    tracker.remove()


@accepted
@pytest.mark.slow
def test_lightning_with_mixup_in_training_step_stores_the_batch_labels(tmp_path):
    pytest.importorskip("lightning")
    sys.path.insert(0, str(Path(__file__).parent))
    import _lightning_setup as S
    import lightning as L

    from gwa.integrations.lightning import GWACallback

    class Mixup(S.Module):
        def training_step(self, batch, batch_idx):
            x, y = batch[0], batch[1]
            perm = torch.arange(len(x)).flip(0)
            lam = 0.3  # every mixed row's argmax is the partner's label where the two differ
            t = lam * F.one_hot(y, S.C).float() + (1 - lam) * F.one_hot(y[perm], S.C).float()
            loss = torch.sum(-t * F.log_softmax(self.net(lam * x + (1 - lam) * x[perm]), 1), 1).mean()
            return {"loss": loss, "targets": t}

    x, y = S.data()
    loader = DataLoader(WithIndex(TensorDataset(x, y)), batch_size=16, shuffle=False)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[GWACallback(run_dir=tmp_path / "run")],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Mixup(), loader)
    run = load_run(tmp_path / "run")
    np.testing.assert_array_equal(run.labels, y.numpy())
    np.testing.assert_allclose(run.previews, x.numpy())  # the batch's inputs, before training_step mixed them


@accepted
@pytest.mark.slow
def test_lightning_with_soft_batch_targets_warns_and_stores_no_guessed_labels_or_mixed_previews(tmp_path):
    pytest.importorskip("lightning")
    sys.path.insert(0, str(Path(__file__).parent))
    import _lightning_setup as S
    import lightning as L

    from gwa.integrations.lightning import GWACallback

    class SoftBatches(S.Module):  # mixup done in the collate function: the batch's targets are already soft
        def training_step(self, batch, batch_idx):
            x, t = batch[0], batch[1]
            logits = self.net(x)
            return {"loss": torch.sum(-t * F.log_softmax(logits, 1), 1).mean(), "logits": logits}

    x, y = S.data()
    mixed_t = 0.3 * F.one_hot(y, S.C).float() + 0.7 * F.one_hot(y.flip(0), S.C).float()
    loader = DataLoader(WithIndex(TensorDataset(x, mixed_t)), batch_size=16, shuffle=False)
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[GWACallback(run_dir=tmp_path / "run")],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.warns(UserWarning, match=r"soft targets .* no labels were stored .* pass labels="):
        trainer.fit(SoftBatches(), loader)
    run = load_run(tmp_path / "run")
    assert run.labels is None and run.previews is None
