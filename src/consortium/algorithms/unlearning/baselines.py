"""The baselines unlearning is judged against.

* ``Retrain``: FedAvg from a fresh model on retained data only — the gold standard, and the cost
  every other method is compared with.
* ``FineTune``: FedAvg on retained data starting from the trained model (all parameters).
* ``GradientAscent``: members holding forget data ascend the loss on it; their models are
  averaged (optionally followed by fine-tuning rounds on retained data).
* ``TfidfPrune``: Wang et al. (WWW 2022) — class-wise activations from every member, TF-IDF of
  channels for the forgotten class, prune the top channels once (held at zero), then FedAvg
  fine-tuning on retained data.

``Relearn`` is verification, not a baseline: how many rounds of FedAvg on the original data
(the forgotten samples included) bring the forgotten knowledge back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from consortium.algorithms.base.supervised import ModelFn, ScratchModel, initial_arrays
from consortium.algorithms.unlearning.base import UnlearningWorkflow
from consortium.algorithms.unlearning.client import PRUNE
from consortium.algorithms.unlearning.config import BaselineConfig
from consortium.algorithms.unlearning.explain import parameter_mask, select_channels, tfidf_scores
from consortium.algorithms.unlearning.request import UnlearningRequest
from consortium.algorithms.unlearning.selective import (
    class_activation_spec,
    class_means_from_replies,
)
from consortium.core.grid import Grid
from consortium.core.message import Arrays


class _Baseline(UnlearningWorkflow):
    def __init__(
        self,
        config: BaselineConfig,
        request: UnlearningRequest,
        model_fn: ModelFn,
        weights: Arrays,
        num_classes: int,
    ) -> None:
        super().__init__(request, model_fn, weights, num_classes)
        self.config = config
        self.num_rounds = config.rounds


class Retrain(_Baseline):
    """FedAvg from scratch without the forget data."""

    name = "retrain"

    def setup(self, grid: Grid) -> dict[str, Any]:
        self.weights = initial_arrays(self.model_fn, grid.seed)
        return {}

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        return self.fedavg_step(grid, "train_retained", self.config.local)


class FineTune(_Baseline):
    """FedAvg on retained data from the trained model."""

    name = "finetune"

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        return self.fedavg_step(grid, "train_retained", self.config.local)


class GradientAscent(_Baseline):
    """Ascent on the forget data at the members holding it, then optional recovery rounds."""

    name = "gradient_ascent"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_rounds = self.config.rounds + self.config.recover_rounds

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        if rnd <= self.config.rounds:
            holders = [c for c in grid.client_ids if self.request.may_hold_forget_data(c)]
            return self.fedavg_step(grid, "ascent", self.config.local, members=holders)
        return self.fedavg_step(grid, "train_retained", self.config.local)


class TfidfPrune(_Baseline):
    """Class-discriminative channel pruning, then FedAvg fine-tuning (class requests)."""

    name = "tfidf_prune"

    def __init__(self, *args: Any, device: str = "auto", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.request.class_id is None:
            raise ValueError("TF-IDF pruning needs a class request")
        self.scratch = ScratchModel(self.model_fn, device)
        self.prune: dict[str, np.ndarray] = {}

    def setup(self, grid: Grid) -> dict[str, Any]:
        msg = self.request_message("class_activations", self.weights, {})
        spec = class_activation_spec(self.scratch.load(self.weights), self.num_classes)
        replies = grid.send({c: msg for c in grid.client_ids}, expect=spec)
        means = class_means_from_replies(replies, self.num_classes)
        scores = tfidf_scores(means, int(self.request.class_id))  # type: ignore[arg-type]
        channels = select_channels(scores, self.config.prune_ratio, per_layer=True)
        self.prune = parameter_mask(self.scratch.load(self.weights), channels)
        for name, m in self.prune.items():
            self.weights[name] = np.where(m, 0, self.weights[name]).astype(self.weights[name].dtype)
        pruned = int(sum(m.sum() for m in self.prune.values()))
        self.extra_state["summary"] = {"parameters_pruned": pruned}
        return {"parameters_pruned": pruned}

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        extra = {PRUNE + k: v for k, v in self.prune.items()}
        return self.fedavg_step(grid, "train_retained", self.config.local, extra=extra)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "prune": self.prune}

    def load_state_dict(self, state: Any) -> None:
        super().load_state_dict(state)
        self.prune = dict(state["prune"])


class Relearn(_Baseline):
    """FedAvg on every member's full training data (the forgotten samples included) from a
    model, until ``relearned(weights)`` holds or ``config.rounds`` have run.

    A model that only hides what it knows relearns in a round or two; one retrained without
    the data takes as long as learning it afresh. The summary's ``relearn_rounds`` is the
    number of rounds (0: the model never forgot; None: not within ``config.rounds``).
    """

    name = "relearn"

    def __init__(self, *args: Any, relearned: Callable[[Arrays], bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.relearned = relearned

    def setup(self, grid: Grid) -> dict[str, Any]:
        if self.relearned(self.weights):
            self.extra_state["relearned_after"] = 0
        return {}

    @property
    def should_stop(self) -> bool:
        """The forgotten data is recognised again: relearning has been measured."""
        return "relearned_after" in self.extra_state

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        out = self.fedavg_step(grid, "train", self.config.local, with_request=False)
        if self.relearned(self.weights):
            self.extra_state["relearned_after"] = rnd
        return out

    def finish(self, grid: Grid) -> dict[str, Any]:
        return {**super().finish(grid), "relearn_rounds": self.extra_state.get("relearned_after")}
