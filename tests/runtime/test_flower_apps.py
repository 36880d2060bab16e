"""The Flower runtime without processes: records, the client app, FlowerGrid on a fake grid.

The fake grid below is Flower's grid contract in miniature (node ids, push, pull; every
message and node state serialised to Flower's wire format and back), so these tests check
the adapter exactly, in milliseconds. The same paths over a real SuperLink and in Ray
simulation are in ``test_flower_runtimes.py``.
"""

from __future__ import annotations

import time
import tomllib

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, RecordDict
from flwr.app import Message as FlowerMessage
from flwr.common import serde
from flwr.proto.node_pb2 import NodeInfo
from flwr.supercore.task_identity import TaskIdentity

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.core import (
    ClientApp,
    Grid,
    Message,
    ReplySpec,
    TooFewReplies,
    Workflow,
    run_workflow,
)
from consortium.experiment.flower import (
    app_name,
    experiment_member,
    experiment_server_run,
    write_flower_app,
)
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.runtime.flower import (
    AppSettings,
    FederationError,
    FlowerGrid,
    Member,
    flower_client_app,
    from_recorddict,
    message_type,
    to_recorddict,
    write_node_key,
    write_tls_certificates,
)
from consortium.runtime.flower.records import Envelope, load_state, save_state
from consortium.runtime.flower.security import RosterError, read_roster, write_roster
from consortium.training import LocalTrainConfig


@pytest.fixture
def flower_identity(monkeypatch):
    """Flower builds message metadata from the task it runs in; pretend to be a ServerApp."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _wire(content: RecordDict) -> RecordDict:
    return serde.recorddict_from_proto(serde.recorddict_to_proto(content))


class FakeFlowerGrid:
    """Nodes with random ids, each running a Flower ClientApp with its own Context.

    Messages and node state cross Flower's protobuf serialisation, as on a real federation.
    ``dead`` nodes never answer.
    """

    def __init__(self, app, node_configs, seed=0):
        rng = np.random.default_rng(seed)
        self.app = app
        self.contexts = {}
        for config in node_configs:
            node = int(rng.integers(1, 2**62))
            self.contexts[node] = Context(
                run_id=7, node_id=node, node_config=dict(config), state=RecordDict(), run_config={}
            )
        self.dead: set[int] = set()
        self.pending: dict[str, FlowerMessage] = {}
        self.types: list[str] = []
        self.received: dict[int, list[str]] = {}

    def get_node_ids(self):
        return list(self.contexts)

    def get_nodes(self):
        """What Flower's grid says of each node: its id and the public key it registered."""
        keys = getattr(self, "keys", {})
        return [NodeInfo(node_id=n, public_key=keys.get(n, b"")) for n in self.contexts]

    def node_of(self, partition):
        return next(
            n for n, c in self.contexts.items() if c.node_config["partition-id"] == partition
        )

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id
            self.pending[msg.metadata.message_id] = msg
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids):
        replies = []
        for mid in list(message_ids):
            msg = self.pending.get(mid)
            if msg is None or msg.metadata.dst_node_id in self.dead:
                continue
            del self.pending[mid]
            ctx = self.contexts[msg.metadata.dst_node_id]
            self.types.append(msg.metadata.message_type)
            self.received.setdefault(msg.metadata.dst_node_id, []).append(msg.metadata.message_type)
            received = FlowerMessage(metadata=msg.metadata, content=_wire(msg.content))
            reply = self.app(received, ctx)
            ctx.state = _wire(ctx.state)
            if reply.has_content():
                reply = FlowerMessage(metadata=reply.metadata, content=_wire(reply.content))
            replies.append(reply)
        return replies


def partitions(n, total=None):
    return [{"partition-id": i, "num-partitions": total or n} for i in range(n)]


def model_fn():
    return build_model("mlp", (1, 4, 4), 2, hidden=[8])


def fedavg(x, y, rounds=3, **kw):
    cfg = FedAvgConfig(rounds=rounds, local=LocalTrainConfig(lr=0.1, batch_size=8), **kw)
    return FedAvg(cfg, model_fn, x[:20], y[:20], device="cpu")


