"""The torch backend of ``gwa train``: the training loop, evaluation, checkpoints and resume.

Interface: :func:`train` (see :mod:`gwa.runner.train`). Deterministic for a seed: model init from
``torch.manual_seed(seed)``, the epoch's order from (seed, epoch), no other randomness in the loop; a run
resumed from ``checkpoints/last.pt`` logs the same metrics as one that was never interrupted.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch.nn.functional as F

import torch
from gwa import DEFAULT_CRITERION
from gwa.runner import augment, checkpoint
from gwa.runner.loop import EpochLoop, epoch_batches, progress_bar
from gwa.torch._safe_load import load_weights_only

log = logging.getLogger(__name__)

BACKEND = "torch"
#: Batches between progress-bar refreshes of the live loss (each refresh reads the loss from the device).
REFRESH_EVERY = 10


def resolve_device(name: str) -> torch.device:
    """``auto``: cuda > mps > cpu; an explicit device that is not available is an error. Under torchrun each
    process takes the GPU of its ``LOCAL_RANK``."""
    cuda, mps = (
        torch.cuda.is_available(),
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available(),
    )
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ValueError(
            f"Expected an available `device`; got {name!r}, which this machine does not have "
            f"(use --device auto or cpu)."
        )
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def init_distributed(device: torch.device) -> tuple[int, int, bool]:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPU); returns (rank, world size, created)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, False
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), created


def _all_sum(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(values)
    return values


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def lr_factor(step: int, *, schedule: str, total_steps: int, warmup_steps: int) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (0-based), per batch."""
    if schedule == "constant":
        return 1.0
    if schedule == "warmup_cosine" and step < warmup_steps:
        return (step + 1) / warmup_steps
    start = warmup_steps if schedule == "warmup_cosine" else 0
    progress = min(1.0, (step - start) / max(1, total_steps - start))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(config, params):
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def load_init_checkpoint(model: torch.nn.Module, path) -> None:
    """Load a state_dict, skipping tensors whose shape differs (a new head for another number of classes)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--init-checkpoint {path} does not exist.")
    state = load_checkpoint(path)
    state = state.get("model", state) if isinstance(state, dict) else state
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise ValueError(f"--init-checkpoint {path} shares no tensor (name and shape) with the model.")
    skipped = sorted(set(own) - set(matching))
    if skipped:
        log.warning("init checkpoint: %d tensor(s) not loaded (kept at init): %s", len(skipped), skipped[:8])
    model.load_state_dict(matching, strict=False)


def to_model_input(x: torch.Tensor) -> torch.Tensor:
    """Channels-last images ``(B, H, W, C)`` -> ``(B, C, H, W)``; 1-D signals unchanged."""
    return x.permute(0, 3, 1, 2).contiguous() if x.ndim == 4 else x


class _Evaluator:
    """Batched accuracy on a fixed set, in eval mode, without gradients."""

    def __init__(self, device, amp: bool, batch_size: int):
        self.device, self.amp, self.batch_size = device, amp, batch_size

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        model.eval()
        preds = []
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            for i in range(0, len(x), self.batch_size):
                xb = to_model_input(torch.from_numpy(x[i : i + self.batch_size]).to(self.device))
                preds.append(model(xb).argmax(dim=1))
        return torch.cat(preds).cpu().numpy() if preds else np.zeros(0, dtype=np.int64)


def _gradient_disparity(model, data, config, epoch: int, device) -> float:
    """Gradient Disparity (Forouzesh & Thiran 2021) on 5 batches drawn with a (seed, epoch) generator."""
    from gwa.baselines.disparity import gradient_disparity

    rng = np.random.default_rng([config.seed, epoch, 1])
    ids = rng.permutation(data.num_samples)
    size = min(config.batch_size, max(1, data.num_samples // 5))
    batches = [
        (
            to_model_input(torch.from_numpy(data.x_train[ids[k * size : (k + 1) * size]]).to(device)),
            torch.from_numpy(data.y_train[ids[k * size : (k + 1) * size]]).to(device),
        )
        for k in range(5)
    ]
    was_training = model.training
    model.eval()  # no BatchNorm statistics update, and the tracker's hook stays quiet
    try:
        return float(gradient_disparity(model, F.cross_entropy, batches, train=False))
    finally:
        model.train(was_training)


def _rng_state() -> dict:
    """Tensors and plain values only, so that resume loads the checkpoint with ``weights_only=True``."""
    state = np.random.get_state(legacy=True)  # noqa: NPY002 - a user's global stream
    assert isinstance(state, tuple)  # legacy=True: the 5-tuple, never the dict
    kind, keys, pos, has_gauss, gauss = state
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    s = state["numpy"]
    legacy = (s["kind"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"])
    np.random.set_state(legacy)  # noqa: NPY002 - a user's global stream
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(config, data, loop: EpochLoop, *, start_epoch: int = 0, progress: bool = True) -> None:
    """Train epochs ``start_epoch + 1 .. config.epochs``; see :mod:`gwa.runner.train` for the contract."""
    device = resolve_device(config.device)
    rank, world, created_group = init_distributed(device)
    try:
        _train(
            config,
            data,
            loop,
            start_epoch=start_epoch,
            progress=progress,
            device=device,
            rank=rank,
            world=world,
        )
    except BaseException:
        if created_group:  # no barrier: the other ranks may be gone; leave without waiting for them
            import torch.distributed as dist

            dist.destroy_process_group()
        raise
    if created_group:
        import torch.distributed as dist

        # Tear the group down together: gloo can abort a rank ("terminate called without an active exception")
        # whose peer destroyed its side and exited first, which happened here under load.
        dist.barrier()
        dist.destroy_process_group()


def _train(
    config,
    data,
    loop: EpochLoop,
    *,
    start_epoch: int,
    progress: bool,
    device: torch.device,
    rank: int,
    world: int,
) -> None:
    from gwa.runner.models import build_model, classifier_head
    from gwa.torch import GWATracker

    amp = bool(config.amp and device.type == "cuda")
    if config.amp and not amp:
        log.warning("--amp needs a CUDA device; training in float32 on %s.", device)
    torch.manual_seed(config.seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    model = build_model(
        config.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        hidden=config.hidden,
        width=config.width,
        pretrained=config.pretrained,
        allow_download=config.download,
    )
    if config.init_checkpoint:
        load_init_checkpoint(model, config.init_checkpoint)
    if config.init_perturb:
        from gwa.runner.models import perturb_parameters

        perturb_parameters(model, config.init_perturb, seed=config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    model.to(device)
    n = data.num_samples
    steps_per_epoch = len(epoch_batches(n, config.batch_size, config.seed, 1))
    if world > 1 and min(len(b) for b in epoch_batches(n, config.batch_size, config.seed, 1)) < world:
        raise ValueError(
            f"Expected batches of at least {world} samples (one per process); got batch_size="
            f"{config.batch_size} for {n} samples."
        )
    # Under torchrun, DDP averages the ranks' gradients; each rank trains on its share of the same global batch.
    forward = (
        model
        if world == 1
        else torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    )
    optimizer = build_optimizer(config, model.parameters())
    factor = functools.partial(
        lr_factor,
        schedule=config.schedule,
        total_steps=config.epochs * steps_per_epoch,
        warmup_steps=config.warmup_epochs * steps_per_epoch,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    tracker = GWATracker(
        model,
        head=classifier_head(model),
        num_samples=n,
        bias=config.align_bias,
        signals=tuple(dict.fromkeys((*config.signals, "pred"))),
    )
    run_dir = loop.writer.path
    ckpt_dir = run_dir / checkpoint.CHECKPOINT_DIR
    if start_epoch > 0:
        last = checkpoint.marked_file(run_dir, "last")
        state = load_checkpoint(last, device)
        with checkpoint.restoring(last):  # a checkpoint that does not fit: one line naming it
            if int(state["epoch"]) != start_epoch:
                raise ValueError(f"{last} holds epoch {state['epoch']}, but last.json says {start_epoch}.")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            tracker.load_state_dict(state["tracker"])
            loop.load_state_dict(json.loads(state["loop"]))
            _set_rng_state(state["rng"])
        if loop.stopper.should_stop:
            return
    evaluator = _Evaluator(device, amp, max(256, 2 * config.batch_size))
    x_train = torch.from_numpy(data.x_train)
    y_train = torch.from_numpy(data.y_train)
    step = start_epoch * steps_per_epoch
    last_gwa = float("nan")
    for epoch in range(start_epoch + 1, config.epochs + 1):
        t0 = time.perf_counter()
        forward.train()
        lr = optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        batches = epoch_batches(n, config.batch_size, config.seed, epoch)
        aug_rng = augment.epoch_generator(config.seed, epoch) if config.augment else None
        with progress_bar(len(batches), desc=f"epoch {epoch}/{config.epochs}", enabled=progress) as bar:
            for b, global_ids in enumerate(batches):
                ids_t = torch.from_numpy(global_ids[rank::world])
                xb = to_model_input(x_train[ids_t].to(device, non_blocking=True))
                if aug_rng is not None:
                    xb = augment.augment_batch(xb, aug_rng)
                yb = y_train[ids_t].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = forward(xb)
                per_sample = F.cross_entropy(logits.float(), yb, reduction="none")
                # The global batch's mean loss: DDP divides the summed gradients by the world size.
                loss = per_sample.sum() * (world / len(global_ids))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                tracker.update(logits, yb, sample_ids=ids_t)
                optimizer.step()
                scheduler.step()
                step += 1
                loss_sum += per_sample.detach().double().sum()
                correct += (logits.detach().argmax(dim=1) == yb).sum()
                bar.update(1)
                if not bar.disable and (b % REFRESH_EVERY == 0 or b == len(batches) - 1):
                    bar.set_postfix(loss=f"{per_sample.mean().item():.4f}", gwa=f"{last_gwa:.4g}")
        result = tracker.end_epoch()  # merged across ranks under torchrun
        loss_sum = _all_sum(loss_sum, world)
        correct = _all_sum(correct, world)
        last_gwa = result.summary.gwa
        outcome = loop.end_epoch(
            epoch=epoch,
            step=step,
            lr=lr,
            train_loss=float(loss_sum) / n,
            train_acc=int(correct) / n,
            summary=result.summary,
            n_duplicates=result.n_duplicates,
            n_non_finite=result.n_non_finite,
            pred_train=result.signals["pred"],
            seconds=time.perf_counter() - t0,
            scores={"alignment": result.scores, **{s: result.signals[s] for s in config.signals}},
            predict=functools.partial(evaluator.predict, model),
            grad_disparity=functools.partial(_gradient_disparity, model, data, config, epoch, device)
            if config.gradient_disparity
            else None,
        )
        if rank == 0:
            _save_checkpoints(
                run_dir, ckpt_dir, epoch, model, optimizer, scheduler, tracker, loop, outcome.is_best
            )
        _barrier(world)
        if outcome.stop:
            break


def _save_checkpoints(
    run_dir, ckpt_dir, epoch, model, optimizer, scheduler, tracker, loop: EpochLoop, is_best: bool
) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if is_best:
        checkpoint.commit(
            run_dir,
            f"best_{DEFAULT_CRITERION}",
            epoch=epoch,
            backend=BACKEND,
            suffix=".pt",
            write=checkpoint.torch_writer({"model": model.state_dict(), "epoch": epoch}),
        )
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "tracker": tracker.state_dict(),
        "loop": json.dumps(loop.state_dict()),
        "rng": _rng_state(),
    }
    checkpoint.commit(
        run_dir, "last", epoch=epoch, backend=BACKEND, suffix=".pt", write=checkpoint.torch_writer(state)
    )


def load_checkpoint(path, device="cpu") -> dict:
    """A checkpoint of this backend, loaded with ``weights_only=True``: a crafted file cannot run code."""
    return load_weights_only(
        path, device, refusal=f"Refusing to load {path}: expected a checkpoint of tensors and plain values"
    )
