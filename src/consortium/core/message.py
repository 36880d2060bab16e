"""The one value that travels between the server and a member.

A message is deliberately small: named arrays, a flat config of scalars and a flat set of
metrics. Keeping it that plain is what lets every runtime move it, every log count its bytes
and every server check it before anything is aggregated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Scalar = bool | int | float | str
Arrays = dict[str, np.ndarray]


@dataclass
class Message:
    """A typed request or reply.

    Parameters
    ----------
    kind
        What the receiver should do ("train", "evaluate", "explain", ...); replies repeat it.
    arrays
        Named numpy arrays (model weights, updates, masks, scores).
    config
        Small scalar settings for the receiver (learning rate, epochs, width, ...).
    metrics
        Scalar results reported back (loss, number of samples, accuracy, ...).
    """

    kind: str
    arrays: Arrays = field(default_factory=dict)
    config: dict[str, Scalar] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes this message would occupy on the wire (array payload plus a small header).

        Numbers in config and metrics count 8 bytes each, strings their UTF-8 length, and
        every name its UTF-8 length, so communication cost stays comparable across runtimes
        without serialising anything (and a long string in a reply's config counts in full
        against ``max_reply_bytes``).
        """
        payload = sum(int(a.nbytes) for a in self.arrays.values())
        names = [self.kind, *self.arrays, *self.config, *self.metrics]
        text = sum(len(str(n).encode()) for n in names)
        values = sum(_scalar_bytes(v) for v in self.config.values())
        return payload + text + values + 8 * len(self.metrics)

    def reply(
        self,
        arrays: Mapping[str, np.ndarray] | None = None,
        metrics: Mapping[str, float] | None = None,
        config: Mapping[str, Scalar] | None = None,
    ) -> Message:
        """Build the reply to this message, keeping its kind."""
        return Message(
            kind=self.kind,
            arrays=dict(arrays or {}),
            config=dict(config or {}),
            metrics={k: float(v) for k, v in (metrics or {}).items()},
        )


def _scalar_bytes(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return len(value)
    return 8


def to_record(message: Message) -> dict[str, Any]:
    """Plain-dict form of a message, for checkpoints and serialising runtimes."""
    return {
        "kind": message.kind,
        "arrays": dict(message.arrays),
        "config": dict(message.config),
        "metrics": dict(message.metrics),
    }


def from_record(record: Mapping[str, Any]) -> Message:
    """Inverse of :func:`to_record`."""
    return Message(
        kind=str(record["kind"]),
        arrays={k: np.asarray(v) for k, v in record.get("arrays", {}).items()},
        config=dict(record.get("config", {})),
        metrics={k: float(v) for k, v in record.get("metrics", {}).items()},
    )
