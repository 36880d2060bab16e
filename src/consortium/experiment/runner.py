"""Run an experiment: build the data once, run every method in its own folder, report.

Run folder::

    RUN_DIR/config.toml, config.json   the resolved configuration (re-runnable as is)
    RUN_DIR/data.json                  input shape and classes (to rebuild the model)
    RUN_DIR/partition.txt              members' train/test sizes and classes
    RUN_DIR/<method>/                  metrics.jsonl, summary.json, checkpoint.npz, model.npz
    RUN_DIR/summary.{json,md}          one row per method
    RUN_DIR/accuracy.png, client_accuracy.png, and each method family's own report
    RUN_DIR/<action folder>/           post-hoc actions (``unlearn-class3/``, ...)
    RUN_DIR/tracking.json, tensorboard/, <method>/metrics.csv   when ``[tracking]`` says so

The summary table is printed as soon as the last method finished; the plots are drawn by a
forked process meanwhile (post-hoc actions run at the same time) and are on disk when
:func:`run_experiment` returns.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console
from rich.markup import escape

from consortium.algorithms.registry import get_method
from consortium.config import ConfigError
from consortium.core.run import MODEL, RoundCallback, RunResult, RunStopped, load_checkpoint
from consortium.core.rundir import (
    RunDirLock,
    check_run_dir,
    claim_run_dir,
    discard_untrained,
    writing,
)
from consortium.experiment.actions import run_action
from consortium.experiment.checks import Prepared, prepare_experiment
from consortium.experiment.config import Experiment
from consortium.experiment.execution import execute
from consortium.experiment.results import write_data_info
from consortium.report import family_report, report_console, write_plots, write_report
from consortium.tracking import MethodDone, Tracker, open_trackers


@dataclass
class ExperimentResult:
    """What an experiment ran: results and summaries of the methods that finished, and why
    the others stopped (``stopped``, by method)."""

    run_dir: Path
    results: dict[str, RunResult]
    summaries: dict[str, dict[str, Any]]
    stopped: dict[str, str] = field(default_factory=dict)


MAX_MEMBERS_PRINTED = 30


def prepare_run_dir(exp: Experiment, out: Path, resume: bool, overwrite: bool) -> RunDirLock:
    """Refuse to mix two different runs in one folder; returns the folder's lock (held by
    this process until released: see :mod:`consortium.core.rundir`)."""
    lock = claim_run_dir(out, resume=resume, overwrite=overwrite)
    try:
        if resume and (out / "config.json").exists():
            saved = json.loads((out / "config.json").read_text())
            current = json.loads(json.dumps(exp.to_toml_dict()))
            # Methods may be added on resume; where the numbers are also sent may change.
            free = ("methods", "tracking")
            if {k: v for k, v in saved.items() if k not in free} != {
                k: v for k, v in current.items() if k not in free
            }:
                raise ConfigError(
                    f"{out}: --resume with a configuration that differs from the saved one"
                )
        for name, text in (
            ("config.toml", tomli_w.dumps(exp.to_toml_dict())),
            ("config.json", json.dumps(exp.to_toml_dict(), indent=2)),
        ):
            with writing(out / name):
                (out / name).write_text(text)
    except BaseException:
        lock.release()
        discard_untrained(lock)
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


def check_experiment(
    exp: Experiment,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
) -> tuple[Path, Prepared]:
    """Everything :func:`run_experiment` checks before it makes the run folder (the folder
    can be made and written, then :func:`~consortium.experiment.checks.prepare_experiment`);
    makes nothing. Returns the run folder and the prepared experiment; notes are printed."""
    console = console or Console()
    run_dir = Path(out) if out is not None else Path(exp.output_dir) / exp.name
    check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    ready = prepare_experiment(exp, say=lambda text: console.print(escape(text)))
    for note in ready.notes:
        console.print(f"[yellow]note: {escape(note)}[/yellow]")
    return run_dir, ready


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
    summaries written to disk. ``callbacks(method, round, metrics)`` see every round.

    Everything that can be checked is checked before the run folder is created
    (:mod:`consortium.experiment.checks`). A method that stops (:class:`RunStopped`: too few
    replies, no successful round) does not stop the others; when one did, the report is still
    written and :class:`ExperimentStopped` is raised at the end. A run that fails before any
    method saved a checkpoint, or whose methods all stopped without training anything (no
    successful round, or a set-up short of replies), leaves no run folder behind. The
    trackers of ``exp.tracking`` (MLflow, TensorBoard, CSV) get every round and the report.
    """
    console = console or report_console()
    run_dir, ready = check_experiment(exp, out, resume=resume, overwrite=overwrite, console=console)
    trackers = open_trackers(exp.tracking)  # a missing library fails before anything runs
    lock = prepare_run_dir(exp, run_dir, resume, overwrite)
    try:
        with lock:
            trackers.start(run_dir, exp.to_toml_dict(), resume)
            try:
                result = _run_methods(
                    exp, ready, run_dir, resume, progress, console, list(callbacks), trackers
                )
            except BaseException:
                trackers.close(failed=True)
                raise
            trackers.close(failed=bool(result.stopped))
    except BaseException:
        discard_untrained(lock)
        raise
    if result.stopped:
        # Nothing trained (no method finished, none kept a model): the folder holds no more
        # than the line below says, and must not stand in the way of the corrected run.
        untrained = not result.results and discard_untrained(lock, keep=MODEL)
        where = "nothing was trained, nothing was kept" if untrained else f"run folder {run_dir}"
        first = next(iter(result.stopped.values()))
        more = f" (and {len(result.stopped) - 1} more)" if len(result.stopped) > 1 else ""
        names = ", ".join(result.stopped)
        raise ExperimentStopped(f"{names} stopped: {first}{more}; {where}", result)
    return result


