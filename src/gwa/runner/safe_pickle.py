"""Reading pickle-based files from the internet without running code from them.

Two formats gwa reads are pickles: CIFAR-10's python batches and CIFAR-10-N's ``CIFAR-10_human.pt``. A pickle
may name any importable callable (``os.system``) and have the loader call it. Both readers here admit only the
numpy array reconstruction and plain numeric dtypes; anything else is refused before it is called.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

#: Numeric dtypes an admitted array may have; object arrays (which would hold arbitrary pickles) are refused.
_NUMERIC_DTYPES = (
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
)


def _numpy_globals() -> dict[str, object]:
    """``module.name`` -> object for the array-rebuilding globals numpy 1.x and 2.x pickles name."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]  # numpy 1.x's path to the same modules

    allowed: dict[str, object] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for module in ("numpy.core", "numpy._core"):  # numpy 1.x wrote numpy.core, 2.x writes numpy._core
        allowed[f"{module}.multiarray._reconstruct"] = multiarray._reconstruct
        allowed[f"{module}.multiarray.scalar"] = multiarray.scalar  # numpy scalars (np.int64(3)) in lists
        allowed[f"{module}.numeric._frombuffer"] = numeric._frombuffer  # type: ignore[attr-defined]  # private: not in numpy's stubs
    for t in _NUMERIC_DTYPES:  # numpy 2 restores a dtype as an instance of its class (np.dtypes.Int64DType)
        cls = type(np.dtype(t))
        allowed[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Admits dicts, lists, tuples, strings, bytes, numbers and numeric numpy arrays; nothing callable else."""

    _allowed: dict[str, object] | None = None

    def find_class(self, module: str, name: str):
        allowed = _ArrayUnpickler._allowed = _ArrayUnpickler._allowed or {
            **_numpy_globals(),
            "_codecs.encode": __import__("codecs").encode,
        }  # bytes in protocol-2 pickles
        key = f"{module}.{name}"
        if key not in allowed:
            raise pickle.UnpicklingError(f"it names {key}, which is not a numpy array or plain data")
        return allowed[key]


def load_array_pickle(path, *, encoding: str = "latin1"):
    """Unpickle ``path``, admitting only plain containers and numeric numpy arrays.

    Raises:
        ValueError: naming the file when it holds anything else (the payload is refused, never called).
    """
    from gwa.rundir import MAX_NPY_BYTES, open_regular

    path = Path(path)
    try:
        # A FIFO or a device is refused, not read forever; a dataset folder may link its files.
        with open_regular(path, cap=MAX_NPY_BYTES, follow_links=True) as fh:
            obj = _ArrayUnpickler(fh, encoding=encoding).load()
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        TypeError,
        ValueError,
    ) as exc:
        raise ValueError(
            f"Refusing to read {path}: expected a pickle of plain data and numeric numpy arrays; {exc}."
        ) from None
    _reject_object_arrays(obj, path)
    return obj


def torch_load_arrays(path):
    """``torch.load(path, weights_only=True)`` that also admits numeric numpy arrays (CIFAR-10-N's labels).

    Raises:
        ValueError: naming the file when it holds anything else.
    """
    import torch

    path = Path(path)
    safe = [(obj, name) for name, obj in _numpy_globals().items()]
    try:
        with torch.serialization.safe_globals(safe):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"Refusing to read {path}: expected tensors, numeric numpy arrays and plain containers "
            f"(torch.load with weights_only=True); {first[:300]}"
        ) from None
    _reject_object_arrays(obj, path)
    return obj


#: Containers and arrays a label or batch file may hold; more is refused (a crafted DAG has 2**60 paths).
MAX_NODES = 1_000_000


def _reject_object_arrays(obj, path: Path) -> None:
    """Refuse object arrays anywhere in ``obj``, and any container that holds itself (a pickle may build
    ``L = [L]``) or more than :data:`MAX_NODES` items. Iterative, each container visited once: no recursion,
    no loop, no exponential walk of a DAG."""
    on_path: set[int] = set()  # containers being walked: meeting one again is a cycle
    done: set[int] = set()  # containers fully walked (a shared one is walked once)
    stack: list[tuple[object, bool]] = [(obj, False)]
    nodes = 0
    while stack:
        item, leaving = stack.pop()
        if leaving:
            on_path.discard(id(item))
            done.add(id(item))
            continue
        nodes += 1
        if nodes > MAX_NODES:
            raise ValueError(
                f"Refusing to read {path}: expected plain data; it holds more than {MAX_NODES} items."
            )
        if isinstance(item, np.ndarray) and item.dtype.kind not in "biuf":
            raise ValueError(f"Refusing to read {path}: expected numeric arrays; got dtype {item.dtype}.")
        if not isinstance(item, (dict, list, tuple)):
            continue
        if id(item) in on_path:
            raise ValueError(
                f"Refusing to read {path}: expected plain data; it holds a {type(item).__name__} that "
                f"contains itself."
            )
        if id(item) in done:
            continue
        on_path.add(id(item))
        stack.append((item, True))
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, False) for child in children)
