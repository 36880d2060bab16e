"""Contribution assessment, pluggable: data size, standalone accuracy, CGSV cosine, given values.

Aequa is agnostic to how contributions are measured; the fair-reward
baselines need the same measurements (IAFL's ``p_i`` is a shard size or a standalone
accuracy; every method's IPR needs standalone accuracies), so they live here, once:

* :func:`collect_data_sizes` — members report their number of training samples (``describe``);
* :func:`run_standalone_phase` — every member trains alone from the common initial model (the
  reference's ``train_alone`` message) and reports its accuracy on its own test view; the
  server also scores the returned model on its validation split (the contribution) and test set
  (a simulation-only measurement), then drops it;
* :class:`CosineContribution` — CGSV's signal: the cosine similarity of a member's update with
  the round's aggregate, smoothed by an exponential moving average, computed during training;
* :func:`static_contributions` — picks the value per member for a configured kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consortium.algorithms.fairness.config import FairRewardConfig
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec
from consortium.training import LocalTrainConfig

Scorer = Callable[[Arrays], float]


@dataclass
class StandaloneResult:
    """What members trained alone achieved, by member id.

    Attributes
    ----------
    own
        Accuracy on the member's own test view (the member measures it).
    val
        Accuracy on the server's validation split (empty when the server holds none).
    test
        Accuracy on the server's test set (simulation-only; empty when not measured).
    num_train
        Training samples of each member.
    """

    own: dict[int, float] = field(default_factory=dict)
    val: dict[int, float] = field(default_factory=dict)
    test: dict[int, float] = field(default_factory=dict)
    num_train: dict[int, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {k: dict(v) for k, v in vars(self).items()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> StandaloneResult:
        return cls(**{k: {int(i): float(x) for i, x in v.items()} for k, v in state.items()})


def run_standalone_phase(
    grid: Grid,
    init: Arrays,
    local: LocalTrainConfig,
    rounds: int,
    *,
    val_score: Scorer | None = None,
    test_score: Scorer | None = None,
    chunk_size: int = 32,
    cache: MutableMapping[str, Any] | None = None,
    cache_key: str = "standalone",
) -> StandaloneResult:
    """Every member trains alone for ``rounds × local.epochs`` epochs from ``init``.

    Members are asked in chunks of ``chunk_size`` so the server holds at most that many
    returned models. ``cache`` lets several methods of one experiment share the result: the
    phase is fully determined by the run seed, the data and the settings, so a second method
    would compute exactly the same numbers (its setup then sends no messages).
    """
    if cache is not None and cache_key in cache:
        return StandaloneResult.from_state(cache[cache_key])
    total = local.model_copy(update={"epochs": local.epochs * rounds})
    back = val_score is not None or test_score is not None
    msg = Message("train_alone", arrays=init, config={**total.as_config(), "return_model": back})
    spec = ReplySpec.like(init) if back else ReplySpec({})
    result = StandaloneResult()
    ids = grid.client_ids
    for start in range(0, len(ids), chunk_size):
        chunk = ids[start : start + chunk_size]
        replies = grid.send({c: msg for c in chunk}, expect=spec)
        for cid, reply in replies.items():
            result.num_train[cid] = float(reply.metrics.get("num_train", 0.0))
            if "accuracy" in reply.metrics:
                result.own[cid] = float(reply.metrics["accuracy"])
            if val_score is not None:
                result.val[cid] = float(val_score(reply.arrays))
            if test_score is not None:
                result.test[cid] = float(test_score(reply.arrays))
    if cache is not None:
        cache[cache_key] = result.state_dict()
    return result


def collect_data_sizes(grid: Grid) -> dict[int, float]:
    """Members' training-set sizes, from one ``describe`` message each."""
    replies = grid.send({c: Message("describe") for c in grid.client_ids}, expect=ReplySpec({}))
    return {c: float(r.metrics.get("num_train", 0.0)) for c, r in replies.items()}


