"""Federated data where each member holds its own files and reads only those, when asked.

The built-in datasets split one pool that every process can load (the setting of the papers we
reproduce). Real consortia are different: a hospital holds its own records, nobody else has
them, and the server holds at most a test set of its own. :class:`SiteData` is the federated
data of such a consortium: it is given a function that reads *one* member's samples, and calls
it for member ``cid`` only when ``client(cid)`` is asked for, so

* in process (all sites' folders on one machine, for trials) every member is read once;
* on a Flower deployment each SuperNode asks only for its own member, so it reads only its own
  folder; the server reads none (it needs only the test set and the shapes).

A dataset builder returns one (see ``docs/bring-your-own.md`` for a whole example)::

    def build(cfg, options, seed):
        root = Path(cfg.path)
        return SiteData(
            "hospitals", cfg.num_clients, lambda cid: read_csv(root / f"site-{cid}"),
            input_shape=(options.features,), num_classes=options.classes,
            test=read_csv(root / "server") if (root / "server").is_dir() else None,
            client_test_fraction=cfg.client_test_fraction, seed=seed,
        )
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from rich.table import Table

from consortium.data.federated import ClientData, _check_fraction, _split_client

MemberReader = Callable[[int], tuple[Any, Any]]


class SiteData:
    """Federated data whose members' samples are read per member, on demand.

    Parameters
    ----------
    name
        The dataset's name (tables and run folders).
    num_clients
        How many members the consortium has.
    read_member
        ``read_member(cid) -> (x, y)``: member ``cid``'s samples from its own storage; raise
        :class:`~consortium.data.DatasetNotFoundError` (a ``FileNotFoundError``) when this
        machine does not hold them.
    input_shape, num_classes
        What every sample looks like, known without reading a member (the server builds
        the model from them).
    test
        The server's own test set ``(x, y)``, if it has one (global test accuracy).
    client_test_fraction
        Share of each member's samples kept as its test view (seeded per member, so every
        machine splits a member's samples the same way).
    seed
        The run seed.
    """

    scheme = "sites"

    def __init__(
        self,
        name: str,
        num_clients: int,
        read_member: MemberReader,
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        test: tuple[Any, Any] | None = None,
        client_test_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        if num_clients < 1:
            raise ValueError(f"{name}: num_clients must be >= 1, got {num_clients}")
        _check_fraction("client_test_fraction", client_test_fraction)
        self.name = name
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(v) for v in input_shape)
        self._num_clients = int(num_clients)
        self._read = read_member
        self._fraction = client_test_fraction
        self._seed = seed
        self._members: dict[int, ClientData] = {}
        self.test_x, self.test_y = self._checked("the server's test set", test)
        self.val_x, self.val_y = self.test_x[:0], self.test_y[:0]

    @property
    def num_clients(self) -> int:
        return self._num_clients

    def _checked(self, what: str, xy: tuple[Any, Any] | None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` as float32 / int64 arrays of the declared shape and classes."""
        if xy is None:
            return np.zeros((0, *self.input_shape), np.float32), np.zeros(0, np.int64)
        x = np.asarray(xy[0], dtype=np.float32)
        y = np.asarray(xy[1])
        if x.shape[1:] != self.input_shape:
            raise ValueError(
                f"{self.name}: {what} has samples of shape {x.shape[1:]}, "
                f"expected {self.input_shape}"
            )
        if len(x) != len(y):
            raise ValueError(f"{self.name}: {what} has {len(x)} samples but {len(y)} labels")
        if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
            raise ValueError(f"{self.name}: {what} has labels that are not class ids 0, 1, ...")
        if len(y) and y.max() >= self.num_classes:
            raise ValueError(
                f"{self.name}: {what} has label {int(y.max())}, but num_classes is "
                f"{self.num_classes}"
            )
        return x, y.astype(np.int64)

    def client(self, cid: int) -> ClientData:
        """Member ``cid``'s data, read from its own storage the first time it is asked for."""
        if not 0 <= cid < self.num_clients:
            raise IndexError(
                f"no member {cid}: this federation has members 0..{self.num_clients - 1}"
            )
        if cid not in self._members:
            x, y = self._checked(f"member {cid}'s data", self._read(cid))
            if len(y) == 0:
                raise ValueError(f"{self.name}: member {cid} holds no samples")
            rng = np.random.default_rng([self._seed, 2, cid])
            train, test = _split_client(np.arange(len(y)), self._fraction, rng)
            self._members[cid] = ClientData(cid, x, y, train, test, self.num_classes)
        return self._members[cid]

    def pooled_train_indices(self) -> np.ndarray:
        raise ValueError(
            f"{self.name}: members keep their own files, so there is no pooled data for "
            "centralised training"
        )

    def report_table(self) -> Table:
        """Per-member train/test sizes of the members this machine holds."""
        table = Table(
            title=f"{self.name}: {self.num_clients} members, each reading its own files; "
            f"server test {len(self.test_y)}"
        )
        for column in ("member", "train", "test", "classes"):
            table.add_column(column, justify="right")
        for cid in range(self.num_clients):
            try:
                member = self.client(cid)
            except FileNotFoundError:
                table.add_row(str(cid), "—", "—", "not on this machine")
                continue
            classes = len(np.unique(member.y[member.train_indices]))
            table.add_row(str(cid), str(member.num_train), str(member.num_test), str(classes))
        return table
