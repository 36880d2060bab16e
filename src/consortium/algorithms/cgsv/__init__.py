"""CGSV: cosine-gradient Shapley values and masked-aggregate rewards (a fair-reward baseline);
registers the method ``cgsv``."""

from __future__ import annotations

from consortium.algorithms.cgsv.config import CGSVConfig
from consortium.algorithms.cgsv.rules import (
    masked_reward,
    reward_fractions,
    top_fraction_mask,
    update_reputations,
)
from consortium.algorithms.cgsv.workflow import CGSV
from consortium.algorithms.fairness import own_model_client_app, standalone_cache
from consortium.algorithms.registry import MethodContext, MethodSpec, register_method
from consortium.core.client import ClientApp

__all__ = [
    "CGSV",
    "CGSVConfig",
    "masked_reward",
    "reward_fractions",
    "top_fraction_mask",
    "update_reputations",
]


def _build(ctx: MethodContext, cfg: CGSVConfig) -> tuple[CGSV, ClientApp]:
    d = ctx.data
    cache = standalone_cache(ctx.cache, cfg.local, cfg.rounds)
    wf = CGSV(cfg, ctx.model_fn, d.val_x, d.val_y, d.test_x, d.test_y, ctx.device, cache)
    return wf, own_model_client_app(ctx.model_fn, ctx.device)


register_method(
    MethodSpec(
        "cgsv", CGSVConfig, _build, "CGSV: cosine reputations, masked rewards", report="fairness"
    )
)
