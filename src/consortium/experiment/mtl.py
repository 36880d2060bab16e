"""Multi-task methods and datasets for experiment files.

Registers the methods ``dmtrl``, ``mtrl_centralised``, ``single_task`` and ``global_model``
and the datasets ``mtl_synthetic``, ``school_hsb82``, ``school_exam``, ``digits_ovr`` and
``fashion_mnist_ovr`` (one task per member; dataset options go in ``[data] options``).

λ left unset in a method's section is chosen by validation (``lambda_grid``, a
``validation_fraction`` of every task's training data; see
:mod:`consortium.algorithms.mtl.selection`). DMTRL and centralised MTRL validate the same
objective, so they get the same λ2 (computed once per experiment).

Plots beyond the generic report: :func:`write_mtl_report` (convergence, bytes per round, task
correlation heatmaps, per-task scores) on a finished run folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from consortium.algorithms.mtl import (
    DMTRL,
    CentralisedMTRL,
    DMTRLConfig,
    GlobalModel,
    MTRLConfig,
    SingleModelConfig,
    SingleTask,
    mtl_client_app,
    write_method_plots,
)
from consortium.algorithms.mtl.plots import plot_task_scores
from consortium.algorithms.mtl.selection import (
    DEFAULT_GRID,
    LambdaChoice,
    global_fit,
    mtrl_fit,
    select_lambda,
    single_task_fit,
)
from consortium.core.client import ClientApp
from consortium.core.workflow import Workflow
from consortium.data.multitask import (
    MultiTaskData,
    one_vs_rest_tasks,
    school_tasks,
    synthetic_tasks,
)
from consortium.experiment.config import ConfigError, Experiment, Section
from consortium.experiment.methods import Env, MethodSpec, register_method
from consortium.experiment.runner import register_data_builder

LossOption = Literal["squared", "hinge"] | None


def _one_line(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in (where, *first["loc"]) if p != "")
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    return f"{loc}: {msg}"


# --- options shared by the methods ---------------------------------------------------------


class _Validated(Section):
    loss: LossOption = Field(
        None, description="squared | hinge (default: squared for regression, hinge for ±1 labels)"
    )
    lambda_grid: list[float] = Field(
        default_factory=lambda: list(DEFAULT_GRID),
        min_length=1,
        description="λ candidates when λ is chosen by validation",
    )
    validation_fraction: float = Field(
        0.25, gt=0, lt=1, description="share of each task's training data used to validate λ"
    )


class DMTRLOptions(_Validated):
    lambda1: float = Field(0.0, ge=0, description="weight of (λ1/2)‖W‖²")
    lambda2: float | None = Field(
        None, gt=0, description="weight of (λ2/2) tr(W Ω⁻¹ Wᵀ); unset: chosen by validation"
    )
    local_passes: float = Field(0.5, gt=0, description="H as a multiple of n_i")
    local_steps: int | None = Field(None, ge=1, description="a fixed H for every member")
    sigma: float | Literal["safe", "rowsum"] = Field("safe", description="σ' or its rule")
    aggregation: Literal["add", "average"] = "add"
    omega_floor: float = Field(0.1, gt=0, lt=1, description="Ω ⪰ (omega_floor/m) I")
    omega_every: int = Field(100, ge=1, description="at most this many rounds per W-step")
    inexact: float = Field(0.1, ge=0, description="early W-steps solved to inexact × ΔΩ")
    omega_updates: int | None = Field(None, ge=0, description="cap on Ω-steps (0: Ω = I/m)")
    gap_tolerance: float = Field(1e-6, ge=0, description="relative gap of a solved W-step")
    omega_tolerance: float = Field(1e-6, ge=0, description="relative ΔΩ of a converged Ω")


class MTRLOptions(_Validated):
    lambda1: float = Field(0.0, ge=0)
    lambda2: float | None = Field(None, gt=0, description="unset: chosen by validation")
    omega_floor: float = Field(0.1, gt=0, lt=1)
    tolerance: float = Field(1e-10, gt=0, description="stop when the relative ΔΩ is below")
    max_outer: int = Field(5000, ge=1, description="cap on Ω-steps")


class SingleModelOptions(_Validated):
    lam: float | None = Field(None, gt=0, description="λ of (λ/2)‖w‖²; unset: validation")


# --- λ by validation, once per experiment and objective -------------------------------------

_CHOICES: dict[tuple[Any, ...], tuple[MultiTaskData, LambdaChoice]] = {}


def _choose(
    data: MultiTaskData, key: tuple[Any, ...], fit: Callable[..., Any], opts: _Validated, seed: int
) -> LambdaChoice:
    full = (id(data), *key, tuple(opts.lambda_grid), opts.validation_fraction, seed)
    if full not in _CHOICES or _CHOICES[full][0] is not data:
        if len(_CHOICES) > 16:
            _CHOICES.clear()
        choice = select_lambda(data, fit, opts.lambda_grid, opts.validation_fraction, seed)
        _CHOICES[full] = (data, choice)
    return _CHOICES[full][1]


def _data(env: Env) -> MultiTaskData:
    if not isinstance(env.data, MultiTaskData):
        raise ConfigError(
            f"data.dataset: {env.experiment.data.dataset!r} is not multi-task data; use one of "
            f"{', '.join(sorted(DATASETS))}"
        )
    return env.data


def _loss(data: MultiTaskData, opts: _Validated) -> str:
    return opts.loss or ("hinge" if data.kind == "classification" else "squared")


def _info(lam_name: str, value: float, choice: LambdaChoice | None) -> dict[str, Any]:
    info: dict[str, Any] = {lam_name: value, f"{lam_name}_by_validation": choice is not None}
    if choice is not None:
        info["validation_scores"] = {f"{k:g}": v for k, v in choice.scores.items()}
    return info


def _mtrl_lambda(env: Env, data: MultiTaskData, loss: str, opts: Any) -> tuple[float, Any]:
    if opts.lambda2 is not None:
        return float(opts.lambda2), None
    key = ("mtrl", loss, opts.lambda1, opts.omega_floor)
    fit = mtrl_fit(loss, opts.lambda1, opts.omega_floor)
    choice = _choose(data, key, fit, opts, env.experiment.seed)
    return choice.best, choice


def _build_dmtrl(env: Env, opts: DMTRLOptions) -> tuple[Workflow, ClientApp]:
    data = _data(env)
    loss = _loss(data, opts)
    lam2, choice = _mtrl_lambda(env, data, loss, opts)
    try:
        cfg = DMTRLConfig(
            rounds=env.experiment.federation.rounds,
            loss=loss,  # type: ignore[arg-type]
            lambda1=opts.lambda1,
            lambda2=lam2,
            local_passes=opts.local_passes,
            local_steps=opts.local_steps,
            sigma=opts.sigma,
            aggregation=opts.aggregation,
            omega_floor=opts.omega_floor,
            omega_every=opts.omega_every,
            inexact=opts.inexact,
            omega_updates=opts.omega_updates,
            gap_tolerance=opts.gap_tolerance,
            omega_tolerance=opts.omega_tolerance,
        )
    except ValueError as err:
        raise ConfigError(f"dmtrl: {err}") from None
    info = _info("lambda2", lam2, choice)
    return DMTRL(cfg, data.dim, data.kind, data.true_correlation, info), mtl_client_app()


def _build_mtrl(env: Env, opts: MTRLOptions) -> tuple[Workflow, ClientApp]:
    data = _data(env)
    loss = _loss(data, opts)
    lam2, choice = _mtrl_lambda(env, data, loss, opts)
    try:
        cfg = MTRLConfig(
            loss=loss,  # type: ignore[arg-type]
            lambda1=opts.lambda1,
            lambda2=lam2,
            omega_floor=opts.omega_floor,
            tolerance=opts.tolerance,
            max_outer=opts.max_outer,
        )
    except ValueError as err:
        raise ConfigError(f"mtrl_centralised: {err}") from None
    wf = CentralisedMTRL(
        cfg, data.train_sets(), data.kind, data.true_correlation, _info("lambda2", lam2, choice)
    )
    return wf, mtl_client_app()


def _single_model(
    env: Env, opts: SingleModelOptions, which: str
) -> tuple[SingleModelConfig, MultiTaskData, dict[str, Any]]:
    data = _data(env)
    loss = _loss(data, opts)
    choice = None
    lam = opts.lam
    if lam is None:
        fit = single_task_fit(loss) if which == "single_task" else global_fit(loss)
        choice = _choose(data, (which, loss), fit, opts, env.experiment.seed)
        lam = choice.best
    try:
        cfg = SingleModelConfig(loss=loss, lam=lam)  # type: ignore[arg-type]
    except ValueError as err:
        raise ConfigError(f"{which}: {err}") from None
    return cfg, data, _info("lam", lam, choice)


def _build_single(env: Env, opts: SingleModelOptions) -> tuple[Workflow, ClientApp]:
    cfg, data, info = _single_model(env, opts, "single_task")
    return SingleTask(cfg, data.kind, info), mtl_client_app()


def _build_global(env: Env, opts: SingleModelOptions) -> tuple[Workflow, ClientApp]:
    cfg, data, info = _single_model(env, opts, "global_model")
    return GlobalModel(cfg, data.train_sets(), data.kind, info), mtl_client_app()


def _report(run_dir: Path) -> list[Path]:
    """The family's report (bound late: :func:`write_mtl_report` is defined below)."""
    return write_mtl_report(run_dir)


