"""The member side: plain handler functions registered by message kind.

A new capability of a member (explain, evaluate, train a given width) is one more function, not
a new class. The runtime gives each call a context holding the member's data, which never leaves
the member, and its state, which persists across rounds (dual variables, optimiser moments,
reputations kept at the member).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consortium.core.message import Message


@dataclass
class ClientContext:
    """Everything a handler may use besides the message.

    Parameters
    ----------
    client_id
        The member's id (its partition index).
    data
        The member's local data (e.g. a ``ClientData``); bound by the runtime, never sent.
    state
        A dict the member keeps across rounds; mutate it in place.
    round
        The server round this message belongs to (0 for set-up phases).
    seed
        A seed derived from the run seed, the round and the member, for the handler's randomness.
    """

    client_id: int
    data: Any
    state: dict[str, Any] = field(default_factory=dict)
    round: int = 0
    seed: int = 0


Handler = Callable[[Message, ClientContext], Message]


class UnknownMessageKind(KeyError):
    """The member has no handler for a message kind."""


class ClientApp:
    """A registry of handlers, one per message kind.

    Examples
    --------
    >>> app = ClientApp()
    >>> @app.on("train")
    ... def train(msg, ctx):
    ...     return msg.reply(metrics={"num_examples": 0})
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def on(self, kind: str) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of ``kind``."""

        def register(fn: Handler) -> Handler:
            if kind in self._handlers:
                raise ValueError(f"a handler for {kind!r} is already registered")
            self._handlers[kind] = fn
            return fn

        return register

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    def handle(self, message: Message, ctx: ClientContext) -> Message:
        """Dispatch ``message`` to its handler."""
        try:
            handler = self._handlers[message.kind]
        except KeyError:
            raise UnknownMessageKind(
                f"no handler for message kind {message.kind!r} (known: {', '.join(self.kinds)})"
            ) from None
        return handler(message, ctx)
