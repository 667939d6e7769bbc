"""Flax capture: read the head's input from ``sow`` and the head's kernel from the parameters.

The one line to add to a model is a ``sow`` of the head's input, just before the head::

    # linen                                                  # NNX
    self.sow("intermediates", "gwa_embeddings", x)           self.sow(nnx.Intermediate, "gwa_embeddings", x)
    return self.head(x)                                      return self.head(x)

and the forward pass of the train step returns the sown values::

    # linen
    logits, state = model.apply({"params": params}, x, mutable=["intermediates"])
    scores = gwa.jax.alignment_from_flax(logits, y, state, params)

    # NNX (flax >= 0.12; older NNX: call the model, then ``nnx.pop(model, nnx.Intermediate)``)
    logits, intermediates = nnx.capture(model, nnx.Intermediate)(x)
    scores = gwa.jax.alignment_from_flax(logits, y, intermediates, model)

Everything here is a lookup in a pytree at trace time, so it runs inside ``jax.jit``/``nnx.jit``. The head
must be a ``Dense``/``nnx.Linear`` layer (kernel ``(D, C)``, optional bias ``(C,)``); its weight is read
from the same parameters the forward pass used, i.e. before the optimizer step, as the paper's JAX code does.
"""

from __future__ import annotations

from typing import Any

import jax
from gwa.jax._kernel import alignment_with_mask

#: The name under which the head's input is sown.
SOWN_NAME = "gwa_embeddings"
_SOW_HINT = (
    'add `self.sow("intermediates", "gwa_embeddings", x)` (linen) or '
    '`self.sow(nnx.Intermediate, "gwa_embeddings", x)` (NNX) just before the head, and return the sown '
    'values: `mutable=["intermediates"]` on linen apply, `nnx.capture(model, nnx.Intermediate)` in NNX'
)


def sown_embeddings(intermediates, *, name: str = SOWN_NAME):
    """The ``(N, D)`` head input sown under ``name`` anywhere in ``intermediates``.

    Args:
        intermediates: what the forward pass returned besides the logits: linen's mutable state
            (``{"intermediates": ...}`` or its subtree), or NNX's captured/popped ``State``.
        name: the name given to ``sow``.

    Raises:
        ValueError: when nothing, or more than one value, was sown under ``name``.
    """
    groups: dict[tuple[str, ...], list] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        keys = _path_keys(path)
        if name in keys:
            groups.setdefault(tuple(keys[: keys.index(name) + 1]), []).append(leaf)
    if not groups:
        raise ValueError(
            f"Expected embeddings sown under {name!r} in `intermediates`; found none. To capture them, "
            f"{_SOW_HINT}."
        )
    if len(groups) > 1:
        places = ", ".join("/".join(k) for k in groups)
        raise ValueError(
            f"Expected one value sown under {name!r} in `intermediates`; found it at several places: "
            f"{places}. Pass the subtree of the head's module, or sow under distinct names."
        )
    ((where, leaves),) = groups.items()
    if len(leaves) != 1:
        raise ValueError(
            f"Expected one value sown under {name!r} at {'/'.join(where)}; got {len(leaves)} "
            f"(the module ran {len(leaves)} times in this forward pass, or the sown value is not an "
            f"array). Sow once per forward pass."
        )
    return leaves[0]


def head_weight(params, head="head"):
    """The ``(C, D)`` weight of a Dense head (Flax stores the kernel as ``(D, C)``; this transposes it).

    Args:
        params: linen parameters (``variables`` or ``variables["params"]``), an NNX ``State`` of
            parameters, or an NNX module.
        head: the head layer's name, or a path to it: ``"head"``, ``"classifier/out"``, ``("layers", 3)``.

    Raises:
        ValueError: when no layer at ``head`` has a 2-D ``kernel`` (the message lists those that do).
    """
    kernel = _head_leaf(params, head, "kernel")
    if kernel.ndim != 2:
        raise ValueError(
            f"Expected the head {_head_str(head)!r} to be a Dense layer with a 2-D kernel (D, C); got "
            f"kernel.shape={tuple(kernel.shape)}."
        )
    return kernel.T


def head_bias(params, head="head"):
    """The ``(C,)`` bias of a Dense head; same arguments as :func:`head_weight`."""
    return _head_leaf(params, head, "bias")


def alignment_from_flax(
    logits,
    targets,
    intermediates,
    params,
    *,
    head="head",
    name: str = SOWN_NAME,
    include_bias: bool = False,
    with_mask: bool = False,
):
    """Per-sample alignment from a Flax forward pass: sown head input + head kernel from ``params``.

    Args:
        logits: ``(N, C)`` outputs of the forward pass.
        targets: ``(N,)`` class ids or ``(N, C)`` probabilities.
        intermediates: the sown values of that forward pass (see :func:`sown_embeddings`).
        params: the parameters of that forward pass (see :func:`head_weight`).
        head: name or path of the Dense head.
        name: the name given to ``sow``.
        include_bias: let the head's bias join the cosine (the paper leaves it out).
        with_mask: also return the ``(N,)`` mask of defined cosines.

    Returns:
        ``(N,)`` scores, or ``(scores, defined)`` with ``with_mask=True``.
    """
    embeddings = sown_embeddings(intermediates, name=name)
    bias = head_bias(params, head) if include_bias else None
    weight = head_weight(params, head)
    scores, defined = alignment_with_mask(logits, targets, embeddings, weight, bias, weight_layout="CD")
    return (scores, defined) if with_mask else scores


def _head_leaf(params, head, leaf_name: str):
    params = _as_param_tree(params)
    head_keys = _head_keys(head)
    found: list = []
    layers: dict[tuple[str, ...], Any] = {}  # every layer with a leaf_name, for the error message
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = _path_keys(path)
        if keys and keys[0] == "params":
            keys = keys[1:]
        if leaf_name in keys:
            layer = tuple(keys[: keys.index(leaf_name)])
            layers.setdefault(layer, leaf)
            if layer == head_keys:
                found.append(leaf)
    if len(found) == 1:
        return found[0]
    available = sorted("/".join(k) for k in layers) or ["none"]
    raise ValueError(
        f"Expected a head layer {_head_str(head)!r} with a {leaf_name!r} in `params`; layers with a "
        f"{leaf_name!r}: {', '.join(available)}. Pass head=<one of them>."
    )


def _as_param_tree(params):
    """NNX modules become their ``Param`` state; anything else is walked as a pytree."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is optional for gwa.jax's kernel
        return params
    if isinstance(params, nnx.Module):
        return nnx.state(params, nnx.Param)
    return params


def _path_keys(path) -> list[str]:
    """Key names of a pytree path; NNX variables' ``.value`` attribute and similar internals are dropped."""
    keys = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            keys.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.SequenceKey):
            keys.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            keys.append(entry.name)
        else:
            keys.append(str(getattr(entry, "key", entry)))
    return keys


def _head_keys(head) -> tuple:
    if isinstance(head, str):
        return tuple(k for k in head.split("/") if k)
    if isinstance(head, (tuple, list)) and head:
        return tuple(str(k) for k in head)
    raise TypeError(f"Expected `head` to be a layer name, a 'a/b' path or a tuple of keys; got {head!r}.")


def _head_str(head) -> str:
    return "/".join(_head_keys(head))
