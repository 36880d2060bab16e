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
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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
from consortium.experiment.results import write_data_info
from consortium.report import family_report, report_console, write_report
from consortium.tracking import MethodDone, Tracker, open_trackers


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
            # Methods may be added on resume; where the numbers are also sent may change.
            free = ("methods", "tracking")
            if {k: v for k, v in saved.items() if k not in free} != {
                k: v for k, v in current.items() if k not in free
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
    summaries written to disk. ``callbacks(method, round, metrics)`` see every round; the
    trackers of ``exp.tracking`` (MLflow, TensorBoard, CSV) get the same and the report."""
    console = console or report_console()
    run_dir = Path(out) if out is not None else Path(exp.output_dir) / exp.name
    trackers = open_trackers(exp.tracking)  # a missing library fails before anything runs
    with prepare_run_dir(exp, run_dir, resume, overwrite):
        trackers.start(run_dir, exp.to_toml_dict(), resume)
        try:
            result = _run_methods(
                exp, run_dir, resume, progress, console, list(callbacks), trackers
            )
        except BaseException:
            trackers.close(failed=True)
            raise
        trackers.close(failed=False)
        return result


def report_files(run_dir: Path) -> list[Path]:
    """The report a run folder holds: its tables, configuration and plots (top level and in
    each method's and action's folder)."""
    found = [run_dir / "config.toml"]
    for pattern in ("*.md", "*.png", "*/*.md", "*/*.png"):
        found += sorted(run_dir.glob(pattern))
    return [p for p in found if p.is_file()]


def _run_methods(
    exp: Experiment,
    run_dir: Path,
    resume: bool,
    progress: bool,
    console: Console,
    cbs: list[RoundCallback],
    trackers: Tracker,
) -> ExperimentResult:
    data = build_data(exp.data, exp.seed)
    write_data_info(run_dir, data)
    table = data.report_table()
    with open(run_dir / "partition.txt", "w") as fh:
        Console(file=fh, width=200).print(table)
    if data.num_clients <= MAX_MEMBERS_PRINTED:
        console.print(table)
    else:
        console.print(f"{data.num_clients} members; partition table in {run_dir / 'partition.txt'}")
    ctx = method_context(exp, data)
    results: dict[str, RunResult] = {}
    cbs = [*cbs, trackers.log_round]
    for name in exp.methods:
        workflow, app = get_method(name).build(ctx, exp.method_options[name])
        method_dir = run_dir / name
        per_method = [lambda r, m, _n=name: [cb(_n, r, m) for cb in cbs]]
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
        options = exp.method_options[name].model_dump(mode="json")
        result = results[name]
        trackers.method_done(MethodDone(name, options, result.rounds, result.summary, method_dir))
    console.print(write_report(run_dir))
    write_family_reports(exp.methods, run_dir)
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
    trackers.finish(run_dir, report_files(run_dir))
    console.print(f"run folder: {run_dir}")
    return ExperimentResult(run_dir, results, {n: r.summary for n, r in results.items()})
