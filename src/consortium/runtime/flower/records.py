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
messages: arrays in an ``ArrayRecord``, scalars in a ``ConfigRecord``, and any other value
pickled into a bytes entry. State never leaves the member's machine, so the pickle is only
ever read back by the process family that wrote it.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, MetricRecord, RecordDict

from consortium.core.message import Message

ARRAYS = "consortium.arrays"
CONFIG = "consortium.config"
METRICS = "consortium.metrics"
META = "consortium.meta"

STATE_ARRAYS = "consortium.state.arrays"
STATE_SCALARS = "consortium.state.scalars"
STATE_OBJECTS = "consortium.state.objects"

#: Version of this record layout; a member refuses messages of another version.
PROTOCOL = 1

#: The query action a server uses to learn which partition (member id) each node serves.
IDENTIFY = "consortium_identify"

_SCALARS = (bool, int, float, str, bytes)


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

    NumPy arrays go to an ``ArrayRecord``, plain scalars to a ``ConfigRecord``, anything
    else (nested dicts, tensors, lists of arrays) is pickled into a bytes entry.
    """
    arrays: dict[str, Array] = {}
    scalars: dict[str, Any] = {}
    objects: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            objects[f"{key!r}"] = pickle.dumps((key, value), protocol=pickle.HIGHEST_PROTOCOL)
        elif isinstance(value, np.ndarray) and value.dtype != object:
            arrays[key] = Array(value)
        elif isinstance(value, _SCALARS):
            scalars[key] = value
        else:
            objects[key] = pickle.dumps((key, value), protocol=pickle.HIGHEST_PROTOCOL)
    for name in (STATE_ARRAYS, STATE_SCALARS, STATE_OBJECTS):
        if name in records:
            del records[name]
    if arrays:
        records[STATE_ARRAYS] = ArrayRecord(arrays)
    if scalars:
        records[STATE_SCALARS] = ConfigRecord(scalars)
    if objects:
        records[STATE_OBJECTS] = ConfigRecord(objects)


def load_state(records: RecordDict) -> dict[str, Any]:
    """Read back what :func:`save_state` wrote (an empty dict for a new member)."""
    state: dict[str, Any] = {}
    if STATE_ARRAYS in records:
        state.update({k: a.numpy() for k, a in records.array_records[STATE_ARRAYS].items()})
    if STATE_SCALARS in records:
        state.update(records.config_records[STATE_SCALARS])
    if STATE_OBJECTS in records:
        for blob in records.config_records[STATE_OBJECTS].values():
            if not isinstance(blob, bytes):
                raise ValueError("corrupt member state: expected pickled bytes")
            key, value = pickle.loads(blob)  # written by this member itself
            state[key] = value
    return state
