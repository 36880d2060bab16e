"""Aggregation of member updates: weighted, partial and masked means, robust rules, DP.

All four methods reduce to one rule: every entry of every tensor is averaged over the members
that actually trained it, weighted, and an entry nobody trained keeps its current value. A full
FedAvg update, a FedRA member that sent only its layers, a HeteroFL-style narrower tensor and a
masked unlearning update are all special cases of that rule, so there is one implementation.

The robust rules (:func:`robust_mean`: coordinate-wise median, trimmed mean, norm clipping,
Krum / Multi-Krum) and DP-FedAvg's noisy clipped mean (:func:`noisy_clipped_mean`) keep that
notion of coverage: an entry is combined over the members that cover it, so FedRA's per-block
average and a masked update can use them as they are.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
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
    _check_updates(updates, reference)
    out: Arrays = {}
    for name, ref in reference.items():
        acc: tuple[np.ndarray, np.ndarray] | None = None  # (weighted sum, weight) per entry
        for u in updates:
            part = _part(u, name, ref)
            if part is None:
                continue
            if acc is None:
                acc = (np.zeros(ref.shape, np.float64), np.zeros(ref.shape, np.float64))
            total, count = acc
            region, arr, mask = part
            if mask is None:
                total[region] += u.weight * arr
                count[region] += u.weight
            else:
                total[region] += np.where(mask, u.weight * arr, 0.0)
                count[region] += u.weight * mask
        if acc is None:
            out[name] = ref.copy()
            continue
        total, count = acc
        covered = count > 0
        mean = np.where(covered, total / np.where(covered, count, 1.0), ref)
        out[name] = _cast(mean, ref)
    return out


def _check_updates(updates: Sequence[Update], reference: Mapping[str, np.ndarray]) -> None:
    for u in updates:
        if u.weight < 0 or not np.isfinite(u.weight):
            raise ValueError(f"update weight must be finite and >= 0, got {u.weight}")
        unknown = set(u.arrays) - set(reference)
        if unknown:
            raise KeyError(f"update holds arrays the reference lacks: {sorted(unknown)[:3]}")


def _part(
    u: Update, name: str, ref: np.ndarray
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray | None] | None:
    """(region of the reference, values, mask or None) that ``u`` covers of array ``name``;
    ``None`` when it covers none of it (the array is missing or the weight is zero)."""
    if name not in u.arrays or u.weight == 0:
        return None
    arr = np.asarray(u.arrays[name])
    if arr.ndim != ref.ndim or any(a > r for a, r in zip(arr.shape, ref.shape, strict=True)):
        raise ValueError(f"update {name!r} of shape {arr.shape} does not fit {ref.shape}")
    mask = None if u.masks is None else u.masks.get(name)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != arr.shape:
            raise ValueError(f"mask {name!r} of shape {mask.shape} != array {arr.shape}")
    return _corner(arr.shape), arr, mask


def _cast(values: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Float64 results back to the reference's dtype (integer buffers are rounded)."""
    if np.issubdtype(ref.dtype, np.integer):
        values = np.rint(values)
    return values.astype(ref.dtype, copy=False)


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


# --- robust rules --------------------------------------------------------------------------

#: The rules :func:`robust_mean` knows; ``mean`` is :func:`partial_mean` itself.
RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum")


def _stack(updates: Sequence[Update], name: str, ref: np.ndarray) -> np.ndarray:
    """Values of array ``name`` per update, shape ``(len(updates), *ref.shape)``, NaN where an
    update does not cover an entry (missing name, smaller tensor, mask, zero weight)."""
    stack = np.full((len(updates), *ref.shape), np.nan)
    for i, u in enumerate(updates):
        part = _part(u, name, ref)
        if part is None:
            continue
        region, arr, mask = part
        stack[i][region] = arr if mask is None else np.where(mask, arr, np.nan)
    return stack


def _per_entry(
    updates: Sequence[Update],
    reference: Mapping[str, np.ndarray],
    combine: Callable[[np.ndarray], np.ndarray],
) -> Arrays:
    """Apply ``combine`` (a NaN-aware reduction over axis 0) to every array; entries nobody
    covers keep the reference."""
    _check_updates(updates, reference)
    out: Arrays = {}
    for name, ref in reference.items():
        stack = _stack(updates, name, ref)
        covered = ~np.isnan(stack).all(axis=0)
        if not covered.any():
            out[name] = ref.copy()
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN entries: handled below
            values = combine(stack)
        out[name] = _cast(np.where(covered, values, ref), ref)
    return out


