"""FedAvg, FedProx and DP-FedAvg; registers the methods ``fedavg``, ``fedprox`` and
``dp_fedavg``."""

from __future__ import annotations

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg.config import DPFedAvgConfig, FedAvgConfig, FedProxConfig
from consortium.algorithms.fedavg.workflow import DPFedAvg, FedAvg, FedProx
from consortium.algorithms.registry import (
    MethodContext,
    MethodSpec,
    builds_model,
    register_method,
)
from consortium.core.client import ClientApp

__all__ = ["DPFedAvg", "DPFedAvgConfig", "FedAvg", "FedAvgConfig", "FedProx", "FedProxConfig"]


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
register_method(
    MethodSpec(
        "dp_fedavg",
        DPFedAvgConfig,
        _build(DPFedAvg),
        "FedAvg with member-level differential privacy (McMahan et al., ICLR 2018)",
        check=builds_model,
    )
)