# --- records -------------------------------------------------------------------------------


def test_messages_cross_flower_records_bit_for_bit():
    arrays = {
        "w": np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32),
        "b": np.arange(4, dtype=np.float64),
        "mask": np.array([True, False]),
        "idx": np.arange(3, dtype=np.int64),
        "scalar": np.array(1.5, np.float32),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "empty": np.zeros((0, 3), np.float32),
    }
    msg = Message(
        "explain",
        arrays=arrays,
        config={"lr": 0.1, "epochs": 2, "opt": "sgd", "flag": True, "widths": [1, 2]},
        metrics={"loss": 0.25},
    )
    back, envelope = from_recorddict(_wire(to_recorddict(msg, Envelope(3, 2, 2**62 + 5))))
    assert envelope == Envelope(3, 2, 2**62 + 5)
    assert back.kind == "explain" and list(back.arrays) == list(arrays)
    for name, a in arrays.items():
        assert back.arrays[name].dtype == a.dtype and back.arrays[name].shape == a.shape
        assert np.array_equal(back.arrays[name], a)
    assert back.config == msg.config
    assert [type(v) for v in back.config.values()] == [float, int, str, bool, list]
    assert back.metrics == {"loss": 0.25}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("train", "train"),
        ("evaluate", "evaluate"),
        ("explain", "query.explain"),
        ("explain-scores", "query"),
    ],
)
def test_message_kinds_map_onto_flower_message_types(kind, expected):
    assert message_type(kind) == expected


def test_member_state_round_trips_through_node_records():
    state = {
        "count": 3,
        "rate": 0.5,
        "name": "a",
        "flag": False,
        "alpha": np.arange(6, dtype=np.float32).reshape(2, 3),
        "history": [1, 2, {"a": np.ones(2)}],
        7: "non-string key",
        "pair": (1, np.float32(2.5)),
        "seen": {3, 1},
        "big_endian": np.arange(3, dtype=">f8"),
    }
    records = RecordDict()
    save_state(records, state)
    # data only: arrays and JSON text, nothing pickled that reading could execute
    for record in records.config_records.values():
        assert all(isinstance(v, str) for v in record.values())
    back = load_state(_wire(records))
    assert set(back) == set(state)
    assert back["pair"] == (1, np.float32(2.5)) and type(back["pair"][1]) is np.float32
    assert back["seen"] == {1, 3} and back["big_endian"].dtype == np.dtype(">f8")
    with pytest.raises(TypeError, match="cannot hold"):
        save_state(records, {"model": object()})
    assert back["alpha"].dtype == np.float32 and np.array_equal(back["alpha"], state["alpha"])
    assert back["count"] == 3 and isinstance(back["count"], int)
    assert back["flag"] is False and back[7] == "non-string key"
    assert np.array_equal(back["history"][2]["a"], np.ones(2))
    save_state(records, {})
    assert load_state(records) == {}


def test_foreign_or_newer_content_is_refused():
    with pytest.raises(ValueError, match="not a consortium message"):
        from_recorddict(RecordDict({"x": ConfigRecord({"a": 1})}))
    content = to_recorddict(Message("train"))
    content.config_records["consortium.meta"]["protocol"] = 99
    with pytest.raises(ValueError, match="layout"):
        from_recorddict(content)


# --- FlowerGrid + client app on the fake grid ----------------------------------------------


def test_fedavg_on_flower_grid_equals_in_process(tiny_federation, flower_identity):
    x, y, views = tiny_federation
    local_grid = LocalRuntime(supervised_client_app(model_fn, "cpu"), lambda c: views[c], 4, seed=3)
    local = run_workflow(fedavg(x, y, clients_per_round=2), local_grid, progress=False)

    app = flower_client_app(
        lambda s: Member(supervised_client_app(model_fn, "cpu"), views.__getitem__)
    )
    fake = FakeFlowerGrid(app, partitions(4))
    grid = FlowerGrid(fake, 4, seed=3)
    flower = run_workflow(fedavg(x, y, clients_per_round=2), grid, progress=False)

    assert grid.nodes == {c: fake.node_of(c) for c in range(4)}
    for name, value in local.final_arrays.items():
        assert np.array_equal(flower.final_arrays[name], value)
    drop = ("time_s", "cpu_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in flower.rounds] == [
        {k: v for k, v in r.items() if k not in drop} for r in local.rounds
    ]
    assert flower.summary["client_accuracy"] == local.summary["client_accuracy"]
    assert {"train", "evaluate", "query.consortium_identify"} <= set(fake.types)


