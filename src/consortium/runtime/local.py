"""The default runtime: the sampled members of a round run here, in parallel worker processes
or one after another in this process.

Members exist only while they handle a message: the runtime holds their data as index views
and their state only when a handler left some, never a model per member, so memory stays flat
in the number of idle members. Dropouts are simulated from the run seed, so a run with failures
is as reproducible as one without.

``workers > 1`` serves members on a pool of processes forked once per run (see
:mod:`consortium.runtime.pool`): they share the read-only data pool, receive each request and
return each reply as bytes, and run with ``torch_threads`` threads. A fresh worker pays a
one-off warm-up (first touches of the pages it shares with this process, first use of torch's
kernels: about 0.07-0.1 CPU-s each on a small CNN), which a run of a few seconds' member work
never earns back; ``start_workers_after`` serves that much member CPU time here first, and
forks the workers only for a run that goes on. Which member runs where,
and in which order, changes nothing: each member's randomness comes from its own seed, its
state travels with its request, and replies are handled in member order, so the run is
bit-identical to ``workers = 1`` with the same ``torch_threads`` (torch's thread count, not the
worker count, decides how its sums are split).

With ``workers = 1`` member code runs in the server's process, so the runtime keeps it from
reaching the server: each member gets its own copy of its request (writing into it changes
nothing the server or another member holds; the copy costs a memcpy of the payload, little next
to training); anything a handler raises, even ``SystemExit`` or ``KeyboardInterrupt``, fails
that member only (a Ctrl-C from the user still stops the run); and ``member_timeout`` bounds a
member's time (in the main thread, by a timer signal that interrupts the handler; elsewhere a
late reply is discarded). Workers give the same guarantees, and survive member code that kills
its own process.

A member's state is what its handler left in ``ctx.state``, whether it answered or failed;
only a worker that died or had to be stopped loses the changes of that one message.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from consortium.core.client import ClientApp, ClientContext
from consortium.core.grid import Grid, held_examples
from consortium.core.message import Message
from consortium.core.sampling import rng_for
from consortium.runtime.pool import Outcome, Task, WorkerPool, compute_threads

log = logging.getLogger("consortium.runtime.local")


class LocalRuntime(Grid):
    """In-process grid, members served in parallel by ``workers`` processes.

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
    workers
        Processes serving members at once; ``1`` (the default here) serves them one after
        another in this process. Workers fork from this process when members first go to
        them (see ``start_workers_after``), so the data and the handlers must exist by then;
        use the runtime as a context manager (or call :meth:`close`) to stop them when the
        run ends.
    start_workers_after
        With ``workers > 1``: CPU seconds of member work served in this process (one member
        after another) before the workers start; ``0`` (the default here) starts them at the
        first exchange. The members past the threshold go to the workers, within the same
        exchange; which process served a member changes nothing in the run.
    torch_threads
        torch and BLAS threads a member computes with (in this process while it serves a
        member, and in each worker). More than one needs ``workers = 1``: GNU OpenMP cannot
        start threads in a process forked after it ran.
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
        workers: int = 1,
        torch_threads: int = 1,
        start_workers_after: float = 0.0,
    ) -> None:
        super().__init__(num_clients, seed, min_replies, max_reply_bytes)
        if not 0.0 <= failure_rate < 1.0:
            raise ValueError(f"failure_rate must be in [0, 1), got {failure_rate}")
        if member_timeout is not None and not member_timeout > 0:
            raise ValueError(f"member_timeout must be > 0 or None, got {member_timeout}")
        if workers < 1 or torch_threads < 1:
            raise ValueError(f"workers, torch_threads must be >= 1, got {workers}, {torch_threads}")
        if not start_workers_after >= 0:
            raise ValueError(f"start_workers_after must be >= 0, got {start_workers_after}")
        if workers > 1 and torch_threads > 1:
            raise ValueError(
                "torch_threads > 1 needs workers = 1: torch's OpenMP threads cannot start in "
                "a forked worker process"
            )
        self.app = app
        self.client_data = client_data
        self.failure_rate = failure_rate
        self.member_timeout = member_timeout
        self.data_size = data_size
        self.workers = workers
        self.torch_threads = torch_threads
        self.start_workers_after = start_workers_after
        self._inline_cpu = 0.0  # member CPU seconds served here while workers > 1
        self.workers_started_round: int | None = None
        self._states: dict[int, dict[str, Any]] = {}
        self._sizes: dict[int, int] = {}
        self._exchanges = 0
        self._pool: WorkerPool | None = None
        self._closer: weakref.finalize | None = None
        self._worker_cpu = 0.0

    # -- moving messages ----------------------------------------------------------------------

    def _exchange(self, messages: Mapping[int, Message]) -> tuple[dict[int, Any], dict[int, str]]:
        self._exchanges += 1
        failures: dict[int, str] = {}
        tasks: list[Task] = []
        for cid in sorted(messages):
            if self.failure_rate > 0:
                # A retried phase draws afresh (attempt 0 keeps the draws of earlier versions).
                again = ("attempt", self.attempt) if self.attempt else ()
                rng = rng_for(self.seed, "dropout", self.round, self._exchanges, cid, *again)
                draw = rng.random()
                if draw < self.failure_rate:
                    failures[cid] = "simulated dropout"
                    continue
            state = self._states.get(cid, {})
            tasks.append(Task(cid, self.round, self.client_seed(cid), state, messages[cid]))
        asked, dropped = len(messages), len(failures)

        def answered(done: int) -> None:
            self._report_progress(dropped + done, asked)

        outcomes: dict[int, Outcome] = {}
        inline = tasks if self.workers == 1 else self._served_here(tasks)
        with compute_threads(self.torch_threads):
            for t in inline:
                answered(len(outcomes))
                start = time.process_time()
                outcomes[t.cid] = self._serve(t, own_copy=True)
                if self.workers > 1:
                    self._inline_cpu += time.process_time() - start
                    if self._inline_cpu >= self.start_workers_after:
                        break  # the rest of this exchange goes to the workers
        # Largest members first: the pool hands out requests as workers free up, so an exchange
        # ends sooner when the long ones start early and the short ones fill in behind them.
        rest = sorted(
            (t for t in tasks if t.cid not in outcomes), key=lambda t: -self._size_hint(t.cid)
        )
        if rest:
            if self.workers_started_round is None:
                self.workers_started_round = self.round
            done = len(outcomes)
            pooled = self._worker_pool().run(rest, progress=lambda n: answered(done + n))
            outcomes.update(pooled)
        replies: dict[int, Any] = {}
        for cid in sorted(outcomes):
            ok, value, state = outcomes[cid]
            if state is not None:
                if state:
                    self._states[cid] = state
                else:
                    self._states.pop(cid, None)
            if ok:
                replies[cid] = value
            else:
                failures[cid] = value
        return replies, dict(sorted(failures.items()))

    def _size_hint(self, cid: int) -> int:
        """Samples member ``cid`` holds (0 when unknown): how long its request should take."""
        size = self._sizes.get(cid)
        if size is None:
            size = self._sizes[cid] = self.declared_size(cid) or 0
        return size

    def _served_here(self, tasks: list[Task]) -> list[Task]:
        """With workers: the tasks this process may still serve itself (all, in order, while
        the member CPU served here is under ``start_workers_after``; none once they run)."""
        started = self._pool is not None and self._pool.started
        if started or self._inline_cpu >= self.start_workers_after:
            return []
        return tasks

    def _serve(self, task: Task, own_copy: bool = False) -> Outcome:
        """Run one member's handler on one request (here, or inside a worker)."""
        message = _own_copy(task.message) if own_copy else task.message
        ctx = ClientContext(
            client_id=task.cid,
            data=self.client_data(task.cid),
            state=task.state,
            round=task.round,
            seed=task.seed,
        )
        start = time.monotonic()
        guard = _Guard(self.member_timeout)
        try:
            with guard:
                reply = self.app.handle(message, ctx)
        except BaseException as err:  # a crashing member must not end the run ...
            guard.restore()  # (again: a timeout may have cut the with statement short)
            if guard.interrupted:  # ... but the user's Ctrl-C must
                raise
            log.debug("member %d raised", task.cid, exc_info=True)
            return False, _reason(err, self.member_timeout), ctx.state
        if self.member_timeout is not None and time.monotonic() - start > self.member_timeout:
            # no timer could interrupt it (not the main thread): the reply came too late
            return False, f"no reply within member_timeout={self.member_timeout:g} s", ctx.state
        return True, reply, ctx.state

    def _worker_pool(self) -> WorkerPool:
        if self._pool is None or not self._pool.started:
            self._close_pool()
            self._pool = WorkerPool(
                self.workers, self._serve, self.torch_threads, self.member_timeout
            )
            self._closer = weakref.finalize(self, self._pool.close)
        self._pool.start()
        return self._pool

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (empty before the first exchange or after close)."""
        return self._pool.pids() if self._pool is not None else []

    def close(self) -> None:
        """Stop the worker processes (a later exchange starts new ones)."""
        self._close_pool()

    def _close_pool(self) -> None:
        if self._closer is not None:
            self._closer()
        if self._pool is not None:
            self._worker_cpu += self._pool.cpu_s
        self._pool = self._closer = None

    def cpu_time(self) -> float:
        pool = self._pool.cpu_s if self._pool is not None else 0.0
        return time.process_time() + self._worker_cpu + pool

    def run_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"workers": self.workers, "torch_threads": self.torch_threads}
        if self.workers > 1:
            # Whether (and from which round) the workers ran: a short run may end before.
            settings["workers_started_round"] = self.workers_started_round
        return settings

    # -- what the grid asks of a runtime ------------------------------------------------------

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
