"""The run loop: rounds in order, a log line and a checkpoint after each, resume on demand.

One loop serves every workflow and every runtime, so logging, checkpointing, failure handling
and the progress bar behave the same for FedAvg, Aequa, FedRA, unlearning and DMTRL.

Files written into ``run_dir`` (when given):

* ``metrics.jsonl``: one JSON object per round (the workflow's metrics plus what happened on
  the wire: members asked, replies, failures and rejections with reasons, bytes up and down);
* ``checkpoint.npz``: workflow and runtime state after the latest round, in a format that
  holds data only (numpy arrays and JSON, checked with SHA-256; see
  :mod:`consortium.core.checkpoint`): loading one never runs code, and a corrupted one is a
  one-line error;
* ``summary.json``: the workflow's summary plus totals; ``model.npz``: the final model arrays.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consortium.core.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from consortium.core.grid import Grid, TooFewReplies
from consortium.core.message import Arrays
from consortium.core.rundir import lock_run_dir
from consortium.core.workflow import Workflow

log = logging.getLogger("consortium.run")

CHECKPOINT = "checkpoint.npz"
#: What versions before the safe format wrote; never read (unpickling can run code).
LEGACY_CHECKPOINT = "checkpoint.pkl"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
MODEL = "model.npz"

RoundCallback = Callable[[int, Mapping[str, Any]], None]


@dataclass
class RunResult:
    """What a finished run produced."""

    summary: dict[str, Any]
    rounds: list[dict[str, Any]]
    final_arrays: Arrays | None
    wall_time_s: float
    resumed_from: int | None = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(dict(payload)), indent=2, sort_keys=False))
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a per-round metrics file (missing file: no rounds)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint in ``run_dir``, or ``None`` when there is none.

    Raises :class:`~consortium.core.checkpoint.CheckpointError` (a ``ValueError``, one line)
    for a checkpoint that is corrupted, foreign or written in the old pickle format.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        legacy = Path(run_dir) / LEGACY_CHECKPOINT
        if legacy.exists():
            raise CheckpointError(
                f"{legacy}: a pickled checkpoint of an older version; it is not loaded because "
                "unpickling can run code: start the run again with --overwrite"
            )
        return None
    state = read_checkpoint(path)
    for key in ("workflow_name", "next_round", "workflow", "grid"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint has no {key!r}")
    return state


def _progress_text(metrics: Mapping[str, Any], keys: Iterable[str]) -> str:
    parts = []
    for k in keys:
        v = metrics.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool):
            parts.append(f"{k}={v:.4g}")
    return " ".join(parts)


def run_workflow(
    workflow: Workflow,
    grid: Grid,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Iterable[RoundCallback] = (),
    description: str | None = None,
) -> RunResult:
    """Run ``workflow`` on ``grid``: set-up, rounds, finish.

    Parameters
    ----------
    run_dir
        Folder for metrics, checkpoint, summary and model; ``None`` keeps everything in memory.
    resume
        Continue from the checkpoint in ``run_dir`` (a finished run is returned as it was).
        The continued run ends with the same model, bit for bit, as one never interrupted.
    callbacks
        Called after every round with ``(round, metrics)``; stopping rules and extras live here.

    While it runs, the run holds the lock of ``run_dir`` (see :mod:`consortium.core.rundir`):
    a second live run of the same folder raises ``RunDirError``.
    """
    out = Path(run_dir) if run_dir is not None else None
    if resume and out is None:
        raise ValueError("resume needs a run directory")
    if out is None:
        return _run(workflow, grid, None, resume, progress, list(callbacks), description)
    out.mkdir(parents=True, exist_ok=True)
    with lock_run_dir(out):  # a second live run of this folder is refused
        return _run(workflow, grid, out, resume, progress, list(callbacks), description)


def _run(
    workflow: Workflow,
    grid: Grid,
    out: Path | None,
    resume: bool,
    progress: bool,
    callbacks: list[RoundCallback],
    description: str | None,
) -> RunResult:
    rounds: list[dict[str, Any]] = []
    # Wall time, and CPU time: on a shared machine the latter is the fairer measure of what
    # the work itself cost (this process's, plus what the runtime's member processes spent).
    start, elapsed, cpu, resumed_from = 1, 0.0, 0.0, None

    state = load_checkpoint(out) if (resume and out is not None) else None
    if state is not None and out is not None:
        if state["workflow_name"] != workflow.name:
            raise ValueError(
                f"{out}: checkpoint belongs to {state['workflow_name']!r}, not {workflow.name!r}"
            )
        workflow.load_state_dict(state["workflow"])
        grid.load_state_dict(state["grid"])
        start, elapsed = int(state["next_round"]), float(state["elapsed"])
        cpu = float(state.get("cpu_elapsed", 0.0))
        resumed_from = start - 1
        rounds = [r for r in read_jsonl(out / METRICS) if int(r["round"]) < start]
        _rewrite_jsonl(out / METRICS, rounds)
        if state.get("finished"):
            return RunResult(
                summary=state["summary"],
                rounds=rounds,
                final_arrays=workflow.final_arrays(),
                wall_time_s=elapsed,
                resumed_from=resumed_from,
            )
        log.info("resuming %s after round %d", workflow.name, resumed_from)
    elif out is not None:
        (out / METRICS).unlink(missing_ok=True)

    def checkpoint(next_round: int, finished: bool = False, summary: Any = None) -> None:
        if out is None:
            return
        save_checkpoint(
            out / CHECKPOINT,
            {
                "workflow_name": workflow.name,
                "next_round": next_round,
                "elapsed": elapsed,
                "cpu_elapsed": cpu,
                "workflow": workflow.state_dict(),
                "grid": grid.state_dict(),
                "finished": finished,
                "summary": summary,
            },
        )

    def record(
        rnd: int, metrics: Mapping[str, Any], seconds: float, cpu_s: float, phase: str
    ) -> None:
        line = {"round": rnd, "phase": phase, **metrics, **grid.record.as_metrics()}
        line["time_s"] = seconds
        line["cpu_s"] = cpu_s
        line = _jsonable(line)
        rounds.append(line)
        if out is not None:
            with open(out / METRICS, "a") as fh:
                fh.write(json.dumps(line) + "\n")
        for cb in callbacks:
            cb(rnd, line)

    keys = getattr(workflow, "progress_keys", ("test_accuracy", "train_loss"))
    label = description or workflow.name
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[live]}"),
        disable=not progress,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=workflow.num_rounds, completed=start - 1, live="")
        if state is None:  # a fresh run (a resumed one has done its set-up already)
            t0, c0 = time.perf_counter(), grid.cpu_time()
            grid.start_round(0)
            setup_metrics = workflow.setup(grid)
            dt, dc = time.perf_counter() - t0, grid.cpu_time() - c0
            elapsed += dt
            cpu += dc
            if setup_metrics or grid.record.sent:
                record(0, setup_metrics, dt, dc, "setup")
            checkpoint(1)
        for rnd in range(start, workflow.num_rounds + 1):
            t0, c0 = time.perf_counter(), grid.cpu_time()
            grid.start_round(rnd)
            try:
                metrics = workflow.run_round(grid, rnd)
            except TooFewReplies as err:
                log.warning("%s", err)
                metrics = {"skipped": str(err)}
            dt, dc = time.perf_counter() - t0, grid.cpu_time() - c0
            elapsed += dt
            cpu += dc
            record(rnd, metrics, dt, dc, "train")
            checkpoint(rnd + 1)
            bar.update(task, advance=1, live=_progress_text(metrics, keys))

    t0, c0 = time.perf_counter(), grid.cpu_time()
    grid.start_round(workflow.num_rounds + 1)
    summary = dict(workflow.finish(grid))
    finish_comm = grid.record.as_metrics()
    elapsed += time.perf_counter() - t0
    cpu += grid.cpu_time() - c0
    summary.update(_totals(rounds, finish_comm, elapsed, workflow))
    summary["cpu_time_s"] = cpu
    summary.update(grid.run_settings())
    arrays = workflow.final_arrays()
    if out is not None:
        if arrays is not None:
            np.savez(out / MODEL, **arrays)
        write_json(out / SUMMARY, summary)
    checkpoint(workflow.num_rounds + 1, finished=True, summary=summary)
    return RunResult(summary, rounds, arrays, elapsed, resumed_from)


def _totals(
    rounds: list[dict[str, Any]], finish: Mapping[str, Any], elapsed: float, wf: Workflow
) -> dict[str, Any]:
    lines = [*rounds, finish]
    return {
        "workflow": wf.name,
        "rounds": wf.num_rounds,
        "rounds_skipped": sum(1 for r in rounds if "skipped" in r),
        "client_failures": sum(len(r.get("failures", {})) for r in lines),
        "replies_rejected": sum(len(r.get("rejected", {})) for r in lines),
        "bytes_up_total": int(sum(r.get("bytes_up", 0) for r in lines)),
        "bytes_down_total": int(sum(r.get("bytes_down", 0) for r in lines)),
        "wall_time_s": elapsed,
    }


def _rewrite_jsonl(path: Path, rounds: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rounds))
    os.replace(tmp, path)