def coordinate_median(updates: Sequence[Update], reference: Mapping[str, np.ndarray]) -> Arrays:
    """Each entry's median over the updates that cover it (Yin et al., ICML 2018).

    Weights only decide who takes part (a zero weight leaves an update out): a median that
    weighs by sample counts would hand the entry to whoever claims the most samples.
    """
    return _per_entry(updates, reference, lambda s: np.nanmedian(s, axis=0))


def trimmed_mean(
    updates: Sequence[Update], reference: Mapping[str, np.ndarray], fraction: float
) -> Arrays:
    """Each entry's mean over the updates that cover it, after dropping the ``⌊fraction·k⌋``
    smallest and largest of its ``k`` values (Yin et al., ICML 2018); unweighted, like
    :func:`coordinate_median`."""
    if not 0 <= fraction < 0.5:
        raise ValueError(f"trim fraction must be in [0, 0.5), got {fraction}")

    def combine(stack: np.ndarray) -> np.ndarray:
        ordered = np.sort(stack, axis=0)  # NaN (not covered) sort last
        k = (~np.isnan(stack)).sum(axis=0)
        cut = np.floor(fraction * k)
        pos = np.arange(len(stack)).reshape((-1,) + (1,) * (stack.ndim - 1))
        keep = (pos >= cut) & (pos < k - cut)
        return np.where(keep, ordered, 0.0).sum(axis=0) / np.maximum(k - 2 * cut, 1)

    return _per_entry(updates, reference, combine)


def _deltas(updates: Sequence[Update], reference: Mapping[str, np.ndarray]) -> list[Arrays]:
    """Each update's change of every float array, full-shaped, zero where it covers nothing
    (what it proposes for an entry it did not train is: leave it)."""
    _check_updates(updates, reference)
    out: list[Arrays] = []
    for u in updates:
        delta: Arrays = {}
        for name, ref in reference.items():
            if ref.dtype.kind != "f":
                continue
            d = np.zeros(ref.shape, np.float64)
            part = _part(u, name, ref)
            if part is not None:
                region, arr, mask = part
                change = arr - ref[region]
                d[region] = change if mask is None else np.where(mask, change, 0.0)
            delta[name] = d
        out.append(delta)
    return out


def update_norms(updates: Sequence[Update], reference: Mapping[str, np.ndarray]) -> list[float]:
    """L2 norm of each update's change of the float arrays it covers."""
    return [
        float(np.sqrt(sum(np.sum(np.square(d)) for d in delta.values())))
        for delta in _deltas(updates, reference)
    ]


def clip_updates(
    updates: Sequence[Update],
    reference: Mapping[str, np.ndarray],
    max_norm: float | str,
) -> list[Update]:
    """Updates whose change of the float arrays is scaled down to L2 norm ``max_norm``.

    ``max_norm="median"`` takes the median norm of this round's updates (zero weights left
    out): no scale to tune, and a minority of members cannot move the bound. Coverage, masks,
    weights and integer arrays are kept as they were.
    """
    norms = update_norms(updates, reference)
    if max_norm == "median":
        counted = [n for n, u in zip(norms, updates, strict=True) if u.weight > 0]
        bound = float(np.median(counted)) if counted else 0.0
    elif isinstance(max_norm, str):
        raise ValueError(f"max_norm must be a number or 'median', got {max_norm!r}")
    else:
        bound = float(max_norm)
    if not bound >= 0 or not np.isfinite(bound):
        raise ValueError(f"max_norm must be finite and >= 0, got {max_norm}")
    out: list[Update] = []
    for u, norm in zip(updates, norms, strict=True):
        if norm <= bound:
            out.append(u)
            continue
        scale = bound / norm
        arrays = dict(u.arrays)
        for name, arr in u.arrays.items():
            ref = reference[name]
            if ref.dtype.kind == "f":
                base = ref[_corner(np.shape(arr))]
                arrays[name] = base + scale * (np.asarray(arr, np.float64) - base)
        out.append(Update(arrays, u.weight, u.masks))
    return out


