"""Secure aggregation on Flower: a grid's :meth:`~consortium.core.grid.Grid.send_mean` with
SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, CCS 2020), as Flower implements it.

Nothing of the protocol is written here; this module only connects Flower's two halves to
consortium messages:

* **member side**: Flower's ``secaggplus_mod`` on the consortium ``ClientApp``
  (:func:`~consortium.runtime.flower.apps.flower_client_app` with ``secure_aggregation``).
  The mod answers the protocol's key-exchange and unmasking stages itself; in the stage that
  carries the train instruction it calls the member's handler, whose reply gains the records
  the mod masks (:func:`add_masked_records`): the member's *update* (its arrays minus the
  ones it received: small numbers, which SecAgg's fixed-point quantisation keeps precise) and
  its weight. The mod then empties every array record of the reply: only masked vectors leave
  the node, and a node with the mod answers no ``train`` message outside the protocol;
* **server side**: Flower's ``SecAggPlusWorkflow``, driven through the legacy strategy
  interface it is written for (a strategy that offers the round's nodes and keeps the
  unmasked result), with one override: in the train stage each node gets the consortium
  message meant for it, not a legacy ``FitIns``.

What the server learns is the weighted mean of the updates (the weights are the members'
``num_examples``, as FedAvg's, or equal), each member's metrics, and who took part. It
cannot check one member's arrays (that is the point), so a member can spoil the sum within
the quantisation range; methods that must see individual updates (robust rules, CGSV's and
Aequa's contributions, SCAFFOLD's control variates, DP-FedAvg's server-side clipping) cannot
use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.common import FitIns, FitRes, Parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid as FlowerNativeGrid

from consortium.core.message import Arrays, Message

#: Key of the consortium meta record that tells a member how its update is weighted.
WEIGHTING = "secure-weighting"

_FITRES = "fitres"


@dataclass(frozen=True)
class SecureAggregation:
    """SecAgg+ settings: the parameters of Flower's ``SecAggPlusWorkflow``.

    ``num_shares`` (a count, or a share of the round's members) and
    ``reconstruction_threshold`` (a count, or a share of ``num_shares``) trade robustness to
    dropouts against privacy; ``clipping_range`` bounds each weighted update entry before
    quantisation into ``quantization_range`` levels; ``max_weight`` must be at least any
    member's weight (default: the largest member size the server knows, else 1,000).
    ``timeout`` bounds each of the four stages (``None``: until every node answered).
    """

    num_shares: int | float = 1.0
    reconstruction_threshold: int | float = 0.5
    max_weight: float | None = None
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    modulus_range: int = 2**32
    timeout: float | None = None

    @property
    def quantisation_step(self) -> float:
        """The step of one weighted update entry's fixed-point value (stochastic rounding:
        each member's error per entry is below it)."""
        return 2 * self.clipping_range / self.quantization_range


def is_secure_stage(content: RecordDict) -> bool:
    """Whether a message is the train stage of SecAgg+ (it carries the protocol's config)."""
    return RECORD_KEY_CONFIGS in content.config_records


def add_masked_records(
    content: RecordDict, request: Message, reply: Message, weighting: str
) -> None:
    """Add what ``secaggplus_mod`` masks to a member's reply content: the update (reply minus
    request, array by array in name order) and its weight, as Flower's legacy ``FitRes``."""
    names = sorted(request.arrays)
    if sorted(reply.arrays) != names:
        raise ValueError("a securely aggregated reply must hold exactly the arrays it received")
    update = []
    for name in names:
        sent, got = np.asarray(request.arrays[name]), np.asarray(reply.arrays[name])
        if sent.shape != got.shape:
            raise ValueError(f"array {name!r}: sent {sent.shape}, reply {got.shape}")
        update.append(got.astype(np.float64) - sent.astype(np.float64))
    weight = float(reply.metrics.get("num_examples", 0.0)) if weighting == "examples" else 1.0
    content.array_records[f"{_FITRES}.parameters"] = ArrayRecord(
        {str(i): Array(a) for i, a in enumerate(update)}
    )
    content.metric_records[f"{_FITRES}.num_examples"] = MetricRecord({"num_examples": weight})
    content.config_records[f"{_FITRES}.metrics"] = ConfigRecord(
        {k: float(v) for k, v in reply.metrics.items()}
    )
    content.config_records[f"{_FITRES}.status"] = ConfigRecord({"code": 0, "message": "Success"})


@dataclass
class SecureRound:
    """What one secure exchange gave the server."""

    #: The weighted mean of the updates, in the order of the sent array names (``None``: the
    #: protocol halted).
    mean_update: list[np.ndarray] | None = None
    #: Node id -> (the weight it used, its metrics) for every node inside the sum.
    results: dict[int, tuple[float, dict[str, float]]] = field(default_factory=dict)
    #: Why the protocol halted, when it did.
    halted: str = ""


class _Collect(Strategy):
    """The legacy strategy SecAggPlusWorkflow drives: it offers the round's nodes and keeps
    what the unmasking stage hands to ``aggregate_fit``."""

    def __init__(self, nodes: Iterable[int], grid: FlowerNativeGrid, run_id: int) -> None:
        self.proxies = [GridClientProxy(n, grid, run_id) for n in nodes]
        self.outcome = SecureRound()

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> Any:
        return [(p, FitIns(Parameters([], ""), {})) for p in self.proxies]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: Any
    ) -> tuple[None, dict[str, Any]]:
        for proxy, res in results:
            node = cast(GridClientProxy, proxy).node_id
            metrics = {k: float(cast(float, v)) for k, v in res.metrics.items()}
            self.outcome.results[node] = (float(res.num_examples), metrics)
        if results:
            self.outcome.mean_update = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}

    def configure_evaluate(self, *args: Any) -> list[Any]:
        return []

    def aggregate_evaluate(self, *args: Any) -> tuple[None, dict[str, Any]]:
        return None, {}

    def evaluate(self, *args: Any) -> None:
        return None