register_method(
    MethodSpec(
        "dmtrl",
        DMTRLOptions,
        _build_dmtrl,
        "distributed multi-task relationship learning (primal-dual; α stays at the member)",
        _report,
    )
)
register_method(
    MethodSpec(
        "mtrl_centralised",
        MTRLOptions,
        _build_mtrl,
        "MTRL on all tasks' data pooled, solved to high precision (reference)",
        _report,
    )
)
register_method(
    MethodSpec(
        "single_task",
        SingleModelOptions,
        _build_single,
        "every member fits its own ridge / linear SVM alone (multi-task reference)",
        _report,
    )
)
register_method(
    MethodSpec(
        "global_model",
        SingleModelOptions,
        _build_global,
        "one ridge / linear SVM for every task, on the pooled data (multi-task reference)",
        _report,
    )
)


# --- datasets --------------------------------------------------------------------------------


class SyntheticOptions(Section):
    clusters: list[int] = Field(default_factory=lambda: [4, 3], description="cluster sizes")
    negated: list[int] = Field(
        default_factory=lambda: [2, 0], description="tasks negatively related to each cluster"
    )
    unrelated: int = Field(3, ge=0)
    rho: float = Field(0.9, gt=0, le=1, description="correlation within a cluster")
    dim: int = Field(30, ge=1)
    train_min: int = Field(15, ge=2, description="fewest training samples of a task")
    train_max: int = Field(40, ge=2, description="most training samples of a task")
    test_samples: int = Field(200, ge=1)
    noise: float = Field(1.0, ge=0)
    kind: Literal["regression", "classification"] = "regression"


