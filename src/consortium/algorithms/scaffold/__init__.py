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

__all__ = ["SCAFFOLD", "SCAFFOLDConfig", "add_scaffold_handler", "scaffold_client_app"]


def _build(ctx: MethodContext, cfg: SCAFFOLDConfig) -> tuple[SCAFFOLD, ClientApp]:
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
