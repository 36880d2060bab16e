"""Post-hoc actions on a finished run (``consortium unlearn RUN_DIR --class 3``, or an
``[unlearn]`` table in the experiment): the same wiring for every registered action."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from consortium.algorithms.registry import ActionContext, ActionSpec, get_action
from consortium.config import ConfigError, validate
from consortium.core.rundir import check_run_dir, claim_run_dir, discard_untrained
from consortium.experiment.checks import check_action, checked_data
from consortium.experiment.config import Experiment
from consortium.experiment.execution import execute, method_context
from consortium.report import family_report, report_console
from consortium.training import check_device


def run_action(
    exp: Experiment,
    name: str,
    run_dir: str | Path,
    config: Any = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run action ``name`` on ``run_dir`` with ``config`` (its options, or a dict of them;
    default: the experiment's table)."""
    console = console or report_console()
    spec = get_action(name)
    config = config if config is not None else exp.action(name)
    if config is None:
        raise ConfigError(f"{name}: no [{name}] options given")
    config = validate(spec.config, config, name)
    run_dir = Path(run_dir)
    dest = Path(out) if out is not None else spec.dest(run_dir, config)
    what = f"{name} results"
    # Everything checkable before the results folder exists (see experiment/checks.py).
    check_run_dir(dest, resume=resume, overwrite=overwrite, what=what)
    if spec.check is not None:
        spec.check(run_dir, config)
    check_device(exp.device)
    data = checked_data(exp)
    check_action(name, method_context(exp, data), config, list(exp.methods))
    lock = claim_run_dir(dest, resume=resume, overwrite=overwrite, what=what)
    try:
        with lock:
            summaries = _run(exp, spec, data, run_dir, config, dest, resume, progress, console)
    except BaseException:
        discard_untrained(lock)
        raise
    if spec.report is not None:
        console.print(family_report(spec.report, dest))
    console.print(f"results: {dest}")
    return summaries


def _run(
    exp: Experiment,
    spec: ActionSpec,
    data: Any,
    run_dir: Path,
    config: Any,
    dest: Path,
    resume: bool,
    progress: bool,
    console: Console,
) -> dict[str, Any]:
    name = spec.name
    base = method_context(exp, data)
    target = f"action:{name}"

    def run(workflow: Any, app: Any, where: Path, **kw: Any) -> Any:
        return execute(exp, target, workflow, app, data, where, progress=progress, **kw)

    ctx = ActionContext(
        base.data,
        base.model_fn,
        base.device,
        base.seed,
        base.cache,
        say=lambda text: console.print(text),
        run_dir=run_dir,
        train=exp.train,
        rounds=exp.federation.rounds,
        execute=run,
        progress=progress,
    )
    return spec.run(ctx, config, dest, resume)
