"""Unlearning as a post-hoc action: answer a request on a finished run with the method and its
baselines, verify each result, and write it all into one folder.

``consortium unlearn RUN_DIR --class 3`` (or an ``[unlearn]`` table in the experiment) loads the
run's configuration and final model, rebuilds the same members' data from the seed, and writes

    RUN_DIR/unlearn-<request>/request.json          the request (marks the folder)
    RUN_DIR/unlearn-<request>/<method>/             metrics.jsonl, summary.json, model.npz, ...
    RUN_DIR/unlearn-<request>/summary.json          every method's verification metrics

(``consortium.report`` renders ``summary.md`` and ``unlearning.png`` from those files). Any saved
model with Conv2d / Linear layers can be unlearned, whichever method trained it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from consortium.algorithms.base.supervised import standalone_client_app
from consortium.algorithms.registry import ActionContext, MethodContext
from consortium.algorithms.unlearning.baselines import (
    FineTune,
    GradientAscent,
    Relearn,
    Retrain,
    TfidfPrune,
)
from consortium.algorithms.unlearning.client import add_unlearning_handlers
from consortium.algorithms.unlearning.config import (
    BaselineConfig,
    SelectiveOptions,
    SelectiveUnlearningConfig,
    UnlearnConfig,
)
from consortium.algorithms.unlearning.request import UnlearningRequest
from consortium.algorithms.unlearning.selective import SelectiveUnlearning
from consortium.config import ConfigError
from consortium.core.client import ClientApp
from consortium.core.run import load_checkpoint, write_json
from consortium.core.workflow import Workflow
from consortium.metrics.unlearning import UnlearningAuditor
from consortium.training import LocalTrainConfig


def request_of(cfg: UnlearnConfig) -> UnlearningRequest:
    return UnlearningRequest(cfg.kind, cfg.class_id, cfg.client_id, tuple(cfg.sample_ids))


def destination(run_dir: Path, cfg: UnlearnConfig) -> Path:
    return Path(run_dir) / f"unlearn-{request_of(cfg).tag}"


def check(run_dir: Path, cfg: UnlearnConfig) -> None:
    """Refuse a request on a run that has no model to unlearn."""
    model_file = Path(run_dir) / cfg.source / "model.npz"
    if not model_file.exists():
        raise ConfigError(f"{model_file}: no saved model (did the {cfg.source!r} run finish?)")


def precheck(ctx: MethodContext, cfg: UnlearnConfig, methods: list[str]) -> None:
    """Refuse, before the experiment trains, a request its data or methods cannot serve."""
    if cfg.source not in methods:
        raise ConfigError(f"unlearn.source: {cfg.source!r} is not a method of the experiment")
    if cfg.class_id is not None and cfg.class_id >= ctx.data.num_classes:
        raise ConfigError(f"unlearn.class_id: no class {cfg.class_id} in the data")
    if cfg.client_id is not None and cfg.client_id >= ctx.data.num_clients:
        raise ConfigError(f"unlearn.client_id: no member {cfg.client_id}")


def client_app(ctx: MethodContext, cfg: UnlearnConfig) -> ClientApp:
    """Members of every unlearning method and baseline."""
    app = standalone_client_app(ctx.model_fn, ctx.device)
    return add_unlearning_handlers(app, ctx.model_fn, ctx.device)


def _auditor(
    ctx: MethodContext, request: UnlearningRequest, cfg: UnlearnConfig, weights: dict
) -> UnlearningAuditor:
    data = ctx.data
    forget, retain = [], []
    for cid in range(data.num_clients):
        f, r = request.split(cid, data.client(cid).train_indices, data.pool_y)
        forget.append(f)
        retain.append(r)
    f_idx = np.sort(np.concatenate(forget))
    if len(f_idx) == 0:
        raise ConfigError(f"no member holds data covered by request {request.tag}")
    r_idx = np.concatenate(retain)
    rng = np.random.default_rng(ctx.seed)
    r_idx = np.sort(rng.choice(r_idx, size=min(len(r_idx), 2000), replace=False))
    forget_class = request.class_id if request.kind == "class" else None
    member_retain = None
    if request.kind in ("class_at_client", "samples"):
        own = retain[int(request.client_id)]  # type: ignore[arg-type]
        member_retain = (data.pool_x[own], data.pool_y[own])
    return UnlearningAuditor(
        ctx.model_fn,
        data.pool_x[f_idx],
        data.pool_y[f_idx],
        data.pool_x[r_idx],
        data.pool_y[r_idx],
        data.test_x,
        data.test_y,
        original=weights,
        forget_class=forget_class,
        member_retain=member_retain,
        shadow=cfg.shadow_attack,
        inversion=cfg.inversion,
        seed=ctx.seed,
    )


def _local(ctx: ActionContext, cfg: UnlearnConfig) -> LocalTrainConfig:
    """Members' optimisation in every unlearning method, baseline and relearning run."""
    train = ctx.train
    return LocalTrainConfig(
        epochs=cfg.epochs, batch_size=train.batch_size, lr=cfg.lr, momentum=train.momentum
    )


