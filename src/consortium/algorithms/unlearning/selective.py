"""Explanation-guided selective unlearning as a workflow.

1. *Explain* (set-up phase): members holding data the request covers score every channel on
   their forget samples and send only the scores; the server averages them (weighted by forget
   samples) — or, with ``score = "tfidf"``, every member sends class-wise activation sums.
2. *Select*: the top ``ratio`` channels (per layer or overall) and the parameters that produce
   them (plus the forgotten class's output row) form a mask.
3. *Fine-tune only the mask*: ``decentralised`` — rounds in which members fine-tune the masked
   entries on their retained data, members with forget data adding a forgetting term, and
   upload only the masked entries; ``server`` — the server fine-tunes the masked entries on
   perturbation data (class impressions inverted from the model), with no member data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from consortium.algorithms.base.supervised import ModelFn, ScratchModel
from consortium.algorithms.base.workflow import weighted_metric
from consortium.algorithms.unlearning.base import UnlearningWorkflow
from consortium.algorithms.unlearning.client import MASK
from consortium.algorithms.unlearning.config import SelectiveUnlearningConfig
from consortium.algorithms.unlearning.explain import (
    channel_layers,
    parameter_mask,
    select_channels,
    tfidf_scores,
)
from consortium.algorithms.unlearning.losses import masked_steps
from consortium.algorithms.unlearning.perturbation import class_impressions
from consortium.algorithms.unlearning.request import UnlearningRequest
from consortium.core.aggregation import Update, gather_masked, scatter_masked
from consortium.core.grid import Grid
from consortium.core.message import Arrays
from consortium.core.sampling import derive_seed
from consortium.core.validation import ArraySpec, ReplySpec
from consortium.models.weights import get_arrays


def class_means_from_replies(replies: dict, num_classes: int) -> dict[str, np.ndarray]:
    """Exact class-mean activations from members' class-wise sums and counts."""
    counts = np.zeros(num_classes)
    sums: dict[str, np.ndarray] = {}
    for r in replies.values():
        counts += r.arrays["counts"]
        for k, v in r.arrays.items():
            if k.startswith("sum/"):
                sums[k[4:]] = sums.get(k[4:], 0) + v
    return {k: v / np.maximum(counts, 1)[:, None] for k, v in sums.items()}


def class_activation_spec(model: torch.nn.Module, num_classes: int) -> ReplySpec:
    """What a ``class_activations`` reply must hold: per-class counts and, per channel layer,
    per-class activation sums (anything else is rejected before it reaches the means)."""
    arrays = {"counts": ArraySpec((num_classes,), np.dtype(np.float64))}
    for name, m in channel_layers(model):
        width = m.out_channels if isinstance(m, torch.nn.Conv2d) else m.out_features
        arrays[f"sum/{name}"] = ArraySpec((num_classes, int(width)), np.dtype(np.float64))
    return ReplySpec(arrays)


