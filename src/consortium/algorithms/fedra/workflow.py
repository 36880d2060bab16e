"""FedRA as a workflow: allocate blocks, dispatch sub-models, average each block's adapters
over the members that trained it.

Each round (Su, Li, Xue, ECCV 2024; the official code's defaults):

1. draw the allocation matrix: member k gets L_k blocks uniformly at random (FedRA), or the
   fixed blocks of a baseline (the subclasses at the end of this module);
2. send each sampled member its blocks' adapters and the head (nothing else travels);
3. members tune LoRA adapters and the head on their sub-model;
4. each block's adapters are averaged over the members that trained it this round; blocks
   nobody trained keep their adapters; the head is averaged over all.

Every round also logs each member's cost (training wall time; peak training memory of its
sub-model with adapters, and that peak relative to the full model's; see
:mod:`consortium.algorithms.fedra.cost`); the run loop logs the bytes each way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from consortium.algorithms.base.workflow import (
    Expect,
    FederatedWorkflow,
    updates_from,
    weighted_metric,
)
from consortium.algorithms.fedra.allocation import allocate
from consortium.algorithms.fedra.client import LogitsOnly, block_arrays
from consortium.algorithms.fedra.config import Allocation, FedRAConfig, InclusiveFLConfig
from consortium.algorithms.fedra.cost import ActivationMeter, peak_bytes, state_bytes
from consortium.algorithms.fedra.inclusive import group_updates, nudge_top_blocks
from consortium.core.aggregation import Update
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.sampling import derive_seed, rng_for
from consortium.core.validation import ReplySpec
from consortium.models.transformer import (
    adapter_arrays,
    block_prefix,
    load_adapter_arrays,
    num_blocks,
    renumber,
    sub_model,
)
from consortium.training import cross_entropy

COST_KEYS = (
    "train_time_s",
    "peak_bytes",
    "activation_bytes",
    "param_bytes",
    "trainable_bytes",
    "steps",
)


class FedRA(FederatedWorkflow[FedRAConfig]):
    """Random allocation of blocks (FedRA); the baselines below override the allocation.

    Parameters
    ----------
    config
        See :class:`FedRAConfig`; ``len(config.capacities)`` must equal the number of members.
    lora_model_fn
        Builds the full pretrained backbone with LoRA injected (seeded by the caller).
    test_x, test_y
        Server test set (token ids or images) for the global model's accuracy.
    test_groups
        Optional domain id per test sample: per-domain accuracies are reported too.
    member_domains
        Each member's domain (``sampling = "one_per_domain"`` needs it).
    member_sizes
        Each member's number of training samples (``local_steps = "min_member"`` needs it:
        the cap is ``min_k ceil(n_k / batch) + 1`` steps per epoch, as the FedRA code's).
    """

    name = "fedra"
    #: Who trains which blocks: see :func:`~consortium.algorithms.fedra.allocation.allocate`.
    allocation: Allocation = "random"
    message_kind = "fedra_train"

    def __init__(
        self,
        config: FedRAConfig,
        lora_model_fn: Callable[[], nn.Module],
        test_x: np.ndarray,
        test_y: np.ndarray,
        test_groups: np.ndarray | None = None,
        member_domains: Sequence[int] | None = None,
        member_sizes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(config)
        self.lora_model_fn = lora_model_fn
        self.test = (test_x, test_y, test_groups)
        self.member_domains = None if member_domains is None else [int(d) for d in member_domains]
        self.member_sizes = None if member_sizes is None else [int(n) for n in member_sizes]
        self._full: nn.Module | None = None
        self.adapters: Arrays = {}
        self.full_cost: dict[str, float] = {}
        self.cost_totals: dict[int, dict[str, float]] = {}

    def full(self) -> nn.Module:
        if self._full is None:
            self._full = self.lora_model_fn()
        return self._full

    @property
    def depth(self) -> int:
        return num_blocks(self.full())

    def global_blocks(self) -> list[int]:
        """Blocks of the released model (every block; ALL-small keeps fewer)."""
        return list(range(self.depth))

    def setup(self, grid: Grid) -> dict[str, Any]:
        if len(self.config.capacities) != grid.num_clients:
            raise ValueError(
                f"{len(self.config.capacities)} capacities for {grid.num_clients} members"
            )
        for need, have, what in (
            (self.config.sampling == "one_per_domain", self.member_domains, "member_domains"),
            (self.config.local_steps == "min_member", self.member_sizes, "member_sizes"),
        ):
            if need and (have is None or len(have) != grid.num_clients):
                raise ValueError(f"{what}: one entry per member is needed by the protocol")
        self.adapters = adapter_arrays(self.full())
        self.full_cost = self.measure_full_model()
        return {
            "blocks": self.depth,
            "adapter_floats": int(sum(v.size for v in self.adapters.values())),
            "full_model_cost": self.full_cost,
        }

    def measure_full_model(self) -> dict[str, float]:
        """Peak training memory of the full model with adapters, measured like a member's (one
        training step's activations on a batch of the server's test inputs): the reference of
        the members' relative memory."""
        local = self.config.local
        cost: dict[str, float] = {
            k: float(v)
            for k, v in state_bytes(self.full(), local.optimizer, local.momentum).items()
        }
        x = self.test[0][: local.batch_size]
        if len(x):
            model = LogitsOnly(self.full())
            meter = ActivationMeter()
            meter.watch(model)
            was_training = model.training
            model.train()
            with meter.forward():
                loss = cross_entropy(
                    model, torch.from_numpy(x), torch.from_numpy(self.test[1][: len(x)])
                )
            loss.backward()
            model.zero_grad(set_to_none=True)
            model.train(was_training)
            cost["activation_bytes"] = float(meter.peak)
        cost["peak_bytes"] = peak_bytes(cost)
        return cost

    # --- the training protocol ------------------------------------------------------------

    def sample(self, grid: Grid, rnd: int) -> list[int]:
        """Uniform sampling, or one member drawn uniformly from every domain (official)."""
        if self.config.sampling == "uniform":
            return super().sample(grid, rnd)
        assert self.member_domains is not None
        rng = rng_for(grid.seed, "domain_sample", rnd)
        doms = np.asarray(self.member_domains)
        return sorted(int(rng.choice(np.flatnonzero(doms == d))) for d in np.unique(doms))

    @property
    def step_cap(self) -> int:
        """Steps per local epoch: 0 (a full epoch) or min_k(#batches_k) + 1 (official)."""
        if self.config.local_steps != "min_member" or not self.member_sizes:
            return 0
        batch = self.config.local.batch_size
        return min(-(-n // batch) for n in self.member_sizes) + 1

    def round_capacities(self, grid: Grid, rnd: int, sampled: list[int]) -> list[int]:
        """Each sampled member's L_k this round: fixed, or redrawn from the capacities list
        (dynamic heterogeneity), seeded by run seed, round and member."""
        cfg = self.config
        if cfg.capacity_schedule == "static":
            return [cfg.capacities[c] for c in sampled]
        choices = sorted(set(cfg.capacities))
        return [int(rng_for(grid.seed, "capacity", rnd, c).choice(choices)) for c in sampled]

    # --- hooks DepthFL overrides ---------------------------------------------------------

    def payload(self, blocks: list[int]) -> Arrays:
        """What a member holding ``blocks`` is sent: those blocks' adapters and the head."""
        return block_arrays(self.adapters, block_prefix(self.full()), blocks)

    def train_config(self, rnd: int) -> dict[str, Any]:
        return {
            **self.config.local.as_config(),
            "max_steps": self.step_cap,
            "clip_grad_norm": self.config.clip_grad_norm,
        }

    def aggregate(
        self, replies: Mapping[int, Message], rows: np.ndarray, sampled: list[int]
    ) -> None:
        """Average every array over the members that sent it."""
        updates = updates_from(replies, self.config.weighted)
        if updates:
            self.adapters = self.config.aggregation.aggregate(updates, self.adapters)

    def configure_train(self, grid: Grid, rnd: int, sampled: list[int]) -> dict[int, Message]:
        cfg = self.config
        rows = allocate(
            self.round_capacities(grid, rnd, sampled),
            self.depth,
            self.allocation,
            rng_for(grid.seed, "allocation", rnd),
            cfg.cover_all_layers,
        )
        self._round = (rows, sampled)
        messages = {}
        for k, cid in enumerate(sampled):
            blocks = [int(b) for b in np.flatnonzero(rows[k])]
            messages[cid] = Message(
                self.message_kind,
                arrays={**self.payload(blocks), "blocks": np.asarray(blocks, np.int64)},
                config=self.train_config(rnd),
            )
        return messages

    def expect(self, messages: Mapping[int, Message]) -> Expect:
        specs = {
            c: ReplySpec.like({k: v for k, v in m.arrays.items() if k != "blocks"})
            for c, m in messages.items()
        }
        return lambda c: specs[c]

    def aggregate_train(
        self, grid: Grid, rnd: int, replies: Mapping[int, Message]
    ) -> dict[str, Any]:
        rows, sampled = self._round
        self.aggregate(replies, rows, sampled)
        metrics: dict[str, Any] = {
            "blocks_trained": int(rows.any(0).sum()),
            "allocation": {str(c): np.flatnonzero(rows[k]).tolist() for k, c in enumerate(sampled)},
            "member_cost": self.record_costs(replies),
        }
        loss = weighted_metric(replies, "train_loss")
        if loss is not None:
            metrics["train_loss"] = loss
        return metrics

    def record_costs(self, replies: Mapping[int, Message]) -> dict[str, dict[str, float]]:
        """Each member's cost this round, its peak memory also relative to the full model's."""
        out: dict[str, dict[str, float]] = {}
        full_peak = self.full_cost.get("peak_bytes", 0.0)
        for cid, r in replies.items():
            row = {k: float(r.metrics[k]) for k in COST_KEYS if k in r.metrics}
            if full_peak and "peak_bytes" in row:
                row["peak_vs_full"] = row["peak_bytes"] / full_peak
            row["blocks"] = float(r.metrics.get("blocks", 0.0))
            out[str(cid)] = row
            total = self.cost_totals.setdefault(cid, {"rounds": 0.0})
            total["rounds"] += 1
            for k, v in row.items():
                total[k] = total.get(k, 0.0) + v
        return out

    def mean_costs(self) -> dict[str, dict[str, float]]:
        """Per member, its cost averaged over the rounds it trained in."""
        return {
            str(cid): {k: v / t["rounds"] for k, v in t.items() if k != "rounds"}
            | {"rounds": t["rounds"]}
            for cid, t in sorted(self.cost_totals.items())
        }

    def global_model(self) -> nn.Module:
        """The released model: the global blocks with their aggregated adapters and head."""
        blocks = self.global_blocks()
        model = sub_model(self.full(), blocks)
        prefix = block_prefix(self.full())
        local = renumber(
            block_arrays(self.model_arrays(), prefix, blocks),
            prefix,
            {g: j for j, g in enumerate(blocks)},
        )
        load_adapter_arrays(model, local)
        return model

    def model_arrays(self) -> Arrays:
        """The aggregated arrays that belong to the ``peft`` model (adapters and head)."""
        return self.adapters

    @torch.no_grad()
    def predict(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Predicted labels of the server test set, and alternative predictions to log."""
        model = LogitsOnly(self.global_model()).eval()
        x = self.test[0]
        preds = [
            model(torch.from_numpy(x[i : i + 256])).argmax(1).numpy() for i in range(0, len(x), 256)
        ]
        return np.concatenate(preds), {}

    def evaluate(self, rnd: int | None = None) -> dict[str, Any]:
        """Accuracy of the released model on the server test set, overall and per domain."""
        _, y, groups = self.test
        if len(y) == 0:
            return {}
        preds, extra = self.predict()
        out: dict[str, Any] = {"test_accuracy": float(np.mean(preds == y))}
        out.update({k: float(np.mean(p == y)) for k, p in extra.items()})
        if groups is not None:
            per = {str(g): float(np.mean((preds == y)[groups == g])) for g in np.unique(groups)}
            out["domain_accuracy"] = per
            out["mean_domain_accuracy"] = float(np.mean(list(per.values())))
        self._last_eval = (rnd, out)
        return out

    def finish(self, grid: Grid) -> dict[str, Any]:
        cached = getattr(self, "_last_eval", None)
        final = cached[1] if cached and cached[0] == self.num_rounds else self.evaluate()
        return {
            **final,
            "global_blocks": len(self.global_blocks()),
            "capacities": list(self.config.capacities),
            "full_model_cost": self.full_cost,
            "member_cost": self.mean_costs(),
        }

    def final_arrays(self) -> Arrays:
        return self.adapters

    def state_dict(self) -> dict[str, Any]:
        return {
            "adapters": self.adapters,
            "full_cost": self.full_cost,
            "cost_totals": self.cost_totals,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.adapters = dict(state["adapters"])
        self.full_cost = dict(state.get("full_cost", {}))
        self.cost_totals = {int(k): dict(v) for k, v in state.get("cost_totals", {}).items()}


class AllLarge(FedRA):
    """ALL-large: every member trains every block, ignoring its limit (an upper bound)."""

    name = "all_large"
    allocation: Allocation = "all"


class AllSmall(FedRA):
    """ALL-small: everyone uses the first min L_k blocks, and so does the released model.

    The minimum is over *every* member's capacity, not over the round's sample: the blocks
    trained are exactly the released model's, whoever takes part.
    """

    name = "all_small"
    allocation: Allocation = "first"

    def smallest(self) -> int:
        return min(min(self.config.capacities), self.depth)

    def round_capacities(self, grid: Grid, rnd: int, sampled: list[int]) -> list[int]:
        return [self.smallest()] * len(sampled)

    def global_blocks(self) -> list[int]:
        return list(range(self.smallest()))


class InclusiveFL(FedRA):
    """InclusiveFL (Liu et al., KDD 2022): member k trains its first L_k blocks; blocks are
    averaged depth-wise over their holders, optionally with momentum distillation."""

    name = "inclusivefl"
    allocation: Allocation = "first"
    config: InclusiveFLConfig

    def __init__(self, config: InclusiveFLConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.momentum_last: dict[int, Arrays] = {}

    def aggregate(
        self, replies: Mapping[int, Message], rows: np.ndarray, sampled: list[int]
    ) -> None:
        """Momentum distillation first mixes the shallow members' top-block updates."""
        cfg = self.config
        if not (cfg.momentum_distillation and replies):
            return super().aggregate(replies, rows, sampled)
        arrays = {c: dict(r.arrays) for c, r in replies.items()}
        prefix = block_prefix(self.full())
        depth_of = {c: int(rows[sampled.index(c)].sum()) for c in arrays}
        raw = group_updates(arrays, depth_of, self.adapters, prefix)
        arrays = nudge_top_blocks(
            arrays,
            depth_of,
            [min(c, self.depth) for c in cfg.capacities],
            self.adapters,
            self.momentum_last,
            cfg.momentum_beta,
            prefix,
        )
        self.momentum_last.update(raw)
        weighted = cfg.weighted
        updates = [
            Update(arrays[c], r.metrics.get("num_examples", 0.0) if weighted else 1.0)
            for c, r in replies.items()
        ]
        self.adapters = cfg.aggregation.aggregate(updates, self.adapters)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "momentum_last": self.momentum_last}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.momentum_last = {int(k): dict(v) for k, v in state.get("momentum_last", {}).items()}


def seeded_lora_model_fn(
    build: Callable[[], nn.Module], lora: Any, seed: int
) -> Callable[[], nn.Module]:
    """A ``lora_model_fn`` whose new head and adapters are the same in every process."""
    import torch

    from consortium.models.transformer import with_lora

    def make() -> nn.Module:
        torch.manual_seed(derive_seed(seed, "init"))
        return with_lora(build(), lora)

    return make
