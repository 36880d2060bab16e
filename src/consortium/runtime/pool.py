"""Worker processes that serve members in parallel for the in-process runtime.

Why processes, and why forked: a member's local training is Python and torch code that holds
the interpreter lock, so only processes run members at the same time. Forked from the run's
process once per run, every worker already holds the member handlers and the read-only data
pool (pages shared copy-on-write, never copied per member), and nothing but messages travels:
the server sends ``(member, round, seed, state, request)``, the worker sends back what the
member's handler answered and the state it left.

Threads: each worker runs torch (and the BLAS libraries numpy uses) with ``threads`` threads,
one by default. GNU OpenMP, which CPU builds of torch use, cannot start a thread team in a
child forked from a process that already used one (the child hangs), so a worker never runs
more than one OpenMP thread; the runtime refuses more.

Failures: anything a handler raises comes back as the member's failure, as in-process; a
worker that dies (killed, out of memory, ``os._exit`` in member code) or overruns
``member_timeout`` by more than a grace period is replaced by a fresh fork and its member
counted as failed. Ctrl-C reaches the run's process, which stops every worker; workers ignore
SIGINT themselves, so one Ctrl-C never prints a traceback per worker.
"""

from __future__ import annotations

import contextlib
import gc
import io
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from consortium.core.message import Message


@dataclass(frozen=True)
class Task:
    """One member's share of an exchange: who, when, with which seed, state and request."""

    cid: int
    round: int
    seed: int
    state: dict[str, Any]
    message: Message


#: ``(answered, reply or failure reason, state the handler left or None)``.
Outcome = tuple[bool, Any, "dict[str, Any] | None"]
Serve = Callable[[Task], Outcome]

#: Extra seconds a worker gets past ``member_timeout`` (its own timer fires first) before it is
#: stopped from outside: a handler stuck in C code cannot be interrupted by a signal.
TIMEOUT_GRACE_S = 2.0


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; containers narrow it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def compute_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch and BLAS threads, then restore both.

    Members use the same thread counts in this process and in workers: torch's intra-op
    threads change how sums are split, so the same count is what keeps a parallel run
    bit-identical to a serial one. torch is only touched when something imported it.
    """
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with _blas_limits(threads):
        if torch is not None and before != threads:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None and before is not None and torch.get_num_threads() != before:
                torch.set_num_threads(before)


def _blas_limits(threads: int) -> contextlib.AbstractContextManager[Any]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # shipped with scikit-learn; without it BLAS keeps its default
        return contextlib.nullcontext()
    return threadpool_limits(threads, user_api="blas")


# -- the worker side ------------------------------------------------------------------------


def _worker_main(
    conn: Connection,
    serve: Serve,
    threads: int,
    timeout: float | None,
    inherited: list[Connection],
) -> None:
    """A worker's life: set up, then serve tasks until told to stop or the run went away."""
    for other in inherited:  # the run's ends of other workers' pipes: not ours to hold
        other.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run's process handles Ctrl-C
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for libraries loaded from here on
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    limits = _blas_limits(threads)
    limits.__enter__()
    parent = os.getppid()
    while True:
        if not conn.poll(1.0):
            if os.getppid() != parent:  # the run's process died: nobody will read our replies
                return
            continue
        try:
            header = conn.recv_bytes()
            if not header:  # the stop request
                return
            body = conn.recv_bytes()
        except (EOFError, OSError):
            return
        cpu, start = time.process_time(), time.monotonic()
        cid, rnd, seed, state = pickle.loads(header)
        outcome = serve(Task(cid, rnd, seed, state, pickle.loads(body)))
        # A member interrupted by its timer may have been cut off anywhere (inside an import,
        # holding a lock): this worker asks to be replaced rather than serve anyone else.
        retire = timeout is not None and time.monotonic() - start >= timeout
        conn.send_bytes(_encode(outcome, time.process_time() - cpu, retire))
        if retire:
            return


def _encode(outcome: Outcome, cpu_s: float, retire: bool) -> bytes:
    """An outcome, the CPU seconds it took and whether the worker retires, as bytes; a reply
    that cannot travel is the member's failure (as one no wire format carries would be)."""
    try:
        return pickle.dumps((*outcome, cpu_s, retire), protocol=5)
    except Exception as err:
        reason = f"reply cannot be sent: {type(err).__name__}: {err}"
    try:
        return pickle.dumps((False, reason, outcome[2], cpu_s, retire), protocol=5)
    except Exception:
        return pickle.dumps((False, reason, None, cpu_s, retire), protocol=5)


# -- the run's side -------------------------------------------------------------------------

