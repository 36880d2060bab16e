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
* ``summary.json``: the workflow's summary plus totals; ``model.npz``: the final model arrays;
* ``stopped.json`` instead of ``summary.json`` when the run stopped (:class:`RunStopped`): the
  totals so far, ``status = "stopped"`` and ``stop_reason``; ``model.npz`` is there when a
  round trained. Readers of ``summary.json`` only ever see finished runs.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consortium.core.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from consortium.core.grid import Grid, TooFewReplies
from consortium.core.message import Arrays
from consortium.core.rundir import lock_run_dir, writing
from consortium.core.workflow import Workflow

log = logging.getLogger("consortium.run")

CHECKPOINT = "checkpoint.npz"
#: What versions before the safe format wrote; never read (unpickling can run code).
LEGACY_CHECKPOINT = "checkpoint.pkl"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
STOPPED = "stopped.json"
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
    with writing(path):
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


#: How many more times the set-up and the final phase are tried after too few replies.
PHASE_RETRIES = 2


class RunStopped(RuntimeError):
    """A run that could not go on; the message is one line and says what was kept.

    Raised when the set-up or the final phase got too few replies on every try, or when no
    round succeeded. What the run finished is on disk: its rounds' lines, a ``summary.json``
    whose ``status`` is ``"stopped"`` (with ``stop_reason``), and, once a round trained, the
    checkpoint (``--resume`` continues from it) and ``model.npz``.
    """

    def __init__(self, message: str, summary: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = dict(summary or {})


class _GaveUp(Exception):
    """Every try of a phase got too few replies."""

    def __init__(self, err: TooFewReplies, tries: int) -> None:
        super().__init__(str(err))
        self.tries = tries


def run_workflow(
    workflow: Workflow,
    grid: Grid,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Iterable[RoundCallback] = (),
    description: str | None = None,
    retries: int = PHASE_RETRIES,
) -> RunResult:
    """Run ``workflow`` on ``grid``: set-up, rounds, finish.

    Too few replies (:class:`~consortium.core.grid.TooFewReplies`) are handled one way for
    every workflow and runtime:

    * a **round** is skipped: the workflow stays as it was, the round's line says why, and the
      run goes on;
    * the **set-up** and the **final phase** happen once, so they are tried again, up to
      ``retries`` more times (each try asks the members afresh; simulated dropouts are drawn
      anew). When every try falls short the run stops with :class:`RunStopped`: after the
      set-up nothing was trained; after the final phase the trained model (``model.npz``) and
      the checkpoint are kept, and ``--resume`` tries the final phase again;
    * a run in which **no round succeeded** stops with :class:`RunStopped` before its final
      phase (there is no trained model to evaluate).

    Parameters
    ----------
    run_dir
        Folder for metrics, checkpoint, summary and model; ``None`` keeps everything in memory.
    resume
        Continue from the checkpoint in ``run_dir`` (a finished run is returned as it was).
        The continued run ends with the same model, bit for bit, as one never interrupted.
    callbacks
        Called after every round with ``(round, metrics)``; stopping rules and extras live here.
    retries
        Further tries of the set-up and the final phase after too few replies.

    While it runs, the run holds the lock of ``run_dir`` (see :mod:`consortium.core.rundir`):
    a second live run of the same folder raises ``RunDirError``.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    out = Path(run_dir) if run_dir is not None else None
    if resume and out is None:
        raise ValueError("resume needs a run directory")
    loop = _Loop(workflow, grid, out, list(callbacks), retries)
    if out is None:
        return loop.run(resume, progress, description)
    out.mkdir(parents=True, exist_ok=True)
    with lock_run_dir(out):  # a second live run of this folder is refused
        return loop.run(resume, progress, description)


class _Loop:
    """One run of a workflow: its lines, times, checkpoints and phases."""

    def __init__(
        self,
        workflow: Workflow,
        grid: Grid,
        out: Path | None,
        callbacks: list[RoundCallback],
        retries: int,
    ) -> None:
        self.workflow, self.grid, self.out = workflow, grid, out
        self.callbacks, self.retries = callbacks, retries
        self.rounds: list[dict[str, Any]] = []
        # Wall time, and CPU time: on a shared machine the latter is the fairer measure of what
        # the work itself cost (this process's, plus what the runtime's member processes spent).
        self.elapsed, self.cpu = 0.0, 0.0
        #: Tries already spent on a phase, by its round (a resumed final phase draws afresh).
        self.tries: dict[str, int] = {}

    # -- files ----------------------------------------------------------------------------

    def checkpoint(self, next_round: int, finished: bool = False, summary: Any = None) -> None:
        if self.out is None:
            return
        with writing(self.out / CHECKPOINT):
            self._save_checkpoint(next_round, finished, summary)

    def _save_checkpoint(self, next_round: int, finished: bool, summary: Any) -> None:
        assert self.out is not None
        save_checkpoint(
            self.out / CHECKPOINT,
            {
                "workflow_name": self.workflow.name,
                "next_round": next_round,
                "elapsed": self.elapsed,
                "cpu_elapsed": self.cpu,
                "workflow": self.workflow.state_dict(),
                "grid": self.grid.state_dict(),
                "finished": finished,
                "summary": summary,
                "tries": dict(self.tries),
            },
        )

    def record(
        self, rnd: int, metrics: Mapping[str, Any], seconds: float, cpu_s: float, phase: str
    ) -> dict[str, Any]:
        line = {"round": rnd, "phase": phase, **metrics, **self.grid.record.as_metrics()}
        line["time_s"] = seconds
        line["cpu_s"] = cpu_s
        line = _jsonable(line)
        self.rounds.append(line)
        if self.out is not None:
            with writing(self.out / METRICS), open(self.out / METRICS, "a") as fh:
                fh.write(json.dumps(line) + "\n")
        for cb in self.callbacks:
            cb(rnd, line)
        return line

    def save_outcome(self, summary: dict[str, Any], arrays: Arrays | None) -> None:
        """The model and ``summary.json`` (finished) or ``stopped.json`` (stopped)."""
        if self.out is None:
            return
        if arrays is not None:
            with writing(self.out / MODEL):
                np.savez(self.out / MODEL, **arrays)
        stopped = summary.get("status") == "stopped"
        write_json(self.out / (STOPPED if stopped else SUMMARY), summary)
        (self.out / (SUMMARY if stopped else STOPPED)).unlink(missing_ok=True)

    # -- phases ---------------------------------------------------------------------------

    def timed(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, its wall and CPU time added to the run's (and kept in ``self.took``)."""
        t0, c0 = time.perf_counter(), self.grid.cpu_time()
        try:
            return fn()
        finally:
            self.took = (time.perf_counter() - t0, self.grid.cpu_time() - c0)
            self.elapsed += self.took[0]
            self.cpu += self.took[1]

    def tried(self, rnd: int, fn: Callable[[], Any], restore: Callable[[], None]) -> Any:
        """``fn()`` in round ``rnd``, tried again after too few replies (see run_workflow)."""
        key = str(rnd)
        first = self.tries.get(key, 0)
        self.grid.start_round(rnd, first)
        for attempt in range(self.retries + 1):
            if attempt:
                restore()
                self.grid.retry()
            try:
                return fn()
            except TooFewReplies as err:
                self.tries[key] = first + attempt + 1
                log.warning("%s (try %d of %d)", err, attempt + 1, self.retries + 1)
                last = err
        raise _GaveUp(last, self.retries + 1)

    def stop(
        self,
        why: str,
        rnd: int,
        phase: str,
        *,
        arrays: Arrays | None = None,
        lines: list[dict[str, Any]] | None = None,
    ) -> RunStopped:
        """Write the stopped phase's line and what the run holds; returns the error to raise.

        ``why`` gets the most common member failure of ``lines`` (default: the phase's own
        exchanges, every try included) appended.
        """
        why += _failure_hint(lines if lines is not None else [self.grid.record.as_metrics()])
        self.record(rnd, {"stopped": why}, *self.took, phase)
        summary: dict[str, Any] = {"status": "stopped", "stop_reason": why}
        summary.update(_totals(self.rounds, {}, self.elapsed, self.workflow))
        summary["cpu_time_s"] = self.cpu
        self.save_outcome(summary, arrays)
        return RunStopped(why, summary)

    # -- the run --------------------------------------------------------------------------

    def run(self, resume: bool, progress: bool, description: str | None) -> RunResult:
        try:
            return self._run(resume, progress, description)
        finally:
            self.grid.progress = None  # nobody listens once the run is over

    def _run(self, resume: bool, progress: bool, description: str | None) -> RunResult:
        wf, grid, out = self.workflow, self.grid, self.out
        start, resumed_from = 1, None
        self.took = (0.0, 0.0)
        state = load_checkpoint(out) if (resume and out is not None) else None
        if state is not None and out is not None:
            if state["workflow_name"] != wf.name:
                raise CheckpointError(
                    f"{out}: checkpoint belongs to {state['workflow_name']!r}, not {wf.name!r}"
                )
            wf.load_state_dict(state["workflow"])
            grid.load_state_dict(state["grid"])
            start, self.elapsed = int(state["next_round"]), float(state["elapsed"])
            self.cpu = float(state.get("cpu_elapsed", 0.0))
            self.tries = {str(k): int(v) for k, v in (state.get("tries") or {}).items()}
            resumed_from = start - 1
            self.rounds = [r for r in read_jsonl(out / METRICS) if int(r["round"]) < start]
            _rewrite_jsonl(out / METRICS, self.rounds)
            if state.get("finished"):
                return RunResult(
                    summary=state["summary"],
                    rounds=self.rounds,
                    final_arrays=wf.final_arrays(),
                    wall_time_s=self.elapsed,
                    resumed_from=resumed_from,
                )
            log.info("resuming %s after round %d", wf.name, resumed_from)
        elif out is not None:  # a fresh run: nothing of an earlier one may pass for its own
            for stale in (METRICS, STOPPED):
                (out / stale).unlink(missing_ok=True)

        keys = getattr(wf, "progress_keys", ("test_accuracy", "train_loss"))
        last = wf.num_rounds + 1
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[live]}"),
            disable=not progress,
            transient=False,
        ) as bar:
            task = bar.add_task(
                description or wf.name, total=wf.num_rounds, completed=start - 1, live=""
            )
            shown = {"text": ""}

            def show(what: str) -> Callable[[int, int], None]:
                def tell(answered: int, asked: int) -> None:
                    rec = grid.record
                    done = len(rec.replied) + len(rec.failures) + len(rec.rejected)
                    total = max(len(rec.sent), done + asked)
                    live = f"{what}: {done + answered}/{total} members answered"
                    bar.update(task, live=f"{shown['text']} [dim]{live}[/dim]".strip())

                return tell

            grid.progress = show("set-up")
            if state is None:  # a fresh run (a resumed one has done its set-up already)
                try:
                    setup = self.timed(lambda: self.tried(0, lambda: wf.setup(grid), _noop))
                except _GaveUp as err:
                    why = f"set-up: {err} ({err.tries} tries); nothing was trained"
                    raise self.stop(why, 0, "setup") from None
                if setup or grid.record.sent:
                    self.record(0, setup, *self.took, "setup")
                self.checkpoint(1)
            for rnd in range(start, wf.num_rounds + 1):
                if wf.should_stop:  # its stopping rule was met: the rounds left have nothing to do
                    bar.update(task, total=rnd - 1, completed=rnd - 1)
                    break
                grid.progress = show(f"round {rnd}")
                grid.start_round(rnd)
                metrics = self.timed(partial(_skip_short, wf, grid, rnd))
                self.record(rnd, metrics, *self.took, "train")
                self.checkpoint(rnd + 1)
                skipped = sum(1 for r in self.rounds if "skipped" in r)
                text = _progress_text(metrics, keys)
                shown["text"] = f"{text} [yellow]skipped {skipped}[/yellow]" if skipped else text
                bar.update(task, advance=1, live=shown["text"])

            ran = [r for r in self.rounds if r.get("phase") == "train"]
            trained = [r for r in ran if "skipped" not in r]
            # No round at all is fine when the stopping rule held before the first one.
            if wf.num_rounds >= 1 and not trained and (ran or not wf.should_stop):
                self.took = (0.0, 0.0)
                grid.start_round(last)
                reason = next((r["skipped"] for r in reversed(self.rounds) if "skipped" in r), "")
                count = len(ran) if wf.should_stop else wf.num_rounds
                why = f"no round succeeded: all {count} were skipped (last: {reason})"
                raise self.stop(why, last, "finish", lines=list(self.rounds))

            grid.progress = show("final phase")
            before = copy.deepcopy(wf.state_dict())

            def restore() -> None:
                wf.load_state_dict(copy.deepcopy(before))

            try:
                summary = dict(
                    self.timed(lambda: self.tried(last, lambda: wf.finish(grid), restore))
                )
            except _GaveUp as err:
                restore()
                self.checkpoint(last)  # the rounds' state, and the tries spent
                where = f" ({out / MODEL})" if out is not None else ""
                why = (
                    f"final phase: {err} ({err.tries} tries); the trained model is kept{where}; "
                    "--resume tries the final phase again"
                )
                raise self.stop(why, last, "finish", arrays=wf.final_arrays()) from None
            finish_comm = grid.record.as_metrics()
            bar.update(task, live=shown["text"])

        summary["status"] = "complete"
        summary.update(_totals(self.rounds, finish_comm, self.elapsed, wf))
        summary["cpu_time_s"] = self.cpu
        summary.update(grid.run_settings())
        arrays = wf.final_arrays()
        self.save_outcome(summary, arrays)
        self.checkpoint(last, finished=True, summary=summary)
        return RunResult(summary, self.rounds, arrays, self.elapsed, resumed_from)


