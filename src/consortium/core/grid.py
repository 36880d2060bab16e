"""What a server workflow sees of the federation: member ids and a way to message them.

The grid is the seam between algorithms and runtimes. A runtime implements one method,
:meth:`Grid._exchange`, that moves messages and returns replies; everything the server must do
with any reply (count its bytes, check it, log why it was dropped) happens here, once, for
every runtime.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consortium.core.aggregation import Update, partial_mean
from consortium.core.message import Arrays, Message
from consortium.core.sampling import derive_seed, rng_for, sample_clients
from consortium.core.validation import (
    SAMPLE_COUNTS,
    InvalidReply,
    ReplySpec,
    check_arrays,
    check_message,
    plain_metrics,
)

log = logging.getLogger("consortium.grid")


def _wire_bytes(reply: object) -> int:
    """A reply's size as counted for communication cost (0 when it cannot be measured)."""
    if not isinstance(reply, Message):
        return 0
    try:
        return int(reply.nbytes)
    except Exception:  # a malformed reply: it is rejected below, with a reason
        return 0


class TooFewReplies(RuntimeError):
    """Fewer valid replies than the minimum the run was configured with.

    What the run loop does with it depends on the phase (see :mod:`consortium.core.run`): a
    round is skipped; the set-up and the final phase are tried again, then the run stops.
    """


#: ``progress(answered, asked)``: how far the exchange in flight has got (see
#: :attr:`Grid.progress`).
Progress = Callable[[int, int], None]


@dataclass
class RoundRecord:
    """What happened on the wire in one round: who was asked, who answered, what it cost."""

    sent: list[int] = field(default_factory=list)
    replied: list[int] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    capped: dict[int, str] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, Any]:
        """JSON-ready summary for the per-round log (``capped`` only when a count was)."""
        line = {
            "clients_sent": len(set(self.sent)),
            "replies": len(self.replied),
            "failures": {str(k): v for k, v in self.failures.items()},
            "rejected": {str(k): v for k, v in self.rejected.items()},
            "bytes_down": int(sum(self.bytes_down.values())),
            "bytes_up": int(sum(self.bytes_up.values())),
            "bytes_down_by_client": {str(k): v for k, v in sorted(self.bytes_down.items())},
            "bytes_up_by_client": {str(k): v for k, v in sorted(self.bytes_up.items())},
        }
        if self.capped:
            line["capped"] = {str(k): v for k, v in self.capped.items()}
        return line


ExpectSpec = ReplySpec | Callable[[int], ReplySpec] | None


@dataclass
class MeanReply:
    """What :meth:`Grid.send_mean` returns: the mean of the replies' arrays, never one's.

    Attributes
    ----------
    arrays
        The (weighted) mean of the valid replies' arrays (the sent arrays when none came).
    weight
        The sum of the weights in the mean (0: no valid reply).
    metrics
        Each contributing member's metrics (sample count, loss: what the weighting needs).
    secure
        Whether the server saw only the sum (a runtime with secure aggregation).
    """

    arrays: Arrays
    weight: float
    metrics: dict[int, dict[str, float]]
    secure: bool = False


def same_arrays(messages: Mapping[int, Message]) -> Arrays:
    """The arrays every message carries (a secure sum needs one reference for all)."""
    if not messages:
        return {}
    first = next(iter(messages.values())).arrays
    for msg in messages.values():
        same = msg.arrays is first or (
            msg.arrays.keys() == first.keys()
            and all(
                v is first[k] or (v.shape == first[k].shape and np.array_equal(v, first[k]))
                for k, v in msg.arrays.items()
            )
        )
        if not same:
            raise ValueError("a mean of replies needs the same arrays sent to every member")
    return dict(first)


def held_examples(data: Any) -> int | None:
    """Samples a member's data holds (its train plus test views), when the data says.

    The cap of the sample counts the member's replies may report; ``None`` for data that
    has no ``train_indices`` / ``test_indices``.
    """
    train, test = getattr(data, "train_indices", None), getattr(data, "test_indices", None)
    if train is None or test is None:
        return None
    return len(train) + len(test)