#: What may be rebuilt from a worker's bytes: plain values, messages and numpy arrays (their
#: subclasses too, so that the grid can name and reject them as it would in-process).
_ALLOWED = frozenset(
    {("builtins", name) for name in (
        "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list",
        "object", "range", "set", "slice", "str", "tuple",
    )}
    | {(f"numpy.{core}.{module}", name) for core in ("core", "_core") for module, name in (
        ("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"),
    )}
    | {("numpy", "dtype"), ("numpy", "ndarray"), ("numpy", "matrix"), ("numpy.ma", "MaskedArray"),
       ("numpy.ma.core", "_mareconstruct"), ("numpy.ma.core", "MaskedArray"),
       ("copyreg", "_reconstructor"), ("consortium.core.message", "Message")}
)  # fmt: skip


class _ReplyUnpickler(pickle.Unpickler):
    """Reads what a worker sent: messages, numpy arrays and plain values, nothing that could
    run code in the run's process. Anything else makes the reply a failure."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} may not travel in a reply")


def _decode(raw: bytes) -> tuple[Outcome, float, bool]:
    try:
        answered, value, state, cpu_s, retire = _ReplyUnpickler(io.BytesIO(raw)).load()
    except Exception as err:
        return (False, f"reply cannot be read: {type(err).__name__}: {err}", None), 0.0, True
    return (bool(answered), value, state), float(cpu_s), bool(retire)


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Worker:
    """One worker process, the run's end of its pipe, and a thread that feeds it requests.

    The feeder writes a request while the worker still computes the previous one, so a worker
    never waits for the run's process to be scheduled before it can start its next member (on
    a loaded machine that wait, once per member, was most of a round).
    """

    def __init__(self, index: int, process: Any, conn: Connection) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.inflight: deque[Task] = deque()  # sent, not answered; the first one is running
        self.deadline = float("inf")
        self._requests: queue.SimpleQueue[tuple[bytes, ...] | None] = queue.SimpleQueue()
        self._feeder = threading.Thread(target=self._feed, name=f"feed-{index}", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        while (frames := self._requests.get()) is not None:
            try:
                for frame in frames:
                    self.conn.send_bytes(frame)
            except (OSError, ValueError):  # the worker died or was stopped: its sentinel tells
                return

    def send(self, task: Task, header: bytes, body: bytes) -> None:
        self.inflight.append(task)
        self._requests.put((header, body))

    def ask_to_stop(self) -> None:
        self._requests.put((b"",))  # an empty request: the worker returns

    def stop_feeding(self) -> None:
        self._requests.put(None)
        self._feeder.join(2.0)


class WorkerPool:
    """``size`` forked workers serving :class:`Task` s with ``serve``.

    Parameters
    ----------
    size
        Worker processes, started on the first :meth:`run` (so they fork from a process that
        holds everything the run built before its first exchange).
    serve
        What a worker does with one task (runs the member's handler; see ``LocalRuntime``).
    threads
        torch and BLAS threads in each worker.
    timeout
        The members' ``member_timeout``; a worker silent for ``timeout + TIMEOUT_GRACE_S``
        is stopped and replaced.
    depth
        Requests a worker holds at once (the one it runs and those queued behind it). Members
        are handed out in the order given, one to each worker first, then as workers free up,
        so a slow worker (or one sharing its core) serves fewer of them.
    """

    def __init__(
        self,
        size: int,
        serve: Serve,
        threads: int = 1,
        timeout: float | None = None,
        depth: int = 2,
    ) -> None:
        if size < 1 or depth < 1:
            raise ValueError(f"a pool needs >= 1 worker and depth >= 1, got {size}, {depth}")
        self.size, self.serve, self.threads, self.timeout = size, serve, threads, timeout
        self.depth = depth
        self._workers: list[_Worker] = []
        self._ctx = multiprocessing.get_context("fork")
        self.restarts = 0
        self.cpu_s = 0.0  # CPU seconds the workers spent serving members

    @property
    def started(self) -> bool:
        return bool(self._workers)

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and memory accounting)."""
        return [w.process.pid for w in self._workers if w.process.is_alive()]

    def start(self) -> None:
        if self._workers:
            return
        # Objects alive now never get their pages touched by a worker's collector. No
        # gc.collect() first: with torch loaded it costs 0.1 s or more of every run's start,
        # more than a short run's members (garbage frozen here only stays in the workers,
        # on pages they share with this process).
        gc.freeze()
        try:
            for index in range(self.size):
                self._workers.append(self._fork(index))
        except BaseException:
            self.close()
            raise
        finally:
            gc.unfreeze()

    def _fork(self, index: int) -> _Worker:
        ours, theirs = self._ctx.Pipe(duplex=True)
        inherited = [w.conn for w in self._workers if w.index != index]
        process = self._ctx.Process(
            target=_worker_main,
            args=(theirs, self.serve, self.threads, self.timeout, inherited),
            name=f"consortium-worker-{index}",
            daemon=False,  # member code may start processes of its own
        )
        process.start()
        theirs.close()
        return _Worker(index, process, ours)

    def _replace(self, worker: _Worker, pending: deque[Task]) -> _Worker:
        """A fresh worker in ``worker``'s place; the requests it had not started go back."""
        _stop(worker, kill=True)
        pending.extendleft(reversed(worker.inflight))
        worker.inflight.clear()
        self.restarts += 1
        gc.freeze()
        try:
            fresh = self._fork(worker.index)
        finally:
            gc.unfreeze()
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def run(
        self, tasks: Sequence[Task], progress: Callable[[int], None] | None = None
    ) -> dict[int, Outcome]:
        """Serve every task on the workers; outcomes by member id (order-free).
        ``progress(done)`` hears how many are done as they come in."""
        self.start()
        try:
            return self._run(tasks, progress)
        except BaseException:  # Ctrl-C, or a broken pipe of our own: stop every worker
            self.close(kill=True)
            raise

    def _run(
        self, tasks: Sequence[Task], progress: Callable[[int], None] | None
    ) -> dict[int, Outcome]:
        pending = deque(tasks)
        outcomes: dict[int, Outcome] = {}
        encoded: dict[int, bytes] = {}  # one pickling per distinct request (broadcasts)
        for level in range(1, self.depth + 1):  # one request each first, then the next ...
            for worker in self._workers:
                self._top_up(worker, pending, encoded, level)
        while any(w.inflight for w in self._workers):
            busy = [w for w in self._workers if w.inflight]
            nearest = min(w.deadline for w in busy)
            wait_s = None if nearest == float("inf") else max(0.0, nearest - time.monotonic())
            ready = wait(
                [w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=wait_s
            )
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    worker = self._collect(worker, outcomes, pending)
                elif time.monotonic() >= worker.deadline:
                    task = worker.inflight.popleft()
                    outcomes[task.cid] = (False, self._late(), None)
                    worker = self._replace(worker, pending)
                self._top_up(worker, pending, encoded)
            if progress is not None:
                progress(len(outcomes))
        return outcomes

    def _late(self) -> str:
        return f"no reply within member_timeout={self.timeout:g} s"

    def _top_up(
        self,
        worker: _Worker,
        pending: deque[Task],
        encoded: dict[int, bytes],
        depth: int | None = None,
    ) -> None:
        while pending and len(worker.inflight) < (depth or self.depth):
            task = pending.popleft()
            key = id(task.message)
            if key not in encoded:
                encoded[key] = pickle.dumps(task.message, protocol=pickle.HIGHEST_PROTOCOL)
            header = pickle.dumps((task.cid, task.round, task.seed, task.state), protocol=5)
            if not worker.inflight:
                self._arm(worker)
            worker.send(task, header, encoded[key])

    def _arm(self, worker: _Worker) -> None:
        """Start the clock of the request ``worker`` runs now."""
        grace = self.timeout + TIMEOUT_GRACE_S if self.timeout is not None else None
        worker.deadline = float("inf") if grace is None else time.monotonic() + grace

    def _collect(
        self, worker: _Worker, outcomes: dict[int, Outcome], pending: deque[Task]
    ) -> _Worker:
        """Read every reply ``worker`` has sent; replace it if it died or retired."""
        try:
            while worker.inflight and worker.conn.poll():
                outcome, cpu_s, retire = _decode(worker.conn.recv_bytes())
                self.cpu_s += cpu_s
                outcomes[worker.inflight.popleft().cid] = outcome
                if retire:
                    return self._replace(worker, pending)
                self._arm(worker)
        except (EOFError, OSError):
            pass
        if worker.process.is_alive():
            return worker
        worker.process.join(1.0)
        if worker.inflight:
            task = worker.inflight.popleft()
            death = _death(worker.process.exitcode)
            outcomes[task.cid] = (False, f"member process died ({death})", None)
        return self._replace(worker, pending)

    def close(self, kill: bool = False) -> None:
        """Stop every worker (politely unless ``kill``); safe to call twice."""
        workers, self._workers = self._workers, []
        for worker in workers:
            if not kill:
                worker.ask_to_stop()
        for worker in workers:
            _stop(worker, kill=kill)


def _stop(worker: _Worker, kill: bool) -> None:
    process = worker.process
    if not kill:
        process.join(2.0)
    if process.is_alive():
        process.kill()
        process.join(2.0)
    worker.stop_feeding()
    with contextlib.suppress(OSError):
        worker.conn.close()
    with contextlib.suppress(ValueError):
        process.close()