class Accumulate(Workflow):
    """Members keep a count and a running array in their own state across rounds."""

    name = "accumulate"
    num_rounds = 4

    def __init__(self, kind="accumulate"):
        self.kind = kind
        self.counts: dict[int, int] = {}
        self.sums: dict[int, np.ndarray] = {}

    def run_round(self, grid: Grid, rnd: int):
        x = np.full(3, float(rnd), np.float32)
        msgs = {c: Message(self.kind, arrays={"x": x}) for c in grid.sample(2)}
        replies = grid.send(msgs, expect=ReplySpec.like({"acc": x}))
        self.counts = {**self.counts, **{c: int(r.metrics["count"]) for c, r in replies.items()}}
        self.sums = {**self.sums, **{c: r.arrays["acc"] for c, r in replies.items()}}
        return {"seen": sorted(replies)}

    def final_arrays(self):
        return {f"acc_{c}": a for c, a in sorted(self.sums.items())}

    def state_dict(self):
        return {"counts": self.counts, "sums": self.sums}

    def load_state_dict(self, state):
        self.counts, self.sums = dict(state["counts"]), dict(state["sums"])


def accumulate_app(kind="accumulate"):
    app = ClientApp()

    @app.on(kind)
    def accumulate(msg, ctx):
        noise = np.random.default_rng(ctx.seed).normal(size=3).astype(np.float32)
        acc = ctx.state.get("acc", np.zeros(3, np.float32)) + msg.arrays["x"] * ctx.round + noise
        ctx.state["acc"] = acc.astype(np.float32)
        ctx.state["count"] = ctx.state.get("count", 0) + 1
        ctx.state["rounds"] = [*ctx.state.get("rounds", []), ctx.round]
        return msg.reply(arrays={"acc": ctx.state["acc"]}, metrics={"count": ctx.state["count"]})

    return app


@pytest.mark.parametrize("kind", ["accumulate", "accumulate-v2"])
def test_member_state_lives_in_the_node_context(flower_identity, kind):
    local_grid = LocalRuntime(accumulate_app(kind), lambda c: None, 3, seed=1)
    local = run_workflow(Accumulate(kind), local_grid, progress=False)
    fake = FakeFlowerGrid(
        flower_client_app(lambda s: Member(accumulate_app(kind), lambda c: None)), partitions(3)
    )
    flower = run_workflow(Accumulate(kind), FlowerGrid(fake, 3, seed=1), progress=False)
    assert flower.final_arrays.keys() == local.final_arrays.keys()
    for name, value in local.final_arrays.items():
        assert np.array_equal(flower.final_arrays[name], value)
    for cid in range(3):
        node_state = load_state(fake.contexts[fake.node_of(cid)].state)
        assert node_state.get("count", 0) == local_grid.client_state(cid).get("count", 0)
        assert node_state.get("rounds", []) == local_grid.client_state(cid).get("rounds", [])
    assert ("query.accumulate" if kind == "accumulate" else "query") in fake.types


def test_failures_have_reasons_and_the_round_goes_on(flower_identity):
    app = accumulate_app()

    @app.on("crash")
    def crash(msg, ctx):
        raise RuntimeError("disk full")

    fake = FakeFlowerGrid(flower_client_app(lambda s: Member(app, lambda c: None)), partitions(3))
    grid = FlowerGrid(fake, 3, seed=0, min_replies=1, reply_timeout=0.3)
    grid.connect()
    fake.dead.add(fake.node_of(2))
    grid.start_round(1)
    x = {"x": np.zeros(3, np.float32)}
    replies = grid.send(
        {
            0: Message("accumulate", arrays=x),
            1: Message("crash"),
            2: Message("accumulate", arrays=x),
        }
    )
    assert list(replies) == [0]
    assert grid.record.failures[1] == "Flower error 2: RuntimeError: disk full"
    assert grid.record.failures[2] == "no reply within 0.3 s"
    grid.start_round(2)
    with pytest.raises(TooFewReplies):
        grid.send({0: Message("explain")})
    assert "no handler for message kind 'explain'" in grid.record.failures[0]


