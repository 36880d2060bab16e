"""The default runtime: every member runs in turn inside this process.

Members exist only while they handle a message: the runtime holds their data as index views
and their state only when a handler left some, never a model per member, so memory stays flat
in the number of idle members. Dropouts are simulated from the run seed, so a run with failures
is as reproducible as one without.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from consortium.core.client import ClientApp, ClientContext
from consortium.core.grid import Grid
from consortium.core.message import Message
from consortium.core.sampling import rng_for

log = logging.getLogger("consortium.runtime.local")


class LocalRuntime(Grid):
    """In-process grid.

    Parameters
    ----------
    app
        The member-side handlers.
    client_data
        ``client_data(cid)`` returns member ``cid``'s data (cheap: views, not copies).
    num_clients, seed, min_replies, max_reply_bytes
        See :class:`~consortium.core.grid.Grid`.
    failure_rate
        Probability that a member drops out of a given message exchange (simulated, seeded).
    """

    def __init__(
        self,
        app: ClientApp,
        client_data: Callable[[int], Any],
        num_clients: int,
        *,
        seed: int = 0,
        failure_rate: float = 0.0,
        min_replies: int = 1,
        max_reply_bytes: int | None = None,
    ) -> None:
        super().__init__(num_clients, seed, min_replies, max_reply_bytes)
        if not 0.0 <= failure_rate < 1.0:
            raise ValueError(f"failure_rate must be in [0, 1), got {failure_rate}")
        self.app = app
        self.client_data = client_data
        self.failure_rate = failure_rate
        self._states: dict[int, dict[str, Any]] = {}
        self._exchanges = 0

    def _exchange(self, messages: Mapping[int, Message]) -> tuple[dict[int, Any], dict[int, str]]:
        self._exchanges += 1
        replies: dict[int, Any] = {}
        failures: dict[int, str] = {}
        for cid in sorted(messages):
            if self.failure_rate > 0:
                draw = rng_for(self.seed, "dropout", self.round, self._exchanges, cid).random()
                if draw < self.failure_rate:
                    failures[cid] = "simulated dropout"
                    continue
            state = self._states.get(cid, {})
            ctx = ClientContext(
                client_id=cid,
                data=self.client_data(cid),
                state=state,
                round=self.round,
                seed=self.client_seed(cid),
            )
            try:
                replies[cid] = self.app.handle(messages[cid], ctx)
            except Exception as err:  # a crashing member must not end the run
                log.debug("member %d raised", cid, exc_info=True)
                failures[cid] = f"{type(err).__name__}: {err}"
                continue
            if ctx.state:
                self._states[cid] = ctx.state
            else:
                self._states.pop(cid, None)
        return replies, failures

    def start_round(self, rnd: int) -> None:
        super().start_round(rnd)
        self._exchanges = 0

    def client_state(self, cid: int) -> dict[str, Any]:
        """The state member ``cid`` keeps (read-only view for inspection and tests)."""
        return self._states.get(cid, {})

    def state_dict(self) -> dict[str, Any]:
        return {"client_states": self._states}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._states = dict(state.get("client_states", {}))
