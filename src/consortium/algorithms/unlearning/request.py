"""What must be forgotten, resolved at the member that holds it.

A request names data by class, member and sample id; only the member can turn that into its
own sample indices, so the server never needs (or sees) the forget set itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Kind = Literal["class", "class_at_client", "client", "samples"]

#: The message array that carries a samples request's ids (never a model weight).
FORGET_IDS = "forget_ids"


@dataclass(frozen=True)
class UnlearningRequest:
    """A right-to-be-forgotten request.

    Attributes
    ----------
    kind
        ``class``: class ``class_id`` everywhere; ``class_at_client``: member ``client_id``'s
        samples of ``class_id``; ``client``: everything member ``client_id`` contributed;
        ``samples``: the given pool sample ids of member ``client_id``.
    class_id, client_id, sample_ids
        As the kind needs them.
    """

    kind: Kind
    class_id: int | None = None
    client_id: int | None = None
    sample_ids: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in ("class", "class_at_client", "client", "samples"):
            raise ValueError(f"unknown unlearning request kind {self.kind!r}")
        if self.kind in ("class", "class_at_client") and self.class_id is None:
            raise ValueError(f"a {self.kind} request needs class_id")
        if self.kind in ("class_at_client", "client", "samples") and self.client_id is None:
            raise ValueError(f"a {self.kind} request needs client_id")
        if self.kind == "samples" and not self.sample_ids:
            raise ValueError("a samples request needs at least one sample id")

    @property
    def tag(self) -> str:
        """Folder name: ``class3``, ``client2-class3``, ``client2`` or ``client2-samples5``."""
        if self.kind == "class":
            return f"class{self.class_id}"
        if self.kind == "class_at_client":
            return f"client{self.client_id}-class{self.class_id}"
        if self.kind == "client":
            return f"client{self.client_id}"
        return f"client{self.client_id}-samples{len(self.sample_ids)}"

    def to_config(self) -> dict[str, Any]:
        """Scalars for a message's config (sample ids travel as an array)."""
        cfg: dict[str, Any] = {"request_kind": self.kind}
        if self.class_id is not None:
            cfg["request_class"] = int(self.class_id)
        if self.client_id is not None:
            cfg["request_client"] = int(self.client_id)
        return cfg

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {FORGET_IDS: np.asarray(self.sample_ids, np.int64)} if self.sample_ids else {}

    @classmethod
    def from_message(
        cls, config: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> UnlearningRequest:
        ids = arrays.get(FORGET_IDS)
        return cls(
            kind=config["request_kind"],  # type: ignore[arg-type]
            class_id=config.get("request_class"),  # type: ignore[arg-type]
            client_id=config.get("request_client"),  # type: ignore[arg-type]
            sample_ids=tuple(int(i) for i in ids) if ids is not None else (),
        )

    def may_hold_forget_data(self, client_id: int) -> bool:
        """Whether member ``client_id`` can hold data this request covers."""
        return self.kind == "class" or self.client_id == client_id

    def split(
        self, client_id: int, indices: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(forget, retain) subsets of a member's ``indices`` into the pool."""
        indices = np.asarray(indices)
        if not self.may_hold_forget_data(client_id):
            return indices[:0], indices
        if self.kind in ("class", "class_at_client"):
            hit = labels[indices] == self.class_id
        elif self.kind == "client":
            hit = np.ones(len(indices), bool)
        else:
            hit = np.isin(indices, np.asarray(self.sample_ids, np.int64))
        return indices[hit], indices[~hit]
