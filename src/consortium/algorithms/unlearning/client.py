"""Member handlers for unlearning: explain, masked fine-tuning, and the baselines' steps.

Every handler resolves the request against its own data; the forget samples never leave the
member. ``explain`` returns scores only (one float per channel, or class-wise activation sums
for TF-IDF), ``unlearn_train`` returns only the masked entries it changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from consortium.algorithms.base.supervised import ModelFn, ScratchModel
from consortium.algorithms.unlearning.explain import (
    ablation_scores,
    class_activations,
    taylor_scores,
)
from consortium.algorithms.unlearning.losses import forget_term, masked_steps
from consortium.algorithms.unlearning.request import FORGET_IDS, UnlearningRequest
from consortium.algorithms.unlearning.stopping import (
    ForgetCriterion,
    class_margin,
    criterion_for,
    retire_class_row,
    scored_logits,
)
from consortium.core.aggregation import gather_masked
from consortium.core.client import ClientApp, ClientContext
from consortium.core.message import Arrays, Message
from consortium.models.weights import get_arrays
from consortium.training import LocalTrainConfig, batch_order, make_optimizer, train_local

MASK = "mask/"
PRUNE = "prune/"


def split_prefixed(arrays: Arrays, prefix: str) -> tuple[Arrays, Arrays]:
    """(model weights: arrays without a prefix or the request's sample ids, prefixed arrays
    with the prefix stripped)."""
    plain = {k: v for k, v in arrays.items() if "/" not in k and k != FORGET_IDS}
    tagged = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    return plain, tagged


def _subsample(idx: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(idx) <= limit:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))


def add_unlearning_handlers(app: ClientApp, model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Register ``explain``, ``class_activations``, ``unlearn_train``, ``unlearn_check``,
    ``train_retained`` and ``ascent`` on ``app``."""
    scratch = ScratchModel(model_fn, device)

    def load(msg: Message) -> nn.Module:
        return scratch.load(split_prefixed(msg.arrays, MASK)[0])

    def request_split(msg: Message, ctx: ClientContext) -> tuple[np.ndarray, np.ndarray]:
        req = UnlearningRequest.from_message(msg.config, msg.arrays)
        return req.split(ctx.client_id, ctx.data.train_indices, ctx.data.y)

    @app.on("explain")
    def explain(msg: Message, ctx: ClientContext) -> Message:
        forget, retain = request_split(msg, ctx)
        if len(forget) == 0:
            return msg.reply(metrics={"num_forget": 0.0})
        model = load(msg)
        limit = int(msg.config.get("explain_samples", 64))
        data = ctx.data
        f = _subsample(forget, limit, ctx.seed)
        contrast = str(msg.config.get("contrast", "per_class"))
        if contrast == "per_class" and msg.config.get("request_kind") != "class":
            # The forget samples share their classes with retained ones: the largest drop of a
            # retained class would cancel their own, and leave the mask to chance.
            contrast = "mean"
        r = _subsample(retain, limit, ctx.seed + 1) if contrast != "none" else None
        score_fn = taylor_scores if msg.config.get("score") == "taylor" else ablation_scores
        scores = score_fn(
            model,
            (data.x[f], data.y[f]),
            None if r is None or len(r) == 0 else (data.x[r], data.y[r]),
            contrast=contrast,  # type: ignore[arg-type]
            device=scratch.device,
        )
        return msg.reply(arrays=scores, metrics={"num_forget": float(len(forget))})

    @app.on("class_activations")
    def activations(msg: Message, ctx: ClientContext) -> Message:
        model = load(msg)
        data = ctx.data
        idx = ctx.data.train_indices
        num_classes = int(msg.config["num_classes"])
        sums, counts = class_activations(
            model, data.x[idx], data.y[idx], num_classes, device=scratch.device
        )
        arrays = {f"sum/{k}": v.astype(np.float64) for k, v in sums.items()}
        arrays["counts"] = counts
        return msg.reply(arrays=arrays, metrics={"num_examples": float(len(idx))})

    def verdict(
        msg: Message,
        ctx: ClientContext,
        model: nn.Module,
        forget: np.ndarray,
        retain: np.ndarray,
        judge: bool = True,
        fx: torch.Tensor | None = None,
    ) -> tuple[ForgetCriterion, Any, bool, dict[str, Any]]:
        """This member's criterion, the class-score test's samples (class requests; else
        None), whether the model meets both, and the figures it reports (``judge=False``:
        not tested, no figures)."""
        req = UnlearningRequest.from_message(msg.config, msg.arrays)
        data = ctx.data
        held = data.test_indices
        held_out = (data.x[held], data.y[held]) if len(held) else None
        # The level of unseen samples is read once, on the first model of the request (the one
        # to unlearn): read again on each fine-tuned model it would move off as they change.
        # (Kept as a float: a member's state is checkpointed.)
        key = f"unlearn_min_loss/{req.tag}"
        if key in ctx.state:
            rule = ForgetCriterion(min_loss=float(ctx.state[key]))
        else:
            level = float(msg.config.get("forget_accuracy", 0.0))
            rule = criterion_for(req, level, model, held_out)
            if rule.min_loss is not None:
                ctx.state[key] = rule.min_loss
        dev = scratch.device
        if fx is None:  # (the forget samples as a tensor, when the caller has them already)
            fx = torch.from_numpy(data.x[forget]).to(dev)
        scores = None
        if req.kind == "class" and len(retain):
            ref = _subsample(retain, int(msg.config.get("explain_samples", 64)), ctx.seed + 3)
            scores = (
                int(req.class_id),  # type: ignore[arg-type]
                fx,
                torch.from_numpy(data.x[ref]).to(dev),
                torch.from_numpy(data.y[ref]).to(dev),
                float(msg.config.get("class_score_quantile", 0.9)),
            )
        if not judge:
            return rule, scores, False, {}
        # One forward pass over the forget samples serves both tests.
        logits = scored_logits(model, fx)
        met, figures = rule.check(logits, torch.from_numpy(data.y[forget]).to(dev))
        if scores is not None:
            margin = class_margin(logits, scored_logits(model, scores[2]), scores[0], scores[4])
            figures["class_margin"] = margin
            met = met and margin <= 0
        return rule, scores, met, figures

    @app.on("unlearn_check")
    def unlearn_check(msg: Message, ctx: ClientContext) -> Message:
        """Whether the received model has forgotten this member's forget samples."""
        forget, retain = request_split(msg, ctx)
        if len(forget) == 0:
            return msg.reply(metrics={"num_forget": 0.0, "forgotten": 1.0})
        model = load(msg)
        _, _, met, figures = verdict(msg, ctx, model, forget, retain)
        return msg.reply(
            metrics={"num_forget": float(len(forget)), "forgotten": float(met), **figures}
        )

    @app.on("unlearn_train")
    def unlearn_train(msg: Message, ctx: ClientContext) -> Message:
        """Masked fine-tuning at a member holding forget data, until its criterion holds.

        The member first checks the model it received: if its forget samples already count as
        forgotten it takes no step. Otherwise each step pairs a retained batch (cross-entropy)
        with a forget batch (the forgetting term), and the member stops once the criterion
        holds on all its forget samples, or after one pass over the larger of the two. For a
        class request, the class's output row is then trained alone until the class no longer
        stands out on the member's forget samples (see ``stopping``).
        """
        forget, retain = request_split(msg, ctx)
        weights, mask = split_prefixed(msg.arrays, MASK)
        model = scratch.load(weights)
        unchanged = gather_masked(weights, mask)
        if len(forget) == 0:  # members without forget data are not needed to forget
            return msg.reply(
                arrays=unchanged, metrics={"num_examples": 0.0, "num_forget": 0.0, "forgotten": 1.0}
            )
        data = ctx.data
        dev = scratch.device
        fx = torch.from_numpy(data.x[forget]).to(dev)
        fy = torch.from_numpy(data.y[forget]).to(dev)
        judge = bool(msg.config.get("judge_received", True))
        rule, scores, met, before = verdict(msg, ctx, model, forget, retain, judge, fx)
        stats = {"num_forget": float(len(forget)), **before}
        if met:
            return msg.reply(
                arrays=unchanged, metrics={"num_examples": 0.0, "forgotten": 1.0, **stats}
            )
        cfg = LocalTrainConfig.from_config(msg.config)
        share = float(msg.config.get("retain_fraction", 1.0))
        if share < 1 and len(retain):
            retain = _subsample(retain, max(1, round(share * len(retain))), ctx.seed + 2)
        r_batches = batch_order(retain, cfg.batch_size, ctx.seed, cfg.epochs) if len(retain) else []
        f_batches = batch_order(forget, cfg.batch_size, ctx.seed + 1, cfg.epochs)

        def tensors(idx: np.ndarray | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            if idx is None:
                return None, None
            return torch.from_numpy(data.x[idx]).to(dev), torch.from_numpy(data.y[idx]).to(dev)

        def batches() -> Iterator[tuple[torch.Tensor | None, ...]]:
            # The shorter list is cycled alongside the longer one (built lazily: an early
            # stop leaves the rest unbuilt).
            for i in range(max(len(r_batches), len(f_batches))):
                rb = r_batches[i % len(r_batches)] if r_batches else None
                yield (*tensors(rb), *tensors(f_batches[i % len(f_batches)]))

        loss, steps = 0.0, 0
        if not judge or not rule.holds(before["forget_accuracy"], before["forget_loss"]):
            loss, steps = masked_steps(
                model,
                mask,
                batches(),
                cfg,
                forget_kind=str(msg.config.get("forget_loss", "others")),
                forget_weight=float(msg.config["forget_weight"]),
                num_classes=int(msg.config["num_classes"]),
                seed=ctx.seed,
                stop=rule.stop_rule(model, fx, fy),
            )
        row_steps = 0
        if scores is not None:
            cls, sfx, srx, sry, quantile = scores
            row_steps = retire_class_row(
                model,
                cls,
                sfx,
                srx,
                sry,
                cfg,
                quantile=quantile,
                max_steps=int(msg.config.get("row_steps", 100)),
            )
        used = [f_batches[i % len(f_batches)] for i in range(steps)]
        used += [r_batches[i % len(r_batches)] for i in range(steps)] if r_batches else []
        seen = len(np.unique(np.concatenate(used))) if used else len(forget)
        return msg.reply(
            arrays=gather_masked(get_arrays(model, mask), mask),
            metrics={
                "num_examples": float(seen),
                "forgotten": 0.0,
                "steps": float(steps),
                "row_steps": float(row_steps),
                "train_loss": loss,
                **stats,
            },
        )

    @app.on("train_retained")
    def train_retained(msg: Message, ctx: ClientContext) -> Message:
        _, retain = request_split(msg, ctx)
        weights, prune = split_prefixed(msg.arrays, PRUNE)
        model = scratch.load(weights)
        handles = []
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, m in prune.items():
                keep = torch.from_numpy(~np.asarray(m, bool)).to(params[name].device)
                params[name].mul_(keep)
                handles.append(params[name].register_hook(lambda g, keep=keep: g * keep))
        try:
            cfg = LocalTrainConfig.from_config(msg.config)
            fit = train_local(
                model, ctx.data.x, ctx.data.y, retain, cfg, ctx.seed, device=scratch.device
            )
        finally:
            for h in handles:
                h.remove()
        return msg.reply(arrays=get_arrays(model), metrics=fit)

    @app.on("ascent")
    def ascent(msg: Message, ctx: ClientContext) -> Message:
        forget, _ = request_split(msg, ctx)
        model = load(msg)
        if len(forget) == 0:
            return msg.reply(arrays=get_arrays(model), metrics={"num_examples": 0.0})
        cfg = LocalTrainConfig.from_config(msg.config)
        opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
        gen = torch.Generator().manual_seed(ctx.seed)
        model.train()
        num_classes = int(msg.config["num_classes"])
        dev = scratch.device
        for idx in batch_order(forget, cfg.batch_size, ctx.seed, cfg.epochs):
            xb = torch.from_numpy(ctx.data.x[idx]).to(dev)
            yb = torch.from_numpy(ctx.data.y[idx]).to(dev)
            loss = forget_term(model(xb), yb, "ascent", num_classes, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return msg.reply(arrays=get_arrays(model), metrics={"num_examples": float(len(forget))})

    return app