def test_a_node_refuses_messages_for_another_partition(flower_identity):
    app = flower_client_app(lambda s: Member(accumulate_app(), lambda c: None))
    fake = FakeFlowerGrid(app, partitions(2))
    grid = FlowerGrid(fake, 2, min_replies=0)
    grid.connect()
    grid._node_of = {0: grid._node_of[1], 1: grid._node_of[0]}  # a server with a stale map
    grid.start_round(1)
    assert grid.send({0: Message("accumulate", arrays={"x": np.zeros(3, np.float32)})}) == {}
    assert "serves partition-id 1" in grid.record.failures[0]


def test_a_silent_stale_node_does_not_hold_up_the_start(flower_identity):
    app = flower_client_app(lambda s: Member(ClientApp(), lambda c: None))
    fake = FakeFlowerGrid(app, [*partitions(3), {"partition-id": 1, "num-partitions": 3}])
    stale = list(fake.contexts)[-1]
    fake.dead.add(stale)
    grid = FlowerGrid(fake, 3, connect_timeout=60)
    t0 = time.monotonic()
    nodes = grid.connect()
    assert time.monotonic() - t0 < 5
    assert stale not in nodes.values() and sorted(nodes) == [0, 1, 2]


@pytest.mark.parametrize(
    ("configs", "match"),
    [
        ([{"partition-id": 0}, {"partition-id": 0}], "both serve partition-id 0"),
        (partitions(2, total=5), "num-partitions=5"),
        ([{"partition-id": 0}, {"data-path": "x"}], "no partition-id"),
        ([{"partition-id": 0}, {"partition-id": 4}], "outside 0..1"),
        ([{"partition-id": 0}], r"1 of 2 members have joined \(missing partition-ids \[1\]"),
    ],
)
def test_a_misconfigured_federation_is_a_clear_error(flower_identity, configs, match):
    app = flower_client_app(lambda s: Member(ClientApp(), lambda c: None))
    grid = FlowerGrid(FakeFlowerGrid(app, configs), 2, connect_timeout=0.2)
    with pytest.raises(FederationError, match=match):
        grid.connect()


def test_sample_counts_over_flower_are_capped_at_what_the_server_knows(flower_identity):
    app = ClientApp()

    @app.on("count")
    def count(msg, ctx):
        return msg.reply(metrics={"num_examples": 1e6 if ctx.client_id == 0 else 3.0})

    fake = FakeFlowerGrid(flower_client_app(lambda s: Member(app, lambda c: None)), partitions(2))
    grid = FlowerGrid(fake, 2, data_sizes={0: 40, 1: 40})
    grid.start_round(1)
    replies = grid.send({0: Message("count"), 1: Message("count")}, expect=ReplySpec({}))
    assert [r.metrics["num_examples"] for r in replies.values()] == [40.0, 3.0]
    assert "capped at the member's 40 samples" in grid.record.capped[0]


# --- identity by the server operator's roster ---------------------------------------------


def pem(key_file):
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_ssh_public_key(key_file.read_bytes())
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def keyed_federation(tmp_path, flower_identity):
    """Two members on the roster, each node registered with its own key, plus nodes a
    roster does not know (an outsider claiming partition 0) or that lie about their id."""
    keys = {name: write_node_key(tmp_path, name).public_key for name in ("m0", "m1", "out")}
    roster = read_roster(write_roster(tmp_path / "roster.toml", {0: keys["m0"], 1: keys["m1"]}))

    def build(nodes):  # [(key name, node config)]
        app = flower_client_app(lambda s: Member(accumulate_app(), lambda c: None))
        fake = FakeFlowerGrid(app, [config for _, config in nodes], seed=5)
        fake.keys = {n: pem(keys[k]) for n, (k, _) in zip(fake.contexts, nodes, strict=True)}
        fake.by_key = {k: n for n, (k, _) in zip(fake.contexts, nodes, strict=True)}
        return fake

    return roster, build