class ExperimentStopped(RunStopped):
    """Some methods of an experiment stopped (the others ran); ``result`` holds what ran."""

    def __init__(self, message: str, result: ExperimentResult) -> None:
        super().__init__(message)
        self.result = result


def report_files(run_dir: Path) -> list[Path]:
    """The report a run folder holds: its tables, configuration and plots (top level and in
    each method's and action's folder)."""
    found = [run_dir / "config.toml"]
    for pattern in ("*.md", "*.png", "*/*.md", "*/*.png"):
        found += sorted(run_dir.glob(pattern))
    return [p for p in found if p.is_file()]


def _run_methods(
    exp: Experiment,
    ready: Prepared,
    run_dir: Path,
    resume: bool,
    progress: bool,
    console: Console,
    cbs: list[RoundCallback],
    trackers: Tracker,
) -> ExperimentResult:
    data, ctx = ready.data, ready.context
    write_data_info(run_dir, data)
    table = data.report_table()
    with writing(run_dir / "partition.txt"), open(run_dir / "partition.txt", "w") as fh:
        Console(file=fh, width=200).print(table)
    if data.num_clients <= MAX_MEMBERS_PRINTED:
        console.print(table)
    else:
        console.print(f"{data.num_clients} members; partition table in {run_dir / 'partition.txt'}")
    results: dict[str, RunResult] = {}
    stopped: dict[str, str] = {}
    cbs = [*cbs, trackers.log_round]
    for name in exp.methods:
        workflow, app = get_method(name).build(ctx, exp.method_options[name])
        method_dir = run_dir / name
        per_method = [lambda r, m, _n=name: [cb(_n, r, m) for cb in cbs]]
        try:
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
        except RunStopped as err:
            stopped[name] = str(err)
            console.print(f"[red]{name} stopped:[/red] {escape(str(err))}")
            continue
        options = exp.method_options[name].model_dump(mode="json")
        done = results[name]
        trackers.method_done(MethodDone(name, options, done.rounds, done.summary, method_dir))
        note = trouble(results[name].summary)
        if note:
            console.print(f"[yellow]{name}: {escape(note)}[/yellow]")
    console.print(write_report(run_dir, plots=False))  # the result first, then the pictures
    finished = [m for m in exp.methods if m in results]

    def draw() -> None:
        write_plots(run_dir)
        write_family_reports(finished, run_dir)

    result = ExperimentResult(run_dir, results, {n: r.summary for n, r in results.items()})
    if stopped:
        result.stopped = stopped
        draw()
        trackers.finish(run_dir, report_files(run_dir))
        return result  # the post-hoc actions need every method's model
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
    trackers.finish(run_dir, report_files(run_dir))  # the plots are drawn by now
    console.print(f"run folder: {run_dir}")
    return result


def trouble(summary: dict[str, Any]) -> str:
    """What went wrong in a run that still finished: skipped rounds, failures, rejections
    (printed without ``-v``, so a run that lost rounds never looks clean)."""
    parts = []
    skipped = summary.get("rounds_skipped") or 0
    if skipped:
        parts.append(f"{skipped} of {summary.get('rounds')} rounds skipped (too few replies)")
    for key, what in (
        ("client_failures", "member failures"),
        ("replies_rejected", "replies rejected"),
    ):
        if summary.get(key):
            parts.append(f"{summary[key]} {what}")
    return "; ".join(parts)


@contextlib.contextmanager
def in_background(task: Callable[[], None]) -> Iterator[None]:
    """Run ``task`` in a forked process while the block runs; wait for it at the end and
    raise what it raised (an ``OSError`` as itself, naming its file; anything else as a
    ``RuntimeError`` that names it).

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
    error: BaseException | str | None = None
    try:
        yield
    finally:
        with contextlib.suppress(EOFError):  # nothing sent: the exit code tells
            error = reader.recv()
        child.join()
        reader.close()
    if error is None and child.exitcode != 0:
        error = f"the drawing process ended with exit code {child.exitcode}"
    if isinstance(error, OSError):  # a full disk, a read-only folder: its one line, file named
        raise error
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    if error is not None:
        raise RuntimeError(f"drawing the report failed: {error}")


def _report_errors(task: Callable[[], None], conn: Any) -> None:
    try:
        task()
    except BaseException as err:
        try:  # the error itself where it can travel (an OSError keeps its file name)
            conn.send(err)
        except Exception:
            conn.send(f"{type(err).__name__}: {err}")
    else:
        conn.send(None)
