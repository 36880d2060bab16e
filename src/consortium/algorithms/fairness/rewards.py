"""The parts every fair-reward workflow shares: the set-up phase (standalone training, data
sizes) and the fairness summary of the rewards.

Kept apart from the workflows so Aequa, its training-time variant, CGSV and IAFL report the
same numbers under the same keys, computed the same way:

* ``contributions`` — the contribution of each member the rewards are judged against;
* ``reward_test_accuracy`` — each member's reward model on the server's test set, the common
  yardstick of the fair-reward literature (CGSV, IAFL score every model on one test set);
  ``pearson``, ``ipr`` (reward ≥ what the member trained alone, both on that test set: the
  headline IPR, as IAFL's code computes it) and ``reward_accuracy_range`` ([min, max]) use it;
* ``client_accuracy`` / ``mean_client_accuracy`` — the reward on each member's own test view,
  measured by the member; ``pearson_own_view`` and ``ipr_own_view`` use it. Own views can be
  tiny (quantity skew), so these are noisy: secondary numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

import numpy as np

from consortium.algorithms.base.supervised import client_accuracy_summary
from consortium.algorithms.fairness.contribution import (
    StandaloneResult,
    collect_data_sizes,
    run_standalone_phase,
)
from consortium.core.grid import Grid
from consortium.core.message import Arrays
from consortium.metrics.fairness import ipr, member_table, pearson
from consortium.training import LocalTrainConfig

log = logging.getLogger("consortium.fairness")


class Scorer(Protocol):
    """A server-held split that scores a model's arrays (accuracy); ``len`` is its size."""

    def __len__(self) -> int: ...

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> float: ...


def setup_phase(
    grid: Grid,
    init: Arrays,
    local: LocalTrainConfig,
    rounds: int,
    *,
    standalone: bool,
    sizes: bool,
    val: Scorer | None,
    test: Scorer | None,
    chunk_size: int = 32,
    cache: MutableMapping[str, Any] | None = None,
) -> tuple[StandaloneResult | None, dict[int, float] | None]:
    """Standalone accuracies (when asked) and data sizes (when asked), before round 1."""
    result = None
    if standalone:
        result = run_standalone_phase(
            grid,
            init,
            local,
            rounds,
            val_score=None if val is None or len(val) == 0 else val,
            test_score=None if test is None or len(test) == 0 else test,
            chunk_size=chunk_size,
            cache=cache,
        )
    data_sizes = None
    if sizes:
        data_sizes = dict(result.num_train) if result is not None else collect_data_sizes(grid)
    return result, data_sizes


def _str_keys(values: Mapping[int, float]) -> dict[str, float]:
    return {str(k): float(v) for k, v in sorted(values.items())}


def reward_summary(
    contributions: Mapping[int, float],
    reward_test: Mapping[int, float],
    reward_own: Mapping[int, Mapping[str, float]],
    standalone: StandaloneResult | None,
    widths: Mapping[int, float] | None = None,
) -> dict[str, Any]:
    """The fairness part of a run summary (see the module docstring for every key)."""
    own = {c: m["accuracy"] for c, m in reward_own.items() if "accuracy" in m}
    out: dict[str, Any] = {
        "contributions": _str_keys(contributions),
        "reward_test_accuracy": _str_keys(reward_test),
        **client_accuracy_summary(reward_own),
        "pearson": pearson(contributions, reward_test),
        "pearson_own_view": pearson(contributions, own),
    }
    finite = [float(v) for v in reward_test.values() if np.isfinite(v)]
    out["reward_accuracy_range"] = [min(finite), max(finite)] if finite else None
    if widths is not None:
        out["widths"] = _str_keys(widths)
    if standalone is not None:
        out["ipr"] = ipr(reward_test, standalone.test) if standalone.test else None
        out["ipr_own_view"] = ipr(own, standalone.own)
        out["standalone_accuracy"] = _str_keys(standalone.own)
        if standalone.test:
            out["standalone_test_accuracy"] = _str_keys(standalone.test)
        if standalone.val:
            out["standalone_val_accuracy"] = _str_keys(standalone.val)
    out["members"] = member_table(
        contributions,
        reward_test,
        standalone.test if standalone is not None else None,
        reward_own_view=own,
        standalone_own_view=standalone.own if standalone is not None else None,
        width=widths,
    )
    if np.isnan(out["pearson"]):
        log.info("pearson is undefined (constant contributions or constant reward accuracies)")
    return out


def standalone_cache(cache: MutableMapping[str, Any], local: LocalTrainConfig, rounds: int) -> dict:
    """The part of an experiment's shared cache that holds the standalone phase for these
    settings: the phase is fixed by seed, data, model, local training and rounds, so the
    family's methods in one experiment run it once."""
    key = f"fairness.standalone:{local.model_dump_json()}:{rounds}"
    return cache.setdefault(key, {})  # type: ignore[no-any-return]
