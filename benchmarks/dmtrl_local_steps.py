"""How does H (local SDCA steps per round) trade rounds against time in DMTRL?

For each H it runs DMTRL twice on the same tasks and λ2:

* **W-step only** (Ω fixed at I/m, ``omega_updates = 0``): rounds until the relative duality
  gap ``(P - D) / P`` first falls to ``--gap`` (the classic CoCoA-type convergence measure);
* **full alternation** (W-steps and Ω-steps until Ω stops moving and the W-step is solved):
  the round at which it converged and the objective's distance to centralised MTRL.

H is given as a number of steps (the same for every member) or as ``n`` (one pass over each
member's own samples, ``local_passes = 1``). Prints a Markdown table; wall times are for the
whole simulated run in one process (members run in turn), so they measure computation, not a
network.

    python benchmarks/dmtrl_local_steps.py --data synthetic
    python benchmarks/dmtrl_local_steps.py --data hsb82 --lambda2 0.1 --rounds 6000
"""

from __future__ import annotations

import argparse
import logging
import time

from consortium.algorithms.mtl import DMTRL, DMTRLConfig, fit_mtrl, mtl_client_app, mtrl_objective
from consortium.core import run_workflow
from consortium.data.multitask import MultiTaskData, school_tasks, synthetic_tasks
from consortium.runtime import LocalRuntime


def load(name: str, seed: int) -> MultiTaskData:
    if name == "synthetic":  # the settings of experiments/dmtrl_synthetic.toml
        return synthetic_tasks(dim=30, train_samples=(15, 40), noise=1.0, seed=seed)
    return school_tasks(name, seed=seed)  # type: ignore[arg-type]


def run(data: MultiTaskData, h: str, rounds: int, **options: object) -> tuple[DMTRL, float]:
    steps = {"local_passes": 1.0} if h == "n" else {"local_steps": int(h)}
    wf = DMTRL(DMTRLConfig(rounds=rounds, **steps, **options), data.dim, data.kind)  # type: ignore[arg-type]
    grid = LocalRuntime(mtl_client_app(), data.client, data.num_clients, seed=0)
    t0 = time.perf_counter()
    run_workflow(wf, grid, progress=False)
    return wf, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="synthetic", choices=("synthetic", "hsb82", "exam"))
    p.add_argument("--lambda2", type=float, default=0.01)
    p.add_argument("--floor", type=float, default=0.1, help="omega_floor")
    p.add_argument("--steps", default="1,10,100,n", help="H values; n = one pass (n_i steps)")
    p.add_argument("--gap", type=float, default=1e-6, help="relative duality gap to reach")
    p.add_argument("--rounds", type=int, default=3000, help="round budget of each run")
    p.add_argument("--w-step-rounds", type=int, default=3000, help="budget of the W-step runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--w-step-only", action="store_true", help="skip the full alternation runs")
    args = p.parse_args()
    logging.disable(logging.WARNING)

    data = load(args.data, args.seed)
    sizes = [t.num_train for t in data.tasks]
    common = {"lambda2": args.lambda2, "omega_floor": args.floor}
    head = (
        f"{data.name}: {data.num_tasks} tasks, d = {data.dim}, n_i in [{min(sizes)}, "
        f"{max(sizes)}], λ2 = {args.lambda2:g}, floor = {args.floor:g}"
    )
    ref = None
    if not args.w_step_only:
        t0 = time.perf_counter()
        ref = fit_mtrl(data.train_sets(), "squared", 0.0, args.lambda2, args.floor, tol=1e-10)
        head += (
            f"; centralised MTRL: objective {ref.objective:.10g}, "
            f"{ref.outer_iterations} Ω-steps, {time.perf_counter() - t0:.1f} s"
        )
    print(head + "\n")
    print(
        f"| H | W-step: rounds to gap {args.gap:g} | W-step: time (s) | full: converged round "
        "| full: Ω-steps | full: time (s) | full: rel. objective diff vs centralised |"
    )
    print("|---|---|---|---|---|---|---|")
    for h in args.steps.split(","):
        wf, t_w = run(
            data,
            h,
            args.w_step_rounds,
            omega_updates=0,
            gap_tolerance=args.gap,
            **common,  # type: ignore[arg-type]
        )
        reached = wf.rounds_to_gap(args.gap)
        t_reach = t_w if reached is not None else float("nan")
        if ref is None:
            print(
                f"| {h} | {reached if reached is not None else f'> {args.w_step_rounds}'} "
                f"| {t_reach:.2f} | — | — | — | — |"
            )
            continue
        full, t_full = run(
            data,
            h,
            args.rounds,
            gap_tolerance=1e-10,
            omega_tolerance=1e-9,
            **common,  # type: ignore[arg-type]
        )
        obj = mtrl_objective(data.train_sets(), full.w, full.omega, "squared", 0.0, args.lambda2)
        rel = abs(obj - ref.objective) / abs(ref.objective)
        conv = full.converged_round
        print(
            f"| {h} | {reached if reached is not None else f'> {args.w_step_rounds}'} "
            f"| {t_reach:.2f} | {conv if conv is not None else f'> {args.rounds}'} "
            f"| {full.omega_steps} | {t_full:.2f} | {rel:.1e} |"
        )
    print("\n(a W-step run stops once its gap is reached; nan: the budget ran out first)")


if __name__ == "__main__":
    main()
