"""Run a right-to-be-forgotten request on a saved run: the method and its baselines.

``consortium unlearn RUN_DIR --class 3`` (or an ``[unlearn]`` table in the experiment) loads the
run's configuration and final model, rebuilds the same members' data from the seed, and writes

    RUN_DIR/unlearn-<request>/<method>/   metrics.jsonl, summary.json, model.npz, checkpoint
    RUN_DIR/unlearn-<request>/summary.{json,md}, unlearning.png

Any saved model whose architecture has Conv2d / Linear layers can be unlearned, whichever
method trained it (FedAvg, Aequa, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from consortium.algorithms.reference import standalone_client_app
from consortium.algorithms.unlearning import (
    BaselineConfig,
    FineTune,
    GradientAscent,
    Retrain,
    SelectiveUnlearning,
    SelectiveUnlearningConfig,
    TfidfPrune,
    UnlearningRequest,
    add_unlearning_handlers,
)
from consortium.core.run import load_checkpoint, run_workflow, write_json
from consortium.core.rundir import claim_run_dir
from consortium.core.workflow import Workflow
from consortium.experiment.config import ConfigError, Experiment, UnlearnSection
from consortium.experiment.methods import Env
from consortium.experiment.runner import build_data
from consortium.metrics.unlearning import UnlearningAuditor
from consortium.report.plots import plot_unlearning
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig

COLUMNS = [
    ("forget_accuracy", "forget acc"),
    ("forget_test_accuracy", "forget test acc"),
    ("retain_test_accuracy", "retain test acc"),
    ("test_accuracy", "test acc"),
    ("mia_loss_threshold", "MIA loss"),
    ("mia_shadow", "MIA shadow"),
    ("wall_time_s", "time (s)"),
    ("time_vs_retrain", "time / retrain"),
    ("cpu_vs_retrain", "CPU / retrain"),
    ("bytes_up_total", "MB up"),
    ("bytes_down_total", "MB down"),
    ("parameters_touched", "params changed"),
]


def request_of(section: UnlearnSection) -> UnlearningRequest:
    return UnlearningRequest(
        section.kind, section.class_id, section.client_id, tuple(section.sample_ids)
    )


def _auditor(env: Env, request: UnlearningRequest, shadow: bool) -> UnlearningAuditor:
    data = env.data
    forget, retain = [], []
    for cid in range(data.num_clients):
        f, r = request.split(cid, data.client(cid).train_indices, data.pool_y)
        forget.append(f)
        retain.append(r)
    f_idx = np.sort(np.concatenate(forget))
    if len(f_idx) == 0:
        raise ConfigError(f"no member holds data covered by request {request.tag}")
    r_idx = np.concatenate(retain)
    rng = np.random.default_rng(env.experiment.seed)
    r_idx = np.sort(rng.choice(r_idx, size=min(len(r_idx), 2000), replace=False))
    forget_class = request.class_id if request.kind == "class" else None
    return UnlearningAuditor(
        env.model_fn(),
        data.pool_x[f_idx],
        data.pool_y[f_idx],
        data.pool_x[r_idx],
        data.pool_y[r_idx],
        data.test_x,
        data.test_y,
        forget_class=forget_class,
        shadow=shadow,
        seed=env.experiment.seed,
    )


def build_unlearning(name: str, env: Env, section: UnlearnSection, weights: dict) -> Workflow:
    """The workflow of one unlearning method or baseline."""
    exp, data = env.experiment, env.data
    request = request_of(section)
    local = LocalTrainConfig(
        epochs=section.epochs,
        batch_size=exp.train.batch_size,
        lr=section.lr,
        momentum=exp.train.momentum,
    )
    args = (request, env.model_fn(), weights, data.num_classes)
    if name in ("selective", "selective_server"):
        cfg = SelectiveUnlearningConfig(
            score=section.score,
            contrast=section.contrast,
            ratio=section.ratio,
            per_layer=section.per_layer,
            include_output_row=True,
            scheme="server" if name == "selective_server" else "decentralised",
            rounds=section.rounds,
            local=local,
            forget_loss=section.forget_loss,
            forget_weight=section.forget_weight,
            explain_samples=section.explain_samples,
            retain_fraction=section.retain_fraction,
        )
        return SelectiveUnlearning(cfg, *args, input_shape=data.input_shape, device=exp.device)
    base = BaselineConfig(rounds=section.baseline_rounds, local=local, prune_ratio=section.ratio)
    if name == "retrain":
        full = exp.train.local()
        cfg_r = BaselineConfig(rounds=section.retrain_rounds or exp.federation.rounds, local=full)
        return Retrain(cfg_r, *args)
    if name == "finetune":
        return FineTune(base, *args)
    if name == "gradient_ascent":
        return GradientAscent(base, *args)
    if name == "tfidf_prune":
        return TfidfPrune(base, *args, device=exp.device)
    raise ConfigError(f"unknown unlearning method {name!r}")


def _cell(key: str, v: Any) -> str:
    if v is None:
        return "—"
    if key.startswith("bytes"):
        return f"{v / 1e6:.2f}"
    if key == "wall_time_s":
        return f"{v:.1f}"
    if isinstance(v, float):
        return f"{v:.3f}" if key in ("time_vs_retrain", "cpu_vs_retrain") else f"{v:.4f}"
    return str(v)


def unlearning_table(summaries: dict[str, dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("method", style="bold")
    for _, label in COLUMNS:
        table.add_column(label, justify="right")
    for name, s in summaries.items():
        table.add_row(name, *[_cell(key, s.get(key)) for key, _ in COLUMNS])
    return table


def _markdown(summaries: dict[str, dict[str, Any]]) -> str:
    header = ["method"] + [label for _, label in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, s in summaries.items():
        cells = [_cell(key, s.get(key)) for key, _ in COLUMNS]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"


def run_unlearning(
    exp: Experiment,
    run_dir: str | Path,
    section: UnlearnSection,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> dict[str, dict[str, Any]]:
    """Unlearn ``section``'s request from ``run_dir/<source>/model.npz`` with each method."""
    console = console or Console()
    run_dir = Path(run_dir)
    model_file = run_dir / section.source / "model.npz"
    if not model_file.exists():
        raise ConfigError(f"{model_file}: no saved model (did the {section.source!r} run finish?)")
    request = request_of(section)
    dest = Path(out) if out is not None else run_dir / f"unlearn-{request.tag}"
    with claim_run_dir(dest, resume=resume, overwrite=overwrite, what="unlearning results"):
        return _unlearn(
            exp, section, model_file, dest, resume=resume, progress=progress, console=console
        )


