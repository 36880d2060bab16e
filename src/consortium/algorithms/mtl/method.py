"""The multi-task methods as experiment methods: ``dmtrl``, ``mtrl_centralised``,
``single_task`` and ``global_model`` (the data: one task per member, ``consortium.data.multitask``).

λ left unset in a method's options is chosen by validation (``lambda_grid``, a
``validation_fraction`` of every task's training data; :mod:`.selection`); for DMTRL and
centralised MTRL so is the Ω floor (``floor_grid``), together with λ2. They validate the same
objective, so they get the same pair, computed once per experiment (the experiment's shared
cache).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consortium.algorithms.mtl.baselines import GlobalModel, SingleTask
from consortium.algorithms.mtl.centralised import CentralisedMTRL
from consortium.algorithms.mtl.client import mtl_client_app
from consortium.algorithms.mtl.config import (
    DMTRLConfig,
    MTRLConfig,
    MTRLObjective,
    SingleModelConfig,
    ValidatedConfig,
)
from consortium.algorithms.mtl.dmtrl import DMTRL
from consortium.algorithms.mtl.selection import (
    LambdaChoice,
    global_fit,
    mtrl_fit,
    select_lambda,
    select_mtrl,
    single_task_fit,
)
from consortium.algorithms.registry import MethodContext, MethodSpec, register_method
from consortium.config import ConfigError
from consortium.core.client import ClientApp
from consortium.core.workflow import Workflow
from consortium.data.multitask import MultiTaskData


def _data(ctx: MethodContext) -> MultiTaskData:
    if not isinstance(ctx.data, MultiTaskData):
        raise ConfigError(
            "data.dataset: multi-task methods need one task per member (mtl_synthetic, "
            "school_hsb82, school_exam, digits_ovr, fashion_mnist_ovr)"
        )
    return ctx.data


def _needs_tasks(ctx: MethodContext, opts: Any) -> None:
    """The check before a run: the data holds one task per member."""
    _data(ctx)


def _choose(
    ctx: MethodContext, key: tuple[Any, ...], fit: Callable[..., Any], opts: ValidatedConfig
) -> LambdaChoice:
    """λ by validation, once per experiment and objective (the shared cache)."""
    full = ("mtl.lambda", *key, tuple(opts.lambda_grid), opts.validation_fraction, ctx.seed)
    if full not in ctx.cache:
        ctx.cache[full] = select_lambda(
            _data(ctx), fit, opts.lambda_grid, opts.validation_fraction, ctx.seed, ctx.say
        )
    return ctx.cache[full]  # type: ignore[no-any-return]


def _info(lam_name: str, value: float, choice: LambdaChoice | None) -> dict[str, Any]:
    info: dict[str, Any] = {lam_name: value, f"{lam_name}_by_validation": choice is not None}
    if choice is not None:
        info["validation_scores"] = {f"{k:g}": v for k, v in choice.scores.items()}
    return info


def _mtrl(ctx: MethodContext, opts: MTRLObjective) -> tuple[Any, dict[str, Any]]:
    """The MTRL options with λ2 and the Ω floor fixed: those left unset are chosen together
    by validation (once per experiment: DMTRL and centralised MTRL share the choice)."""
    data = _data(ctx)
    loss = opts.loss or ("hinge" if data.kind == "classification" else "squared")
    lam2, floor, choice = opts.lambda2, opts.omega_floor, None
    if lam2 is None or floor is None:
        lambdas = opts.lambda_grid if lam2 is None else [lam2]
        floors = opts.floor_grid if floor is None else [floor]
        key = (
            "mtl.mtrl",
            loss,
            opts.lambda1,
            tuple(lambdas),
            tuple(floors),
            opts.validation_fraction,
            ctx.seed,
        )
        if key not in ctx.cache:
            fit = mtrl_fit(loss, opts.lambda1)
            ctx.cache[key] = select_mtrl(
                data, fit, lambdas, floors, opts.validation_fraction, ctx.seed, ctx.say
            )
        choice = ctx.cache[key]
        lam2, floor = choice.best
    resolved = opts.model_copy(
        update={"lambda2": float(lam2), "omega_floor": float(floor), "loss": loss}
    )
    info: dict[str, Any] = {
        "lambda2": float(lam2),
        "omega_floor": float(floor),
        "lambda2_by_validation": opts.lambda2 is None,
        "omega_floor_by_validation": opts.omega_floor is None,
    }
    if choice is not None:
        info["validation_scores"] = {
            f"lambda2={lam:g} floor={fl:g}": v for (lam, fl), v in choice.scores.items()
        }
    return resolved, info


def _build_dmtrl(ctx: MethodContext, opts: DMTRLConfig) -> tuple[Workflow, ClientApp]:
    cfg, info = _mtrl(ctx, opts)
    data = _data(ctx)
    return DMTRL(cfg, data.dim, data.kind, data.true_correlation, info), mtl_client_app()


def _build_mtrl(ctx: MethodContext, opts: MTRLConfig) -> tuple[Workflow, ClientApp]:
    cfg, info = _mtrl(ctx, opts)
    data = _data(ctx)
    wf = CentralisedMTRL(
        cfg, data.kind, info, data.train_sets(), true_correlation=data.true_correlation
    )
    return wf, mtl_client_app()


def _single_model(
    ctx: MethodContext, opts: SingleModelConfig, which: str
) -> tuple[SingleModelConfig, dict[str, Any]]:
    data = _data(ctx)
    loss = opts.loss or ("hinge" if data.kind == "classification" else "squared")
    choice = None
    lam = opts.lam
    if lam is None:
        fit = single_task_fit(loss) if which == "single_task" else global_fit(loss)
        choice = _choose(ctx, (which, loss), fit, opts)
        lam = choice.best
    cfg = opts.model_copy(update={"lam": float(lam), "loss": loss})
    return cfg, _info("lam", float(lam), choice)


def _build_single(ctx: MethodContext, opts: SingleModelConfig) -> tuple[Workflow, ClientApp]:
    cfg, info = _single_model(ctx, opts, "single_task")
    return SingleTask(cfg, _data(ctx).kind, info), mtl_client_app()


def _build_global(ctx: MethodContext, opts: SingleModelConfig) -> tuple[Workflow, ClientApp]:
    cfg, info = _single_model(ctx, opts, "global_model")
    data = _data(ctx)
    return GlobalModel(cfg, data.kind, info, data.train_sets()), mtl_client_app()


register_method(
    MethodSpec(
        "dmtrl",
        DMTRLConfig,
        _build_dmtrl,
        "distributed multi-task relationship learning (primal-dual; α stays at the member)",
        report="mtl",
        check=_needs_tasks,
    )
)
register_method(
    MethodSpec(
        "mtrl_centralised",
        MTRLConfig,
        _build_mtrl,
        "MTRL on all tasks' data pooled, solved to high precision (reference)",
        report="mtl",
        check=_needs_tasks,
    )
)
register_method(
    MethodSpec(
        "single_task",
        SingleModelConfig,
        _build_single,
        "every member fits its own ridge / linear SVM alone (multi-task reference)",
        report="mtl",
        check=_needs_tasks,
    )
)
register_method(
    MethodSpec(
        "global_model",
        SingleModelConfig,
        _build_global,
        "one ridge / linear SVM for every task, on the pooled data (multi-task reference)",
        report="mtl",
        check=_needs_tasks,
    )
)