def test_members_are_who_the_roster_says_not_what_nodes_declare(keyed_federation):
    roster, build = keyed_federation
    fake = build(
        [
            ("out", {"partition-id": 0, "num-partitions": 2}),  # first, and claims member 0
            ("m1", {}),  # declares nothing: the roster knows it
            ("m0", {"partition-id": 0, "num-partitions": 2}),
        ]
    )
    grid = FlowerGrid(fake, 2, seed=1, min_replies=2, roster=roster)
    assert grid.connect() == {0: fake.by_key["m0"], 1: fake.by_key["m1"]}
    outsider = fake.by_key["out"]
    assert "is not on the roster" in grid.refused[outsider]
    result = run_workflow(Accumulate(), grid, progress=False)
    assert all(r["replies"] == 2 for r in result.rounds)
    assert outsider not in fake.received  # not even asked who it is
    assert {"query.accumulate"} <= set(fake.received[fake.by_key["m0"]])


def test_a_rostered_node_claiming_another_members_id_is_refused(keyed_federation):
    roster, build = keyed_federation
    fake = build([("m0", {"partition-id": 0}), ("m1", {"partition-id": 0})])
    grid = FlowerGrid(fake, 2, roster=roster, connect_timeout=0.5)
    with pytest.raises(FederationError, match=r"missing partition-ids \[1\]") as err:
        grid.connect()
    liar = fake.by_key["m1"]
    assert f"node {liar} declares partition-id 0, but its key is member 1's" in str(err.value)
    assert fake.received[liar] == ["query.consortium_identify"]


def test_a_roster_must_match_the_run(keyed_federation, tmp_path):
    roster, _ = keyed_federation
    with pytest.raises(FederationError, match="roster lists members"):
        FlowerGrid(FakeFlowerGrid(None, []), 3, roster=roster)
    (tmp_path / "bad.toml").write_text('[members]\n0 = "ssh-ed25519 AAAA"\n')
    with pytest.raises(RosterError, match="member 0"):
        read_roster(tmp_path / "bad.toml")
    key = write_node_key(tmp_path, "same").public_key
    with pytest.raises(RosterError, match="same key"):
        write_roster(tmp_path / "twice.toml", {0: key, 1: key})


def test_without_a_roster_a_second_claim_is_refused_and_the_first_node_keeps_it(
    flower_identity,
):
    app = flower_client_app(lambda s: Member(accumulate_app(), lambda c: None))
    fake = FakeFlowerGrid(app, [*partitions(2), {"partition-id": 0, "num-partitions": 2}])
    grid = FlowerGrid(fake, 2, min_replies=2)
    nodes = grid.connect()
    claimants = [n for n, c in fake.contexts.items() if c.node_config["partition-id"] == 0]
    kept, refused = claimants if nodes[0] == claimants[0] else claimants[::-1]
    assert nodes == {0: kept, 1: fake.node_of(1)}
    assert list(grid.refused) == [refused]
    assert "both serve partition-id 0" in grid.refused[refused]
    result = run_workflow(Accumulate(), grid, progress=False)
    assert all(r["replies"] == 2 for r in result.rounds)


# --- experiment apps -----------------------------------------------------------------------

EXPERIMENT = {
    "name": "flower_app.test",
    "seed": 4,
    "methods": ["fedavg", "standalone"],
    "device": "cpu",
    "data": {"dataset": "digits", "num_clients": 3},
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "federation": {"rounds": 2, "min_replies": 2},
}