class Grid(ABC):
    """Base of every runtime.

    Parameters
    ----------
    num_clients
        Members are identified by ``0 .. num_clients - 1`` (their partition index).
    seed
        Run seed; sampling and every member's randomness derive from it.
    min_replies
        A :meth:`send` with fewer valid replies raises :class:`TooFewReplies`; the run loop then
        skips the round (the workflow's state is left as it was).
    max_reply_bytes
        Replies larger than this are rejected (``None``: no limit).
    """

    def __init__(
        self,
        num_clients: int,
        seed: int = 0,
        min_replies: int = 1,
        max_reply_bytes: int | None = None,
    ) -> None:
        if num_clients < 1:
            raise ValueError(f"a federation needs at least one member, got {num_clients}")
        if min_replies < 0:
            raise ValueError(f"min_replies must be >= 0, got {min_replies}")
        self.num_clients = num_clients
        self.seed = seed
        self.min_replies = min_replies
        self.max_reply_bytes = max_reply_bytes
        self.round = 0
        self.attempt = 0
        self.record = RoundRecord()
        #: Told ``(answered, asked)`` as members of an exchange answer (``None``: nobody
        #: listens). The run loop shows it, so a long phase is never silent.
        self.progress: Progress | None = None

    @property
    def client_ids(self) -> list[int]:
        return list(range(self.num_clients))

    def start_round(self, rnd: int, attempt: int = 0) -> None:
        """Called by the run loop before each round (0 is the set-up phase, ``num_rounds + 1``
        the final phase); ``attempt`` numbers the tries of a phase (see :meth:`retry`)."""
        self.round = rnd
        self.attempt = attempt
        self.record = RoundRecord()

    def retry(self) -> None:
        """Start another try of the current phase: the record keeps what the earlier tries
        cost, and a runtime that simulates dropouts draws them afresh (``self.attempt``)."""
        self.attempt += 1

    def _report_progress(self, answered: int, asked: int) -> None:
        """Tell :attr:`progress` (runtimes call it as members answer)."""
        if self.progress is not None:
            self.progress(answered, asked)

    def sample(self, num: int | float, purpose: str = "sample") -> list[int]:
        """Members for this round, drawn from the run seed and the round number only."""
        return sample_clients(self.client_ids, num, rng_for(self.seed, purpose, self.round))

    def client_seed(self, client_id: int) -> int:
        """Seed of a member's randomness in this round."""
        return derive_seed(self.seed, "client", self.round, client_id)

    def declared_size(self, client_id: int) -> int | None:
        """How many samples member ``client_id`` holds, when the runtime knows (else ``None``).

        A reply's sample counts (``num_examples``, the FedAvg weight, and the other
        :data:`~consortium.core.validation.SAMPLE_COUNTS`) are capped at this number.
        """
        return None

    def send(
        self, messages: Mapping[int, Message], expect: ExpectSpec = None
    ) -> dict[int, Message]:
        """Deliver one message per member and return the valid replies, keyed by member id.

        Every reply is checked (type, kind, structure, finite values, sample counts, size,
        and against ``expect`` when given); a failed member or an invalid reply is logged with
        its id and left out. A sample count above the member's :meth:`declared_size` is
        capped at it (and logged). The replies returned are the server's own copies: fresh
        ``Message`` objects with plain-float metrics.
        """
        self._deliver(messages)
        replies, failures = self._exchange(messages)
        self._report_progress(len(messages), len(messages))
        self._fail(failures)
        accepted: dict[int, Message] = {}
        for cid in sorted(replies):
            reply = self._accept(cid, replies[cid], messages[cid].kind, expect)
            if reply is not None:
                accepted[cid] = reply
        self._require(len(accepted), len(messages))
        return accepted

    def send_mean(
        self, messages: Mapping[int, Message], expect: ExpectSpec = None, *, weighted: bool = True
    ) -> MeanReply:
        """Deliver one message per member; return only the mean of the replies' arrays.

        Every message carries the same arrays (the model members train) and every reply
        arrays of the same names and shapes; the mean is weighted by ``num_examples`` (capped
        as :meth:`send` caps it) or equal. This is what a server that needs only the sum of
        updates asks for, so a runtime with secure aggregation (Flower with SecAgg+, see
        :mod:`consortium.runtime.flower`) can answer it without the server ever seeing one
        member's arrays. This base computes it from the replies :meth:`send` checked: the
        same numbers, without the cryptography (in-process, server and members share a
        process anyway).
        """
        reference = same_arrays(messages)
        replies = self.send(messages, expect if expect is not None else ReplySpec.like(reference))
        updates = [
            Update(r.arrays, r.metrics.get("num_examples", 0.0) if weighted else 1.0)
            for r in replies.values()
        ]
        total = float(sum(u.weight for u in updates))
        mean = partial_mean(updates, reference) if total > 0 else dict(reference)
        metrics = {c: dict(r.metrics) for c, r in replies.items()}
        return MeanReply(mean, total, metrics, secure=False)

    def _deliver(self, messages: Mapping[int, Message]) -> None:
        """Refuse unknown members; count what goes down."""
        unknown = [c for c in messages if not 0 <= c < self.num_clients]
        if unknown:
            raise KeyError(f"no such members: {unknown[:5]}")
        for cid, msg in messages.items():
            self.record.sent.append(cid)
            self.record.bytes_down[cid] = self.record.bytes_down.get(cid, 0) + msg.nbytes

    def _fail(self, failures: Mapping[int, str]) -> None:
        for cid, reason in failures.items():
            log.warning("round %d: member %d failed: %s", self.round, cid, reason)
            self.record.failures[cid] = reason

    def _accept(self, cid: int, raw: object, kind: str, expect: ExpectSpec) -> Message | None:
        """The server's checked copy of a reply, or ``None`` (rejected, with the reason kept)."""
        # What crossed the wire counts, rejected or not (a reply that is not even a Message
        # has no size we can trust).
        self.record.bytes_up[cid] = self.record.bytes_up.get(cid, 0) + _wire_bytes(raw)
        try:
            check_message(raw, kind, self.max_reply_bytes)
            assert isinstance(raw, Message)
            reply = Message(raw.kind, dict(raw.arrays), dict(raw.config), plain_metrics(raw))
            spec = expect(cid) if callable(expect) else expect
            if spec is not None:
                check_arrays(reply, spec)
        except InvalidReply as err:
            log.warning("round %d: rejected reply of member %d: %s", self.round, cid, err)
            self.record.rejected[cid] = str(err)
            return None
        self._cap_counts(cid, reply)
        self.record.replied.append(cid)
        return reply

    def _require(self, valid: int, asked: int) -> None:
        if valid < min(self.min_replies, asked):
            raise TooFewReplies(
                f"round {self.round}: {valid} valid replies of {asked}, "
                f"fewer than min_replies={self.min_replies}"
            )

    def _cap_counts(self, cid: int, reply: Message) -> None:
        """Cap a reply's sample counts at what the member declared it holds."""
        size = self.declared_size(cid)
        if size is None:
            return
        for name in SAMPLE_COUNTS:
            value = reply.metrics.get(name)
            if value is not None and value > size:
                reply.metrics[name] = float(size)
                reason = f"{name} {value:g} capped at the member's {size} samples"
                log.warning("round %d: member %d: %s", self.round, cid, reason)
                self.record.capped[cid] = reason

    @abstractmethod
    def _exchange(self, messages: Mapping[int, Message]) -> tuple[dict[int, Any], dict[int, str]]:
        """Move messages to members and back: (replies by id, failure reasons by id)."""

    def state_dict(self) -> dict[str, Any]:
        """Runtime state to checkpoint (e.g. member states the runtime holds)."""
        return {}

    def cpu_time(self) -> float:
        """CPU seconds the run has used so far: this process's, and what the runtime's own
        member processes report (so a run's ``cpu_s`` means the same on every runtime that
        can tell)."""
        return time.process_time()

    def run_settings(self) -> dict[str, Any]:
        """How the runtime ran the members (e.g. worker processes, threads), for the summary."""
        return {}

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what the runtime started (worker processes); a grid may be used again."""

    def __enter__(self) -> Grid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Restore what :meth:`state_dict` saved."""