class SelectiveUnlearning(UnlearningWorkflow):
    """Xu et al., "Update Selective Parameters: Federated Machine Unlearning Based on Model
    Explanation", IEEE Trans. Big Data 11(2), 2025 (formulas reconstructed; see the docs)."""

    def __init__(
        self,
        config: SelectiveUnlearningConfig,
        request: UnlearningRequest,
        model_fn: ModelFn,
        weights: Arrays,
        num_classes: int,
        input_shape: tuple[int, ...],
        device: str = "auto",
    ) -> None:
        super().__init__(request, model_fn, weights, num_classes)
        if config.scheme == "server" and request.kind != "class":
            raise ValueError("the server scheme needs a class request (it has no member data)")
        if config.score == "tfidf" and request.class_id is None:
            raise ValueError("tfidf scores need a class request")
        self.config = config
        self.name = f"selective-{config.scheme}"
        self.num_rounds = config.rounds
        self.input_shape = tuple(input_shape)
        self.scratch = ScratchModel(model_fn, device)
        self.mask: dict[str, np.ndarray] = {}

    # -- 1 and 2: explain, select ---------------------------------------------------------
    def setup(self, grid: Grid) -> dict[str, Any]:
        cfg = self.config
        model = self.scratch.load(self.weights)
        layers = {name: m for name, m in channel_layers(model)}
        if cfg.score in ("ablation", "taylor"):
            holders = [c for c in grid.client_ids if self.request.may_hold_forget_data(c)]
            msg = self.request_message(
                "explain",
                self.weights,
                {
                    "contrast": cfg.contrast,
                    "explain_samples": cfg.explain_samples,
                    "score": cfg.score,
                },
            )
            width = {
                n: (m.out_channels if isinstance(m, torch.nn.Conv2d) else m.out_features)
                for n, m in layers.items()
            }
            spec = ReplySpec(
                {n: ArraySpec((w,), np.dtype(np.float32)) for n, w in width.items()},
                require_all=False,
            )
            replies = grid.send({c: msg for c in holders}, expect=spec)
            scored = [
                r for r in replies.values() if r.metrics.get("num_forget", 0) > 0 and r.arrays
            ]
            if not scored:
                raise ValueError(f"no member holds data covered by request {self.request.tag}")
            weight = np.array([r.metrics["num_forget"] for r in scored])
            scores = {
                n: sum(w * r.arrays[n] for w, r in zip(weight, scored, strict=True)) / weight.sum()
                for n in layers
            }
            explained = len(scored)
        else:
            msg = self.request_message("class_activations", self.weights, {})
            spec = class_activation_spec(model, self.num_classes)
            replies = grid.send({c: msg for c in grid.client_ids}, expect=spec)
            means = class_means_from_replies(replies, self.num_classes)
            scores = tfidf_scores(means, int(self.request.class_id))  # type: ignore[arg-type]
            explained = len(replies)
        channels = select_channels(scores, cfg.ratio, cfg.per_layer)
        forget_class = self.request.class_id if cfg.include_output_row else None
        self.mask = parameter_mask(model, channels, forget_class=forget_class)
        touched = int(sum(m.sum() for m in self.mask.values()))
        total = int(sum(v.size for v in self.weights.values()))
        self.extra_state["summary"] = {
            "explaining_members": explained,
            "parameters_touched": touched,
            "parameters_total": total,
            "state_bytes": int(sum(m.size for m in self.mask.values())),
        }
        return {"explaining_members": explained, "parameters_touched": touched}

    # -- 3: fine-tune only the mask -------------------------------------------------------
    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        if self.config.scheme == "server":
            return self._server_round(grid, rnd)
        cfg = self.config
        masks = {MASK + k: v for k, v in self.mask.items()}
        msg = self.request_message(
            "unlearn_train",
            {**self.weights, **masks},
            {
                **cfg.local.as_config(),
                "forget_loss": cfg.forget_loss,
                "retain_fraction": cfg.retain_fraction,
                "forget_weight": cfg.forget_weight,
            },
        )
        spec = ReplySpec(
            {k: ArraySpec((int(m.sum()),), self.weights[k].dtype) for k, m in self.mask.items()}
        )
        replies = grid.send({c: msg for c in grid.client_ids}, expect=spec)
        updates = [
            Update(r.arrays, r.metrics.get("num_examples", 0.0))
            for r in replies.values()
            if r.metrics.get("num_examples", 0.0) > 0
        ]
        if updates:
            packed = cfg.aggregation.aggregate(updates, gather_masked(self.weights, self.mask))
            self.weights = {**self.weights, **scatter_masked(packed, self.mask, self.weights)}
        return {"train_loss": weighted_metric(replies, "train_loss")}

    def _server_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        cfg = self.config
        model = self.scratch.load(self.weights)
        target = int(self.request.class_id)  # type: ignore[arg-type]
        keep = [c for c in range(self.num_classes) if c != target]
        seed = derive_seed(grid.seed, "impressions", rnd)
        xk, yk = class_impressions(
            model,
            keep,
            cfg.perturbation_samples,
            self.input_shape,
            seed=seed,
            device=self.scratch.device,
        )
        xf, yf = class_impressions(
            model,
            [target],
            cfg.perturbation_samples * 2,
            self.input_shape,
            seed=seed + 1,
            device=self.scratch.device,
        )
        model = self.scratch.load(self.weights)
        gen = torch.Generator().manual_seed(seed)
        batches = []
        bs = cfg.local.batch_size
        for _ in range(50):
            ik = torch.randint(0, len(yk), (bs,), generator=gen)
            jf = torch.randint(0, len(yf), (max(1, bs // 2),), generator=gen)
            batches.append((xk[ik], yk[ik], xf[jf], yf[jf]))
        loss = masked_steps(
            model,
            self.mask,
            batches,
            cfg.local,
            forget_kind=cfg.forget_loss,
            forget_weight=cfg.forget_weight,
            num_classes=self.num_classes,
            seed=seed,
        )
        self.weights = get_arrays(model)
        return {"train_loss": loss}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mask": self.mask}

    def load_state_dict(self, state: Any) -> None:
        super().load_state_dict(state)
        self.mask = dict(state["mask"])