class SchoolOptions(Section):
    test_fraction: float = Field(0.25, gt=0, lt=1)
    bias: bool = True
    standardize_target: bool = True
    min_samples: int = Field(4, ge=2)


class OneVsRestOptions(Section):
    test_fraction: float = Field(0.25, gt=0, lt=1)
    max_per_task: int | None = Field(None, ge=4, description="subsample every task")
    bias: bool = True


def _options(exp: Experiment, schema: type[BaseModel]) -> Any:
    try:
        return schema.model_validate(exp.data.options)
    except ValidationError as err:
        raise ConfigError(_one_line(err, "data.options")) from None


def _synthetic(exp: Experiment) -> MultiTaskData:
    o = _options(exp, SyntheticOptions)
    try:
        return synthetic_tasks(
            clusters=o.clusters,
            negated=o.negated,
            unrelated=o.unrelated,
            rho=o.rho,
            dim=o.dim,
            train_samples=(o.train_min, o.train_max),
            test_samples=o.test_samples,
            noise=o.noise,
            kind=o.kind,
            seed=exp.seed,
        )
    except ValueError as err:
        raise ConfigError(f"data.options: {err}") from None


def _school(which: Literal["hsb82", "exam"]) -> Callable[[Experiment], MultiTaskData]:
    def build(exp: Experiment) -> MultiTaskData:
        o = _options(exp, SchoolOptions)
        return school_tasks(
            which, o.test_fraction, o.bias, o.standardize_target, o.min_samples, exp.seed
        )

    return build


