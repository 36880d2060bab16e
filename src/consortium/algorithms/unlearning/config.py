"""Options of explanation-guided selective unlearning, its baselines, and the ``[unlearn]``
request table, each field declared once.

:class:`SelectiveOptions` holds what a user tunes about the method; the workflow's
:class:`SelectiveUnlearningConfig` and the request table :class:`UnlearnConfig` both extend it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from consortium.algorithms.base.config import AggregatingConfig
from consortium.config import Options
from consortium.core.rundir import check_run_name
from consortium.training import LocalTrainConfig

UNLEARNING_METHODS = (
    "selective",
    "selective_server",
    "retrain",
    "finetune",
    "gradient_ascent",
    "tfidf_prune",
)


class SelectiveOptions(AggregatingConfig):
    """Explanation-guided selective unlearning (Xu et al., IEEE TBD 2025; the formulas are our
    reconstruction, see docs/methods/unlearning.md)."""

    score: Literal["taylor", "ablation", "tfidf"] = Field(
        "taylor",
        description="channel importance: taylor (first-order estimate of the ablation drop "
        "from one backward pass), ablation (drop in label confidence on the forget set when "
        "the channel is zeroed: one forward pass per channel) or tfidf (WWW'22)",
    )
    contrast: Literal["per_class", "mean", "none"] = Field(
        "per_class",
        description="what is subtracted from a channel's drop on the forget samples: the "
        "largest drop of any one retained class (per_class), the mean drop over retained "
        "samples (mean) or nothing (none); per_class means mean for requests other than "
        "class (their forget samples share classes with retained ones)",
    )
    ratio: float = Field(0.05, gt=0, le=1, description="fraction of channels fine-tuned")
    per_layer: bool = Field(True, description="top ratio in every layer (or over all layers)")
    rounds: int = Field(
        5,
        ge=1,
        le=100_000,
        description="at most this many fine-tuning rounds; they stop once every member holding "
        "forget data finds it forgotten",
    )
    forget_loss: Literal["others", "logodds", "random_label", "ascent", "uniform"] = Field(
        "others",
        description="others (move the label's probability onto the other classes, in the "
        "model's own proportions), random_label (towards a random other class), ascent "
        "(negative CE, clipped) or uniform (KL to the uniform distribution)",
    )
    forget_weight: float = Field(
        0.5,
        ge=0,
        description="weight of the forgetting term against the retained loss (0.5: one round "
        "still forgets on every benchmark row and keeps more of the rest than 1.0)",
    )
    forget_accuracy: float = Field(
        0.01,
        ge=0,
        le=1,
        description="class requests: a member stops fine-tuning once its forget samples are "
        "classified correctly at most this often (other requests stop when their loss reaches "
        "the member's held-out samples' loss)",
    )
    class_score_quantile: float = Field(
        0.9,
        ge=0,
        le=1,
        description="class requests: fine-tuning goes on until the class scores its own "
        "samples (median log-odds) no higher than this quantile of its scores on retained "
        "samples, as a model that never learned it does",
    )
    row_steps: int = Field(
        100,
        ge=0,
        description="class requests: at most this many steps on the class's output row alone "
        "(on features computed once) to reach the class-score criterion",
    )
    explain_samples: int = Field(
        64, ge=1, description="forget / retained samples scored per member"
    )
    retain_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of retained data a member may fine-tune on per round (it stops "
        "earlier once its forget data counts as forgotten)",
    )


class SelectiveUnlearningConfig(SelectiveOptions):
    """The selective workflow's options (what the request table does not set)."""

    include_output_row: bool = Field(
        True, description="add the output row and bias of the forgotten class to the mask"
    )
    scheme: Literal["decentralised", "server"] = Field(
        "decentralised",
        description="decentralised: masked FedAvg on members' data; server: the server "
        "fine-tunes the mask alone on perturbation data (class requests only)",
    )
    local: LocalTrainConfig = Field(
        default_factory=lambda: LocalTrainConfig(epochs=1, lr=0.01),
        description="members' optimisation during masked fine-tuning",
    )
    perturbation_samples: int = Field(
        8, ge=1, description="server scheme: samples per class inverted from the model"
    )
    perturbation_steps: int = Field(
        30, ge=1, description="server scheme: optimiser steps of each inversion"
    )
    server_steps: int = Field(
        3, ge=1, description="server scheme: masked fine-tuning steps between member checks"
    )
    server_row_slack: float = Field(
        3.0,
        ge=0,
        description="server scheme: how far (log-odds) the class's output row is lowered past "
        "the class-score line on the class impressions; doubled, plus the members' margin, "
        "after a round the members find the class still standing out on their samples",
    )


