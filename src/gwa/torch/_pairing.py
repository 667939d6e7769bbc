"""Forward pairing: the head's forward hook, and which captured forward pass an ``update()``'s logits came from.

The hook takes, while the head is in training mode, the head's half of the cosine (:class:`HeadTerms`) with the
weights *of that forward pass*, and keeps it as a :class:`Capture` until an ``update()`` consumes it: the capture
whose output is the given logits, else the only pending one; with several pending and no identity, none (raise or
skip, ``unpaired``). The first pairing also verifies that the hooked head produced the logits.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import torch
from gwa._validation import check_shapes, describe
from gwa.torch._head import is_stale_pairing, linear_candidates
from gwa.torch._kernel import HeadTerms, capture_split_terms, capture_terms, compute_dtype
from torch import nn

#: Forward passes captured but not yet consumed by ``update`` beyond which the oldest is dropped (with a warning).
MAX_PENDING_CAPTURES = 64
#: Relative tolerance when the logits given to ``update`` are not the head's output tensor but should hold its
#: values up to a positive scale (``logits / T``, a cast, a copy).
SAME_VALUES_RTOL = 1e-3


def _dead_ref():
    return None


class Capture(NamedTuple):
    output: Callable[[], torch.Tensor | None]  # weak ref to the head's output, to pair update(logits) with it
    terms: HeadTerms | None  # None when the forward could not be used (``error``)
    embeddings_shape: tuple
    weight_shape: tuple
    bias_shape: tuple | None
    error: Exception | None
    values: torch.Tensor | None  # the head's output, kept until the head has been verified once


class Pairing:
    """The hooked head (or none: the explicit path), its pending captures, and the pairing of ``update()``s.

    Args:
        model: the network, or None for the explicit path.
        head_name, head: the head found in it (:func:`gwa.torch.find_head`).
        bias: the bias joins the cosine.
        defer: the tracker scores batches later (the hook then leaves ``||W||_F`` apart, one operation less).
        unpaired: ``"raise"`` or ``"skip"`` for an ``update()`` whose forward pass cannot be identified.
        warn_once: the tracker's warning, once per key.
    """

    def __init__(
        self,
        model: nn.Module | None,
        head_name: str | None,
        head: nn.Linear | None,
        *,
        bias: bool,
        defer: int,
        unpaired: str,
        warn_once: Callable[[str, str], None],
    ):
        self.head_name = head_name
        self.head = head
        self.bias = bias
        self.defer = defer
        self.unpaired = unpaired
        self._warn_once = warn_once
        self._model_ref = None if model is None else weakref.ref(model)
        self.captures: deque[Capture] = deque()
        self.paused = False
        self.head_verified = False
        self.last_by_identity = (
            False  # the last pairing found the logits by identity (the fast path needs it)
        )
        self._checked_shapes: tuple | None = None
        self.handle = None if head is None else head.register_forward_hook(self.hook)

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        self.captures.clear()

    @contextlib.contextmanager
    def pause(self):
        previous, self.paused = self.paused, True
        try:
            yield
        finally:
            self.paused = previous

    # ----------------------------------------------------------------------------------------------------- hook
    def hook(self, module: nn.Linear, inputs, output) -> None:
        # Training forwards run with autograd; eval-mode and no_grad forwards (teacher, EMA, scoring) are skipped.
        if self.paused or not module.training or not torch.is_grad_enabled():
            return
        x = inputs[0] if inputs else None
        weight, bias = module.weight, module.bias
        if (
            self.head_verified
            and type(output) is torch.Tensor
            and type(x) is torch.Tensor
            and x.dim() == 2
            and x.is_floating_point()
            and len(self.captures) < MAX_PENDING_CAPTURES
        ):
            # Steady state: the checks below cannot fail (embeddings (N, D), room for the capture, no output kept
            # for the head's verification); the terms are the same. Each line here runs once per step.
            self.captures.append(
                Capture(
                    weakref.ref(output),
                    self._terms(x, weight, bias, output),
                    x.shape,
                    weight.shape,
                    None if bias is None or not self.bias else bias.shape,
                    None,
                    None,
                )
            )
            return
        error: Exception | None = None
        terms = None
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
            error = ValueError(
                f"Expected the head {self.head_name!r} to receive embeddings of shape (N, D); got "
                f"{describe(x)}. Flatten the sequence dimension or pass embeddings= to update()."
            )
        else:
            terms = self._terms(x, weight, bias, output if isinstance(output, torch.Tensor) else None)
        if len(self.captures) >= MAX_PENDING_CAPTURES:
            self.captures.popleft()
            self._warn_once(
                "overflow",
                f"{MAX_PENDING_CAPTURES} forward passes of the head in training mode were "
                "captured without update(); dropping the oldest. Call update() once per forward, or "
                "wrap forwards that are not scored in `with tracker.paused():`.",
            )
        is_tensor = isinstance(output, torch.Tensor)
        self.captures.append(
            Capture(
                weakref.ref(output) if is_tensor else _dead_ref,
                terms,
                tuple(getattr(x, "shape", ())),
                tuple(weight.shape),
                None if bias is None or not self.bias else tuple(bias.shape),
                error,
                output.detach() if is_tensor and not self.head_verified else None,
            )
        )

    def _terms(self, x: torch.Tensor, weight: torch.Tensor, bias, output: torch.Tensor | None) -> HeadTerms:
        dtype = torch.float64 if x.dtype is torch.float64 or weight.dtype is torch.float64 else torch.float32
        if (
            type(output) is torch.Tensor
            and output.dtype is dtype
            and x.dtype is dtype
            and weight.dtype is dtype
        ):
            # The head's output is exact in its dtype (autocast would have given a half-precision output), so
            # -W x is read off it; deferred, the norms' product is taken later, for many batches at once.
            if self.defer and not self.bias:
                return capture_split_terms(x, weight, bias, output)
            return capture_terms(x, weight, bias, output, include_bias=self.bias, dtype=dtype)
        if torch.is_autocast_enabled(x.device.type):
            # Autocast ran W x in half precision: recompute it in the compute dtype.
            with torch.autocast(device_type=x.device.type, enabled=False):
                return capture_terms(x, weight, bias, None, include_bias=self.bias, dtype=dtype)
        return capture_terms(x, weight, bias, output, include_bias=self.bias, dtype=dtype)

    # -------------------------------------------------------------------------------------------------- pairing
    def terms_for(self, logits, targets, embeddings, weight, bias) -> HeadTerms | None:
        """The head's terms for this ``update()``: given (explicit path) or its forward's capture; None: skip."""
        if embeddings is not None or weight is not None:
            if embeddings is None or weight is None:
                raise ValueError(
                    "Expected both `embeddings` and `weight` for the explicit path; got only "
                    f"{'embeddings' if weight is None else 'weight'}."
                )
            if self.bias and bias is None:
                raise ValueError("Expected `bias=` in update() because the tracker has bias=True.")
            bias = bias if self.bias else None
            check_shapes(
                logits.shape,
                targets.shape,
                embeddings.shape,
                weight.shape,
                None if bias is None else bias.shape,
            )
            return capture_terms(
                embeddings,
                weight,
                bias,
                None,
                include_bias=bias is not None,
                dtype=compute_dtype(logits, embeddings, weight),
            )
        if not self.captures:
            hint = (
                "the tracker has no model: pass embeddings= and weight="
                if self.handle is None
                else f"run the model forward with the head {self.head_name!r} in training mode (model.train()) "
                "and with autograd on (not under torch.no_grad() or torch.inference_mode(), and not inside "
                "tracker.paused()) before each update(), once per update"
            )
            raise RuntimeError(f"update() found no captured forward pass of the head; {hint}.")
        capture = self._pop(logits)
        if capture is None:
            return None
        if capture.error is not None:
            raise capture.error
        if capture.embeddings_shape[0] != logits.shape[0]:
            raise ValueError(
                f"Expected `logits` for the captured forward pass of batch size {capture.embeddings_shape[0]}; got "
                f"logits.shape={tuple(logits.shape)}. With several forwards per step (gradient accumulation), "
                "call update() once per forward, in order."
            )
        signature = (
            logits.shape,
            targets.shape,
            capture.embeddings_shape,
            capture.weight_shape,
            capture.bias_shape,
        )
        if signature != self._checked_shapes:  # the same shapes step after step: check them once
            try:
                check_shapes(*signature)
            except ValueError as error:
                if tuple(capture.weight_shape[:1]) == tuple(logits.shape[1:2]):
                    raise
                raise ValueError(
                    f"{error} The hooked head {self.head_name!r} (nn.Linear, weight "
                    f"{capture.weight_shape}) does not produce these logits (C={logits.shape[1]}): pass "
                    f"GWATracker(model, head=...) the classifier layer. {self.candidates(logits.shape[1])}"
                ) from None
            self._checked_shapes = signature
        if not self.head_verified:
            self._verify_head(logits, capture)
        return capture.terms

    def _pop(self, logits: torch.Tensor) -> Capture | None:
        """The capture of the forward pass that produced ``logits``: by identity, else the only pending one."""
        for skipped, capture in enumerate(self.captures):
            if capture.output() is logits:
                if skipped:
                    self._warn_once(
                        "skipped",
                        f"{skipped} captured forward pass(es) of the head had no update() "
                        "before the one whose logits were given; they were dropped. Wrap forwards "
                        "that are not scored in `with tracker.paused():`.",
                    )
                for _ in range(skipped + 1):
                    self.captures.popleft()
                self.last_by_identity = True
                return capture
        self.last_by_identity = False
        if len(self.captures) == 1:
            capture = self.captures.popleft()
            if self.head_verified and is_stale_pairing(logits, capture.output()):  # first call: _verify_head
                stale = (
                    f"update() got logits that are not from the pending forward pass of the head "
                    f"{self.head_name!r}: that pass's output is still alive and these logits neither derive "
                    "from it nor equal it up to a scale (logits of an earlier forward?). Call update() with "
                    "the logits of the latest forward, before the next one."
                )
                if self.unpaired == "skip":
                    self._warn_once("stale", stale + " Skipping (unpaired='skip').")
                    return None
                raise RuntimeError(stale)
            return capture
        pending = len(self.captures)
        self.captures.clear()  # none of them can be paired any more
        message = (
            f"update() cannot tell which of {pending} captured forward passes of the head "
            f"{self.head_name!r} produced these logits: they are not the head's output tensor (e.g. "
            "logits / T, a copy, a DDP output) and several training-mode forwards ran since the last "
            "update(). Pass the head's output itself, call update() after each forward, or wrap forwards "
            "that are not scored in `with tracker.paused():`."
        )
        if self.unpaired == "skip":
            self._warn_once(
                "unpaired", message + " Skipping (unpaired='skip'); counted in EpochResult.n_unpaired."
            )
            return None
        raise RuntimeError(message + " (Or GWATracker(unpaired='skip') to skip such updates and count them.)")

    def _verify_head(self, logits: torch.Tensor, capture: Capture) -> None:
        """Once: the hooked head must have produced ``logits`` (same tensor, or same values up to a scale)."""
        out = capture.values
        if capture.output() is logits or out is None:
            self.head_verified = True
            return
        ok = tuple(out.shape) == tuple(logits.shape)
        if ok:
            o, z = out.detach().double().flatten(), logits.detach().double().flatten()
            scale = float(o @ z) / max(float(o @ o), 1e-300)
            ok = scale > 0 and float(torch.linalg.vector_norm(z - scale * o)) <= SAME_VALUES_RTOL * max(
                float(torch.linalg.vector_norm(z)), 1e-300
            )
        if not ok:
            head_shape = None if self.head is None else tuple(self.head.weight.shape)
            raise ValueError(
                f"Expected `logits` produced by the hooked head {self.head_name!r} (nn.Linear, weight {head_shape}); "
                f"got logits that are not its output, nor its output up to a positive scale: the head gwa found "
                f"is not the layer that produced the logits. Pass GWATracker(model, head=...) the classifier "
                f"layer. {self.candidates(logits.shape[1])}"
            )
        self.head_verified = True

    def candidates(self, num_classes: int) -> str:
        """The model's nn.Linear layers with ``num_classes`` outputs, for an error message ("" without a model)."""
        model = None if self._model_ref is None else self._model_ref()
        return linear_candidates(model, num_classes) if model is not None else ""
