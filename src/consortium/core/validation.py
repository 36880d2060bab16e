"""Checks every reply must pass before the server lets it near an aggregate.

One bad member (a bug, a flipped bit, an attacker) must never poison the global model: a reply
that fails any check is rejected with a reason, logged with the member's id, and the round goes
on with the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from consortium.core.message import Message


class InvalidReply(ValueError):
    """A reply that must not be aggregated; the message says why in one line."""


@dataclass(frozen=True)
class ArraySpec:
    """What one named array in a reply must look like.

    ``allow_smaller`` admits arrays whose every dimension is at most the expected one: a
    width-sliced sub-model covers the leading corner of each full tensor.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    allow_smaller: bool = False

    @classmethod
    def like(cls, array: np.ndarray, allow_smaller: bool = False) -> ArraySpec:
        return cls(tuple(array.shape), np.dtype(array.dtype), allow_smaller)


@dataclass(frozen=True)
class ReplySpec:
    """Expected contents of a reply.

    Parameters
    ----------
    arrays
        Expected name -> spec. Names outside it are rejected.
    require_all
        Whether every expected name must be present (False for partial updates such as a
        member that trained only some layers).
    max_bytes
        Upper bound on the reply's size; ``None`` for no limit.
    """

    arrays: Mapping[str, ArraySpec]
    require_all: bool = True
    max_bytes: int | None = None

    @classmethod
    def like(
        cls,
        arrays: Mapping[str, np.ndarray],
        require_all: bool = True,
        allow_smaller: bool = False,
        max_bytes: int | None = None,
    ) -> ReplySpec:
        """Spec that accepts arrays shaped and typed like ``arrays`` (typically what was sent)."""
        specs = {k: ArraySpec.like(v, allow_smaller) for k, v in arrays.items()}
        return cls(specs, require_all, max_bytes)


def check_message(message: object, kind: str, max_bytes: int | None = None) -> None:
    """Checks every reply gets, whatever the workflow expects: type, kind, finiteness, size."""
    if not isinstance(message, Message):
        raise InvalidReply(f"reply is a {type(message).__name__}, not a Message")
    if message.kind != kind:
        raise InvalidReply(f"reply kind {message.kind!r} does not answer {kind!r}")
    for name, value in message.metrics.items():
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidReply(f"metric {name!r} is not a finite number: {value!r}")
    for name, array in message.arrays.items():
        if not isinstance(array, np.ndarray):
            raise InvalidReply(f"array {name!r} is a {type(array).__name__}, not a numpy array")
        if array.dtype.kind not in "biuf":
            raise InvalidReply(f"array {name!r} has unsupported dtype {array.dtype}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidReply(f"array {name!r} holds NaN or Inf")
    if max_bytes is not None and message.nbytes > max_bytes:
        raise InvalidReply(f"reply of {message.nbytes} bytes exceeds the limit of {max_bytes}")


def check_arrays(message: Message, spec: ReplySpec) -> None:
    """Check names, shapes and dtypes of a reply's arrays against what the workflow expects."""
    extra = sorted(set(message.arrays) - set(spec.arrays))
    if extra:
        raise InvalidReply(f"unexpected arrays {extra[:3]}{'...' if len(extra) > 3 else ''}")
    if spec.require_all:
        missing = sorted(set(spec.arrays) - set(message.arrays))
        if missing:
            raise InvalidReply(f"missing arrays {missing[:3]}{'...' if len(missing) > 3 else ''}")
    for name, array in message.arrays.items():
        expected = spec.arrays[name]
        if array.dtype != expected.dtype:
            raise InvalidReply(f"array {name!r} has dtype {array.dtype}, expected {expected.dtype}")
        if array.ndim != len(expected.shape):
            raise InvalidReply(f"array {name!r} has shape {array.shape}, expected {expected.shape}")
        if expected.allow_smaller:
            if any(a > e for a, e in zip(array.shape, expected.shape, strict=True)):
                raise InvalidReply(
                    f"array {name!r} of shape {array.shape} exceeds {expected.shape}"
                )
        elif array.shape != expected.shape:
            raise InvalidReply(f"array {name!r} has shape {array.shape}, expected {expected.shape}")
    if spec.max_bytes is not None and message.nbytes > spec.max_bytes:
        raise InvalidReply(f"reply of {message.nbytes} bytes exceeds the limit of {spec.max_bytes}")