def _flat_dot(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]
) -> tuple[float, float, float]:
    """(a·b, |a|², |b|²) over the names of ``a``, with ``b`` cut to the leading corner of each of
    ``a``'s arrays (a width-sliced update is compared on the entries it covers)."""
    dot = na = nb = 0.0
    for name, x in a.items():
        x = np.asarray(x, np.float64).ravel()
        y = np.asarray(b[name])[tuple(slice(0, s) for s in np.shape(a[name]))]
        y = np.asarray(y, np.float64).ravel()
        dot += float(x @ y)
        na += float(x @ x)
        nb += float(y @ y)
    return dot, na, nb


def cosine(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Cosine similarity of two updates over ``a``'s entries (0 when either is zero)."""
    dot, na, nb = _flat_dot(a, b)
    if na <= 0 or nb <= 0:
        return 0.0
    return dot / math.sqrt(na * nb)


class CosineContribution:
    """CGSV's contribution signal (Xu et al., NeurIPS 2021), tracked over the rounds.

    Each round a member's update ``Δ_i`` is compared with the aggregate update ``Δ``:
    ``φ_i = cos(Δ_i, Δ)`` (on the entries ``Δ_i`` covers, for width-sliced updates), and
    ``r_i ← α·r_i + (1 − α)·φ_i``. The value reported is bias-corrected, ``r_i / (1 − α^k_i)``
    with ``k_i`` the rounds member ``i`` took part in, so partial participation is not
    mistaken for a small contribution. Members never seen have no value.
    """

    def __init__(self, alpha: float = 0.95) -> None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha = alpha
        self.ema: dict[int, float] = {}
        self.mass: dict[int, float] = {}

    def observe(
        self, deltas: Mapping[int, Mapping[str, np.ndarray]], aggregate: Mapping[str, np.ndarray]
    ) -> dict[int, float]:
        """Fold one round in; returns this round's cosines by member."""
        phis = {cid: cosine(delta, aggregate) for cid, delta in deltas.items()}
        for cid, phi in phis.items():
            self.ema[cid] = self.alpha * self.ema.get(cid, 0.0) + (1 - self.alpha) * phi
            self.mass[cid] = self.alpha * self.mass.get(cid, 0.0) + (1 - self.alpha)
        return phis

    def values(self) -> dict[int, float]:
        return {c: self.ema[c] / self.mass[c] for c in sorted(self.ema) if self.mass[c] > 0}

    def state_dict(self) -> dict[str, Any]:
        return {"ema": dict(self.ema), "mass": dict(self.mass)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.ema = {int(k): float(v) for k, v in state["ema"].items()}
        self.mass = {int(k): float(v) for k, v in state["mass"].items()}


def given_contributions(values: tuple[float, ...], num_clients: int) -> dict[int, float]:
    """User-given contributions, one per member."""
    if len(values) != num_clients:
        raise ValueError(f"{len(values)} given contributions for {num_clients} members")
    return {i: float(v) for i, v in enumerate(values)}


def static_contributions(
    config: FairRewardConfig,
    num_clients: int,
    *,
    sizes: Mapping[int, float] | None = None,
    standalone: StandaloneResult | None = None,
) -> dict[int, float] | None:
    """Contributions known before training (``None`` for ``cgsv``, which is learned online).

    ``standalone`` uses the validation-split accuracies when the server holds a validation
    split, else the members' own test-view accuracies.
    """
    if config.contribution == "given":
        return given_contributions(tuple(config.contribution_values), num_clients)
    if config.contribution == "data_size":
        if sizes is None:
            raise ValueError("data_size contributions need the members' sizes")
        return dict(sizes)
    if config.contribution == "standalone":
        if standalone is None:
            raise ValueError("standalone contributions need the standalone phase")
        return dict(standalone.val or standalone.own)
    return None


def subtract(new: Mapping[str, np.ndarray], old: Mapping[str, np.ndarray]) -> Arrays:
    """``new − old`` per name, ``old`` cut to ``new``'s leading corner; float arrays only."""
    out: Arrays = {}
    for name, x in new.items():
        if np.asarray(x).dtype.kind != "f":
            continue
        base = np.asarray(old[name])[tuple(slice(0, s) for s in np.shape(x))]
        out[name] = np.asarray(x) - base
    return out