def build_unlearning(
    name: str, ctx: ActionContext, cfg: UnlearnConfig, weights: dict[str, np.ndarray]
) -> Workflow:
    """The workflow of one unlearning method or baseline."""
    data, train = ctx.data, ctx.train
    request = request_of(cfg)
    local = _local(ctx, cfg)
    args = (request, ctx.model_fn, weights, data.num_classes)
    if name in ("selective", "selective_server"):
        shared = cfg.model_dump(include=set(SelectiveOptions.model_fields))
        selective = SelectiveUnlearningConfig(
            **shared,
            include_output_row=True,
            scheme="server" if name == "selective_server" else "decentralised",
            local=local,
        )
        return SelectiveUnlearning(
            selective, *args, input_shape=data.input_shape, device=ctx.device
        )
    base = BaselineConfig(rounds=cfg.baseline_rounds, local=local, prune_ratio=cfg.ratio)
    if name == "retrain":
        full = BaselineConfig(rounds=cfg.retrain_rounds or ctx.rounds, local=train)
        return Retrain(full, *args)
    if name == "finetune":
        return FineTune(base, *args)
    if name == "gradient_ascent":
        return GradientAscent(base, *args)
    if name == "tfidf_prune":
        return TfidfPrune(base, *args, device=ctx.device)
    raise ConfigError(f"unknown unlearning method {name!r}")