def _ovr(dataset: str) -> Callable[[Experiment], MultiTaskData]:
    def build(exp: Experiment) -> MultiTaskData:
        o = _options(exp, OneVsRestOptions)
        return one_vs_rest_tasks(
            dataset, o.test_fraction, o.max_per_task, o.bias, exp.data.path, exp.seed
        )

    return build


DATASETS: dict[str, Callable[[Experiment], MultiTaskData]] = {
    "mtl_synthetic": _synthetic,
    "school_hsb82": _school("hsb82"),
    "school_exam": _school("exam"),
    "digits_ovr": _ovr("digits"),
    "fashion_mnist_ovr": _ovr("fashion_mnist"),
}
for _name, _builder in DATASETS.items():
    register_data_builder(_name, _builder)


# --- plots -----------------------------------------------------------------------------------


SUMMARY_KEYS: tuple[tuple[str, str], ...] = (
    ("mean_rmse", "mean RMSE"),
    ("pooled_rmse", "pooled RMSE"),
    ("mean_explained_variance", "mean expl. var."),
    ("test_accuracy", "test acc"),
    ("mean_client_accuracy", "mean task acc"),
    ("objective", "objective"),
    ("relative_gap", "rel. gap"),
    ("omega_steps", "Ω-steps"),
    ("converged_round", "converged round"),
    ("correlation_sign_agreement", "sign agreement"),
    ("lambda2", "λ2"),
    ("lam", "λ"),
    ("bytes_up_total", "bytes up"),
    ("wall_time_s", "time (s)"),
)


def mtl_summary_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per method with the multi-task scores (the generic table shows accuracy only)."""
    keys = [
        (k, t) for k, t in SUMMARY_KEYS if any(s.get(k) is not None for s in summaries.values())
    ]
    lines = [
        "| method | " + " | ".join(t for _, t in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for name, s in summaries.items():
        cells = []
        for k, _ in keys:
            v = s.get(k)
            cells.append("—" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_mtl_report(run_dir: str | Path) -> list[Path]:
    """Plots and table of a finished multi-task experiment: in every method folder its
    convergence, bytes-per-round and task-correlation plots (what its files support), and at
    the top ``task_scores.png`` (every method's per-task test score) and ``mtl_summary.md``."""
    run_dir = Path(run_dir)
    written: list[Path] = []
    summaries: dict[str, dict[str, Any]] = {}
    for method_dir in sorted(p for p in run_dir.iterdir() if (p / "summary.json").exists()):
        written += write_method_plots(method_dir)
        summaries[method_dir.name] = json.loads((method_dir / "summary.json").read_text())
    scores = plot_task_scores(run_dir, run_dir / "task_scores.png")
    table = run_dir / "mtl_summary.md"
    table.write_text(mtl_summary_markdown(summaries))
    return [*written, *([scores] if scores else []), table]
