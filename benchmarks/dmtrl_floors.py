"""The Ω floor as a modelling choice: validation score, rounds, time and test RMSE per floor.

For each dataset it validates (λ2, floor) together exactly as ``dmtrl`` / ``mtrl_centralised``
do when both are unset (``select_mtrl``: 25% of each task's training samples held out, λ grid
x floor grid), then, per floor with that floor's best λ2, fits centralised MTRL and runs DMTRL
on the full training data and prints one Markdown row: validation MSE, centralised Ω-steps /
CPU time / joint gap / mean test RMSE, DMTRL rounds to its stopping rule (or the budget) /
Ω-steps / CPU time / joint gap / mean test RMSE / relative objective difference to centralised.
The floor validation picks is marked. Test sets are only used for the RMSE columns.

    python benchmarks/dmtrl_floors.py --data synthetic
    python benchmarks/dmtrl_floors.py --data exam --rounds 3000
    python benchmarks/dmtrl_floors.py --data hsb82 --no-distributed
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from dmtrl_local_steps import load  # the same datasets as the H benchmark

from consortium.algorithms.mtl import DMTRL, DMTRLConfig, fit_mtrl, mtl_client_app, mtrl_objective
from consortium.algorithms.mtl.config import DEFAULT_GRID, FLOOR_GRID, MTRLConfig
from consortium.algorithms.mtl.selection import mtrl_fit, select_mtrl
from consortium.algorithms.mtl.solvers import alternation
from consortium.core import run_workflow
from consortium.data.multitask import MultiTaskData
from consortium.runtime import LocalRuntime


def mean_test_rmse(data: MultiTaskData, w: np.ndarray) -> float:
    """Mean over tasks of the test RMSE in the data's own units (as the run summaries)."""
    errs = []
    for i, t in enumerate(data.tasks):
        pred, truth = t.to_original(t.x_test @ w[:, i]), t.to_original(t.y_test)
        errs.append(float(np.sqrt(np.mean((pred - truth) ** 2))))
    return float(np.mean(errs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="synthetic", choices=("synthetic", "hsb82", "exam"))
    p.add_argument("--floors", default=",".join(f"{f:g}" for f in FLOOR_GRID))
    p.add_argument("--rounds", type=int, default=3000, help="DMTRL's round budget")
    p.add_argument("--local-passes", type=float, default=5.0, help="DMTRL's local_passes")
    p.add_argument("--max-outer", type=int, default=5000, help="centralised MTRL's Ω-step cap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-distributed", action="store_true", help="centralised MTRL only")
    args = p.parse_args()
    logging.disable(logging.WARNING)

    data = load(args.data, args.seed)
    sets = data.train_sets()
    floors = [float(f) for f in args.floors.split(",")]
    t0 = time.process_time()
    choice = select_mtrl(data, mtrl_fit("squared", 0.0), DEFAULT_GRID, floors, 0.25, args.seed)
    print(
        f"{data.name}: {data.num_tasks} tasks, d = {data.dim}; validation of "
        f"{len(DEFAULT_GRID)} λ2 x {len(floors)} floors: {time.process_time() - t0:.1f} s CPU; "
        f"chosen λ2 = {choice.best[0]:g}, floor = {choice.best[1]:g}; DMTRL budget "
        f"{args.rounds} rounds, local_passes = {args.local_passes:g}\n"
    )
    print(
        "| floor | λ2 (best for floor) | val. MSE | MTRL Ω-steps | MTRL CPU s | MTRL joint gap "
        "| MTRL test RMSE | DMTRL rounds | DMTRL Ω-steps | DMTRL CPU s | DMTRL joint gap "
        "| DMTRL test RMSE | DMTRL rel. obj. diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    defaults = MTRLConfig()
    for floor in floors:
        lam2 = min(DEFAULT_GRID, key=lambda lam: (choice.scores[(lam, floor)], -lam))
        t0 = time.process_time()
        ref = fit_mtrl(
            sets,
            "squared",
            0.0,
            lam2,
            floor,
            tol=1e-10,
            max_outer=args.max_outer,
            **alternation(defaults),
        )
        t_ref = time.process_time() - t0
        mark = " (chosen)" if (lam2, floor) == choice.best else ""
        row = (
            f"| {floor:g}{mark} | {lam2:g} | {choice.scores[(lam2, floor)]:.4f} "
            f"| {ref.outer_iterations}{'' if ref.converged else ' (cap)'} | {t_ref:.1f} "
            f"| {ref.joint_gap:.1e} | {mean_test_rmse(data, ref.w):.4f}"
        )
        if args.no_distributed:
            print(row + " | — | — | — | — | — | — |")
            continue
        cfg = DMTRLConfig(
            rounds=args.rounds,
            lambda2=lam2,
            omega_floor=floor,
            local_passes=args.local_passes,
            gap_tolerance=1e-10,
        )
        wf = DMTRL(cfg, data.dim, data.kind)
        grid = LocalRuntime(mtl_client_app(), data.client, data.num_clients, seed=0)
        t0 = time.process_time()
        result = run_workflow(wf, grid, progress=False)
        t_d = time.process_time() - t0
        obj = mtrl_objective(sets, wf.w, wf.omega, "squared", 0.0, lam2)
        conv = wf.converged_round
        print(
            f"{row} | {conv if conv is not None else f'> {args.rounds}'} | {wf.omega_steps} "
            f"| {t_d:.1f} | {result.summary.get('joint_gap', float('nan')):.1e} "
            f"| {mean_test_rmse(data, wf.w):.4f} "
            f"| {(obj - ref.objective) / abs(ref.objective):.1e} |"
        )


if __name__ == "__main__":
    main()
