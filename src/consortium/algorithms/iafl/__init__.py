"""IAFL: incentive-aware FL with training-time model rewards (a fair-reward baseline);
registers the method ``iafl``."""

from __future__ import annotations

from consortium.algorithms.fairness import own_model_client_app, standalone_cache
from consortium.algorithms.iafl.config import IAFLConfig
from consortium.algorithms.iafl.rules import average, reward_proportions, reward_set, reward_size
from consortium.algorithms.iafl.workflow import IAFL
from consortium.algorithms.registry import MethodContext, MethodSpec, register_method
from consortium.core.client import ClientApp

__all__ = [
    "IAFL",
    "IAFLConfig",
    "average",
    "reward_proportions",
    "reward_set",
    "reward_size",
]


def _build(ctx: MethodContext, cfg: IAFLConfig) -> tuple[IAFL, ClientApp]:
    d = ctx.data
    cache = standalone_cache(ctx.cache, cfg.local, cfg.rounds)
    wf = IAFL(cfg, ctx.model_fn, d.val_x, d.val_y, d.test_x, d.test_y, ctx.device, cache)
    return wf, own_model_client_app(ctx.model_fn, ctx.device)


register_method(
    MethodSpec(
        "iafl", IAFLConfig, _build, "IAFL: shares of others' updates as rewards", report="fairness"
    )
)
