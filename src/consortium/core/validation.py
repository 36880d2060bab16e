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


#: Reply metrics that count samples. Workflows weight members by them (FedAvg's
#: ``num_examples``), so :class:`~consortium.core.grid.Grid` checks them centrally: finite,
#: at least 0, at most :data:`MAX_COUNT`, and capped at the member's declared data size.
SAMPLE_COUNTS = ("num_examples", "num_forget", "num_train", "num_test")

#: The largest sample count a reply may report (2**53, the largest integer a float64 holds
#: exactly): with weights this small, a weighted mean of finite float32 arrays stays finite.
MAX_COUNT = float(2**53)

_CONFIG_TYPES = (bool, int, float, str)


def _name(key: object, what: str) -> str:
    if type(key) is not str:
        raise InvalidReply(f"{what} name {key!r} is a {type(key).__name__}, not a string")
    return key


def _number(value: object) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else ``None``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def plain_metrics(message: Message) -> dict[str, float]:
    """A checked reply's metrics as plain floats (what the server keeps of them)."""
    return {k: float(v) for k, v in message.metrics.items()}


def check_message(message: object, kind: str, max_bytes: int | None = None) -> None:
    """Checks every reply gets, whatever the workflow expects: type, kind, structure,
    finiteness, sample counts, size.

    Only a plain :class:`Message` of plain parts passes: arrays are exactly ``numpy.ndarray``
    (no masked arrays, matrices or other subclasses, whose methods could hide values from
    these checks) of a numeric dtype; config values are ``bool``, ``int``, finite ``float`` or
    ``str``; metrics are finite numbers; sample counts (:data:`SAMPLE_COUNTS`) lie in
    ``[0, MAX_COUNT]``; names are strings. The size limit counts config strings in full.
    """
    if type(message) is not Message:
        raise InvalidReply(f"reply is a {type(message).__name__}, not a Message")
    if type(message.kind) is not str or message.kind != kind:
        raise InvalidReply(f"reply kind {message.kind!r} does not answer {kind!r}")
    for part in ("arrays", "config", "metrics"):
        if type(getattr(message, part)) is not dict:
            raise InvalidReply(f"reply {part} is a {type(getattr(message, part)).__name__}")
    for key, value in message.metrics.items():
        name = _name(key, "metric")
        number = _number(value)
        if number is None or not math.isfinite(number):
            raise InvalidReply(f"metric {name!r} is not a finite number: {value!r}")
        if name in SAMPLE_COUNTS and not 0 <= number <= MAX_COUNT:
            raise InvalidReply(f"metric {name!r} = {number!r} is not a sample count")
    for key, setting in message.config.items():
        name = _name(key, "config")
        if type(setting) not in _CONFIG_TYPES:
            raise InvalidReply(f"config {name!r} is a {type(setting).__name__}, not a scalar")
        if isinstance(setting, float) and not math.isfinite(setting):
            raise InvalidReply(f"config {name!r} is not finite: {setting!r}")
    for key, array in message.arrays.items():
        name = _name(key, "array")
        if type(array) is not np.ndarray:
            raise InvalidReply(f"array {name!r} is a {type(array).__name__}, not a numpy array")
        if array.dtype.kind not in "biuf" or array.dtype.fields is not None:
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
