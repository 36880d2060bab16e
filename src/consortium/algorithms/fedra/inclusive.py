"""InclusiveFL's momentum knowledge distillation (Liu et al., KDD 2022), on block adapters.

Members are grouped by depth (their capacity L_k; each holds its first L_k blocks). A shallow
group has no blocks L_g .. L_{g'}-1 that the next deeper group g' trains; InclusiveFL lets
their knowledge reach the shallow model through its top block: the shallow group's update of
block L_g - 1 becomes ``(1 - beta)·own update + beta·(mean of the deeper group's last-round
updates of blocks L_g - 1 .. L_{g'} - 1)``. The blocks the mean runs over follow the InclusiveFL
code (from the shallow top block up to the deeper group's top block); the FedRA code's unused
variant averages only the blocks the shallow group lacks. beta = 0.2 in both codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from consortium.core.message import Arrays


def _split(key: str, marker: str) -> tuple[int, str] | None:
    """(block index, rest of the name) of a block array name, ``None`` otherwise."""
    pos = key.find(marker)
    if pos < 0:
        return None
    idx, _, rest = key[pos + len(marker) :].partition(".")
    return int(idx), key[:pos] + marker + "{}." + rest


def group_updates(
    arrays: Mapping[int, Mapping[str, np.ndarray]],
    depth_of: Mapping[int, int],
    reference: Mapping[str, np.ndarray],
    prefix: str,
) -> dict[int, Arrays]:
    """Mean update (sent minus reference) of each depth group's block arrays."""
    marker = prefix + "."
    sums: dict[int, dict[str, list[np.ndarray]]] = {}
    for cid, arr in arrays.items():
        for key, value in arr.items():
            if marker in key:
                diff = np.asarray(value, np.float64) - reference[key]
                sums.setdefault(depth_of[cid], {}).setdefault(key, []).append(diff)
    return {g: {k: np.mean(v, axis=0) for k, v in per.items()} for g, per in sums.items()}


def nudge_top_blocks(
    arrays: Mapping[int, Mapping[str, np.ndarray]],
    depth_of: Mapping[int, int],
    depths: Sequence[int],
    reference: Mapping[str, np.ndarray],
    last: Mapping[int, Mapping[str, np.ndarray]],
    beta: float,
    prefix: str,
) -> dict[int, Arrays]:
    """Members' arrays with each shallow member's top-block update mixed with the deeper
    group's last-round updates; every other array is returned unchanged.

    ``depths`` are all group depths of the federation (its distinct capacities); ``last``
    holds each group's mean update from the last round it trained (:func:`group_updates`).
    """
    marker = prefix + "."
    levels = sorted(set(depths))
    out: dict[int, Arrays] = {}
    for cid, arr in arrays.items():
        g = depth_of[cid]
        new = dict(arr)
        deeper = [d for d in levels if d > g]
        if deeper and deeper[0] in last:
            donor = last[deeper[0]]
            for key, value in arr.items():
                split = _split(key, marker)
                if split is None or split[0] != g - 1:
                    continue
                template = split[1]
                found = [donor.get(template.format(j)) for j in range(g - 1, deeper[0])]
                parts = [p for p in found if p is not None]
                if not parts:
                    continue
                own = np.asarray(value, np.float64) - reference[key]
                mixed = (1 - beta) * own + beta * np.mean(parts, axis=0)
                new[key] = (reference[key] + mixed).astype(value.dtype)
        out[cid] = new
    return out
