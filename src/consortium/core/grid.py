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

from consortium.core.message import Message
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
    """Fewer valid replies than the minimum the run was configured with."""


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
        self.record = RoundRecord()

    @property
    def client_ids(self) -> list[int]:
        return list(range(self.num_clients))

    def start_round(self, rnd: int) -> None:
        """Called by the run loop before each round (0 is the set-up phase)."""
        self.round = rnd
        self.record = RoundRecord()

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
        unknown = [c for c in messages if not 0 <= c < self.num_clients]
        if unknown:
            raise KeyError(f"no such members: {unknown[:5]}")
        for cid, msg in messages.items():
            self.record.sent.append(cid)
            self.record.bytes_down[cid] = self.record.bytes_down.get(cid, 0) + msg.nbytes
        replies, failures = self._exchange(messages)
        for cid, reason in failures.items():
            log.warning("round %d: member %d failed: %s", self.round, cid, reason)
            self.record.failures[cid] = reason
        accepted: dict[int, Message] = {}
        for cid in sorted(replies):
            raw = replies[cid]
            # What crossed the wire counts, rejected or not (a reply that is not even a
            # Message has no size we can trust).
            self.record.bytes_up[cid] = self.record.bytes_up.get(cid, 0) + _wire_bytes(raw)
            try:
                check_message(raw, messages[cid].kind, self.max_reply_bytes)
                assert isinstance(raw, Message)
                reply = Message(raw.kind, dict(raw.arrays), dict(raw.config), plain_metrics(raw))
                spec = expect(cid) if callable(expect) else expect
                if spec is not None:
                    check_arrays(reply, spec)
            except InvalidReply as err:
                log.warning("round %d: rejected reply of member %d: %s", self.round, cid, err)
                self.record.rejected[cid] = str(err)
                continue
            self._cap_counts(cid, reply)
            accepted[cid] = reply
            self.record.replied.append(cid)
        if len(accepted) < min(self.min_replies, len(messages)):
            raise TooFewReplies(
                f"round {self.round}: {len(accepted)} valid replies of {len(messages)}, "
                f"fewer than min_replies={self.min_replies}"
            )
        return accepted

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
