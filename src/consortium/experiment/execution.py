"""Where the application layer meets a runtime: one factory for every entry point.

``consortium run``, the unlearning action, the Flower app layer and Python users all run a
workflow through :func:`execute`, so the experiment's runtime settings (in-process or Flower's
simulation, seed, dropouts, ``min_replies``, the reply-size limit) apply everywhere the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from consortium.algorithms.registry import MethodContext
from consortium.config import ConfigError
from consortium.core.client import ClientApp
from consortium.core.grid import Grid
from consortium.core.run import RunResult, run_workflow
from consortium.core.workflow import Workflow
from consortium.experiment.config import Experiment
from consortium.models import build_model


def method_context(
    exp: Experiment,
    data: Any,
    cache: dict[str, Any] | None = None,
    say: Callable[[str], None] | None = None,
) -> MethodContext:
    """What builders get: the data, a model builder from ``[model]``, device, seed, a cache
    and where to report progress (``say``; default: the ``consortium.progress`` log)."""
    m = exp.model

    def model_fn() -> Any:
        try:
            return build_model(m.name, data.input_shape, data.num_classes, **m.options)
        except ConfigError:
            raise
        except (ValueError, TypeError, RuntimeError) as err:  # options the model refuses
            raise ConfigError(f"model: {err}") from None

    ctx = MethodContext(data, model_fn, exp.device, exp.seed, {} if cache is None else cache)
    if say is not None:
        ctx.say = say
    return ctx


def make_grid(exp: Experiment, app: ClientApp, data: Any) -> Grid:
    """The in-process grid the experiment's ``[federation]`` table describes (use it as a
    context manager: its worker processes stop when the block ends)."""
    from consortium.runtime import LocalRuntime

    fed = exp.federation
    limits = fed.model_dump(include={"failure_rate", "min_replies", "member_timeout"})
    return LocalRuntime(
        app,
        data.client,
        data.num_clients,
        seed=exp.seed,
        max_reply_bytes=fed.max_reply_bytes,
        workers=member_workers(exp, data.num_clients),
        torch_threads=fed.torch_threads,
        start_workers_after=fed.start_workers_after,
        **limits,
    )


def member_workers(exp: Experiment, num_clients: int) -> int:
    """How many processes train members: ``federation.workers``, by default one per usable
    core (never more than there are members).

    On CUDA members take turns on the device in this process (the default of 1): CUDA
    cannot be used in forked processes, and one small model rarely fills a GPU anyway.
    """
    from consortium.runtime.pool import usable_cores
    from consortium.training import resolve_device

    fed = exp.federation
    cuda = resolve_device(exp.device).type == "cuda"
    if fed.workers is not None and fed.workers > 1 and cuda:
        raise ConfigError(
            f'federation.workers = {fed.workers} needs device = "cpu": CUDA cannot be used '
            "in forked worker processes (members share the GPU in turn with workers = 1)"
        )
    if fed.workers is not None:
        return min(fed.workers, num_clients)
    if cuda or fed.torch_threads > 1:
        return 1
    return max(1, min(usable_cores(), num_clients))


def execute(
    exp: Experiment,
    target: str,
    workflow: Workflow,
    app: ClientApp,
    data: Any,
    run_dir: str | Path | None,
    *,
    resume: bool = False,
    progress: bool = True,
    description: str | None = None,
    callbacks: Any = (),
) -> RunResult:
    """Run ``workflow`` with members ``app`` on the experiment's runtime.

    ``target`` names what the members run (``"fedavg"``, or ``"action:unlearn"``): Flower's
    simulation rebuilds the members from the experiment in its own worker processes.
    """
    if exp.federation.runtime == "flower-simulation":
        try:
            from consortium.experiment.flower import run_on_simulation
        except ImportError:
            raise ConfigError(
                'federation.runtime = "flower-simulation" needs: pip install "consortium[flower]"'
            ) from None
        return run_on_simulation(
            exp,
            target,
            workflow,
            data.num_clients,
            run_dir=run_dir,
            resume=resume,
            progress=progress,
            description=description or target,
            data=data,
        )
    from consortium.runtime.pool import compute_threads

    # The server's side of the run (aggregation, evaluation, a centralised reference's
    # training) uses the members' thread count too: never more threads than cores, and the
    # same sums whatever the number of workers.
    with compute_threads(exp.federation.torch_threads), make_grid(exp, app, data) as grid:
        return run_workflow(
            workflow,
            grid,
            run_dir=run_dir,
            resume=resume,
            progress=progress,
            description=description or target,
            callbacks=callbacks,
        )
