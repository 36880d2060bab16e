"""The default runtime: every member runs in turn inside this process.

Members exist only while they handle a message: the runtime holds their data as index views
and their state only when a handler left some, never a model per member, so memory stays flat
in the number of idle members. Dropouts are simulated from the run seed, so a run with failures
is as reproducible as one without.

Member code runs in the server's process, so the runtime keeps it from reaching the server:
each member gets its own copy of its request (writing into it changes nothing the server or
another member holds; the copy costs a memcpy of the payload, little next to training);
anything a handler raises, even ``SystemExit`` or ``KeyboardInterrupt``, fails that member
only (a Ctrl-C from the user still stops the run); and ``member_timeout`` bounds a member's
time (in the main thread, by a timer signal that interrupts the handler; elsewhere a late
reply is discarded).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from consortium.core.client import ClientApp, ClientContext
from consortium.core.grid import Grid, held_examples
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
    member_timeout
        Seconds one member may take to answer one message (``None``: no limit); a member
        over it is a failure of that round.
    data_size
        ``data_size(cid)``: how many samples member ``cid`` holds, the cap of the sample
        counts its replies report (default: the length of its data's ``train_indices`` plus
        ``test_indices`` when it has them).
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
        member_timeout: float | None = None,
        data_size: Callable[[int], int | None] | None = None,
    ) -> None:
        super().__init__(num_clients, seed, min_replies, max_reply_bytes)
        if not 0.0 <= failure_rate < 1.0:
            raise ValueError(f"failure_rate must be in [0, 1), got {failure_rate}")
        if member_timeout is not None and not member_timeout > 0:
            raise ValueError(f"member_timeout must be > 0 or None, got {member_timeout}")
        self.app = app
        self.client_data = client_data
        self.failure_rate = failure_rate
        self.member_timeout = member_timeout
        self.data_size = data_size
        self._states: dict[int, dict[str, Any]] = {}
        self._exchanges = 0

    def _exchange(self, messages: Mapping[int, Message]) -> tuple[dict[int, Any], dict[int, str]]:
        self._exchanges += 1
        replies: dict[int, Any] = {}
        failures: dict[int, str] = {}
        for cid in sorted(messages):
            self._report_progress(len(replies) + len(failures), len(messages))
            if self.failure_rate > 0:
                # A retried phase draws afresh (attempt 0 keeps the draws of earlier versions).
                again = ("attempt", self.attempt) if self.attempt else ()
                rng = rng_for(self.seed, "dropout", self.round, self._exchanges, cid, *again)
                draw = rng.random()
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
            start = time.monotonic()
            guard = _Guard(self.member_timeout)
            try:
                with guard:
                    replies[cid] = self.app.handle(_own_copy(messages[cid]), ctx)
            except BaseException as err:  # a crashing member must not end the run ...
                guard.restore()  # (again: a timeout may have cut the with statement short)
                if guard.interrupted:  # ... but the user's Ctrl-C must
                    raise
                log.debug("member %d raised", cid, exc_info=True)
                replies.pop(cid, None)
                failures[cid] = _reason(err, self.member_timeout)
                continue
            took = time.monotonic() - start
            if self.member_timeout is not None and took > self.member_timeout:
                replies.pop(cid)  # no timer could interrupt it (not the main thread)
                failures[cid] = f"no reply within member_timeout={self.member_timeout:g} s"
                continue
            if ctx.state:
                self._states[cid] = ctx.state
            else:
                self._states.pop(cid, None)
        return replies, failures

    def declared_size(self, client_id: int) -> int | None:
        if self.data_size is not None:
            return self.data_size(client_id)
        return held_examples(self.client_data(client_id))

    def start_round(self, rnd: int, attempt: int = 0) -> None:
        super().start_round(rnd, attempt)
        self._exchanges = 0

    def client_state(self, cid: int) -> dict[str, Any]:
        """The state member ``cid`` keeps (read-only view for inspection and tests)."""
        return self._states.get(cid, {})

    def state_dict(self) -> dict[str, Any]:
        return {"client_states": self._states}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._states = dict(state.get("client_states", {}))


class _Guard:
    """Around one handler call: notes a real SIGINT and arms the member timer.

    Signal handlers can only be set in the main thread; elsewhere the guard does nothing
    (the caller then discards a reply that came too late). :meth:`restore` puts the
    handlers and any outer timer back; it is idempotent, and the runtime calls it again
    after a failed member, because a timer shorter than the set-up itself can fire inside
    ``__enter__`` or ``__exit__`` (``member_timeout = 1e-9``), where the ``with`` statement
    would not restore anything.
    """

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.interrupted = False
        self._active = threading.current_thread() is threading.main_thread()
        self._timer = self._active and timeout is not None and hasattr(signal, "setitimer")
        self._armed = False
        self._saved: dict[str, Any] = {}

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        sigint = self._saved.get("sigint")
        if callable(sigint):
            sigint(signum, frame)
        else:
            raise KeyboardInterrupt

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self._armed:  # a late signal, after the handler returned, interrupts nothing
            raise MemberTimeout

    def __enter__(self) -> _Guard:
        if not self._active:
            return self
        try:
            sigint = signal.getsignal(signal.SIGINT)
            self._saved["sigint"] = sigint
            if sigint is not signal.SIG_IGN:
                signal.signal(signal.SIGINT, self._on_sigint)
            if self._timer:
                assert self.timeout is not None
                self._saved["outer"] = signal.getitimer(signal.ITIMER_REAL)
                self._saved["alarm"] = signal.signal(signal.SIGALRM, self._on_alarm)
                self._start = time.monotonic()
                self._armed = True
                # Fires again every 0.5 s: a handler that swallows one timeout gets the next.
                signal.setitimer(signal.ITIMER_REAL, self.timeout, 0.5)
        except BaseException:
            self.restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Disarm, and put back what :meth:`__enter__` replaced (once)."""
        self._armed = False
        saved, self._saved = self._saved, {}
        if "outer" in saved:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if "alarm" in saved:
            signal.signal(signal.SIGALRM, saved["alarm"])
        if "outer" in saved:
            delay, interval = saved["outer"]
            if delay > 0:  # someone else's timer was running: let it go on
                left = max(delay - (time.monotonic() - self._start), 1e-3)
                signal.setitimer(signal.ITIMER_REAL, left, interval)
        if "sigint" in saved and saved["sigint"] is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, saved["sigint"])


class MemberTimeout(BaseException):
    """Raised inside a member's handler when ``member_timeout`` ran out.

    A ``BaseException``, so member code's ``except Exception`` does not swallow it.
    """


def _reason(err: BaseException, timeout: float | None) -> str:
    if isinstance(err, MemberTimeout):
        return f"no reply within member_timeout={timeout:g} s"
    return f"{type(err).__name__}: {err}"


def _own_copy(message: Message) -> Message:
    """The member's own copy of a request (new dicts, copied arrays): what it does to it
    cannot reach the server's arrays or another member's, as on a real network."""
    arrays = {name: np.array(array, copy=True) for name, array in message.arrays.items()}
    return Message(message.kind, arrays, dict(message.config), dict(message.metrics))
