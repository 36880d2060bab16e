"""Fairness of model rewards: is what a member gets commensurate with what it gave?

Three numbers, the ones the fair-reward literature reports (Aequa, CGSV and IAFL; see
docs/methods/aequa.md):

* **Pearson ρ** between members' contributions and the accuracies of the models they were
  rewarded with (Aequa, CGSV, CFFL). It is undefined when either side has no variance: when
  every contribution is equal (e.g. data sizes on a homogeneous split) or when every member
  got a model of the same accuracy (FedAvg gives everyone the same model). It is then
  returned as ``nan`` rather than a made-up 0 or 1, and reports print it as "—".
* **IPR**, the incentivised participation rate (IAFL): the share of members whose reward is
  at least as accurate as the model they would have trained alone, i.e. who gain by joining.
* the accuracy of the best (full-width / server) model, read from the run summary.

Values are keyed by member id (int or str; ``"3"`` and ``3`` are the same member), and every
function uses only the members present on both sides, so a member that dropped out of the
final evaluation cannot shift the others' values against each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

MemberValues = Mapping[int, float] | Mapping[str, float]


def _by_member(values: MemberValues) -> dict[int, float]:
    out: dict[int, float] = {}
    for k, v in values.items():
        if v is None:
            continue
        value = float(v)
        if math.isfinite(value):
            out[int(k)] = value
    return out


def aligned(a: MemberValues, b: MemberValues) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Members present (with finite values) in both, and their values in member order."""
    da, db = _by_member(a), _by_member(b)
    ids = sorted(set(da) & set(db))
    return ids, np.array([da[i] for i in ids], float), np.array([db[i] for i in ids], float)


def pearson(contributions: MemberValues, rewards: MemberValues) -> float:
    """Pearson correlation of contributions and reward accuracies over the common members.

    Returns ``nan`` when fewer than two members are common or when either side is constant
    (the coefficient divides by a zero standard deviation there and means nothing).
    """
    _, c, a = aligned(contributions, rewards)
    if len(c) < 2:
        return float("nan")
    dc, da = c - c.mean(), a - a.mean()
    # Relative tolerance: contributions like [0.9, 0.9 + 1e-17] are equal for every purpose.
    scale_c = max(float(np.abs(c).max()), 1e-300)
    scale_a = max(float(np.abs(a).max()), 1e-300)
    if np.abs(dc).max() <= 1e-12 * scale_c or np.abs(da).max() <= 1e-12 * scale_a:
        return float("nan")
    return float(np.sum(dc * da) / math.sqrt(float(np.sum(dc * dc)) * float(np.sum(da * da))))


def ipr(rewards: MemberValues, standalone: MemberValues, tolerance: float = 0.0) -> float:
    """Share of members whose reward accuracy is >= their standalone accuracy - ``tolerance``.

    ``nan`` when no member has both numbers.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    _, r, s = aligned(rewards, standalone)
    if len(r) == 0:
        return float("nan")
    return float(np.mean(r >= s - tolerance))


def member_table(
    contributions: MemberValues | None = None,
    rewards: MemberValues | None = None,
    standalone: MemberValues | None = None,
    **extra: MemberValues | None,
) -> list[dict[str, Any]]:
    """One row per member (``member``, ``contribution``, ``reward_accuracy``,
    ``standalone_accuracy``, ``gain`` = reward - standalone, plus any ``extra`` columns such as
    ``width``); a missing value is ``None``."""
    columns: dict[str, dict[int, float]] = {
        "contribution": _by_member(contributions or {}),
        "reward_accuracy": _by_member(rewards or {}),
        "standalone_accuracy": _by_member(standalone or {}),
    }
    for name, values in extra.items():
        columns[name] = _by_member(values or {})
    ids = sorted(set().union(*(set(v) for v in columns.values())))
    rows = []
    for i in ids:
        row: dict[str, Any] = {"member": i}
        row.update({name: values.get(i) for name, values in columns.items()})
        r, s = row["reward_accuracy"], row["standalone_accuracy"]
        row["gain"] = None if r is None or s is None else r - s
        rows.append(row)
    return rows


def fairness_summary(
    contributions: MemberValues,
    rewards: MemberValues,
    standalone: MemberValues | None = None,
    *,
    prefix: str = "",
) -> dict[str, float]:
    """``pearson`` and (when standalone accuracies are given) ``ipr``, keys prefixed."""
    out = {f"{prefix}pearson": pearson(contributions, rewards)}
    if standalone:
        out[f"{prefix}ipr"] = ipr(rewards, standalone)
    return out