def test_write_flower_app_gives_a_valid_flower_app(tmp_path):
    from flwr.common.config import get_fused_config_from_dir, validate_config

    from consortium.experiment import experiment_from_dict

    exp = experiment_from_dict(EXPERIMENT)
    path = write_flower_app(exp, tmp_path / "app", method="standalone", run_dir="/srv/run")
    config = tomllib.loads(path.read_text())
    valid, errors, _ = validate_config(config, check_module=True, project_dir=tmp_path / "app")
    assert valid, errors
    components = config["tool"]["flwr"]["app"]["components"]
    assert components["serverapp"] == "consortium.experiment.flower:serverapp"
    run_config = get_fused_config_from_dir(tmp_path / "app", {})
    assert run_config["method"] == "standalone" and run_config["run-dir"] == "/srv/run"
    again = experiment_from_dict(tomllib.loads(str(run_config["experiment"])))
    assert again.to_toml_dict() == exp.to_toml_dict()
    assert app_name(exp.name) == "consortium-flower-app-test"
    with pytest.raises(ValueError, match="not one of"):
        write_flower_app(exp, tmp_path / "other", method="centralised")


def test_experiment_apps_build_both_sides_from_the_run_config(tmp_path):
    from consortium.experiment import experiment_from_dict

    exp = experiment_from_dict(EXPERIMENT)
    write_flower_app(exp, tmp_path / "app", run_dir=str(tmp_path / "run"), reply_timeout=30)
    from flwr.common.config import get_fused_config_from_dir

    run_config = get_fused_config_from_dir(tmp_path / "app", {})
    server = experiment_server_run(AppSettings(run_config))
    assert (server.num_clients, server.seed, server.min_replies) == (3, 4, 2)
    assert server.reply_timeout == 30 and server.workflow.name == "fedavg"
    assert server.run_dir == str(tmp_path / "run")
    views = [
        experiment_member(AppSettings(run_config, {"device": "cpu"})).data(c) for c in range(3)
    ]
    assert server.data_sizes == {c: v.num_train + v.num_test for c, v in enumerate(views)}
    member = experiment_member(AppSettings(run_config, {"partition-id": 1, "device": "cpu"}))
    assert set(member.app.kinds) == {"train", "evaluate"}
    assert member.data(1).num_train > 0
    with pytest.raises(ValueError, match="no 'experiment'"):
        experiment_member(AppSettings({}, {"partition-id": 0}))


def test_certificates_and_node_keys_are_what_flower_reads(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_ssh_private_key,
        load_ssh_public_key,
    )

    files = write_tls_certificates(tmp_path / "certs", hosts=("127.0.0.1", "link.example"))
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["link.example", "localhost"]
    load_pem_private_key(files.server_key.read_bytes(), None)
    assert oct(files.server_key.stat().st_mode & 0o777) == "0o600"

    key = write_node_key(tmp_path / "keys", "member-0")
    private = load_ssh_private_key(key.private_key.read_bytes(), None)
    public = load_ssh_public_key(key.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert public.public_numbers() == private.public_key().public_numbers()


def test_operator_commands_write_apps_certificates_and_keys(tmp_path, capsys):
    from consortium.experiment.flower_command import main

    experiment = tmp_path / "exp.toml"
    experiment.write_text('name = "cli"\nmethods = ["fedavg"]\n[data]\nnum_clients = 2\n')
    assert (
        main(
            [
                "app",
                str(experiment),
                "--out",
                str(tmp_path / "app"),
                "--set",
                "federation.rounds=3",
                "--reply-timeout",
                "60",
            ]
        )
        == 0
    )
    config = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())
    run_config = config["tool"]["flwr"]["app"]["config"]
    assert run_config["reply-timeout"] == 60.0
    assert tomllib.loads(run_config["experiment"])["federation"]["rounds"] == 3
    assert main(["certificates", str(tmp_path / "c"), "--host", "10.1.2.3"]) == 0
    assert main(["node-key", str(tmp_path / "c"), "member-0"]) == 0
    assert {p.name for p in (tmp_path / "c").iterdir()} >= {"ca.crt", "member-0.pub"}
    assert main(["app", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "x")]) == 2
    assert "no such experiment file" in capsys.readouterr().err


