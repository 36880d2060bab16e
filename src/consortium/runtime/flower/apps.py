"""Any consortium workflow as a Flower ``ServerApp``, its member handlers as a ``ClientApp``.

The server side builds a :class:`ServerRun` (the workflow and how to run it) from the Flower
run config, wraps Flower's grid in a :class:`~consortium.runtime.flower.grid.FlowerGrid` (with
the server operator's roster, when the run config's ``roster`` names one) and drives the
workflow with the same :func:`~consortium.core.run.run_workflow` loop the
in-process runtime uses: metrics JSONL, checkpoints and the summary come out the same.

The member side builds a :class:`Member` (the consortium ``ClientApp`` and a function giving
member ``cid``'s data) from the run config and the node config, once per process, and hands
every Flower message to the consortium handler of its kind with a
:class:`~consortium.core.client.ClientContext` whose ``state`` lives in the node's Flower
``Context.state`` and whose ``seed`` and ``round`` come from the server, exactly as the
in-process runtime would set them.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import ERROR, INFO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import ConfigRecord, Context, Error, MessageType, RecordDict
from flwr.app import Message as FlowerMessage
from flwr.clientapp import ClientApp as FlowerClientApp
from flwr.clientapp.typing import Mod
from flwr.common.constant import ErrorCode
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid as FlowerNativeGrid
from flwr.serverapp import ServerApp

from consortium.core.client import ClientApp, ClientContext
from consortium.core.run import RunResult, RunStopped, run_workflow
from consortium.core.workflow import Workflow
from consortium.runtime.flower.grid import FlowerGrid
from consortium.runtime.flower.records import (
    IDENTIFY,
    META,
    PROTOCOL,
    from_recorddict,
    load_state,
    save_state,
    to_recorddict,
)
from consortium.runtime.flower.security import Roster, read_roster

if TYPE_CHECKING:
    from consortium.runtime.flower.secagg import SecureAggregation

log = logging.getLogger("consortium.runtime.flower")


@dataclass(frozen=True)
class AppSettings:
    """What Flower tells an app about its run and its node, as plain dicts.

    ``run_config`` is the ``[tool.flwr.app.config]`` table of the app (with ``flwr run
    --run-config`` overrides); ``node_config`` is the SuperNode's ``--node-config``
    (``partition-id``, ``num-partitions`` and whatever else the member operator set).
    """

    run_config: dict[str, Any] = field(default_factory=dict)
    node_config: dict[str, Any] = field(default_factory=dict)
    run_id: int = 0

    @classmethod
    def from_context(cls, context: Context) -> AppSettings:
        return cls(dict(context.run_config), dict(context.node_config), int(context.run_id))


@dataclass
class Member:
    """A member process's side of the federation: its handlers and its data.

    ``data(cid)`` returns member ``cid``'s local data (what ``ctx.data`` holds in-process);
    a node only ever asks for its own partition.
    """

    app: ClientApp
    data: Callable[[int], Any]


MemberFactory = Callable[[AppSettings], Member]


@dataclass
class ServerRun:
    """A workflow and how to run it on the federation (see :class:`FlowerGrid`)."""

    workflow: Workflow
    num_clients: int
    seed: int = 0
    min_replies: int = 1
    max_reply_bytes: int | None = None
    reply_timeout: float | None = None
    connect_timeout: float = 300.0
    run_dir: str | Path | None = None
    resume: bool = False
    progress: bool = False
    description: str | None = None
    #: Member id -> registered node key; ``None``: the run config's ``roster`` file, if any.
    roster: Roster | None = None
    #: Member id -> samples it holds, when the server knows (caps reported sample counts).
    data_sizes: Mapping[int, int | None] | None = None
    #: SecAgg+ for the workflow's ``send_mean`` (members need ``secure_aggregation`` too).
    secure_aggregation: SecureAggregation | None = None

    #: The fields that configure the :class:`FlowerGrid` (the rest configure the run).
    GRID_FIELDS = (
        "seed",
        "min_replies",
        "max_reply_bytes",
        "reply_timeout",
        "connect_timeout",
        "data_sizes",
        "secure_aggregation",
    )

    def grid_options(self) -> dict[str, Any]:
        """:class:`FlowerGrid`'s keyword arguments, as this run sets them."""
        return {name: getattr(self, name) for name in self.GRID_FIELDS}


