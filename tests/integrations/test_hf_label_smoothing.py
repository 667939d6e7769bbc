"""The Hugging Face recipe for label smoothing in docs/soft-targets.md: smooth in compute_loss, keep `labels`."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")


@pytest.mark.slow
def test_a_compute_loss_subclass_smooths_the_loss_and_the_callback_scores_the_hard_labels(tmp_path):
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, BertConfig, Trainer, TrainingArguments

    from gwa.integrations import WithIndex
    from gwa.integrations.huggingface import GWATrainerCallback

    class SmoothedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            outputs = model(**inputs)  # `labels` reach the forward, where GWATrainerCallback reads them
            loss = F.cross_entropy(outputs.logits, inputs["labels"], label_smoothing=0.1)
            return (loss, outputs) if return_outputs else loss

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = AutoModelForSequenceClassification.from_config(config)
    tokens = torch.randint(3, 50, (24, 6), generator=torch.Generator().manual_seed(0))
    items = WithIndex(
        [
            {"input_ids": t, "attention_mask": torch.ones(6, dtype=torch.long), "labels": int(t[0]) % 3}
            for t in tokens
        ]
    )
    args = TrainingArguments(
        str(tmp_path / "out"),
        num_train_epochs=2,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        per_device_train_batch_size=8,
    )
    cb = GWATrainerCallback()
    SmoothedTrainer(model=model, args=args, train_dataset=items, callbacks=[cb]).train()
    assert len(cb.tracker.history) == 2 and all(s.n == len(items) for s in cb.tracker.history)
    assert np.isfinite([s.mean for s in cb.tracker.history]).all()
