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
        item = self.dataset[index]
        if isinstance(item, dict):
            return {**item, self.key: index}
        if isinstance(item, tuple):
            return (*item, index)
        if isinstance(item, list):
            return [*item, index]
        return item, index

    def __getattr__(self, name):
        if name in ("dataset", "key"):  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
