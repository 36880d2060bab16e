"""Options objects: every setting declared once, validated once, with one-line errors.

Every group of settings in consortium (local training, a method's options, the ``[data]`` table,
a dataset's own options) is an :class:`Options` subclass. The same class validates a TOML table
and is what Python users construct, so a field, its default, its range and its help text exist in
exactly one place. Options are strict: a bool is not an int, a float is not an int, NaN and
infinity are refused, and an unknown key is an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line and names the setting."""


class Options(BaseModel):
    """Base of every options class: frozen, strict, finite, no unknown keys."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False, validate_default=True
    )

    @model_validator(mode="before")
    @classmethod
    def _tuples_as_lists(cls, data: Any) -> Any:
        """Python users pass tuples where TOML has lists; strict mode would refuse them."""
        if isinstance(data, Mapping):
            return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
        return data


M = TypeVar("M", bound=BaseModel)


def one_line(err: ValidationError, where: str = "") -> str:
    """The first problem of a validation error as ``where.key: message (and N more)``."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    # Union members show up as extra path parts ("c.int"); they say nothing to a user.
    loc = [p for p in loc if p not in ("int", "float", "str", "bool", "list[float]", "list[int]")]
    path = ".".join(p for p in (where, *loc) if p)
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    more = len(err.errors()) - 1
    extra = f" (and {more} more)" if more > 0 else ""
    if not path:  # a whole-model check: its message names what it checked
        return f"{msg}{extra}" if ":" in msg else f"config: {msg}{extra}"
    return f"{path}: {msg}{extra}"


def validate(cls: type[M], raw: Mapping[str, Any] | BaseModel | None, where: str = "") -> M:
    """``cls`` from a table (or an instance); a bad value raises :class:`ConfigError`."""
    if isinstance(raw, cls):
        return raw
    if isinstance(raw, BaseModel):
        raw = raw.model_dump()
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a table of options")
    try:
        return cls.model_validate(dict(raw or {}))
    except ValidationError as err:
        raise ConfigError(one_line(err, where)) from None


def _type_name(annotation: Any) -> str:
    """``int``, ``float | None``, ``"sgd" | "adam"``: what a user may write."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def describe(cls: type[BaseModel], skip: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """Name, type, default and help text of every field (``consortium methods NAME``)."""
    rows = []
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        if field.is_required():
            default: Any = "(required)"
        elif field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        else:
            default = field.default
        if isinstance(default, BaseModel):
            default = default.model_dump()
        kind = _type_name(field.annotation)
        rows.append(
            {"name": name, "type": kind, "default": default, "help": field.description or ""}
        )
    return rows
