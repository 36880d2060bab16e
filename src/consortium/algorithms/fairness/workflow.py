"""The server side every fair-reward method shares (Aequa, CGSV, IAFL): the server's splits,
the standalone phase before round 1, and the contributions the rewards are judged against."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, Generic, TypeVar

import numpy as np

from consortium.algorithms.base.supervised import ModelFn, ServerEvaluator, initial_arrays
from consortium.algorithms.base.workflow import FederatedWorkflow
from consortium.algorithms.fairness.config import FairRewardConfig, check_validation_split
from consortium.algorithms.fairness.contribution import StandaloneResult, static_contributions
from consortium.algorithms.fairness.rewards import Scorer, setup_phase
from consortium.core.grid import Grid
from consortium.core.message import Arrays

F = TypeVar("F", bound=FairRewardConfig)


class FairRewardWorkflow(FederatedWorkflow[F], Generic[F]):
    """Base of the fair-reward workflows.

    Parameters
    ----------
    config
        The method's options (a :class:`~consortium.algorithms.fairness.config.FairRewardConfig`).
    model_fn
        Builds the untrained model.
    val_x, val_y
        The server's validation split (standalone contributions; Aequa's width curve).
    test_x, test_y
        The server's test set (the server model's accuracy, reward accuracies).
    standalone_cache
        Shared between the methods of one experiment so the standalone phase runs once.
    """

    #: Builds the server's scorers; Aequa's score a slimmable model at any width.
    evaluator_cls: Any = ServerEvaluator

    def __init__(
        self,
        config: F,
        model_fn: ModelFn,
        val_x: np.ndarray,
        val_y: np.ndarray,
        test_x: np.ndarray,
        test_y: np.ndarray,
        device: str = "auto",
        standalone_cache: MutableMapping[str, Any] | None = None,
    ) -> None:
        super().__init__(config)
        self.model_fn = model_fn
        self.test = self.evaluator_cls(model_fn, test_x, test_y, device)
        self.val = self.evaluator_cls(model_fn, val_x, val_y, device)
        check_validation_split(self.name, config, 1.0 if len(val_y) else 0.0)
        self.standalone_cache = standalone_cache
        self.weights: Arrays = {}
        self.standalone: StandaloneResult | None = None
        self.sizes: dict[int, float] | None = None

    def standalone_phase(
        self, grid: Grid, *, sizes: bool, val: Scorer | None, test: Scorer | None
    ) -> None:
        """Initial model, then members alone (when needed) and their data sizes (when asked)."""
        cfg = self.config
        self.weights = initial_arrays(self.model_fn, grid.seed)
        self.standalone, self.sizes = setup_phase(
            grid,
            self.weights,
            cfg.local,
            cfg.rounds,
            standalone=cfg.needs_standalone,
            sizes=sizes,
            val=val,
            test=test,
            chunk_size=cfg.chunk_size,
            cache=self.standalone_cache,
        )

    def static_contributions(self, grid: Grid) -> dict[int, float] | None:
        """Contributions known before training (``None`` for online ``cgsv``)."""
        return static_contributions(
            self.config, grid.num_clients, sizes=self.sizes, standalone=self.standalone
        )

    def final_arrays(self) -> Arrays:
        return self.weights

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "standalone": None if self.standalone is None else self.standalone.state_dict(),
            "sizes": self.sizes,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.weights = dict(state["weights"])
        st = state.get("standalone")
        self.standalone = None if st is None else StandaloneResult.from_state(st)
        self.sizes = state.get("sizes")


def builder(cls: type[FairRewardWorkflow], client_app: Any):  # type: ignore[no-untyped-def]
    """A method builder for a fair-reward workflow ``cls`` whose members run ``client_app``:
    the experiment's splits, and the experiment's shared standalone phase."""
    from consortium.algorithms.fairness.rewards import standalone_cache

    def build(ctx: Any, cfg: FairRewardConfig) -> tuple[FairRewardWorkflow, Any]:
        d = ctx.data
        cache = standalone_cache(ctx.cache, cfg.local, cfg.rounds)
        wf = cls(cfg, ctx.model_fn, d.val_x, d.val_y, d.test_x, d.test_y, ctx.device, cache)
        return wf, client_app(ctx.model_fn, ctx.device)

    return build


def fair_reward_method(
    cls: type[FairRewardWorkflow],
    config: type[FairRewardConfig],
    client_app: Any,
    description: str,
    needs: Any,
) -> Any:
    """The :class:`~consortium.algorithms.registry.MethodSpec` of a fair-reward method named
    ``cls.name``: :func:`builder`'s workflow, the family report, and a check that runs
    ``needs(ctx, options)`` (what else it asks of the experiment) then asks for the server
    validation split its options may need."""
    from consortium.algorithms.fairness.config import server_validation_check
    from consortium.algorithms.registry import MethodSpec

    return MethodSpec(
        cls.name,
        config,
        builder(cls, client_app),
        description,
        report="fairness",
        check=server_validation_check(cls.name, needs),
    )
