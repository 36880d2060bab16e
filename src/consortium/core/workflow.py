"""The server side: a program of phases and rounds that sends typed messages.

A workflow says *what* happens (who gets which message, what to do with the replies); the run
loop (``consortium.core.run``) says *when* (round by round, with logging, checkpoints and
resume) and a runtime says *where* (in this process, or on Flower). Override the hooks, never the
loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from consortium.core.grid import Grid
from consortium.core.message import Arrays


class Workflow(ABC):
    """A server program run one round at a time.

    Contract
    --------
    * :meth:`setup` runs once before round 1 (a phase such as "ask member k for scores").
    * :meth:`run_round` runs rounds ``1..num_rounds`` and returns that round's metrics. It must
      change its own state only after ``grid.send`` returned: a round whose send raises is
      skipped, and the workflow must be as it was before it.
    * :attr:`should_stop` ends the rounds early once the workflow's stopping rule is met.
    * :meth:`finish` runs once after the last round (final evaluation, reward allocation) and
      returns the run's summary.
    * Too few replies in :meth:`setup` or :meth:`finish` make the run loop try the phase
      again (:func:`~consortium.core.run.run_workflow`): a set-up must start from what the
      constructor left (or change state only after its sends returned); before another try
      of the final phase the loop restores the state of :meth:`state_dict`.
    * :meth:`state_dict` / :meth:`load_state_dict` capture everything needed to resume after
      any round; all randomness comes from the grid's seeded helpers, never from state carried
      in a generator.
    """

    name: str = "workflow"
    num_rounds: int = 1

    def setup(self, grid: Grid) -> dict[str, Any]:
        """Phase before the first round; returns metrics logged as round 0 (may be empty)."""
        return {}

    @abstractmethod
    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        """One round; returns JSON-ready metrics for the per-round log."""

    @property
    def should_stop(self) -> bool:
        """Whether a stopping rule of the workflow has been met (a certified optimum, data
        found forgotten): the run loop then runs no more rounds and goes on to :meth:`finish`,
        and the summary's ``rounds`` counts the rounds that ran. Part of the state: it must
        follow from what :meth:`load_state_dict` restores."""
        return False

    def finish(self, grid: Grid) -> dict[str, Any]:
        """Phase after the last round; returns the run summary."""
        return {}

    def final_arrays(self) -> Arrays | None:
        """The model the run produced (saved with the run so other methods can reuse it)."""
        return None

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after the current round."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
