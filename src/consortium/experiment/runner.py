"""Run an experiment: build the data once, run every method in its own folder, report.

Run folder::

    RUN_DIR/config.toml, config.json   the resolved configuration (re-runnable as is)
    RUN_DIR/partition.txt              members' train/test sizes and classes
    RUN_DIR/<method>/                  metrics.jsonl, summary.json, checkpoint.npz, model.npz
    RUN_DIR/summary.{json,md}          one row per method
    RUN_DIR/accuracy.png, client_accuracy.png, and each method family's own report
    RUN_DIR/<action folder>/           post-hoc actions (``unlearn-class3/``, ...)

The summary table is printed as soon as the last method finished; the plots are drawn by a
forked process meanwhile (post-hoc actions run at the same time) and are on disk when
:func:`run_experiment` returns.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console

from consortium.algorithms.registry import get_method
from consortium.config import ConfigError
from consortium.core.run import RoundCallback, RunResult, load_checkpoint
from consortium.core.rundir import RunDirLock, claim_run_dir
from consortium.data.registry import build_data
from consortium.experiment.actions import run_action
from consortium.experiment.config import Experiment
from consortium.experiment.execution import execute, method_context
from consortium.report import family_report, write_plots, write_report


@dataclass
class ExperimentResult:
    run_dir: Path
    results: dict[str, RunResult]
    summaries: dict[str, dict[str, Any]]


MAX_MEMBERS_PRINTED = 30


def prepare_run_dir(exp: Experiment, out: Path, resume: bool, overwrite: bool) -> RunDirLock:
    """Refuse to mix two different runs in one folder; returns the folder's lock (held by
    this process until released: see :mod:`consortium.core.rundir`)."""
    lock = claim_run_dir(out, resume=resume, overwrite=overwrite)
    try:
        if resume and (out / "config.json").exists():
            saved = json.loads((out / "config.json").read_text())
            current = json.loads(json.dumps(exp.to_toml_dict()))
            if {k: v for k, v in saved.items() if k != "methods"} != {
                k: v for k, v in current.items() if k != "methods"
            }:
                raise ConfigError(
                    f"{out}: --resume with a configuration that differs from the saved one"
                )
        (out / "config.toml").write_text(tomli_w.dumps(exp.to_toml_dict()))
        (out / "config.json").write_text(json.dumps(exp.to_toml_dict(), indent=2))
    except BaseException:
        lock.release()
        raise
    return lock


def write_family_reports(methods: Iterable[str], run_dir: Path) -> None:
    """Each distinct family report of ``methods`` once (Aequa's width curves, DMTRL's
    convergence and task-correlation plots, FedRA's tables, ...), after the generic report."""
    done: list[Any] = []
    for name in methods:
        report = get_method(name).report
        if report is not None and report not in done:
            done.append(report)
            family_report(report, run_dir)


def run_experiment(
    exp: Experiment,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    console: Console | None = None,
    callbacks: Iterable[RoundCallback] = (),
) -> ExperimentResult:
    """Run every method of ``exp`` (then its post-hoc actions); returns results and the
    summaries written to disk. ``callbacks(method, round, metrics)`` see every round."""
    console = console or Console()
    run_dir = Path(out) if out is not None else Path(exp.output_dir) / exp.name
    with prepare_run_dir(exp, run_dir, resume, overwrite):
        return _run_methods(exp, run_dir, resume, progress, console, list(callbacks))


def _run_methods(
    exp: Experiment,
    run_dir: Path,
    resume: bool,
    progress: bool,
    console: Console,
    cbs: list[RoundCallback],
) -> ExperimentResult:
    data = build_data(exp.data, exp.seed)
    table = data.report_table()
    with open(run_dir / "partition.txt", "w") as fh:
        Console(file=fh, width=200).print(table)
    if data.num_clients <= MAX_MEMBERS_PRINTED:
        console.print(table)
    else:
        console.print(f"{data.num_clients} members; partition table in {run_dir / 'partition.txt'}")
    ctx = method_context(exp, data)
    results: dict[str, RunResult] = {}
    for name in exp.methods:
        workflow, app = get_method(name).build(ctx, exp.method_options[name])
        method_dir = run_dir / name
        per_method = [lambda r, m, _n=name: [cb(_n, r, m) for cb in cbs]] if cbs else []
        results[name] = execute(
            exp,
            name,
            workflow,
            app,
            data,
            method_dir,
            resume=resume and load_checkpoint(method_dir) is not None,
            progress=progress,
            description=name,
            callbacks=per_method,
        )
    console.print(write_report(run_dir, plots=False))  # the result first, then the pictures

    def draw() -> None:
        write_plots(run_dir)
        write_family_reports(exp.methods, run_dir)

    with in_background(draw):
        for name, config in exp.action_options.items():
            run_action(
                exp,
                name,
                run_dir,
                config,
                resume=resume,
                overwrite=not resume,
                progress=progress,
                console=console,
            )
    console.print(f"run folder: {run_dir}")
    return ExperimentResult(run_dir, results, {n: r.summary for n, r in results.items()})


@contextlib.contextmanager
def in_background(task: Callable[[], None]) -> Iterator[None]:
    """Run ``task`` in a forked process while the block runs; wait for it at the end and
    raise what it raised (as a ``RuntimeError``: the exception itself stays in the child).

    Drawing a report imports matplotlib and renders figures, a second or more that the run's
    result need not wait for, and that the run's own process then never pays at exit. Where
    processes cannot be forked the task runs first, in this process.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        task()
        yield
        return
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_report_errors, args=(task, writer), name="consortium-report")
    child.start()
    writer.close()
    error: str | None = None
    try:
        yield
    finally:
        with contextlib.suppress(EOFError):  # nothing sent: the exit code tells
            error = reader.recv()
        child.join()
        reader.close()
    if error is None and child.exitcode != 0:
        error = f"the drawing process ended with exit code {child.exitcode}"
    if error is not None:
        raise RuntimeError(f"drawing the report failed: {error}")


def _report_errors(task: Callable[[], None], conn: Any) -> None:
    try:
        task()
    except BaseException as err:
        conn.send(f"{type(err).__name__}: {err}")
    else:
        conn.send(None)
