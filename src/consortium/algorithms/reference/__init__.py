"""Reference trainers every method is compared with; registers ``standalone`` and
``centralised``."""

from __future__ import annotations

from consortium.algorithms.base.supervised import (
    add_standalone_handler,
    standalone_client_app,
    supervised_client_app,
)
from consortium.algorithms.reference.centralised import Centralised, CentralisedConfig
from consortium.algorithms.reference.standalone import Standalone, StandaloneConfig
from consortium.algorithms.registry import (
    MethodContext,
    MethodSpec,
    builds_model,
    register_method,
)
from consortium.core.client import ClientApp

__all__ = [
    "Centralised",
    "CentralisedConfig",
    "Standalone",
    "StandaloneConfig",
    "add_standalone_handler",
    "standalone_client_app",
]


def _build_standalone(ctx: MethodContext, cfg: StandaloneConfig) -> tuple[Standalone, ClientApp]:
    d = ctx.data
    wf = Standalone(cfg, ctx.model_fn, d.test_x, d.test_y, ctx.device)
    return wf, standalone_client_app(ctx.model_fn, ctx.device)


def _build_centralised(ctx: MethodContext, cfg: CentralisedConfig) -> tuple[Centralised, ClientApp]:
    d = ctx.data
    wf = Centralised(
        cfg,
        ctx.model_fn,
        d.pool_x,
        d.pool_y,
        d.pooled_train_indices(),
        d.test_x,
        d.test_y,
        ctx.device,
    )
    return wf, supervised_client_app(ctx.model_fn, ctx.device)


register_method(
    MethodSpec(
        "standalone",
        StandaloneConfig,
        _build_standalone,
        "each member trains alone on its own data",
        check=builds_model,
    )
)
register_method(
    MethodSpec(
        "centralised",
        CentralisedConfig,
        _build_centralised,
        "one model on all members' data pooled (reference)",
        check=builds_model,
    )
)
