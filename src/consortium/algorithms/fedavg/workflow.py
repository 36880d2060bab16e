"""FedAvg as a workflow: send the model, average the replies; FedProx as the variant that
overrides one hook (what members are told to train with); server momentum (FedAvgM) as the
``aggregate`` hook; DP-FedAvg as the variant that samples, aggregates and reports with
member-level differential privacy. The round itself, the averaging and the evaluation are the
shared
:class:`~consortium.algorithms.base.workflow.GlobalModelWorkflow`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import consortium.privacy as privacy
from consortium.algorithms.base.workflow import (
    GlobalModelWorkflow,
    broadcast,
    updates_from,
    weighted_metric,
)
from consortium.algorithms.fedavg.config import DPFedAvgConfig, FedAvgConfig, FedProxConfig
from consortium.core.aggregation import Update, noisy_clipped_mean
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.sampling import rng_for


class FedAvg(GlobalModelWorkflow[FedAvgConfig]):
    """Federated averaging (McMahan et al., 2017), with optional server momentum.

    Members run :func:`~consortium.algorithms.base.supervised.supervised_client_app`'s
    ``train``; see :class:`~consortium.algorithms.base.workflow.GlobalModelWorkflow` for the
    parameters. With ``server_momentum`` β > 0 the server step is FedAvgM's (Hsu, Qi and
    Brown, 2019): the move from the current model to the members' average is a
    pseudo-gradient Δ, accumulated as ``v ← β·v + Δ``, and the model moves by ``v``. When
    dropouts leave a round's average to a few members of a skewed federation, the velocity
    keeps the direction of the earlier rounds (docs/experiments.md measures it).
    """

    name = "fedavg"

    def __init__(self, config: FedAvgConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.velocity: Arrays = {}

    def setup(self, grid: Grid) -> dict[str, Any]:
        self.velocity = {}
        return super().setup(grid)

    def aggregate(self, updates: Sequence[Update]) -> Arrays:
        return self.server_step(super().aggregate(updates))

    def server_step(self, mean: Arrays) -> Arrays:
        """The next model from the round's average: the average itself, or with momentum
        β > 0 the current model moved by the velocity (a secure or a noisy mean alike)."""
        beta = self.config.server_momentum
        if beta == 0:
            return mean
        new: Arrays = {}
        velocity: Arrays = {}
        for k, w in self.weights.items():
            if w.dtype.kind != "f":  # counters and the like: taken as averaged
                new[k] = mean[k]
                continue
            v = (mean[k] - w) + beta * self.velocity[k] if k in self.velocity else mean[k] - w
            velocity[k] = v.astype(w.dtype)
            new[k] = (w + velocity[k]).astype(w.dtype)
        self.velocity = velocity  # the round's replies were valid: it is committed next
        return new

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "velocity": self.velocity}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.velocity = dict(state.get("velocity", {}))

    def train_config(self, rnd: int) -> dict[str, Any]:
        """The settings members train with this round (plain FedAvg: no proximal term)."""
        return {**self.config.local.as_config(), "prox_mu": 0.0}

    def configure_train(self, grid: Grid, rnd: int, sampled: list[int]) -> dict[int, Message]:
        msg = Message("train", arrays=self.weights, config=self.train_config(rnd))
        return broadcast(msg, sampled)

    def exchange(self, grid: Grid, rnd: int, messages: Mapping[int, Message]) -> dict[str, Any]:
        """With ``secure_aggregation``, ask the grid for the mean of the members' models alone
        (:meth:`~consortium.core.grid.Grid.send_mean`): FedAvg's server needs nothing else."""
        if not self.config.secure_aggregation:
            return super().exchange(grid, rnd, messages)
        mean = grid.send_mean(messages, self.expect(messages), weighted=self.config.weighted)
        if mean.weight <= 0:
            return {}
        self.weights = self.server_step(mean.arrays)
        replies = {c: Message("train", metrics=m) for c, m in mean.metrics.items()}
        return {
            "train_loss": weighted_metric(replies, "train_loss"),
            "secure_aggregation": mean.secure,
        }


