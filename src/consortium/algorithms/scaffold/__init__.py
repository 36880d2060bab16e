"""SCAFFOLD (Karimireddy et al., ICML 2020): control variates against client drift; registers
the method ``scaffold``. The worked example of docs/adding-a-method.md: this folder is all a
new method needs."""

from __future__ import annotations

from consortium.algorithms.registry import (
    MethodContext,
    MethodSpec,
    builds_model,
    register_method,
)
from consortium.algorithms.scaffold.client import add_scaffold_handler, scaffold_client_app
from consortium.algorithms.scaffold.config import SCAFFOLDConfig
from consortium.algorithms.scaffold.workflow import SCAFFOLD
from consortium.core.client import ClientApp

__all__ = [
    "SCAFFOLD",
    "SCAFFOLDConfig",
    "add_scaffold_handler",
    "budget_steps",
    "scaffold_client_app",
]


def budget_steps(train_sizes: list[int], epochs: int, batch_size: int) -> int:
    """K for SCAFFOLD's unset ``local_steps``: the average member's share of FedAvg's budget,
    ``round(epochs · mean(train sizes) / batch_size)``, at least 1."""
    mean = sum(train_sizes) / max(len(train_sizes), 1)
    return max(1, round(epochs * mean / batch_size))


def _build(ctx: MethodContext, cfg: SCAFFOLDConfig) -> tuple[SCAFFOLD, ClientApp]:
    if cfg.local_steps is None:
        data = ctx.data
        sizes = [len(data.client(c).train_indices) for c in range(data.num_clients)]
        k = budget_steps(sizes, cfg.local.epochs, cfg.local.batch_size)
        cfg = cfg.model_copy(update={"local_steps": k})
    wf = SCAFFOLD(cfg, ctx.model_fn, ctx.data.test_x, ctx.data.test_y, ctx.device)
    return wf, scaffold_client_app(ctx.model_fn, ctx.device)


register_method(
    MethodSpec(
        "scaffold",
        SCAFFOLDConfig,
        _build,
        "SCAFFOLD: control variates correct client drift (Karimireddy et al.)",
        check=builds_model,
    )
)