def _unlearn(
    exp: Experiment,
    section: UnlearnSection,
    model_file: Path,
    dest: Path,
    *,
    resume: bool,
    progress: bool,
    console: Console,
) -> dict[str, dict[str, Any]]:
    request = request_of(section)
    (dest / "request.json").write_text(json.dumps(section.model_dump(), indent=2))
    with np.load(model_file) as saved:
        weights = {k: saved[k] for k in saved.files}
    env = Env(exp, build_data(exp))
    if request.client_id is not None and request.client_id >= env.data.num_clients:
        raise ConfigError(f"unlearn.client_id: no member {request.client_id}")
    if request.kind == "samples":
        own = set(env.data.client(request.client_id).train_indices.tolist())
        foreign = [i for i in request.sample_ids if i not in own]
        if foreign:
            raise ConfigError(
                f"unlearn.sample_ids: {foreign[:3]} are not member "
                f"{request.client_id}'s training samples"
            )
    model_fn = env.model_fn()
    try:
        model_fn().load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    except RuntimeError as err:
        raise ConfigError(f"{model_file} does not fit model {exp.model.name!r}: {err}") from None
    console.print(f"unlearning {request.tag} from {model_file}")
    auditor = _auditor(env, request, section.shadow_attack)
    summaries: dict[str, dict[str, Any]] = {"original": auditor(weights)}
    app = add_unlearning_handlers(standalone_client_app(model_fn, exp.device), model_fn, exp.device)
    for name in section.methods:
        if request.kind != "class" and name in ("selective_server", "tfidf_prune"):
            console.print(f"[yellow]{name} skipped: it needs a class request[/yellow]")
            continue
        workflow = build_unlearning(name, env, section, weights)
        grid = LocalRuntime(
            app,
            env.data.client,
            env.data.num_clients,
            seed=exp.seed,
            failure_rate=exp.federation.failure_rate,
            min_replies=exp.federation.min_replies,
            member_timeout=exp.federation.member_timeout,
        )
        method_dir = dest / name
        result = run_workflow(
            workflow,
            grid,
            run_dir=method_dir,
            resume=resume and load_checkpoint(method_dir) is not None,
            progress=progress,
            description=name,
        )
        summaries[name] = {**result.summary, **auditor(result.final_arrays)}
        write_json(method_dir / "summary.json", summaries[name])
    if "retrain" in summaries:
        # CPU time too: wall time on a shared machine also measures the neighbours.
        for key, ratio in (("wall_time_s", "time_vs_retrain"), ("cpu_time_s", "cpu_vs_retrain")):
            base = summaries["retrain"].get(key) or 0.0
            for s in summaries.values():
                if s.get(key) is not None and base > 0:
                    s[ratio] = s[key] / base
    (dest / "summary.json").write_text(json.dumps(summaries, indent=2, default=float))
    (dest / "summary.md").write_text(_markdown(summaries))
    plot_unlearning(summaries, dest / "unlearning.png")
    console.print(unlearning_table(summaries, f"unlearning {request.tag}"))
    console.print(f"results: {dest}")
    return summaries