class FedProx(FedAvg):
    """FedProx (Li et al., 2020): FedAvg whose members add a proximal term ``prox_mu``."""

    name = "fedprox"
    config: FedProxConfig

    def train_config(self, rnd: int) -> dict[str, Any]:
        return {**self.config.local.as_config(), "prox_mu": self.config.prox_mu}


class DPFedAvg(FedAvg):
    """DP-FedAvg (McMahan, Ramage, Talwar, Zhang, ICLR 2018): FedAvg with member-level
    differential privacy; see :class:`~consortium.algorithms.fedavg.config.DPFedAvgConfig`.

    Three hooks differ from FedAvg: :meth:`sample` (Poisson sampling, what the accountant
    analyses), :meth:`aggregate_train` (clip, sum, add noise, divide by the expected number of
    members: :func:`~consortium.core.aggregation.noisy_clipped_mean`; a round in which nobody
    was drawn still releases a noisy model) and :meth:`finish` (ε in the summary). A round
    skipped for too few replies releases nothing and spends no privacy.

    The guarantee covers the models the server releases (every round's, as the accountant
    counts them), for a server that follows the protocol; members' updates reach the server
    unnoised.
    """

    name = "dp_fedavg"
    config: DPFedAvgConfig

    def __init__(self, config: DPFedAvgConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.noise_multiplier = 0.0
        self.sample_rate = 1.0
        self.released = 0

    def setup(self, grid: Grid) -> dict[str, Any]:
        out = super().setup(grid)
        cfg = self.config
        c = cfg.clients_per_round
        self.sample_rate = c if isinstance(c, float) else min(1.0, c / grid.num_clients)
        if cfg.target_epsilon is not None:
            self.noise_multiplier = privacy.noise_for_epsilon(
                cfg.target_epsilon, cfg.delta, self.sample_rate, cfg.rounds
            )
        else:
            self.noise_multiplier = 1.0 if cfg.noise_multiplier is None else cfg.noise_multiplier
        return {**out, "noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate}

    def rng(self, grid: Grid, purpose: str, rnd: int) -> np.random.Generator:
        """Randomness nobody can recompute (or, ``reproducible``, the run seed's)."""
        if self.config.reproducible:
            return rng_for(grid.seed, purpose, rnd)
        return np.random.default_rng(secrets.randbits(128))

    def sample(self, grid: Grid, rnd: int) -> list[int]:
        drawn = self.rng(grid, "dp-sample", rnd).random(grid.num_clients) < self.sample_rate
        return [int(c) for c in np.flatnonzero(drawn)]

    def aggregate_train(
        self, grid: Grid, rnd: int, replies: Mapping[int, Message]
    ) -> dict[str, Any]:
        cfg = self.config
        self.weights = self.server_step(
            noisy_clipped_mean(
            updates_from(replies, weighted=False),
            self.weights,
            cfg.clip_norm,
            self.noise_multiplier,
            self.sample_rate * grid.num_clients,
            self.rng(grid, "dp-noise", rnd),
            )
        )
        self.released += 1
        return {
            "train_loss": weighted_metric(replies, "train_loss"),
            "dp_epsilon": self.epsilon(),
            **self.track_dp_sgd(replies),
        }

    def epsilon(self) -> float:
        """ε spent by the rounds released so far, at the configured δ."""
        return privacy.epsilon(
            self.noise_multiplier, self.sample_rate, self.released, self.config.delta
        )

    def finish(self, grid: Grid) -> dict[str, Any]:
        return {
            **super().finish(grid),
            "dp_epsilon": self.epsilon(),
            "dp_delta": self.config.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "dp_rounds": self.released,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "released": self.released,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.noise_multiplier = float(state["noise_multiplier"])
        self.sample_rate = float(state["sample_rate"])
        self.released = int(state["released"])