class _SecAggPlus(SecAggPlusWorkflow):
    """Flower's workflow, sending each node its consortium message in the train stage."""

    def __init__(self, contents: Mapping[int, RecordDict], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.contents = contents

    def setup_stage(self, grid: Any, context: LegacyContext, state: Any) -> bool:
        ok = super().setup_stage(grid, context, state)
        state.nid_to_fitins = {n: self.contents[n] for n in state.nid_to_fitins}
        return ok


def run_secure_round(
    grid: FlowerNativeGrid,
    contents: Mapping[int, RecordDict],
    rnd: int,
    settings: SecureAggregation,
    max_weight: float,
) -> SecureRound:
    """Run SecAgg+ once over the nodes of ``contents`` (node id -> its message content)."""
    strategy = _Collect(contents, grid, grid.run.run_id)
    state = RecordDict(
        {
            MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: rnd}),
            MAIN_PARAMS_RECORD: ArrayRecord(),
        }
    )
    context = LegacyContext(Context(grid.run.run_id, 0, {}, state, {}), strategy=strategy)
    workflow = _SecAggPlus(
        contents,
        num_shares=settings.num_shares,
        reconstruction_threshold=settings.reconstruction_threshold,
        max_weight=max_weight,
        clipping_range=settings.clipping_range,
        quantization_range=settings.quantization_range,
        modulus_range=settings.modulus_range,
        timeout=settings.timeout,
    )
    try:
        workflow(grid, context)
    except Exception as err:  # e.g. a node that masked arrays of other shapes
        strategy.outcome = SecureRound(halted=f"{type(err).__name__}: {err}")
        return strategy.outcome
    if strategy.outcome.mean_update is None:
        strategy.outcome.halted = (
            "SecAgg+ halted: it needs two members or more, and enough of them in every stage"
        )
    return strategy.outcome


def mean_from_update(reference: Arrays, update: list[np.ndarray]) -> Arrays:
    """The mean model: the arrays sent plus the mean update (in name order), in their dtypes;
    raises ``ValueError`` when the unmasked sum does not fit them."""
    names = sorted(reference)
    if len(update) != len(names):
        raise ValueError(f"the secure sum holds {len(update)} arrays, {len(names)} were sent")
    out: Arrays = {}
    for name, delta in zip(names, update, strict=True):
        ref = reference[name]
        delta = np.asarray(delta, np.float64).reshape(-1)
        if delta.size != ref.size or not np.isfinite(delta).all():
            raise ValueError(f"the secure sum of {name!r} does not fit {ref.shape}")
        value = ref.astype(np.float64) + delta.reshape(ref.shape)
        if np.issubdtype(ref.dtype, np.integer):
            value = np.rint(value)
        out[name] = value.astype(ref.dtype)
    return out