class BaselineConfig(Options):
    """Options of the baselines (retrain, fine-tune, gradient ascent, TF-IDF pruning)."""

    rounds: int = Field(2, ge=1, description="FedAvg rounds (retraining: the original's)")
    local: LocalTrainConfig = Field(
        default_factory=lambda: LocalTrainConfig(epochs=1, lr=0.01),
        description="members' optimisation",
    )
    recover_rounds: int = Field(0, ge=0, description="gradient ascent: fine-tuning rounds after")
    prune_ratio: float = Field(0.1, gt=0, le=1, description="TF-IDF pruning: channels per layer")


class UnlearnConfig(SelectiveOptions):
    """The ``[unlearn]`` table: a right-to-be-forgotten request on a finished run, the methods
    that answer it and their settings (``consortium unlearn RUN_DIR ...``)."""

    kind: Literal["class", "class_at_client", "client", "samples"] = Field(
        "class", description="class | class_at_client | client | samples"
    )
    class_id: int | None = Field(None, ge=0, description="class to forget")
    client_id: int | None = Field(None, ge=0, description="member whose data is forgotten")
    sample_ids: list[int] = Field(default_factory=list, description="pool ids (samples requests)")
    source: str = Field("fedavg", description="method folder whose model.npz is unlearned")
    _plain_source = field_validator("source")(lambda v: check_run_name(v, "source"))
    methods: list[str] = Field(
        default_factory=lambda: list(UNLEARNING_METHODS),
        min_length=1,
        description="methods run: " + ", ".join(UNLEARNING_METHODS),
    )
    epochs: int = Field(1, ge=1, description="local epochs of every unlearning method")
    lr: float = Field(0.01, gt=0, le=100, description="learning rate of every unlearning method")
    baseline_rounds: int = Field(2, ge=1, description="fine-tune / ascent / prune rounds")
    retrain_rounds: int | None = Field(None, ge=1, description="default: federation.rounds")
    shadow_attack: bool = Field(True, description="also run the shadow-model membership attack")
    inversion: bool = Field(
        True, description="verification: the model-inversion check (class requests)"
    )
    relearn_rounds: int = Field(
        5,
        ge=0,
        le=100_000,
        description="verification: at most this many FedAvg rounds on the original data, to "
        "count how many bring the forgotten data back (0: off)",
    )
    relearn_to: float = Field(
        0.5,
        gt=0,
        le=1,
        description="relearned: the forget accuracy (class requests; other requests: the loss "
        "attack's member rate) is back to this share of the original model's",
    )

    @model_validator(mode="after")
    def _check(self) -> UnlearnConfig:
        unknown = [m for m in self.methods if m not in UNLEARNING_METHODS]
        if unknown:
            raise ValueError(
                f"unknown unlearning method {unknown[0]!r}; "
                f"choose from {', '.join(UNLEARNING_METHODS)}"
            )
        if self.kind in ("class", "class_at_client") and self.class_id is None:
            raise ValueError(f"a {self.kind} request needs class_id")
        if self.kind != "class" and self.client_id is None:
            raise ValueError(f"a {self.kind} request needs client_id")
        if self.kind == "samples" and not self.sample_ids:
            raise ValueError("a samples request needs sample_ids")
        return self
