"""Aequa's member side: train a slimmable model at several widths per batch, evaluate a reward.

Handlers (besides the supervised ``train`` / ``evaluate`` and the reference's ``train_alone``):

* ``aequa_train`` — the received model (the full slimmable model, or a width-``w`` sub-model
  in the training-time variant) is trained with Algorithm 1's objective: the loss of its
  widest network plus the loss of ``num_random`` narrower networks drawn from ``[p_min, 1]``
  (``sandwich``: the narrowest one too), all sharing weights; the narrower terms on every
  batch (``training = "algorithm1"``) or on one batch in ``narrow_every`` (the default);
* ``evaluate_width`` — the member loads a reward sub-model of the width named in the config
  and scores it on its own test view;
* ``describe`` — the member's number of training samples (a data-size contribution).

Inside a TEE (docs/methods/aequa.md) the member never sees the full-width weights it trains with;
here in simulation that assumption is only stated, not enforced.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from consortium.algorithms.aequa.config import WidthTraining
from consortium.algorithms.base.supervised import (
    ModelFn,
    add_standalone_handler,
    evaluate_member,
    supervised_client_app,
    train_member,
)
from consortium.algorithms.fairness import describe_handler
from consortium.core.client import ClientApp, ClientContext
from consortium.core.message import Message
from consortium.core.sampling import derive_seed
from consortium.models.slimmable import SlimmableModel, require_slimmable
from consortium.models.weights import get_arrays, set_arrays
from consortium.training import LocalTrainConfig, resolve_device


class WidthModels:
    """Scratch models per width for the process: the full model and a few narrowed copies.

    Like :class:`~consortium.algorithms.base.supervised.ScratchModel`, a member loads received
    weights into a reused module instead of building one per message; narrowed modules are
    kept for the ``max_widths`` most recent widths.
    """

    def __init__(self, model_fn: ModelFn, device: str = "auto", max_widths: int = 8) -> None:
        self.model_fn = model_fn
        self.device = resolve_device(device)
        self.max_widths = max_widths
        self._full: SlimmableModel | None = None
        self._narrow: OrderedDict[float, SlimmableModel] = OrderedDict()

    def full(self) -> SlimmableModel:
        if self._full is None:
            self._full = require_slimmable(self.model_fn()).to(self.device)
        return self._full

    def get(self, width: float) -> SlimmableModel:
        """A module of width ``width`` (1.0: the full model), width reset to 1."""
        if width >= 1.0:
            return self.full().set_width(1.0)
        key = round(float(width), 6)
        if key not in self._narrow:
            self._narrow[key] = self.full().narrow(key).to(self.device)
            while len(self._narrow) > self.max_widths:
                self._narrow.popitem(last=False)
        self._narrow.move_to_end(key)
        return self._narrow[key].set_width(1.0)

    def load(self, arrays: dict[str, np.ndarray], width: float) -> SlimmableModel:
        model = self.get(width)
        set_arrays(model, arrays)
        return model


def step_widths(rng: np.random.Generator, low: float, rule: str, num_random: int) -> list[float]:
    """Relative widths trained on one batch besides the widest: ``sandwich`` adds ``low``;
    both add ``num_random`` draws from U[low, 1]."""
    widths = [low] if rule == "sandwich" and low < 1.0 else []
    widths += [float(w) for w in rng.uniform(low, 1.0, size=num_random)]
    return widths


def slimmable_loss(
    rng: np.random.Generator,
    low: float,
    wt: WidthTraining,
    record: list[float],
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Aequa's per-batch objective as a ``training.train_local`` loss function.

    ``ℓ(θ; batch) + Σ_p ℓ(θ_p; batch)``: the widest network fits the labels; each sampled
    narrower network (``low`` is ``p_min`` in the received network's terms) fits the labels
    too, or (``distill``) the widest network's softened, detached predictions (in-place
    distillation). Algorithm 1 adds the narrower terms on every batch; the budget training
    (the default) on one batch in ``narrow_every``, starting at a random batch, so a round
    costs one narrower pass per ``narrow_every`` full ones. With ``sub_batch < 1`` the
    narrower networks see only a random ``⌈sub_batch·B⌉`` of the batch's samples (the widest
    always sees the whole batch). The widest network's own loss is appended to ``record`` so
    the member reports a loss comparable with FedAvg's.
    """
    every = wt.batches_per_narrow_pass
    phase = int(rng.integers(every))  # which batches of the round train narrower widths
    seen = [0]

    def loss_fn(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logits = model(xb, width=1.0)
        full = F.cross_entropy(logits, yb)
        record.append(float(full.detach()))
        loss = full
        seen[0] += 1
        if (seen[0] - 1 - phase) % every:
            return loss
        widths = step_widths(rng, low, wt.width_rule, wt.num_random)
        if not widths:
            return loss
        soft = F.softmax(logits.detach() / wt.temperature, dim=1) if wt.distill else None
        if wt.sub_batch < 1.0:
            keep = max(1, math.ceil(wt.sub_batch * len(yb)))
            rows = torch.from_numpy(np.sort(rng.choice(len(yb), keep, replace=False)))
            rows = rows.to(xb.device)
            xb, yb = xb[rows], yb[rows]
            soft = None if soft is None else soft[rows]
        for p in widths:
            out = model(xb, width=p)
            if soft is None:
                loss = loss + F.cross_entropy(out, yb)
            else:
                log_p = F.log_softmax(out / wt.temperature, dim=1)
                loss = loss + F.kl_div(log_p, soft, reduction="batchmean") * wt.temperature**2
        return loss

    return loss_fn


def add_aequa_handlers(app: ClientApp, model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Register ``aequa_train``, ``evaluate_width`` and ``describe`` on ``app``."""
    models = WidthModels(model_fn, device)

    @app.on("aequa_train")
    def aequa_train(msg: Message, ctx: ClientContext) -> Message:
        width = float(msg.config.get("width", 1.0))
        model = models.load(msg.arrays, width)
        cfg = LocalTrainConfig.from_config(msg.config)
        wt = WidthTraining.model_validate(
            {k: v for k, v in msg.config.items() if k in WidthTraining.model_fields}
        )
        # Widths are drawn in the full model's terms; the received network is the widest here.
        low = min(1.0, wt.p_min / width)
        record: list[float] = []
        rng = np.random.default_rng(derive_seed(ctx.seed, "widths"))
        loss_fn = slimmable_loss(rng, low, wt, record)
        metrics = train_member(model, ctx, cfg, device=models.device, loss_fn=loss_fn)
        if record:
            metrics["train_loss"] = float(np.mean(record))
        metrics["width"] = width
        return msg.reply(arrays=get_arrays(model), metrics=metrics)

    @app.on("evaluate_width")
    def evaluate_width(msg: Message, ctx: ClientContext) -> Message:
        width = float(msg.config.get("width", 1.0))
        model = models.load(msg.arrays, width)
        metrics = evaluate_member(model, ctx, models.device)
        return msg.reply(metrics={**metrics, "width": width})

    return describe_handler(app)


def aequa_client_app(model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Supervised handlers, ``train_alone`` and Aequa's own handlers."""
    app = add_standalone_handler(supervised_client_app(model_fn, device), model_fn, device)
    return add_aequa_handlers(app, model_fn, device)


__all__ = [
    "WidthModels",
    "add_aequa_handlers",
    "aequa_client_app",
    "slimmable_loss",
    "step_widths",
]