def krum_select(
    updates: Sequence[Update],
    reference: Mapping[str, np.ndarray],
    byzantine: int,
    keep: int = 1,
) -> list[int]:
    """Indices of the ``keep`` updates with the lowest Krum scores (Blanchard et al., NeurIPS
    2017): an update's score is the sum of squared distances to its ``n - byzantine - 2``
    nearest others (at least one). ``keep=1`` is Krum, more is Multi-Krum. Updates with zero
    weight are never selected."""
    if byzantine < 0 or keep < 1:
        raise ValueError(f"need byzantine >= 0 and keep >= 1, got {byzantine} and {keep}")
    live = [i for i, u in enumerate(updates) if u.weight > 0]
    if len(live) <= 1:
        return live
    deltas = _deltas([updates[i] for i in live], reference)
    flat = np.stack(
        [np.concatenate([d.ravel() for d in delta.values()] or [np.zeros(0)]) for delta in deltas]
    )
    sq = np.einsum("ij,ij->i", flat, flat)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    closest = max(1, len(live) - byzantine - 2)
    scores = np.sort(dist, axis=1)[:, :closest].sum(axis=1)
    order = np.argsort(scores, kind="stable")[: min(keep, len(live))]
    return [live[i] for i in sorted(order)]


def robust_mean(
    updates: Sequence[Update],
    reference: Mapping[str, np.ndarray],
    rule: str = "mean",
    *,
    trim_fraction: float = 0.2,
    byzantine: int = 0,
    keep: int | None = None,
    clip_norm: float | str | None = None,
) -> Arrays:
    """The new arrays from this round's updates under a robust rule.

    Parameters
    ----------
    updates, reference
        As for :func:`partial_mean` (each entry is combined over the updates that cover it;
        entries nobody covers keep the reference).
    rule
        ``mean`` (:func:`partial_mean`, weighted), ``median`` (:func:`coordinate_median`),
        ``trimmed_mean`` (:func:`trimmed_mean` with ``trim_fraction``), ``krum`` (the one
        update :func:`krum_select` picks) or ``multi_krum`` (the weighted mean of the ``keep``
        it picks; default ``n - byzantine``).
    clip_norm
        First scale every update's change down to this L2 norm (or ``"median"``: the round's
        median norm; see :func:`clip_updates`); ``None`` leaves them as they are.
    """
    if clip_norm is not None:
        updates = clip_updates(updates, reference, clip_norm)
    if rule == "mean":
        return partial_mean(updates, reference)
    if rule == "median":
        return coordinate_median(updates, reference)
    if rule == "trimmed_mean":
        return trimmed_mean(updates, reference, trim_fraction)
    if rule in ("krum", "multi_krum"):
        live = sum(u.weight > 0 for u in updates)
        count = 1 if rule == "krum" else (keep or max(1, live - byzantine))
        chosen = krum_select(updates, reference, byzantine, count)
        return partial_mean([updates[i] for i in chosen], reference)
    raise ValueError(f"unknown aggregation rule {rule!r}; known: {', '.join(RULES)}")


def noisy_clipped_mean(
    updates: Sequence[Update],
    reference: Mapping[str, np.ndarray],
    clip_norm: float,
    noise_multiplier: float,
    denominator: float,
    rng: np.random.Generator,
) -> Arrays:
    """DP-FedAvg's server step (McMahan, Ramage, Talwar, Zhang, ICLR 2018): the reference plus
    ``(Σ clip(Δ_i) + N(0, (noise_multiplier · clip_norm)²)) / denominator``.

    Every update counts once (weights only decide who takes part: the bound on one member's
    influence is what the privacy analysis needs), and ``denominator`` is fixed in advance
    (the expected number of members per round), so the sum's sensitivity is ``clip_norm``.
    Every float entry gets noise, covered or not; integer arrays keep the reference.
    """
    if not denominator > 0:
        raise ValueError(f"denominator must be > 0, got {denominator}")
    if not noise_multiplier >= 0 or not clip_norm > 0:
        raise ValueError(
            f"need noise_multiplier >= 0 and clip_norm > 0, got {noise_multiplier}, {clip_norm}"
        )
    live = [u for u in updates if u.weight > 0]
    deltas = _deltas(clip_updates(live, reference, clip_norm), reference)
    out: Arrays = {}
    for name, ref in reference.items():
        if ref.dtype.kind != "f":
            out[name] = ref.copy()
            continue
        total = sum((d[name] for d in deltas), np.zeros(ref.shape, np.float64))
        noise = rng.normal(0.0, noise_multiplier * clip_norm, ref.shape)
        out[name] = _cast(ref + (total + noise) / denominator, ref)
    return out