# --- the Fleet gateway and the operator's deployment commands ------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # starlette's test client on anyio
def test_the_gateway_forwards_fleet_calls_and_nothing_else():
    import httpx
    from starlette.testclient import TestClient

    from consortium.runtime.flower.gateway import NOT_SERVED, fleet_gateway

    seen = []

    def superlink(request):
        seen.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b"pulled"), headers={"x-flower": "1"})

    app = fleet_gateway("https://127.0.0.1:1", transport=httpx.MockTransport(superlink))
    with TestClient(app) as client:
        signed = {"x-flwr-signature": "sig", "connection": "close", "content-type": "a/b"}
        reply = client.post("/v1/fleet/pull-messages", content=b"request", headers=signed)
        assert (reply.status_code, reply.content) == (200, b"pulled")
        assert reply.headers["x-flower"] == "1"
        forwarded = seen[-1]
        assert str(forwarded.url) == "https://127.0.0.1:1/v1/fleet/pull-messages"
        assert forwarded.content == b"request"
        assert forwarded.headers["x-flwr-signature"] == "sig"  # node auth passes through
        assert forwarded.headers["content-type"] == "a/b"
        for method, path in [
            ("POST", "/v1/control/start-run"),
            ("POST", "/v1/control/register-node"),
            ("POST", "/v1/runtime/acquire-task"),
            ("GET", "/v1/fleet/pull-messages"),
            ("POST", "/v1/fleet/pull-messages?debug=1"),
            ("POST", "/v1/fleet/a/../../control/start-run"),
            ("POST", "/v1/fleet/%2e%2e/control/start-run"),
            ("POST", "/v1/fleet/Pull-Messages"),
            ("GET", "/docs"),
        ]:
            reply = client.request(method, path)
            assert (reply.status_code, reply.text) == (404, NOT_SERVED), path
    assert len(seen) == 1


def test_the_superlink_command_refuses_a_public_control_api(capsys):
    from consortium.cli import main

    for host in ("0.0.0.0", "10.1.2.3", "link.example.org"):
        assert main(["flower", "superlink", "--host", host, "--insecure"]) == 2
        err = capsys.readouterr().err
        assert "Control API" in err and "--public-control-api" in err
        assert len(err.strip().splitlines()) == 1
    assert main(["flower", "superlink", "--certificates", "/nonexistent"]) == 2
    assert "missing /nonexistent/ca.crt" in capsys.readouterr().err


def test_the_roster_command_writes_what_the_server_reads(tmp_path, capsys):
    from consortium.cli import main

    keys = [write_node_key(tmp_path, f"member-{i}").public_key for i in range(2)]
    path = tmp_path / "roster.toml"
    assert main(["flower", "roster", str(path), f"0={keys[0]}", f"1={keys[1]}"]) == 0
    roster = read_roster(path)
    assert roster.members == [0, 1] and roster.member_of(keys[1].read_text()) == 1
    assert roster.member_of(pem(keys[0])) == 0  # as Flower stores it
    assert main(["flower", "roster", str(path), "zero=x.pub"]) == 2
    assert main(["flower", "roster", str(path), f"0={keys[0]}", f"1={keys[0]}"]) == 2
    assert "same key" in capsys.readouterr().err


def test_a_run_that_stops_on_flower_reaches_the_caller_as_a_stop(flower_identity, tmp_path):
    """Members that fail every round: the server app hands the clean stop to its caller
    (the simulation raises it, as the in-process runtime does) instead of a lost result."""
    from flwr.app import Context

    from consortium.core.run import RunStopped
    from consortium.runtime.flower import ServerRun, flower_server_app

    members = flower_client_app(lambda s: Member(ClientApp(), lambda c: None))  # no handlers
    fake = FakeFlowerGrid(members, partitions(2))
    run = ServerRun(workflow=Accumulate(), num_clients=2, run_dir=tmp_path)
    stops, results = [], []
    server = flower_server_app(lambda s: run, on_result=results.append, on_stop=stops.append)
    context = Context(run_id=7, node_id=0, node_config={}, state=RecordDict(), run_config={})
    server(fake, context)
    assert results == [] and len(stops) == 1 and isinstance(stops[0], RunStopped)
    assert str(stops[0]).startswith("no round succeeded: all 4 were skipped")
    assert (tmp_path / "stopped.json").exists()
    with pytest.raises(RunStopped):  # without a listener the stop is the app's error
        flower_server_app(lambda s: ServerRun(workflow=Accumulate(), num_clients=2))(
            FakeFlowerGrid(members, partitions(2)), context
        )
