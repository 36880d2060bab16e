"""From contributions to widths: Aequa's reward allocation (Tastan et al., ICML 2025, Sec. 4.2
and Eq. 3, as reconstructed in docs/methods/aequa.md).

The paper's Eq. 3 could not be read; what is known is its intent: rewards commensurate with
contributions, the top contributor gets the best (full) model, every reward inside the
achievable range ``[a(p_min), a(1)]``, and a continuous accuracy range is assumed. The
reconstruction implemented here, each step a separate function so any can be swapped:

1. ``a(p)`` — accuracy of the width-``p`` sub-network on the server's validation split for
   every ``p`` of a grid, made non-decreasing by a running maximum (a wider network that
   happens to score lower would otherwise make "more contribution" buy "less accuracy");
2. ``ĉ_i`` — contributions normalised to [0, 1] (``c/c_max`` by default, or min-max);
3. ``a*_i = a(p_min) + ĉ_i · (a(1) − a(p_min))`` — the target accuracy;
4. ``p_i`` — the narrowest grid width whose accuracy reaches ``a*_i`` (or the nearest);
   members with ``ĉ_i = 1`` get width 1 whatever the curve's shape.

Every output is monotone in the contribution: a member that contributed more never receives
a narrower model than one that contributed less.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from consortium.models.slimmable import check_width


def width_grid(p_min: float, step: float) -> np.ndarray:
    """``{p_min, p_min + step, …, 1}``: always holds both ends, rounded to 6 decimals."""
    p_min = check_width(p_min)
    if not 0.0 < step <= 1.0:
        raise ValueError(f"step must be in (0, 1], got {step}")
    count = int(np.floor((1.0 - p_min) / step + 1e-9))
    points = np.round(p_min + step * np.arange(count + 1), 6)
    return np.unique(np.concatenate([points[points < 1.0], [1.0]]))


def monotone(accuracies: Sequence[float]) -> np.ndarray:
    """Running maximum: the non-decreasing envelope of a measured accuracy curve."""
    return np.maximum.accumulate(np.asarray(accuracies, float))


def accuracy_curve(
    evaluate_at: Callable[[float], float], widths: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(widths, measured accuracies, monotone accuracies) for ``evaluate_at(p)`` on a grid."""
    grid = np.asarray(sorted(float(check_width(p)) for p in widths))
    raw = np.array([float(evaluate_at(float(p))) for p in grid])
    return grid, raw, monotone(raw)


def normalise(contributions: Mapping[int, float], mode: str = "max") -> dict[int, float]:
    """Contributions mapped to [0, 1]; the top contributor(s) get exactly 1.

    ``minmax`` maps the lowest to 0; ``max`` divides by the largest (negatives clip to 0).
    When every contribution is equal (or none is positive under ``max``) everyone is a top
    contributor and gets 1: there is nothing to tell members apart by.
    """
    if not contributions:
        return {}
    ids = sorted(contributions)
    c = np.array([float(contributions[i]) for i in ids])
    if not np.isfinite(c).all():
        raise ValueError("contributions must be finite")
    hi, lo = float(c.max()), float(c.min())
    if mode == "minmax":
        span = hi - lo
        if span <= 1e-12 * max(abs(hi), abs(lo), 1e-300):
            return dict.fromkeys(ids, 1.0)
        out = (c - lo) / span
    elif mode == "max":
        if hi <= 0:
            return dict.fromkeys(ids, 1.0)
        out = np.clip(c, 0.0, None) / hi
    else:
        raise ValueError(f"unknown normalisation {mode!r}; choose minmax or max")
    out = np.clip(out, 0.0, 1.0)
    out[c == hi] = 1.0
    return {i: float(v) for i, v in zip(ids, out, strict=True)}


def width_for_target(
    target: float, widths: np.ndarray, curve: np.ndarray, rule: str = "first_reaching"
) -> float:
    """Width whose accuracy on the monotone ``curve`` meets ``target``.

    ``first_reaching``: the narrowest width with ``a(p) >= target`` (the widest when none
    does); ``nearest``: the width minimising ``|a(p) − target|`` (the narrowest among ties).
    """
    if rule == "first_reaching":
        hits = np.flatnonzero(curve >= target - 1e-12)
        return float(widths[hits[0]] if hits.size else widths[-1])
    if rule == "nearest":
        gap = np.abs(curve - target)
        return float(widths[int(np.flatnonzero(gap <= gap.min() + 1e-12)[0])])
    raise ValueError(f"unknown rule {rule!r}; choose first_reaching or nearest")


@dataclass(frozen=True)
class Allocation:
    """The result of an allocation, per member and for the curve it used."""

    widths: dict[int, float]
    targets: dict[int, float]
    normalised: dict[int, float]
    grid: tuple[float, ...]
    curve: tuple[float, ...]
    raw_curve: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for a run summary."""
        return {
            "widths": {str(k): v for k, v in sorted(self.widths.items())},
            "target_accuracy": {str(k): v for k, v in sorted(self.targets.items())},
            "normalised_contributions": {str(k): v for k, v in sorted(self.normalised.items())},
            "width_curve": {
                "width": list(self.grid),
                "accuracy": list(self.raw_curve),
                "monotone_accuracy": list(self.curve),
            },
        }


def allocate(
    contributions: Mapping[int, float],
    widths: Sequence[float],
    accuracies: Sequence[float],
    *,
    normalisation: str = "max",
    rule: str = "first_reaching",
) -> Allocation:
    """Widths for members from their contributions and a measured accuracy-vs-width curve.

    Parameters
    ----------
    contributions
        Member id -> contribution (any scale; only the order and the spacing matter).
    widths, accuracies
        The measured curve ``a(p)`` on a width grid (any order; made monotone here).
    normalisation, rule
        See :func:`normalise` and :func:`width_for_target`.
    """
    order = np.argsort(np.asarray(widths, float))
    grid = np.asarray(widths, float)[order]
    raw = np.asarray(accuracies, float)[order]
    if grid.size == 0 or grid.size != raw.size:
        raise ValueError("the accuracy curve needs one accuracy per width, at least one")
    curve = monotone(raw)
    low, high = float(curve[0]), float(curve[-1])
    chat = normalise(contributions, normalisation)
    targets = {i: low + v * (high - low) for i, v in chat.items()}
    out = {}
    for i, v in chat.items():
        out[i] = 1.0 if v >= 1.0 else width_for_target(targets[i], grid, curve, rule)
    return Allocation(
        widths=out,
        targets=targets,
        normalised=chat,
        grid=tuple(float(p) for p in grid),
        curve=tuple(float(a) for a in curve),
        raw_curve=tuple(float(a) for a in raw),
    )
