"""Run an experiment: build the data once, run every method in its own folder, report.

Run folder::

    RUN_DIR/config.toml, config.json   the resolved configuration (re-runnable as is)
    RUN_DIR/partition.txt              members' train/test sizes and classes
    RUN_DIR/<method>/                  metrics.jsonl, summary.json, checkpoint.npz, model.npz
    RUN_DIR/summary.{json,md}          one row per method
    RUN_DIR/accuracy.png, client_accuracy.png
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console

from consortium.core.run import RunResult, load_checkpoint, run_workflow
from consortium.core.rundir import RunDirLock, claim_run_dir
from consortium.data import DatasetSplits, FederatedData, build_federated_data
from consortium.experiment.config import ConfigError, Experiment
from consortium.experiment.methods import Env, get_method
from consortium.report import write_report
from consortium.runtime import LocalRuntime


@dataclass
class ExperimentResult:
    run_dir: Path
    results: dict[str, RunResult]
    summaries: dict[str, dict[str, Any]]


MAX_MEMBERS_PRINTED = 30
DataBuilder = Callable[[Experiment], Any]
_DATA_BUILDERS: dict[str, DataBuilder] = {}


def register_data_builder(dataset: str, builder: DataBuilder) -> None:
    """Let a dataset that is not an image-classification pool (e.g. multi-task data) build its
    own federated data from the experiment. The result must offer ``num_clients``,
    ``client(cid)`` and ``report_table()``."""
    if dataset in _DATA_BUILDERS:
        raise ValueError(f"a data builder for {dataset!r} is already registered")
    _DATA_BUILDERS[dataset] = builder


def build_data(exp: Experiment) -> Any:
    """The experiment's federated data: a registered builder, else a partitioned pool."""
    d = exp.data
    if d.dataset in _DATA_BUILDERS:
        return _DATA_BUILDERS[d.dataset](exp)
    if d.options:
        raise ConfigError(f"data.options: dataset {d.dataset!r} takes no options")
    return federate(exp, d.dataset)


def federate(exp: Experiment, dataset: str | DatasetSplits) -> FederatedData:
    """Split ``dataset`` (a registered name or loaded splits) as the ``[data]`` table says."""
    d = exp.data
    return build_federated_data(
        dataset,
        num_clients=d.num_clients,
        scheme=d.partition,
        seed=exp.seed,
        path=d.path if isinstance(dataset, str) else None,
        alpha=d.alpha,
        beta=d.beta,
        k=d.k,
        min_size=d.min_size,
        client_test_fraction=d.client_test_fraction,
        server_val_fraction=d.server_val_fraction,
        test_fraction=d.test_fraction,
        max_samples=d.max_samples,
    )


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


def write_family_reports(methods: list[str], run_dir: Path) -> None:
    """Each distinct family report of ``methods`` once (Aequa's width curves, DMTRL's
    convergence and task-correlation plots, ...), after the generic report."""
    done: list[Any] = []
    for name in methods:
        report = get_method(name).report
        if report is not None and report not in done:
            done.append(report)
            report(run_dir)


def run_experiment(
    exp: Experiment,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> ExperimentResult:
    """Run every method of ``exp``; returns results and the summaries written to disk."""
    console = console or Console()
    run_dir = Path(out) if out is not None else Path(exp.output_dir) / exp.name
    with prepare_run_dir(exp, run_dir, resume, overwrite):
        return _run_methods(exp, run_dir, resume=resume, progress=progress, console=console)


def _run_methods(
    exp: Experiment, run_dir: Path, *, resume: bool, progress: bool, console: Console
) -> ExperimentResult:
    data = build_data(exp)
    table = data.report_table()
    with open(run_dir / "partition.txt", "w") as fh:
        Console(file=fh, width=200).print(table)
    if data.num_clients <= MAX_MEMBERS_PRINTED:
        console.print(table)
    else:
        console.print(f"{data.num_clients} members; partition table in {run_dir / 'partition.txt'}")
    env = Env(exp, data)
    fed = exp.federation
    results: dict[str, RunResult] = {}
    for name in exp.methods:
        spec = get_method(name)
        workflow, app = spec.build(env, exp.method_options[name])
        method_dir = run_dir / name
        resuming = resume and load_checkpoint(method_dir) is not None
        if fed.runtime == "flower-simulation":
            try:
                from consortium.runtime.flower import run_method_on_flower_simulation
            except ImportError:
                raise ConfigError(
                    'federation.runtime = "flower-simulation" needs: '
                    'pip install "consortium[flower]"'
                ) from None
            results[name] = run_method_on_flower_simulation(
                exp,
                name,
                workflow,
                data.num_clients,
                run_dir=method_dir,
                resume=resuming,
                progress=progress,
            )
            continue
        grid = LocalRuntime(
            app,
            data.client,
            data.num_clients,
            seed=exp.seed,
            failure_rate=fed.failure_rate,
            min_replies=fed.min_replies,
            max_reply_bytes=None if fed.max_reply_mb is None else int(fed.max_reply_mb * 1e6),
            member_timeout=fed.member_timeout,
        )
        results[name] = run_workflow(
            workflow,
            grid,
            run_dir=method_dir,
            resume=resuming,
            progress=progress,
            description=name,
        )
    console.print(write_report(run_dir))
    write_family_reports(exp.methods, run_dir)
    if exp.unlearn is not None:
        from consortium.experiment.unlearn import run_unlearning

        run_unlearning(
            exp,
            run_dir,
            exp.unlearn,
            resume=resume,
            overwrite=not resume,
            progress=progress,
            console=console,
        )
    console.print(f"run folder: {run_dir}")
    return ExperimentResult(run_dir, results, {n: r.summary for n, r in results.items()})
