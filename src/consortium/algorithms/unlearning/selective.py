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
from consortium.algorithms.unlearning.stopping import retire_class_row
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

    # -- 3: fine-tune only the mask, until the members find their data forgotten ------------
    @property
    def should_stop(self) -> bool:
        """The members found their data forgotten: no more fine-tuning rounds."""
        return "stopped_after" in self.extra_state

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
                # The first round's model is the one asked to forget a class it was trained
                # on: the members need not spend a pass over their forget samples to find it
                # not forgotten (were it forgotten, their first step's check stops them).
                "judge_received": not (rnd == 1 and self.request.kind == "class"),
                **self._criteria(),
            },
        )
        spec = ReplySpec(
            {k: ArraySpec((int(m.sum()),), self.weights[k].dtype) for k, m in self.mask.items()}
        )
        replies = grid.send({c: msg for c in self._holders(grid)}, expect=spec)
        updates = [
            Update(r.arrays, r.metrics.get("num_examples", 0.0))
            for r in replies.values()
            if r.metrics.get("num_examples", 0.0) > 0
        ]
        metrics, done = self._checked(replies, rnd - 1)
        if updates and not done:  # when the model received was forgotten already, it stays
            packed = cfg.aggregation.aggregate(updates, gather_masked(self.weights, self.mask))
            self.weights = {**self.weights, **scatter_masked(packed, self.mask, self.weights)}
        trained = [r for r in replies.values() if r.metrics.get("num_examples", 0.0) > 0]
        metrics["members_fine_tuning"] = 0 if done else len(trained)
        if trained and not done:
            metrics["train_loss"] = weighted_metric(
                {i: r for i, r in enumerate(trained)}, "train_loss"
            )
            metrics["max_steps"] = max(r.metrics.get("steps", 0.0) for r in trained)
        return metrics

    def _criteria(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "forget_accuracy": cfg.forget_accuracy,
            "class_score_quantile": cfg.class_score_quantile,
            "row_steps": cfg.row_steps,
            "explain_samples": cfg.explain_samples,
        }

    def _holders(self, grid: Grid) -> list[int]:
        return [c for c in grid.client_ids if self.request.may_hold_forget_data(c)]

    def _checked(self, replies: dict, model_round: int) -> tuple[dict[str, Any], bool]:
        """The members' verdicts on the model of ``model_round``: its accuracy on their forget
        samples, and whether the fine-tuning is over: for a class request when that accuracy,
        over all their forget samples, is at most ``forget_accuracy``; for the others when every
        member holding forget data finds it forgotten by its own criterion."""
        holding = [r for r in replies.values() if r.metrics.get("num_forget", 0.0) > 0]
        out: dict[str, Any] = {}
        if not holding or any("forget_accuracy" not in r.metrics for r in holding):
            return out, False  # (not judged: the first round of a class request)
        n = np.array([r.metrics["num_forget"] for r in holding])
        acc = np.array([r.metrics.get("forget_accuracy", 1.0) for r in holding])
        out["members_forget_accuracy"] = float((n * acc).sum() / n.sum())
        loss = np.array([r.metrics.get("forget_loss", 0.0) for r in holding])
        out["members_forget_loss"] = float((n * loss).sum() / n.sum())
        done = all(r.metrics.get("forgotten", 0.0) >= 1 for r in holding)
        if self.request.kind == "class":  # over all forget samples, not member by member
            margin = np.array([r.metrics.get("class_margin", 0.0) for r in holding])
            out["members_class_margin"] = float((n * margin).sum() / n.sum())
            done = (
                out["members_forget_accuracy"] <= self.config.forget_accuracy
                and out["members_class_margin"] <= 0
            )
        if done:
            self.extra_state["stopped_after"] = model_round
        return out, done

    def _server_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        """The server fine-tunes the mask on perturbation data alone, then asks the members
        holding forget data whether the result has forgotten it (a forward pass each)."""
        cfg = self.config
        target = int(self.request.class_id)  # type: ignore[arg-type]
        data = self.extra_state.get("perturbation") or self._perturbation_data(grid, target)
        xk, pk = torch.from_numpy(data["keep_x"]), torch.from_numpy(data["keep_p"])
        xf, yf = torch.from_numpy(data["forget_x"]), torch.from_numpy(data["forget_y"])
        model = self.scratch.load(self.weights)
        gen = torch.Generator().manual_seed(derive_seed(grid.seed, "server-steps", rnd))
        bs = cfg.local.batch_size
        batches = []
        for _ in range(cfg.server_steps):
            ik = torch.randint(0, len(xk), (bs,), generator=gen)
            jf = torch.randint(0, len(xf), (max(1, bs // 2),), generator=gen)
            batches.append((xk[ik], pk[ik], xf[jf], yf[jf]))
        loss, _ = masked_steps(
            model,
            self.mask,
            batches,
            cfg.local,
            forget_kind=cfg.forget_loss,
            forget_weight=cfg.forget_weight,
            num_classes=self.num_classes,
            seed=derive_seed(grid.seed, "server-loss", rnd),
        )
        # The class impressions stand in for the members' samples of the class, imperfectly:
        # the class can stop standing out on them and still stand out on the real ones. So the
        # server lowers the row past the line on the impressions (``server_row_slack``), and
        # when the members still find the class standing out (their class margin > 0) the next
        # round doubles that distance and adds their margin, instead of repeating a round that
        # changes nothing.
        slack = cfg.server_row_slack + float(self.extra_state.get("row_shift", 0.0))
        if cfg.include_output_row:
            retire_class_row(
                model,
                target,
                xf,
                xk,
                pk,
                cfg.local,
                quantile=cfg.class_score_quantile,
                max_steps=cfg.row_steps,
                slack=slack,
            )
        weights = get_arrays(model)
        msg = self.request_message("unlearn_check", weights, self._criteria())
        replies = grid.send({c: msg for c in self._holders(grid)}, expect=ReplySpec({}))
        self.weights = weights
        self.extra_state["perturbation"] = data
        checked = self._checked(replies, rnd)[0]
        margin = checked.get("members_class_margin")
        if margin is not None and margin > 0:
            self.extra_state["row_shift"] = 2 * slack + margin - cfg.server_row_slack
        return {"train_loss": loss, "row_slack": slack, **checked}

    def _perturbation_data(self, grid: Grid, target: int) -> dict[str, np.ndarray]:
        """Class impressions of the model being unlearned, made once: those of the kept
        classes with the model's soft outputs as targets, those of the forgotten class."""
        cfg = self.config
        model = self.scratch.load(self.weights)
        keep = [c for c in range(self.num_classes) if c != target]
        seed = derive_seed(grid.seed, "impressions")
        common = dict(steps=cfg.perturbation_steps, device=self.scratch.device)
        xk, _, pk = class_impressions(
            model, keep, cfg.perturbation_samples, self.input_shape, seed=seed, **common
        )
        xf, yf, _ = class_impressions(
            model, [target], 2 * cfg.perturbation_samples, self.input_shape, seed=seed + 1, **common
        )
        return {
            "keep_x": xk.cpu().numpy(),
            "keep_p": pk.cpu().numpy(),
            "forget_x": xf.cpu().numpy(),
            "forget_y": yf.cpu().numpy(),
        }

    def finish(self, grid: Grid) -> dict[str, Any]:
        summary = super().finish(grid)
        stopped = self.extra_state.get("stopped_after")
        summary["fine_tuning_rounds"] = self.num_rounds if stopped is None else int(stopped)
        summary["members_found_forgotten"] = stopped is not None
        return summary

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mask": self.mask}

    def load_state_dict(self, state: Any) -> None:
        super().load_state_dict(state)
        self.mask = dict(state["mask"])
