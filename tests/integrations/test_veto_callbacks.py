"""The veto through the callbacks: Lightning reads the split's accuracy logged as veto_acc in validation (which runs
before on_train_epoch_end), or calls veto(pl_module); the decision is EarlyStopper(veto=True)'s over its rows."""

from __future__ import annotations

import pytest

pytest.importorskip("lightning")

import _lightning_setup as S

import torch
from gwa import policy
from gwa.integrations.lightning import GWACallback

SPLIT_ACC = [0.40, 0.55, 0.80, 0.60, 0.70, 0.65]  # what the "split" reports per epoch (a scripted accuracy)


class WithSplit(S.Module):
    """Logs a scripted split accuracy as veto_acc in validation, epoch by epoch."""

    def validation_step(self, batch, batch_idx):
        acc = torch.tensor(SPLIT_ACC[self.current_epoch])
        self.log("veto_acc", acc, on_step=False, on_epoch=True)

    def val_dataloader(self):
        return S.loader(64)


def _check(callback):
    rows = callback.rows
    assert [r["veto_acc"] for r in rows] == pytest.approx(SPLIT_ACC)
    evidence = callback.monitor.classes.evidence
    assert evidence is not None
    with_evidence = [{**r, "class_evidence": e} for r, e in zip(rows, evidence, strict=True)]
    epoch, _ = policy.choose_with_veto(with_evidence, total_epochs=len(SPLIT_ACC))
    assert callback.best_epoch == epoch
    assert callback.monitor.stopper.candidate_epochs  # the candidates it chose among


@pytest.mark.slow  # two Lightning fits: about 6 s
def test_lightning_veto_from_a_logged_metric_and_from_a_callable():
    logged = GWACallback(veto=True, num_samples=64)
    S.trainer(len(SPLIT_ACC), [logged]).fit(WithSplit(), train_dataloaders=S.loader(16))
    _check(logged)

    calls = []

    def split_accuracy(module):
        assert not module.training and not torch.is_grad_enabled()  # eval mode, no gradients
        calls.append(module.current_epoch)
        return SPLIT_ACC[len(calls) - 1]

    called = GWACallback(veto=split_accuracy, num_samples=64)
    S.trainer(len(SPLIT_ACC), [called]).fit(S.Module(), train_dataloaders=S.loader(16))
    assert len(calls) == len(SPLIT_ACC)
    _check(called)
    assert called.best_epoch == logged.best_epoch  # the same training, the same split accuracies


def test_huggingface_veto_must_be_a_callable():
    pytest.importorskip("transformers")
    from gwa.integrations.huggingface import GWATrainerCallback

    with pytest.raises(TypeError, match="Expected `veto` to be None or a callable veto"):
        GWATrainerCallback(veto=True)
