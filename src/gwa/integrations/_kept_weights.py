"""The weights :class:`gwa.integrations.EpochMonitor` keeps for ``restore_best_weights``: CPU copies of the best
epoch's weights and, with a veto (which may keep any of gwa's candidates' epochs), of each candidate's epoch."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable


class KeptWeights:
    """CPU copies of the weights of the epochs a decision may still keep.

    Attributes:
        best_state: the weights of the best epoch as last seen (None until one is kept).
        best_state_epoch: the epoch of ``best_state``.
        kept_states: with a veto, the weights of each candidate's epoch, by epoch.
    """

    def __init__(self, *, veto: bool = False):
        self.veto = bool(veto)
        self.best_state: dict | None = None
        self.best_state_epoch: int | None = None
        self.kept_states: dict[int, dict] = {}

    def keep(
        self, epoch: int, model_state: Callable[[], dict], *, best_epoch: int | None, candidates: Iterable
    ) -> None:
        """After ``epoch`` was decided: copy the weights (``model_state()``) when ``epoch`` is the ``best_epoch``
        or, with a veto, one of the ``candidates``' epochs; drop the copies no longer wanted."""
        wanted = {best_epoch, *candidates} - {None}
        if epoch in wanted:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model_state().items()}
            if self.veto:
                self.kept_states[epoch] = state
            if best_epoch == epoch:
                self.best_state, self.best_state_epoch = state, epoch
        self.kept_states = {e: s for e, s in self.kept_states.items() if e in wanted}
        if self.veto and best_epoch in self.kept_states and self.best_state_epoch != best_epoch:
            self.best_state, self.best_state_epoch = self.kept_states[best_epoch], best_epoch

    def load_best(self, load_state: Callable[[dict], object], best_epoch: int | None) -> None:
        """Load the best weights kept (none kept: nothing), warning when they are not those of ``best_epoch``."""
        if self.best_state is None:
            return
        if self.best_state_epoch != best_epoch:
            warnings.warn(
                f"gwa: the best epoch is {best_epoch}, but the weights kept are those of epoch "
                f"{self.best_state_epoch} (the criterion moved back to an epoch not kept, e.g. with "
                "finetune=True); loading them.",
                RuntimeWarning,
                stacklevel=3,  # at the caller of EpochMonitor.finish
            )
        load_state(self.best_state)

    def state_dict(self) -> dict:
        """The monitor's checkpoint entries (``best_state``, ``best_state_epoch``, ``kept_states``)."""
        return {
            "best_state": self.best_state,
            "best_state_epoch": self.best_state_epoch,
            "kept_states": self.kept_states,
        }

    def load_state_dict(self, state: dict) -> None:
        """Read the entries of :meth:`state_dict` (absent ones: nothing kept)."""
        self.best_state, self.best_state_epoch = state.get("best_state"), state.get("best_state_epoch")
        self.kept_states = dict(state.get("kept_states") or {})
