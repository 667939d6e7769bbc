"""``WithIndex``: a dataset wrapper that appends each item's index, the sample id gwa stores scores by."""

from __future__ import annotations


class WithIndex:
    """Wrap a map-style dataset so that item ``i`` is ``(*dataset[i], i)`` (or ``(dataset[i], i)``).

    gwa stores per-sample scores by sample id, the index of a sample in the training set; a dataset of ``(x, y)``
    pairs becomes one of ``(x, y, index)`` triples, which the Lightning callback and :class:`RunRecorder` read::

        loader = DataLoader(WithIndex(train_set), batch_size=64, shuffle=True)   # batches (x, y, ids)

    A dict item gets the index under ``key`` instead (``"sample_id"``, what the Hugging Face callback reads).
    Attributes of the wrapped dataset (``targets``, ``classes``, ...) stay reachable through the wrapper.
    """

    def __init__(self, dataset, *, key: str = "sample_id"):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(
                f"Expected a map-style dataset (with __getitem__ and __len__); got "
                f"{type(dataset).__name__}. An IterableDataset has no stable index: yield the ids "
                "from it yourself."
            )
        if not isinstance(key, str):
            raise TypeError(f"Expected `key` to be a str; got {type(key).__name__}.")
        self.dataset, self.key = dataset, key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self._with_index(self.dataset[index], index)

    def __getitems__(self, indices: list) -> list:
        """A batch of items, each with its index: what ``DataLoader`` calls when the dataset has ``__getitems__``
        (``Subset``, ``random_split``, Hugging Face ``datasets``), which would otherwise bypass ``__getitem__``."""
        fetch = getattr(self.dataset, "__getitems__", None)
        items = fetch(indices) if fetch is not None else [self.dataset[i] for i in indices]
        if len(items) != len(indices):
            raise ValueError(
                f"Expected {type(self.dataset).__name__}.__getitems__ to return one item per index "
                f"({len(indices)}); got {len(items)}."
            )
        return [self._with_index(item, i) for item, i in zip(items, indices)]

    def _with_index(self, item, index):
        if isinstance(item, dict):
            return {**item, self.key: index}
        if isinstance(item, tuple):
            return (*item, index)
        if isinstance(item, list):
            return [*item, index]
        return item, index

    def __getattr__(self, name):
        # Not while unpickling (no recursion), and no special method: forwarding one (``__getitems__`` was the
        # case) would hand the wrapped dataset's items out without their index.
        if name in ("dataset", "key") or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(self.dataset, name)