ServerRunFactory = Callable[[AppSettings], ServerRun]


def flower_server_app(
    build: ServerRunFactory,
    on_result: Callable[[RunResult], None] | None = None,
    on_stop: Callable[[RunStopped], None] | None = None,
) -> ServerApp:
    """A Flower ``ServerApp`` that runs the workflow ``build(settings)`` returns.

    ``on_result`` receives the :class:`~consortium.core.run.RunResult` (in simulation the
    caller collects it there; in a deployment the run folder holds it); ``on_stop`` the
    :class:`~consortium.core.run.RunStopped` of a run that stopped (logged either way; its
    ``stopped.json`` is in the run folder).
    """
    app = ServerApp()

    @app.main()
    def main(grid: FlowerNativeGrid, context: Context) -> None:
        settings = AppSettings.from_context(context)
        run = build(settings)
        roster = run.roster
        if roster is None and str(settings.run_config.get("roster") or ""):
            roster = read_roster(str(settings.run_config["roster"]))
        consortium_grid = FlowerGrid(grid, run.num_clients, roster=roster, **run.grid_options())
        consortium_grid.connect()
        try:
            result = run_workflow(
                run.workflow,
                consortium_grid,
                run_dir=run.run_dir,
                resume=run.resume,
                progress=run.progress,
                description=run.description,
                callbacks=[_log_round],
            )
        except RunStopped as err:
            flwr_log(ERROR, "[consortium] %s stopped: %s", run.workflow.name, err)
            if on_stop is None:
                raise
            on_stop(err)
            return
        flwr_log(INFO, "[consortium] %s finished: %s", run.workflow.name, _brief(result.summary))
        if on_result is not None:
            on_result(result)

    return app


def _brief(summary: Mapping[str, Any]) -> str:
    keys = ("test_accuracy", "train_loss", "rounds_skipped", "client_failures", "wall_time_s")
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k in keys
        if (v := summary.get(k)) is not None
    )


def _log_round(rnd: int, line: Mapping[str, Any]) -> None:
    """One line per round in Flower's log (what ``flwr run --stream`` shows the operator)."""
    failures = line.get("failures") or {}
    text = f"[consortium] round {rnd}: {line.get('replies', 0)} replies"
    if failures:
        text += f", failures {dict(failures)}"
    if line.get("rejected"):
        text += f", rejected {dict(line['rejected'])}"
    if "skipped" in line:
        text += f", skipped ({line['skipped']})"
    brief = _brief(line)
    flwr_log(INFO, "%s%s", text, f", {brief}" if brief else "")


# --- member side ---------------------------------------------------------------------------

_CACHE_SIZE = 4
_members: OrderedDict[tuple[Any, ...], Member] = OrderedDict()
_members_lock = threading.Lock()