def run(ctx: ActionContext, cfg: UnlearnConfig, dest: Path, resume: bool) -> dict[str, Any]:
    """Unlearn ``cfg``'s request from ``RUN_DIR/<source>/model.npz`` with each method."""
    import torch

    assert ctx.execute is not None
    model_file = ctx.run_dir / cfg.source / "model.npz"
    request = request_of(cfg)
    (dest / "request.json").write_text(json.dumps(cfg.model_dump(), indent=2))
    with np.load(model_file) as saved:
        weights = {k: saved[k] for k in saved.files}
    data = ctx.data
    if request.client_id is not None and request.client_id >= data.num_clients:
        raise ConfigError(f"unlearn.client_id: no member {request.client_id}")
    if request.kind == "samples":
        own = set(data.client(request.client_id).train_indices.tolist())
        foreign = [i for i in request.sample_ids if i not in own]
        if foreign:
            raise ConfigError(
                f"unlearn.sample_ids: {foreign[:3]} are not member "
                f"{request.client_id}'s training samples"
            )
    try:
        ctx.model_fn().load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    except RuntimeError as err:
        raise ConfigError(f"{model_file} does not fit the experiment's model: {err}") from None
    ctx.say(f"unlearning {request.tag} from {model_file}")
    if cfg.shadow_attack:
        ctx.say("fitting the shadow model of the membership attack (one small training run)")
    auditor = _auditor(ctx, request, cfg, weights)
    summaries: dict[str, dict[str, Any]] = {"original": dict(auditor.original)}
    app = client_app(ctx, cfg)

    def relearn(name: str, start: dict[str, np.ndarray]) -> None:
        """Verification: rounds of FedAvg on the original data until the data is back."""
        if cfg.relearn_rounds == 0:
            return
        workflow = Relearn(
            BaselineConfig(rounds=cfg.relearn_rounds, local=_local(ctx, cfg)),
            request,
            ctx.model_fn,
            start,
            data.num_classes,
            relearned=lambda w: auditor.relearned(w, cfg.relearn_to),
        )
        where = dest / "relearn" / name
        result = ctx.execute(
            workflow,
            app,
            where,
            resume=resume and load_checkpoint(where) is not None,
            description=f"relearn {name}",
        )
        summaries[name]["relearn_rounds"] = result.summary.get("relearn_rounds")
        summaries[name]["relearn_max"] = cfg.relearn_rounds

    relearn("original", weights)
    for name in cfg.methods:
        if request.kind != "class" and name in ("selective_server", "tfidf_prune"):
            ctx.say(f"[yellow]{name} skipped: it needs a class request[/yellow]")
            continue
        workflow = build_unlearning(name, ctx, cfg, weights)
        method_dir = dest / name
        result = ctx.execute(
            workflow,
            app,
            method_dir,
            resume=resume and load_checkpoint(method_dir) is not None,
            description=name,
        )
        summaries[name] = {**result.summary, **auditor(result.final_arrays, name)}
        relearn(name, result.final_arrays)
        write_json(method_dir / "summary.json", summaries[name])
    auditor.compare(summaries, reference="retrain")
    if "retrain" in summaries:
        # CPU time too: wall time on a shared machine also measures the neighbours.
        for key, ratio in (("wall_time_s", "time_vs_retrain"), ("cpu_time_s", "cpu_vs_retrain")):
            base = summaries["retrain"].get(key) or 0.0
            for s in summaries.values():
                if s.get(key) is not None and base > 0:
                    s[ratio] = s[key] / base
    (dest / "summary.json").write_text(json.dumps(summaries, indent=2, default=float))
    return summaries


# --- the command line: consortium unlearn RUN_DIR --class 3 ... -----------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    who = p.add_argument_group("what to forget (class, class at a member, a member, samples)")
    who.add_argument("--class", dest="class_id", type=int, help="class to forget")
    who.add_argument("--client", dest="client_id", type=int, help="member whose data is forgotten")
    who.add_argument(
        "--samples",
        type=lambda t: [int(v) for v in t.split(",") if v],
        help="comma-separated pool ids of --client's samples",
    )
    p.add_argument("--from", dest="source", default=None, help="method folder holding model.npz")
    p.add_argument(
        "--methods",
        type=lambda t: [v for v in t.split(",") if v],
        help="comma-separated unlearning methods",
    )


def overrides(args: argparse.Namespace) -> list[str]:
    """The flags as ``unlearn.*`` overrides of the saved configuration."""
    out: list[str] = []
    if args.samples:
        kind = "samples"
    elif args.class_id is not None:
        kind = "class_at_client" if args.client_id is not None else "class"
    elif args.client_id is not None:
        kind = "client"
    else:
        kind = None
    if kind is not None:
        out.append(f'unlearn.kind="{kind}"')
    if args.class_id is not None:
        out.append(f"unlearn.class_id={args.class_id}")
    if args.client_id is not None:
        out.append(f"unlearn.client_id={args.client_id}")
    if args.samples:
        out.append(f"unlearn.sample_ids={args.samples}")
    if args.source:
        out.append(f'unlearn.source="{args.source}"')
    if args.methods:
        out.append("unlearn.methods=[" + ",".join(f'"{m}"' for m in args.methods) + "]")
    return out
