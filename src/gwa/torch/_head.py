"""Find the classifier head (the last ``nn.Linear`` producing the logits) of a torch model."""

from __future__ import annotations

from typing import TypeVar

from torch import nn

_M = TypeVar("_M", bound=nn.Module)

_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)
# Attribute paths of Hugging Face sequence-classification heads, in the order they are tried.
_HF_HEAD_PATHS = ("score", "classifier", "classifier.out_proj")


def find_head(model: nn.Module, head: nn.Module | str | None = None) -> tuple[str, nn.Linear]:
    """Return ``(name, module)`` of the classifier head of ``model``.

    Data-parallel wrappers (``DataParallel``, ``DistributedDataParallel``) are looked through; names are
    relative to the wrapped module. Order: ``head`` when given (a module of the model or its dotted name); timm's
    ``model.get_classifier()`` when it is an ``nn.Linear``; the Hugging Face heads ``score``,
    ``classifier`` and ``classifier.out_proj``; else the last ``nn.Linear`` registered in the model (so an
    auxiliary ``nn.Linear`` registered after the classifier would be chosen: pass ``head=`` then; the tracker
    checks at its first update that the chosen head produced the logits and raises otherwise).

    LoRA/PEFT-wrapped linear layers (a module with ``base_layer``, ``lora_A`` and ``lora_B``: its effective
    weight ``W + s B A`` is not one ``nn.Linear``) are refused, whether found or given; peft's
    ``modules_to_save`` copy of a fully trained head is a plain ``nn.Linear`` and is accepted.

    Args:
        model: the network.
        head: optional override, an ``nn.Linear`` or the dotted name of one inside ``model``.

    Returns:
        The head's dotted name in ``model`` (``""`` for the model itself, ``"<given>"`` for a module
        outside it) and the ``nn.Linear``.

    Raises:
        TypeError: when ``model`` is not an ``nn.Module``.
        ValueError: when no head is found (the message lists the model's ``nn.Linear`` layers and shapes).
        TypeError: when ``head`` is not an ``nn.Linear`` (the message lists the candidates too).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be a torch.nn.Module; got {type(model).__name__}.")
    # Look inside data-parallel wrappers, whose own attributes hide timm's and Hugging Face's.
    while isinstance(model, _WRAPPERS):
        model = model.module
    names = {id(m): name for name, m in model.named_modules()}
    if head is not None:
        if isinstance(head, str):
            try:
                module = model.get_submodule(head)
            except AttributeError:
                raise ValueError(
                    f"Expected `head` to name a submodule of the model; got {head!r}. {_candidates(model)}"
                ) from None
            return _checked(*_not_lora(head, module, model), model, "`head`")
        if not isinstance(head, nn.Module):
            raise TypeError(
                f"Expected `head` to be an nn.Linear or its name in the model; got {type(head).__name__}."
            )
        return _checked(*_not_lora(names.get(id(head), "<given>"), head, model), model, "`head`")

    get_classifier = getattr(model, "get_classifier", None)  # timm
    if callable(get_classifier):
        try:
            found = get_classifier()
        except Exception:
            found = None
        if isinstance(found, nn.Linear):
            return _not_lora(names.get(id(found), "<given>"), found, model)
        if _is_lora(found):
            _not_lora(names.get(id(found), "<given>"), found, model)
    for path in _HF_HEAD_PATHS:
        try:
            found = model.get_submodule(path)
        except AttributeError:
            continue
        if _is_lora(found):
            _not_lora(path, found, model)  # raises
        if isinstance(found, nn.Linear):
            return _not_lora(path, found, model)
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"Could not find a classifier head: the model has no nn.Linear layer. "
            f"Pass `head=` the layer that produces the logits. {_candidates(model)}"
        )
    return _not_lora(*linears[-1], model)


def _is_lora(module: nn.Module | None) -> bool:
    return module is not None and all(hasattr(module, a) for a in ("base_layer", "lora_A", "lora_B"))


def _not_lora(name: str, module: _M, model: nn.Module) -> tuple[str, _M]:
    """Refuse a LoRA-wrapped head, or a layer inside one (its base layer, ``lora_B``), with the reason."""
    parts = name.split(".") if name not in ("", "<given>") else []
    owners = [(name, module)] + [
        (".".join(parts[:k]), model.get_submodule(".".join(parts[:k]))) for k in range(len(parts) - 1, -1, -1)
    ]
    for prefix, owner in owners:
        if _is_lora(owner):
            raise ValueError(
                f"The classifier head {prefix or '<model>'!r} is LoRA-wrapped (PEFT): its effective weight is "
                f"W + scale * B A, which is not the weight of one nn.Linear (gwa would hook {name!r}). gwa scores "
                "a plain nn.Linear head: train the head fully (peft: modules_to_save=[<head name>]) or merge the "
                "adapter (merge_and_unload()) before tracking."
            )
    return name, module


def linear_candidates(model: nn.Module, num_classes: int) -> str:
    """The model's ``nn.Linear`` layers with ``num_classes`` outputs, for error messages."""
    while isinstance(model, _WRAPPERS):
        model = model.module
    rows = [
        f"{name!r} {tuple(m.weight.shape)}"
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    return (
        f"nn.Linear layers with {num_classes} outputs in the model: "
        + (", ".join(rows) if rows else "none")
        + "."
    )


def _checked(name: str, module: nn.Module, model: nn.Module, what: str) -> tuple[str, nn.Linear]:
    if not isinstance(module, nn.Linear):
        raise TypeError(
            f"Expected {what} to be an nn.Linear (the layer producing the logits); got "
            f"{type(module).__name__} at {name!r}. {_candidates(model)}"
        )
    return name, module


def _candidates(model: nn.Module) -> str:
    rows = [
        f"{name or '<model>'} {tuple(m.weight.shape)}"
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
    ]
    return "nn.Linear layers in the model (name (C, D)): " + (", ".join(rows) if rows else "none") + "."


#: How many autograd nodes :func:`is_stale_pairing` walks back from the logits looking for the head's output.
_PAIRING_WALK_NODES = 16


def is_stale_pairing(logits, output) -> bool:
    """True when ``logits`` cannot come from the head's ``output`` of the pending forward pass.

    Used when the logits given to ``update()`` are not the head's output tensor itself. Cheap answers first, no
    host read: the output is gone (nothing to compare: not stale), the logits share its memory (``.detach()``, a
    view) or derive from it within a few autograd nodes (``logits / T``, ``.float()``, a DDP output). Only then
    are the values compared (one host read): the same up to a positive scale is the same forward pass.
    """
    import torch

    if output is None or not isinstance(logits, torch.Tensor):
        return False
    if logits.data_ptr() == output.data_ptr() and logits.shape == output.shape:
        return False
    target = output.grad_fn
    if target is not None and logits.grad_fn is not None:
        frontier, seen = [logits.grad_fn], 0
        while frontier and seen < _PAIRING_WALK_NODES:
            node = frontier.pop(0)
            seen += 1
            if node is target:
                return False
            frontier.extend(n for n, _ in node.next_functions if n is not None)
        if not frontier:  # the whole history was walked and the output is not in it
            return True
    if logits.shape != output.shape:
        return True
    with torch.no_grad():
        o, z = output.detach().double().flatten(), logits.detach().double().flatten()
        scale = float(o @ z) / max(float(o @ o), 1e-300)
        off = float(torch.linalg.vector_norm(z - scale * o))
        return not (scale > 0 and off <= 1e-3 * max(float(torch.linalg.vector_norm(z)), 1e-300))
