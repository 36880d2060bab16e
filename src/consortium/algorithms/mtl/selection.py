"""Choosing λ by validation: fit on part of every task's training data, score on the rest.

The test sets are never looked at. Every method gets its λ from the same grid and the same
validation split, so the comparison is between methods, not between tuning efforts. It runs
the centralised solvers on the pooled training data (a simulation-time convenience: DMTRL
optimises the same objective as centralised MTRL, so it gets the λ2 and the Ω floor that
MTRL validated; the floor is a modelling choice like λ2, so the two are chosen together).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from consortium.algorithms.mtl.config import DEFAULT_GRID, FLOOR_GRID
from consortium.algorithms.mtl.objective import loss_values
from consortium.algorithms.mtl.solvers import fit_global, fit_mtrl, fit_single_task
from consortium.data.multitask import MultiTaskData

VALIDATION_GAP = 1e-6  # hinge duals of validation fits: ranking λ needs no more precision
Fit = Callable[[MultiTaskData, float], np.ndarray]


@dataclass(frozen=True)
class LambdaChoice:
    """The chosen λ and the validation score of every candidate (lower is better)."""

    best: float
    scores: dict[float, float]


@dataclass(frozen=True)
class MTRLChoice:
    """The chosen (λ2, Ω floor) pair and the validation score of every pair (lower is better)."""

    best: tuple[float, float]
    scores: dict[tuple[float, float], float]


def validation_score(val: MultiTaskData, w: np.ndarray) -> float:
    """Mean over tasks of the held-out MSE (regression) or of error rate plus a
    thousandth of the mean hinge loss (classification: the hinge term breaks ties between
    λ's with equal error, which are common on small validation sets)."""
    scores = []
    for i, t in enumerate(val.tasks):
        if t.num_test == 0:
            continue
        z = t.x_test @ w[:, i]
        if t.kind == "regression":
            scores.append(float(np.mean((z - t.y_test) ** 2)))
        else:
            error = float(np.mean(np.where(z >= 0, 1.0, -1.0) != t.y_test))
            scores.append(error + 1e-3 * float(np.mean(loss_values("hinge", t.y_test, z))))
    return float(np.mean(scores))


def _check_grid(grid: Sequence[float], what: str) -> None:
    if not grid:
        raise ValueError(f"the {what} grid is empty")
    if any(not v > 0 for v in grid):
        raise ValueError(f"every {what} of the grid must be > 0, got {list(grid)}")


def select_lambda(
    data: MultiTaskData,
    fit: Fit,
    grid: Sequence[float] = DEFAULT_GRID,
    fraction: float = 0.25,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> LambdaChoice:
    """The λ of ``grid`` whose fit on the training part scores best on the validation part.

    ``fit(train_data, lam)`` returns the ``d × m`` task models; ``say`` hears of each fit (on
    many tasks the selection takes minutes).
    """
    _check_grid(grid, "λ")
    val = data.validation_split(fraction, seed)
    scores: dict[float, float] = {}
    start = time.perf_counter()
    for i, lam in enumerate(grid, 1):
        if say is not None:
            took = time.perf_counter() - start
            say(f"choosing λ by validation: λ = {lam:g} ({i} of {len(grid)}, {took:.0f} s so far)")
        scores[float(lam)] = validation_score(val, fit(val, float(lam)))
    best = min(scores, key=lambda lam: (scores[lam], -lam))  # ties: the larger λ
    return LambdaChoice(best, scores)


def select_mtrl(
    data: MultiTaskData,
    fit: Callable[[MultiTaskData, float, float], np.ndarray],
    lambdas: Sequence[float] = DEFAULT_GRID,
    floors: Sequence[float] = FLOOR_GRID,
    fraction: float = 0.25,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> MTRLChoice:
    """The (λ2, floor) pair whose MTRL fit on the training part scores best on the validation
    part; ``fit(train_data, λ2, floor)`` returns the task models. Ties go to the larger λ2,
    then the larger floor (the simpler model). ``say`` hears of each fit."""
    _check_grid(lambdas, "λ")
    _check_grid(floors, "floor")
    val = data.validation_split(fraction, seed)
    pairs = [(float(lam), float(fl)) for lam in lambdas for fl in floors]
    scores: dict[tuple[float, float], float] = {}
    start = time.perf_counter()
    for i, (lam, fl) in enumerate(pairs, 1):
        if say is not None:
            took = time.perf_counter() - start
            say(
                f"choosing λ by validation: λ = {lam:g}, Ω floor {fl:g} "
                f"({i} of {len(pairs)}, {took:.0f} s so far)"
            )
        scores[(lam, fl)] = validation_score(val, fit(val, lam, fl))
    best = min(scores, key=lambda k: (scores[k], -k[0], -k[1]))
    return MTRLChoice(best, scores)


def mtrl_fit(
    loss: str, lambda1: float, tol: float = 1e-5, max_outer: int = 300
) -> Callable[[MultiTaskData, float, float], np.ndarray]:
    """Fit of centralised MTRL for :func:`select_mtrl`: ``fit(data, λ2, floor)``.

    Validation only has to rank the candidates, so the alternation stops at a relative joint
    duality gap of ``tol`` (or ``max_outer`` Ω-steps): the validation scores of neighbouring
    candidates differ by far more than such a gap moves them.
    """

    def fit(d: MultiTaskData, lam: float, floor: float) -> np.ndarray:
        sets = d.train_sets()
        return fit_mtrl(
            sets,
            loss,
            lambda1,
            lam,
            floor,
            tol=1e-8,
            max_outer=max_outer,
            gap_tol=VALIDATION_GAP,
            stage_tol=tol,
            joint_tol=tol,
        ).w

    return fit


def single_task_fit(loss: str) -> Fit:
    """Fit of single-task learning with one λ for every task."""

    def fit(d: MultiTaskData, lam: float) -> np.ndarray:
        models = [fit_single_task(x, y, loss, lam, VALIDATION_GAP) for x, y in d.train_sets()]
        return np.stack(models, axis=1)

    return fit


def global_fit(loss: str) -> Fit:
    """Fit of the global model (the same ``w`` for every task)."""

    def fit(d: MultiTaskData, lam: float) -> np.ndarray:
        w = fit_global(d.train_sets(), loss, lam, VALIDATION_GAP)
        return np.repeat(w[:, None], d.num_tasks, axis=1)

    return fit
