"""Member handlers for unlearning: explain, masked fine-tuning, and the baselines' steps.

Every handler resolves the request against its own data; the forget samples never leave the
member. ``explain`` returns scores only (one float per channel, or class-wise activation sums
for TF-IDF), ``unlearn_train`` returns only the masked entries it changed.
"""

from __future__ import annotations

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
from consortium.algorithms.unlearning.request import UnlearningRequest
from consortium.core.aggregation import gather_masked
from consortium.core.client import ClientApp, ClientContext
from consortium.core.message import Arrays, Message
from consortium.models.weights import get_arrays
from consortium.training import LocalTrainConfig, batch_order, make_optimizer, train_local

MASK = "mask/"
PRUNE = "prune/"


def split_prefixed(arrays: Arrays, prefix: str) -> tuple[Arrays, Arrays]:
    """(arrays without the prefix, prefixed arrays with the prefix stripped); the request's
    own arrays (``forget_ids``) are in neither."""
    plain = {
        k: v
        for k, v in arrays.items()
        if not k.startswith(prefix) and "/" not in k and k != "forget_ids"
    }
    tagged = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    return plain, tagged


def _subsample(idx: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(idx) <= limit:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))


def add_unlearning_handlers(app: ClientApp, model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Register ``explain``, ``class_activations``, ``unlearn_train``, ``train_retained`` and
    ``ascent`` on ``app``."""
    scratch = ScratchModel(model_fn, device)

    def load(msg: Message) -> nn.Module:
        weights = {k: v for k, v in msg.arrays.items() if "/" not in k and k != "forget_ids"}
        return scratch.load(weights)

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
        r = _subsample(retain, limit, ctx.seed + 1) if msg.config.get("contrast", True) else None
        score_fn = taylor_scores if msg.config.get("score") == "taylor" else ablation_scores
        scores = score_fn(
            model,
            (data.x[f], data.y[f]),
            None if r is None or len(r) == 0 else (data.x[r], data.y[r]),
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

    @app.on("unlearn_train")
    def unlearn_train(msg: Message, ctx: ClientContext) -> Message:
        forget, retain = request_split(msg, ctx)
        weights, mask = split_prefixed(msg.arrays, MASK)
        model = scratch.load(weights)
        cfg = LocalTrainConfig.from_config(msg.config)
        data = ctx.data
        dev = scratch.device
        share = float(msg.config.get("retain_fraction", 1.0))
        if share < 1 and len(retain):
            retain = _subsample(retain, max(1, round(share * len(retain))), ctx.seed + 2)
        r_batches = batch_order(retain, cfg.batch_size, ctx.seed, cfg.epochs) if len(retain) else []
        f_batches = (
            batch_order(forget, cfg.batch_size, ctx.seed + 1, cfg.epochs) if len(forget) else []
        )
        # One step per retained batch, the forget batches cycled alongside; a member with no
        # retained data steps through its forget batches once per epoch.
        steps = len(r_batches) or len(f_batches)

        def tensors(idx: np.ndarray | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            if idx is None:
                return None, None
            return torch.from_numpy(data.x[idx]).to(dev), torch.from_numpy(data.y[idx]).to(dev)

        batches = []
        for i in range(steps):
            rb = r_batches[i] if i < len(r_batches) else None
            fb = f_batches[i % len(f_batches)] if f_batches else None
            batches.append((*tensors(rb), *tensors(fb)))
        loss = masked_steps(
            model,
            mask,
            batches,
            cfg,
            forget_kind=str(msg.config.get("forget_loss", "random_label")),
            forget_weight=float(msg.config.get("forget_weight", 1.0)),
            num_classes=int(msg.config["num_classes"]),
            seed=ctx.seed,
        )
        changed = gather_masked(get_arrays(model, mask), mask)
        return msg.reply(
            arrays=changed,
            metrics={
                "num_examples": float(len(retain) + len(forget)),
                "num_forget": float(len(forget)),
                "train_loss": loss,
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
