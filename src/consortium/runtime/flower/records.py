"""Consortium messages and member state as Flower records, and back, without loss.

A consortium :class:`~consortium.core.message.Message` travels as one Flower ``RecordDict``:

======================= ================ ============================================
record                  type             holds
======================= ================ ============================================
``consortium.arrays``   ``ArrayRecord``  the named arrays (NumPy format: dtype, shape
                                         and every bit kept)
``consortium.config``   ``ConfigRecord`` the message's scalar config
``consortium.metrics``  ``MetricRecord`` the reply's metrics
``consortium.meta``     ``ConfigRecord`` kind, round, member id and member seed
======================= ================ ============================================

The member's state (``ctx.state``) is kept in the node's own ``Context.state`` between
messages, in the checkpoint encoding (:mod:`consortium.core.checkpoint`): its arrays in an
``ArrayRecord``, the rest as JSON in a ``ConfigRecord``. Nothing is pickled: reading the state
back runs no code, whoever wrote the records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, MetricRecord, RecordDict

from consortium.core.checkpoint import CheckpointError, decode_tree, encode_tree
from consortium.core.message import Message

ARRAYS = "consortium.arrays"
CONFIG = "consortium.config"
METRICS = "consortium.metrics"
META = "consortium.meta"

STATE_ARRAYS = "consortium.state.arrays"
STATE_TREE = "consortium.state.tree"

#: Version of this record layout; a member refuses messages of another version.
PROTOCOL = 1

#: The query action a server uses to learn which partition (member id) each node serves.
IDENTIFY = "consortium_identify"


def message_type(kind: str) -> str:
    """Flower message type for a consortium message kind.

    ``train`` and ``evaluate`` keep Flower's own types; any other kind becomes the query
    action ``query.<kind>`` (``query`` alone when the kind is not a Python identifier; the
    member reads the kind from the ``consortium.meta`` record either way).
    """
    if kind in (MessageType.TRAIN, MessageType.EVALUATE):
        return kind
    if kind.isidentifier():
        return f"{MessageType.QUERY}.{kind}"
    return MessageType.QUERY


@dataclass(frozen=True)
class Envelope:
    """What a member needs besides the message: who it is and which randomness to use."""

    client_id: int
    round: int
    seed: int


def _config_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        return [_config_value(v) for v in value]
    return value


def to_recorddict(message: Message, envelope: Envelope | None = None) -> RecordDict:
    """A consortium message as a Flower ``RecordDict`` (arrays are copied once, as bytes)."""
    arrays = ArrayRecord({name: Array(np.asarray(a)) for name, a in message.arrays.items()})
    meta: dict[str, Any] = {"kind": message.kind, "protocol": PROTOCOL}
    if envelope is not None:
        meta.update(
            {"client-id": envelope.client_id, "round": envelope.round, "seed": envelope.seed}
        )
    return RecordDict(
        {
            ARRAYS: arrays,
            CONFIG: ConfigRecord({k: _config_value(v) for k, v in message.config.items()}),
            METRICS: MetricRecord({k: float(v) for k, v in message.metrics.items()}),
            META: ConfigRecord(meta),
        }
    )


def from_recorddict(content: RecordDict) -> tuple[Message, Envelope | None]:
    """Inverse of :func:`to_recorddict`; raises ``ValueError`` on foreign content."""
    if META not in content:
        raise ValueError("not a consortium message (no 'consortium.meta' record)")
    meta = content.config_records[META]
    if meta.get("protocol") != PROTOCOL:
        raise ValueError(
            f"consortium record layout {meta.get('protocol')!r}, this side speaks {PROTOCOL}"
        )
    arrays = content.array_records.get(ARRAYS, ArrayRecord())
    config = content.config_records.get(CONFIG, ConfigRecord())
    metrics = content.metric_records.get(METRICS, MetricRecord())
    message = Message(
        kind=str(meta["kind"]),
        arrays={name: array.numpy() for name, array in arrays.items()},
        config=dict(config),  # type: ignore[arg-type]
        metrics={k: float(v) for k, v in metrics.items()},  # type: ignore[arg-type]
    )
    envelope = None
    if "client-id" in meta:
        ids = (meta["client-id"], meta["round"], meta["seed"])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ids):
            raise ValueError(f"member id, round and seed must be integers, got {ids}")
        envelope = Envelope(*(int(v) for v in ids))  # type: ignore[arg-type]
    return message, envelope


def save_state(records: RecordDict, state: Mapping[str, Any]) -> None:
    """Write a member's state dict into a node's ``Context.state`` (replacing what was there).

    The state may hold what a checkpoint holds (nested dicts, lists, tuples, sets, numpy
    arrays and scalars, numbers, strings, ``None``); anything else raises ``TypeError``.
    """
    tree, arrays = encode_tree(dict(state))
    for name in (STATE_ARRAYS, STATE_TREE):
        if name in records:
            del records[name]
    if not state:
        return
    records[STATE_TREE] = ConfigRecord({"tree": json.dumps(tree, allow_nan=False)})
    if arrays:
        records[STATE_ARRAYS] = ArrayRecord({str(i): Array(a) for i, a in enumerate(arrays)})


def load_state(records: RecordDict) -> dict[str, Any]:
    """Read back what :func:`save_state` wrote (an empty dict for a new member)."""
    if STATE_TREE not in records:
        return {}
    stored = records.array_records[STATE_ARRAYS] if STATE_ARRAYS in records else {}
    try:
        tree = json.loads(str(records.config_records[STATE_TREE]["tree"]))
        arrays = [stored[str(i)].numpy() for i in range(len(stored))]
        state = decode_tree(tree, arrays)
    except (KeyError, ValueError, CheckpointError) as err:
        raise ValueError(f"corrupt member state: {err}") from None
    if not isinstance(state, dict):
        raise ValueError("corrupt member state: not a dict")
    return state
