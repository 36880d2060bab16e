"""Aggregation of member updates: weighted, partial and masked means.

All four methods reduce to one rule: every entry of every tensor is averaged over the members
that actually trained it, weighted, and an entry nobody trained keeps its current value. A full
FedAvg update, a FedRA member that sent only its layers, a HeteroFL-style narrower tensor and a
masked unlearning update are all special cases of that rule, so there is one implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from consortium.core.message import Arrays


@dataclass(frozen=True)
class Update:
    """One member's contribution to an aggregate.

    Parameters
    ----------
    arrays
        Named arrays; a name may be missing (not trained) and a tensor may be smaller than the
        reference (it then covers the leading corner, as a width-sliced sub-model does).
    weight
        Relative weight (e.g. the number of local samples).
    masks
        Optional boolean masks per name, shaped like the array: only ``True`` entries count.
    """

    arrays: Mapping[str, np.ndarray]
    weight: float = 1.0
    masks: Mapping[str, np.ndarray] | None = None


def _corner(shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(0, s) for s in shape)


def partial_mean(updates: Sequence[Update], reference: Mapping[str, np.ndarray]) -> Arrays:
    """Average each entry over the updates that cover it; uncovered entries keep ``reference``.

    Accumulates in float64 so the result does not depend on float32 rounding of partial sums,
    then casts back to the reference dtype (integers are rounded).
    """
    for u in updates:
        if u.weight < 0 or not np.isfinite(u.weight):
            raise ValueError(f"update weight must be finite and >= 0, got {u.weight}")
        unknown = set(u.arrays) - set(reference)
        if unknown:
            raise KeyError(f"update holds arrays the reference lacks: {sorted(unknown)[:3]}")
    out: Arrays = {}
    for name, ref in reference.items():
        acc: tuple[np.ndarray, np.ndarray] | None = None  # (weighted sum, weight) per entry
        for u in updates:
            if name not in u.arrays or u.weight == 0:
                continue
            arr = np.asarray(u.arrays[name])
            if arr.ndim != ref.ndim or any(
                a > r for a, r in zip(arr.shape, ref.shape, strict=True)
            ):
                raise ValueError(f"update {name!r} of shape {arr.shape} does not fit {ref.shape}")
            if acc is None:
                acc = (np.zeros(ref.shape, np.float64), np.zeros(ref.shape, np.float64))
            total, count = acc
            region = _corner(arr.shape)
            mask = None if u.masks is None else u.masks.get(name)
            if mask is None:
                total[region] += u.weight * arr
                count[region] += u.weight
            else:
                mask = np.asarray(mask, bool)
                if mask.shape != arr.shape:
                    raise ValueError(f"mask {name!r} of shape {mask.shape} != array {arr.shape}")
                total[region] += np.where(mask, u.weight * arr, 0.0)
                count[region] += u.weight * mask
        if acc is None:
            out[name] = ref.copy()
            continue
        total, count = acc
        covered = count > 0
        mean = np.where(covered, total / np.where(covered, count, 1.0), ref)
        if np.issubdtype(ref.dtype, np.integer):
            mean = np.rint(mean)
        out[name] = mean.astype(ref.dtype, copy=False)
    return out


def weighted_mean(updates: Sequence[Update]) -> Arrays:
    """FedAvg's rule: every update holds every array at full shape; weights need not sum to 1."""
    if not updates:
        raise ValueError("cannot average zero updates")
    first = updates[0].arrays
    for u in updates[1:]:
        if set(u.arrays) != set(first):
            raise ValueError("weighted_mean needs updates with identical array names")
        for k, v in u.arrays.items():
            if v.shape != first[k].shape:
                raise ValueError(
                    f"array {k!r} has shape {v.shape} in one update, {first[k].shape} in another"
                )
    if sum(u.weight for u in updates) <= 0:
        raise ValueError("weights of the updates sum to zero")
    return partial_mean(updates, {k: np.asarray(v) for k, v in first.items()})


def coverage(updates: Sequence[Update], reference: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Fraction of entries of each array that at least one update covered (for logging)."""
    result: dict[str, float] = {}
    for name, ref in reference.items():
        hit = np.zeros(ref.shape, bool)
        for u in updates:
            if name in u.arrays and u.weight > 0:
                region = _corner(u.arrays[name].shape)
                mask = None if u.masks is None else u.masks.get(name)
                hit[region] |= True if mask is None else np.asarray(mask, bool)
        result[name] = float(hit.mean()) if hit.size else 1.0
    return result


def gather_masked(arrays: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> Arrays:
    """Keep only the masked entries (flattened): what a member uploads for a masked update."""
    return {k: np.asarray(arrays[k])[np.asarray(m, bool)] for k, m in masks.items() if k in arrays}


def scatter_masked(
    values: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
) -> Arrays:
    """Inverse of :func:`gather_masked`: put masked entries back into full-shape arrays."""
    out: Arrays = {}
    for k, v in values.items():
        mask = np.asarray(masks[k], bool)
        expected = int(mask.sum())
        if v.shape != (expected,):
            raise ValueError(f"{k!r}: got {v.size} values for {expected} masked entries")
        full = np.array(reference[k], copy=True)
        full[mask] = v
        out[k] = full
    return out