class ConsortiumClientApp(FlowerClientApp):
    """A Flower ``ClientApp`` that serves consortium messages of every kind.

    ``train`` and ``evaluate`` messages arrive as Flower's own types, any other kind ``k`` as
    the query action ``query.k``; the action is registered the first time it arrives, so a
    workflow may add message kinds without a change here. The member's
    :class:`Member` is built once per process (Flower simulation reuses worker processes;
    a deployment starts one process per message) and cached.

    ``mods`` are Flower mods wrapped around every handler (Flower's ``ClientApp(mods=...)``),
    e.g. ``secaggplus_mod`` for secure aggregation (see :func:`flower_client_app`).
    """

    def __init__(self, member_factory: MemberFactory, mods: Sequence[Mod] = ()) -> None:
        super().__init__(mods=list(mods))
        self.member_factory = member_factory
        # Survives pickling into simulation workers: the cache key of this app's members.
        self._token = uuid.uuid4().hex
        self._actions: set[str] = set()
        self.train()(self._handle)
        self.evaluate()(self._handle)
        self.query()(self._handle)
        self.query(IDENTIFY)(self._identify)
        self._actions.add(IDENTIFY)

    def __call__(self, message: FlowerMessage, context: Context) -> FlowerMessage:
        category, _, action = message.metadata.message_type.partition(".")
        if category == MessageType.QUERY and action and action not in self._actions:
            if action.isidentifier():
                self.query(action)(self._handle)
            self._actions.add(action)
        return super().__call__(message, context)

    def member(self, settings: AppSettings) -> Member:
        """This process's :class:`Member` for ``settings`` (built on first use)."""
        node = tuple(
            sorted((k, str(v)) for k, v in settings.node_config.items() if k != "partition-id")
        )
        key = (self._token, settings.run_id, node)
        with _members_lock:
            if key in _members:
                _members.move_to_end(key)
                return _members[key]
        built = self.member_factory(settings)
        with _members_lock:
            _members[key] = built
            while len(_members) > _CACHE_SIZE:
                _members.popitem(last=False)
        return built

    def _identify(self, message: FlowerMessage, context: Context) -> FlowerMessage:
        ident: dict[str, Any] = {"protocol": PROTOCOL}
        for key in ("partition-id", "num-partitions"):
            if key in context.node_config:
                ident[key] = int(context.node_config[key])
        return FlowerMessage(RecordDict({META: ConfigRecord(ident)}), reply_to=message)

    def _handle(self, message: FlowerMessage, context: Context) -> FlowerMessage:
        try:
            msg, envelope = from_recorddict(message.content)
            if envelope is None:
                raise ValueError("message carries no member id, round and seed")
            own = context.node_config.get("partition-id")
            if own is not None and int(own) != envelope.client_id:
                raise ValueError(
                    f"this node serves partition-id {own}, the message is for member "
                    f"{envelope.client_id}"
                )
            member = self.member(AppSettings.from_context(context))
            ctx = ClientContext(
                client_id=envelope.client_id,
                data=member.data(envelope.client_id),
                state=load_state(context.state),
                round=envelope.round,
                seed=envelope.seed,
            )
            reply = member.app.handle(msg, ctx)
            save_state(context.state, ctx.state)
            content = to_recorddict(reply)
            if _secure_stage(message.content):  # secaggplus_mod masks what this adds
                from consortium.runtime.flower.secagg import WEIGHTING, add_masked_records

                weighting = str(message.content.config_records[META].get(WEIGHTING, "examples"))
                add_masked_records(content, msg, reply, weighting)
            return FlowerMessage(content, reply_to=message)
        except Exception as err:  # a failing member is the server's failure record, not a crash
            log.warning("member handler failed", exc_info=True)
            return FlowerMessage(
                Error(
                    code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                    reason=f"{type(err).__name__}: {err}",
                ),
                reply_to=message,
            )


def flower_client_app(
    member_factory: MemberFactory,
    *,
    mods: Sequence[Mod] = (),
    secure_aggregation: bool = False,
) -> ConsortiumClientApp:
    """A Flower ``ClientApp`` serving the consortium handlers ``member_factory`` builds.

    In simulation the app is pickled into the worker processes: give a factory that pickles
    small (a module-level function, a ``functools.partial`` of one) and builds the data on
    the worker, rather than a closure holding the data.

    ``mods`` are Flower mods around every handler. ``secure_aggregation`` puts Flower's
    ``secaggplus_mod`` first: the member then sends ``train`` replies only masked, inside
    the SecAgg+ protocol (see :mod:`consortium.runtime.flower.secagg`).
    """
    if secure_aggregation:
        from flwr.client.mod import secaggplus_mod

        mods = [secaggplus_mod, *mods]
    return ConsortiumClientApp(member_factory, mods)


def _secure_stage(content: RecordDict) -> bool:
    from consortium.runtime.flower.secagg import is_secure_stage

    return is_secure_stage(content)
