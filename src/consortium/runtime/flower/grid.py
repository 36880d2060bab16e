"""The server side: a consortium :class:`~consortium.core.grid.Grid` that moves messages over
Flower's grid.

A workflow sends to member ids (partition indices); Flower addresses nodes by 64-bit ids.
:meth:`FlowerGrid.connect` waits until the members' nodes have registered and maps each node
to its member:

* with a **roster** (the server operator's file: member id -> the member's registered
  SuperNode public key; see :mod:`~consortium.runtime.flower.security`), by the key Flower
  authenticated for the node. What a node declares never decides who it is: a node whose key
  is not on the roster, or that declares another member's ``partition-id``, is refused and
  logged and gets no message; the run goes on with the members on the roster;
* without one (Flower's simulation, closed test networks), by the ``partition-id`` each node
  declares in its node config (asked once with a ``query.consortium_identify`` message); a
  second node claiming a partition already served is refused and logged.

Sampling stays the grid's seeded sampler, so a run draws the same members on Flower as
in-process. Everything else a reply must go through (byte accounting, validation,
``min_replies``) is :meth:`Grid.send`'s, shared with every runtime; this class only turns
Flower's error replies and missing replies into failures with a reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from logging import WARNING
from typing import TYPE_CHECKING, Any

from flwr.app import ConfigRecord, RecordDict
from flwr.app import Message as FlowerMessage
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid as FlowerNativeGrid

from consortium.core.grid import ExpectSpec, Grid, MeanReply, TooFewReplies, same_arrays
from consortium.core.message import Message
from consortium.runtime.flower.records import (
    IDENTIFY,
    META,
    PROTOCOL,
    Envelope,
    from_recorddict,
    message_type,
    to_recorddict,
)
from consortium.runtime.flower.security import Roster, RosterError, key_fingerprint

if TYPE_CHECKING:
    from consortium.runtime.flower.secagg import SecureAggregation

log = logging.getLogger("consortium.runtime.flower")


class FederationError(RuntimeError):
    """The nodes that joined do not form the federation the run was configured for."""


class FlowerGrid(Grid):
    """A consortium grid on top of a Flower ``Grid`` (deployment or simulation).

    Parameters
    ----------
    grid
        The ``flwr.serverapp.Grid`` a Flower ``ServerApp`` receives.
    num_clients
        Members expected: ``0 .. num_clients - 1``.
    seed, min_replies, max_reply_bytes
        See :class:`~consortium.core.grid.Grid`.
    reply_timeout
        Seconds to wait for the replies of one exchange; members that did not answer by then
        are failures ("no reply within ..."). ``None`` waits until every node has answered
        or Flower reported it unavailable (a node that stops sending heartbeats is reported
        after about two heartbeat intervals).
    connect_timeout
        Seconds :meth:`connect` waits for all members to register and identify themselves.
    ttl
        Flower time-to-live of each message in seconds (``None``: Flower's default, 12 h).
    data_sizes
        Member id -> samples it holds, when the server knows (the cap of the sample counts
        its replies report; see :meth:`Grid.declared_size`).
    roster
        Member id -> registered public key (see :func:`~consortium.runtime.flower.security.
        read_roster`); ``None`` identifies members by the ``partition-id`` their nodes declare.
    secure_aggregation
        SecAgg+ settings: :meth:`send_mean` then runs the protocol (the members' apps need
        Flower's ``secaggplus_mod``) and the server sees only the mean of the updates;
        ``None`` computes the mean from plain replies.
    """

    def __init__(
        self,
        grid: FlowerNativeGrid,
        num_clients: int,
        *,
        seed: int = 0,
        min_replies: int = 1,
        max_reply_bytes: int | None = None,
        reply_timeout: float | None = None,
        connect_timeout: float = 300.0,
        ttl: float | None = None,
        roster: Roster | None = None,
        data_sizes: Mapping[int, int | None] | None = None,
        secure_aggregation: SecureAggregation | None = None,
    ) -> None:
        super().__init__(num_clients, seed, min_replies, max_reply_bytes)
        self.secure_aggregation = secure_aggregation
        if reply_timeout is not None and reply_timeout <= 0:
            raise ValueError(f"reply_timeout must be > 0 or None, got {reply_timeout}")
        if roster is not None and roster.members != list(range(num_clients)):
            raise FederationError(
                f"the roster lists members {roster.members[:10]}, the run has members "
                f"0..{num_clients - 1}"
            )
        self.flower_grid = grid
        self.reply_timeout = reply_timeout
        self.connect_timeout = connect_timeout
        self.ttl = ttl
        self.roster = roster
        self.data_sizes = dict(data_sizes or {})
        #: Nodes refused by :meth:`connect`, with the reason (they get no message).
        self.refused: dict[int, str] = {}
        self._node_of: dict[int, int] = {}
        self._warned_declared = False

    # --- node <-> member map ------------------------------------------------------------

    @property
    def nodes(self) -> dict[int, int]:
        """Flower node id of each member id (empty before :meth:`connect`)."""
        return dict(self._node_of)

    def connect(self) -> dict[int, int]:
        """Wait for every member's node and learn which node serves which member.

        Every node that registers is checked once (its key against the roster, when there is
        one) and asked which partition it serves; the wait ends as soon as every member is
        there (nodes that never answer, such as a stale node of an earlier start, do not hold
        it up). Refused nodes are logged and kept in :attr:`refused`. Raises
        :class:`FederationError` when not every member joined within ``connect_timeout``
        seconds (the message lists the refused nodes and why).
        """
        deadline = time.monotonic() + self.connect_timeout
        retry_at: dict[int, float] = {}  # node -> when it may be asked (again)
        pending: dict[str, int] = {}
        found: dict[int, int] = {}
        rostered: dict[int, int] = {}  # node -> member its key is, on the roster
        nodes: dict[int, bytes] = {}
        while len(found) < self.num_clients:
            now = time.monotonic()
            if now > deadline:
                missing = sorted(set(range(self.num_clients)) - set(found))
                refused = "; ".join(f"node {n}: {r}" for n, r in self.refused.items())
                raise FederationError(
                    f"after {self.connect_timeout:g} s, {len(found)} of {self.num_clients} "
                    f"members have joined (missing partition-ids {missing[:10]}"
                    f"{' ...' if len(missing) > 10 else ''}; nodes seen: {len(nodes)}"
                    f"{'; refused: ' + refused if refused else ''})"
                )
            nodes = self._registered_nodes()
            ask = []
            for node in sorted(nodes):
                if node in self.refused or retry_at.get(node, 0.0) > now:
                    continue
                if self.roster is not None and node not in rostered:
                    member = self.roster.member_of(nodes[node])
                    if member is None:
                        self._refuse(
                            node, f"its key {_fingerprint(nodes[node])} is not on the roster"
                        )
                        continue
                    rostered[node] = member
                ask.append(node)
            for node in ask:
                retry_at[node] = float("inf")
            sent, failed = self._push({node: self._identify_message(node) for node in ask})
            pending.update(sent)
            replies, failed_now = self._pull(pending)
            for node, reason in {**failed, **failed_now}.items():
                log.warning("node %d did not identify itself: %s", node, reason)
                retry_at[node] = time.monotonic() + 10.0
            for node, reply in replies.items():
                try:
                    cid = self._check_identity(node, reply, rostered.get(node))
                except FederationError as err:
                    self._refuse(node, str(err))
                    continue
                if cid in found and found[cid] != node:
                    self._refuse(
                        node, f"nodes {found[cid]} and {node} both serve partition-id {cid}"
                    )
                    continue
                found[cid] = node
            if len(found) < self.num_clients:
                time.sleep(0.2)
        self._node_of = dict(sorted(found.items()))
        log.info("federation ready: %d members on nodes %s", len(found), self._node_of)
        return self.nodes

    def _registered_nodes(self) -> dict[int, bytes]:
        """Node id -> the public key Flower registered for it (empty when it has none)."""
        get_nodes = getattr(self.flower_grid, "get_nodes", None)
        if get_nodes is None:
            return {int(n): b"" for n in self.flower_grid.get_node_ids()}
        nodes = {int(info.node_id): bytes(info.public_key) for info in get_nodes()}
        if self.roster is None and any(nodes.values()) and not self._warned_declared:
            self._warned_declared = True
            flwr_log(
                WARNING,
                "[consortium] no roster: members are identified by the partition-id their "
                "nodes declare; a deployment needs a roster (see docs/flower.md)",
            )
        return nodes

    def _refuse(self, node: int, reason: str) -> None:
        self.refused[node] = reason
        flwr_log(WARNING, "[consortium] refused node %d: %s", node, reason)

    def _identify_message(self, node: int) -> FlowerMessage:
        return FlowerMessage(
            content=RecordDict({META: ConfigRecord({"kind": IDENTIFY, "protocol": PROTOCOL})}),
            dst_node_id=node,
            message_type=message_type(IDENTIFY),
            group_id="identify",
            ttl=self.ttl,
        )

    def _check_identity(self, node: int, reply: FlowerMessage, rostered: int | None) -> int:
        """The member ``node`` serves: its roster entry, else its declared ``partition-id``."""
        ident = reply.content.config_records.get(META, ConfigRecord())
        if ident.get("protocol") != PROTOCOL:
            raise FederationError(
                f"node {node} speaks consortium record layout {ident.get('protocol')!r}, "
                f"the server {PROTOCOL}: install the same consortium version on every node"
            )
        total = ident.get("num-partitions")
        if total is not None and _as_int(total) != self.num_clients:
            raise FederationError(
                f"node {node} says num-partitions={total!r}, the run has {self.num_clients} members"
            )
        declared = ident.get("partition-id")
        if rostered is not None:
            if declared is not None and _as_int(declared) != rostered:
                raise FederationError(
                    f"node {node} declares partition-id {declared!r}, but its key is member "
                    f"{rostered}'s on the roster"
                )
            return rostered
        if declared is None:
            raise FederationError(
                f"node {node} has no partition-id in its node config: start it with "
                "--node-config 'partition-id=K num-partitions=N'"
            )
        cid = _as_int(declared)
        if not 0 <= cid < self.num_clients:
            raise FederationError(
                f"node {node} serves partition-id {cid}, outside 0..{self.num_clients - 1}"
            )
        return cid

    def declared_size(self, client_id: int) -> int | None:
        return self.data_sizes.get(client_id)

    # --- message exchange --------------------------------------------------------------

    def _exchange(self, messages: Mapping[int, Message]) -> tuple[dict[int, Any], dict[int, str]]:
        if not self._node_of:
            self.connect()
        outgoing: dict[int, FlowerMessage] = {}
        for cid in sorted(messages):
            msg = messages[cid]
            envelope = Envelope(cid, self.round, self.client_seed(cid))
            outgoing[cid] = FlowerMessage(
                content=to_recorddict(msg, envelope),
                dst_node_id=self._node_of[cid],
                message_type=message_type(msg.kind),
                group_id=str(self.round),
                ttl=self.ttl,
            )
        raw, failures = self._send_receive(outgoing, self.reply_timeout)
        replies: dict[int, Any] = {}
        for cid, reply in raw.items():
            try:
                replies[cid], _ = from_recorddict(reply.content)
            except (ValueError, KeyError, TypeError) as err:
                failures[cid] = f"malformed reply: {err}"
        return replies, failures

    def send_mean(
        self, messages: Mapping[int, Message], expect: ExpectSpec = None, *, weighted: bool = True
    ) -> MeanReply:
        """The mean of the replies' arrays; with ``secure_aggregation``, by SecAgg+: the
        server gets the weighted mean of the members' updates and their metrics, never one
        member's arrays (see :mod:`~consortium.runtime.flower.secagg`).

        The round fails (:class:`~consortium.core.grid.TooFewReplies`, the run loop skips
        it) when the protocol halts, when fewer than ``min_replies`` members are inside the
        sum, or when a member inside it reported metrics the grid rejects or a weight above
        the samples it holds: its update cannot be taken out of the sum again.
        """
        if self.secure_aggregation is None:
            return super().send_mean(messages, expect, weighted=weighted)
        from consortium.runtime.flower.secagg import (
            WEIGHTING,
            mean_from_update,
            run_secure_round,
        )

        reference = same_arrays(messages)
        self._deliver(messages)
        if not self._node_of:
            self.connect()
        contents = {}
        for cid in sorted(messages):
            content = to_recorddict(messages[cid], Envelope(cid, self.round, self.client_seed(cid)))
            content.config_records[META][WEIGHTING] = "examples" if weighted else "equal"
            contents[self._node_of[cid]] = content
        settings = self.secure_aggregation
        max_weight = settings.max_weight or self._largest_weight(weighted)
        outcome = run_secure_round(self.flower_grid, contents, self.round, settings, max_weight)
        member_of = {node: cid for cid, node in self._node_of.items()}
        inside = {member_of[n]: r for n, r in outcome.results.items() if n in member_of}
        reason = outcome.halted or "not inside the secure sum"
        self._fail({c: reason for c in messages if c not in inside})
        metrics: dict[int, dict[str, float]] = {}
        for cid, (weight, reported) in sorted(inside.items()):
            kind = messages[cid].kind
            reply = self._accept(cid, Message(kind, {}, {}, reported), kind, None)
            self.record.bytes_up[cid] += sum(int(a.nbytes) for a in reference.values())
            size = self.declared_size(cid)
            claimed = reported.get("num_examples") if weighted else 1.0
            if reply is None or weight != claimed or (size is not None and weight > size):
                raise TooFewReplies(
                    f"round {self.round}: member {cid} is inside the secure sum with a reply "
                    "the server cannot accept; the round is dropped"
                )
            metrics[cid] = reply.metrics
        if outcome.mean_update is None:
            raise TooFewReplies(f"round {self.round}: secure aggregation failed: {reason}")
        self._require(len(metrics), len(messages))
        try:
            mean = mean_from_update(reference, outcome.mean_update)
        except ValueError as err:
            raise TooFewReplies(f"round {self.round}: {err}") from None
        total = float(sum(w for w, _ in inside.values()))
        return MeanReply(mean, total, metrics, secure=True)

    def _largest_weight(self, weighted: bool) -> float:
        """SecAgg+'s ``max_weight``: members scale their update by weight / max_weight before
        the fixed-point quantisation, so the closer to the real largest weight, the finer the
        result (equal weights: 1; unknown member sizes: Flower's default, 1,000)."""
        if not weighted:
            return 1.0
        sizes = [s for s in self.data_sizes.values() if s]
        return float(max(sizes)) if sizes else 1e3

    def _send_receive(
        self, outgoing: Mapping[int, FlowerMessage], timeout: float | None
    ) -> tuple[dict[int, FlowerMessage], dict[int, str]]:
        """Push one message per key, pull replies until all came back or ``timeout``.

        Flower's own ``send_and_receive`` polls every 3 s; this polls sooner, then less
        often, and maps each reply to its member by the message it answers (an error reply
        the SuperLink writes for a vanished node comes from the SuperLink, not the node).
        """
        pending, failures = self._push(outgoing)
        replies: dict[int, FlowerMessage] = {}
        start = time.monotonic()
        wait = 0.02
        while pending:
            got, failed = self._pull(pending)
            replies.update(got)
            failures.update(failed)
            if not pending:
                break
            if timeout is not None and time.monotonic() - start >= timeout:
                for key in pending.values():
                    failures[key] = f"no reply within {timeout:g} s"
                break
            time.sleep(wait)
            wait = min(wait * 1.5, 1.0)
        return replies, failures

    def _push(self, outgoing: Mapping[int, FlowerMessage]) -> tuple[dict[str, int], dict[int, str]]:
        """Push messages; (message id -> key of those pushed, failures of the others)."""
        if not outgoing:
            return {}, {}
        keys = list(outgoing)
        ids = list(self.flower_grid.push_messages([outgoing[k] for k in keys]))
        pushed: dict[str, int] = {}
        failures: dict[int, str] = {}
        for key, msg_id in zip(keys, ids, strict=True):
            if msg_id is None or msg_id == "":
                failures[key] = "Flower could not push the message to the SuperLink"
            else:
                pushed[msg_id] = key
        return pushed, failures

    def _pull(self, pending: dict[str, int]) -> tuple[dict[int, FlowerMessage], dict[int, str]]:
        """One pull of the replies to ``pending`` (answered ids are removed from it)."""
        replies: dict[int, FlowerMessage] = {}
        failures: dict[int, str] = {}
        if not pending:
            return replies, failures
        for reply in self.flower_grid.pull_messages(list(pending)):
            answered = reply.metadata.reply_to_message_id
            if answered not in pending:
                continue
            key = pending.pop(answered)
            if reply.has_error():
                err = reply.error
                failures[key] = f"Flower error {err.code}: {err.reason}"
            else:
                replies[key] = reply
        return replies, failures

    def state_dict(self) -> dict[str, Any]:
        # Node ids are only valid for the Flower run that assigned them; a resumed run
        # identifies its nodes again. Member states live on the nodes, per Flower run.
        return {}


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FederationError(f"expected an integer, got {value!r}")
    return int(value)


def _fingerprint(key: bytes) -> str:
    try:
        return key_fingerprint(key) if key else "(none)"
    except RosterError:
        return "(unreadable)"