def _noop() -> None:
    return None


def _skip_short(wf: Workflow, grid: Grid, rnd: int) -> dict[str, Any]:
    """One round; too few replies skip it (the workflow changed nothing)."""
    try:
        return wf.run_round(grid, rnd)
    except TooFewReplies as err:
        log.warning("%s", err)
        return {"skipped": str(err)}


def _failure_hint(rounds: list[dict[str, Any]]) -> str:
    """The most common reason members failed or were rejected, when there is one."""
    reasons: dict[str, int] = {}
    for r in rounds:
        for why in [*r.get("failures", {}).values(), *r.get("rejected", {}).values()]:
            reasons[why] = reasons.get(why, 0) + 1
    if not reasons:
        return ""
    why, count = max(reasons.items(), key=lambda kv: kv[1])
    return f"; the most common member failure ({count}x): {why}"


def _totals(
    rounds: list[dict[str, Any]], finish: Mapping[str, Any], elapsed: float, wf: Workflow
) -> dict[str, Any]:
    lines = [*rounds, finish]
    return {
        "workflow": wf.name,
        # The rounds that ran (skipped ones included): fewer than the budget when the
        # workflow's stopping rule ended them early, or the run stopped before them.
        "rounds": sum(1 for r in rounds if r.get("phase") == "train"),
        "round_budget": wf.num_rounds,
        "rounds_skipped": sum(1 for r in rounds if "skipped" in r),
        "client_failures": sum(len(r.get("failures", {})) for r in lines),
        "replies_rejected": sum(len(r.get("rejected", {})) for r in lines),
        "bytes_up_total": int(sum(r.get("bytes_up", 0) for r in lines)),
        "bytes_down_total": int(sum(r.get("bytes_down", 0) for r in lines)),
        "wall_time_s": elapsed,
    }


def _rewrite_jsonl(path: Path, rounds: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with writing(path):
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rounds))
        os.replace(tmp, path)
