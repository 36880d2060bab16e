"""FedAvg and FedProx; registers the methods ``fedavg`` and ``fedprox``."""

from __future__ import annotations

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg.config import FedAvgConfig, FedProxConfig
from consortium.algorithms.fedavg.workflow import FedAvg, FedProx
from consortium.algorithms.registry import (
    MethodContext,
    MethodSpec,
    builds_model,
    register_method,
)
from consortium.core.client import ClientApp

__all__ = ["FedAvg", "FedAvgConfig", "FedProx", "FedProxConfig"]


def _build(cls: type[FedAvg]):  # type: ignore[no-untyped-def]
    def build(ctx: MethodContext, config: FedAvgConfig) -> tuple[FedAvg, ClientApp]:
        wf = cls(config, ctx.model_fn, ctx.data.test_x, ctx.data.test_y, ctx.device)
        return wf, supervised_client_app(ctx.model_fn, ctx.device)

    return build


register_method(
    MethodSpec(
        "fedavg",
        FedAvgConfig,
        _build(FedAvg),
        "federated averaging (McMahan et al.)",
        check=builds_model,
    )
)
register_method(
    MethodSpec(
        "fedprox",
        FedProxConfig,
        _build(FedProx),
        "FedAvg with FedProx's proximal term (Li et al.)",
        check=builds_model,
    )
)
