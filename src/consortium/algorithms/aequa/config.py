"""Aequa's options: how the slimmable model is trained, how contributions are assessed and how
widths are allocated.

Where the paper is silent (papers.md §1(g)) every choice is a field here with the default we
picked, and ``docs/methods/aequa.md`` says why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from consortium.training import LocalTrainConfig

ContributionKind = Literal["data_size", "standalone", "cgsv", "given"]
CONTRIBUTION_KINDS: tuple[str, ...] = ("data_size", "standalone", "cgsv", "given")
WidthRule = Literal["random", "sandwich"]
Normalisation = Literal["minmax", "max"]
TargetRule = Literal["first_reaching", "nearest"]


@dataclass(frozen=True)
class ContributionConfig:
    """How members' contributions are assessed (Aequa takes them as an input).

    Attributes
    ----------
    kind
        ``data_size``: number of local training samples (members report it); ``standalone``:
        accuracy of the model a member trains alone (same epochs as the federated run), on
        the server's validation split (members' own test views when there is none);
        ``cgsv``: CGSV's cosine similarity of a member's update with the aggregate, smoothed by
        an exponential moving average over the rounds (computed during training); ``given``:
        the values listed in ``values``.
    values
        One value per member for ``kind = "given"``.
    alpha
        EMA factor of ``cgsv`` (CGSV's code uses 0.95): ``r ← α·r + (1 − α)·cos``. The
        average is bias-corrected per member, so a member sampled in fewer rounds is not
        ranked lower for that alone.
    """

    kind: ContributionKind = "standalone"
    values: tuple[float, ...] = ()
    alpha: float = 0.95

    def __post_init__(self) -> None:
        if self.kind not in CONTRIBUTION_KINDS:
            raise ValueError(
                f"unknown contribution kind {self.kind!r}; choose from {CONTRIBUTION_KINDS}"
            )
        if self.kind == "given" and not self.values:
            raise ValueError('contribution kind "given" needs values (one per member)')
        if any(not math.isfinite(v) for v in self.values):
            raise ValueError("contribution values must be finite")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha}")


@dataclass(frozen=True)
class AllocationConfig:
    """Post-training reward allocation (papers.md 1(b).3, "Eq. 3" as reconstructed).

    Attributes
    ----------
    grid_step
        Spacing of the width grid ``{p_min, p_min + δ, …, 1}`` on which the accuracy-vs-width
        curve is measured (the server's validation split; one evaluation per grid point). A
        fine grid lets rewards follow contributions closely.
    normalisation
        ``max`` (default): ``ĉ = max(c, 0)/c_max`` — a member's target sits at the share of
        the achievable range its contribution is of the top one, so near-equal contributors
        get near-equal rewards; ``minmax``: ``ĉ = (c − c_min)/(c_max − c_min)`` — the lowest
        contributor gets the narrowest width however small its gap to the others (higher ρ
        when contributions barely differ, but rewards far below what members could train
        alone: on digits, homogeneous split, IPR 0.125 vs 0.875 with ``max``).
    rule
        ``nearest`` (default): the width whose (monotone) accuracy is closest to the target
        (ties: the narrower), so reward accuracies sit on the line the targets draw;
        ``first_reaching``: the narrowest width whose accuracy reaches the target (rewards
        never fall short of their target but overshoot it where the curve is steep).
    """

    grid_step: float = 0.01
    normalisation: Normalisation = "max"
    rule: TargetRule = "nearest"

    def __post_init__(self) -> None:
        if not 0.0 < self.grid_step <= 1.0:
            raise ValueError(f"grid_step must be in (0, 1], got {self.grid_step}")
        if self.normalisation not in ("minmax", "max"):
            raise ValueError(f"unknown normalisation {self.normalisation!r}")
        if self.rule not in ("first_reaching", "nearest"):
            raise ValueError(f"unknown allocation rule {self.rule!r}")


@dataclass(frozen=True)
class AequaConfig:
    """Aequa (Tastan, Horváth, Nandakumar, ICML 2025): a slimmable model trained by FedAvg,
    then a sub-network per member whose accuracy follows its contribution.

    Attributes
    ----------
    rounds
        Communication rounds.
    clients_per_round
        Members sampled each round: an int count, or a float fraction in (0, 1].
    local
        Local optimisation (epochs, batch size, optimiser), as FedAvg's.
    p_min
        Narrowest width trained and rewarded (p_max is 1). 0.1 (the slimmable-network default
        is 0.25): a wider achievable accuracy range separates members better, and narrow
        passes are cheaper.
    width_rule
        Widths trained on each batch besides the full width. ``random`` (Algorithm 1 as
        reconstructed): ``num_random`` widths drawn from U[p_min, 1]; ``sandwich``
        (US-Nets): the narrowest width p_min plus ``num_random`` random ones.
    num_random
        Random widths per batch (>= 0; ``random`` with 0 is plain FedAvg of the full width).
    distill
        In-place distillation: sub-widths fit the full width's softened predictions (the
        full width itself always fits the labels) instead of the labels.
    temperature
        Softmax temperature of the distillation targets.
    sub_batch
        Share of each batch the narrower widths are trained on (a random subset; the full
        width always uses the whole batch). 1 is Algorithm 1 as reconstructed; smaller values
        trade sub-width gradient noise for time (see ``benchmarks/aequa_overhead.py``).
    weighted
        Weight each update by the member's sample count (FedAvg) or equally.
    contribution
        How contributions are assessed; see :class:`ContributionConfig`.
    allocation
        How contributions become widths; see :class:`AllocationConfig`.
    measure_standalone
        Have every member train alone once before the rounds (message ``train_alone``) so IPR
        can be reported; always on when contributions are standalone accuracies.
    evaluate_clients
        After allocation, send each member its reward sub-model to evaluate on its own test
        view (``mean_client_accuracy``, ``client_accuracy``, IPR).
    eval_every
        Evaluate the full-width model on the server test set every this many rounds.
    warmup_rounds
        Training-time variant only: rounds in which everyone trains the full slimmable model
        (Algorithm 1) before widths are allocated, so the accuracy-vs-width curve means
        something.
    curve_step
        Training-time variant only: width-grid spacing of the per-round accuracy curve (a
        coarse grid keeps the per-round cost low).
    chunk_size
        Members per exchange in the standalone phase and reward distribution; bounds the
        models held at once.
    """

    rounds: int = 20
    clients_per_round: int | float = 1.0
    local: LocalTrainConfig = field(default_factory=LocalTrainConfig)
    p_min: float = 0.1
    width_rule: WidthRule = "random"
    num_random: int = 1
    distill: bool = False
    temperature: float = 1.0
    sub_batch: float = 1.0
    weighted: bool = True
    contribution: ContributionConfig = field(default_factory=ContributionConfig)
    allocation: AllocationConfig = field(default_factory=AllocationConfig)
    measure_standalone: bool = True
    evaluate_clients: bool = True
    eval_every: int = 1
    warmup_rounds: int = 2
    curve_step: float = 0.1
    chunk_size: int = 32

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not 0.0 < self.p_min <= 1.0:
            raise ValueError(f"p_min must be in (0, 1], got {self.p_min}")
        if self.width_rule not in ("random", "sandwich"):
            raise ValueError(f"unknown width_rule {self.width_rule!r}")
        if self.num_random < 0:
            raise ValueError(f"num_random must be >= 0, got {self.num_random}")
        if not 0.0 < self.sub_batch <= 1.0:
            raise ValueError(f"sub_batch must be in (0, 1], got {self.sub_batch}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.warmup_rounds < 0:
            raise ValueError(f"warmup_rounds must be >= 0, got {self.warmup_rounds}")
        if not 0.0 < self.curve_step <= 1.0:
            raise ValueError(f"curve_step must be in (0, 1], got {self.curve_step}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        c = self.clients_per_round
        if isinstance(c, float) and not 0 < c <= 1:
            raise ValueError(f"a fraction clients_per_round must be in (0, 1], got {c}")
        if isinstance(c, int) and c < 1:
            raise ValueError(f"clients_per_round must be >= 1, got {c}")

    @property
    def needs_standalone(self) -> bool:
        return self.measure_standalone or self.contribution.kind == "standalone"

    def width_config(self) -> dict[str, Any]:
        """The width-sampling settings a member needs, flat for a message's config."""
        return {
            "p_min": self.p_min,
            "width_rule": self.width_rule,
            "num_random": self.num_random,
            "distill": self.distill,
            "temperature": self.temperature,
            "sub_batch": self.sub_batch,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
