"""Training-loop pieces shared by every model: early stopping.

A bottom layer: it imports nothing from steercf, so the sparse core (:mod:`steercf.sae`)
and the recommenders (:mod:`steercf.models`) can both use it. Agreeing on the score
between processes (:meth:`steercf.distributed.Collective.agree`) stays with the caller:
this module only decides, from the scores it is given, when to stop and what to keep.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

State = TypeVar("State")


class EarlyStopping(Generic[State]):
    """Track the best epoch of a validation score and when patience has run out.

    Call :meth:`update` once per epoch, with consecutive epoch numbers; stop when
    :attr:`should_stop` is true and keep :attr:`best_state`.

    Args:
        patience: stop once this many epochs have passed since the last improvement
            (``>= 1``).
        min_delta: an improvement must beat the best score by more than this (absolute).
        mode: ``"max"`` (higher scores are better) or ``"min"`` (lower are better).
        counts_from: the epoch that patience counts from until the first improvement:
            ``-1`` makes epoch 0 the first stale epoch (patience counts the epochs
            without an improvement), ``0`` lets epoch 0 pass uncounted (patience counts
            the epochs after the best one, epoch 0 standing in before any improvement).
            The two rules differ only while nothing has improved yet.
        state: the best state before any improvement (e.g. the starting parameters);
            None if there is nothing to keep yet.
    """

    def __init__(
        self,
        patience: int,
        min_delta: float = 0.0,
        mode: Literal["max", "min"] = "max",
        counts_from: int = 0,
        state: State | None = None,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.best_score = -math.inf if mode == "max" else math.inf
        self.best_epoch = 0  # reported while nothing has improved
        self.best_state = state
        self.stale = 0  # epochs since the last improvement (or since counts_from)
        self._since = counts_from

    def is_improvement(self, score: float) -> bool:
        """Whether ``score`` beats the best one by more than ``min_delta``.

        Written as ``score > best + min_delta`` / ``score < best - min_delta`` so a NaN
        score never improves (every comparison with NaN is false)."""
        if self.mode == "max":
            return score > self.best_score + self.min_delta
        return score < self.best_score - self.min_delta

    def set_best(self, score: float, epoch: int, state: State | None = None) -> None:
        """Take ``score`` at ``epoch`` as the best so far, unconditionally: a starting
        point (e.g. a warm start, as epoch -1) that training must beat to replace.
        ``state`` replaces the kept state unless None."""
        self.best_score, self.best_epoch, self._since, self.stale = score, epoch, epoch, 0
        if state is not None:
            self.best_state = state

    def update(self, score: float, epoch: int, state_fn: Callable[[], State] | None = None) -> bool:
        """Record epoch ``epoch``'s ``score``; returns whether it improved.

        On an improvement, ``state_fn()`` (e.g. a copy of the parameters) becomes
        :attr:`best_state`; it is only called then, so copying costs nothing on the
        other epochs."""
        if self.is_improvement(score):
            self.best_score, self.best_epoch, self._since, self.stale = score, epoch, epoch, 0
            if state_fn is not None:
                self.best_state = state_fn()
            return True
        self.stale = epoch - self._since
        return False

    @property
    def stop_epoch(self) -> int:
        """The epoch after which training stops unless that or an earlier epoch improves."""
        return self._since + self.patience

    def bound_progress(self, bar: Any, max_epochs: int) -> None:
        """Set a tqdm ``bar``'s total to the epochs training runs unless it improves again
        (at most ``max_epochs``), so its estimate counts to the likely stop, not to
        ``max_epochs``; an improvement moves the end out by the epochs it gained."""
        total = min(max_epochs, self.stop_epoch + 1)
        if bar.total != total:
            bar.total = total
            bar.refresh()

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` epochs have passed without an improvement."""
        return self.stale >= self.patience
