"""The same workflows on real Flower: Ray simulation, and SuperLink + SuperNodes as processes.

Every federation here runs on 127.0.0.1 with free ports, offline (no telemetry, no update
check, no dependency installation) and with its own HOME / FLWR_HOME; every process a test
starts is stopped by its process id when the test ends, also when it fails. Each test checks
that the run ends with the model the in-process runtime produces with the same seed and data.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tomli_w

pytest.importorskip("flwr")
import httpx

import consortium
from consortium.core import run_workflow
from consortium.data import build_data
from consortium.experiment import experiment_from_dict, get_method, method_context
from consortium.experiment.flower import run_on_simulation, write_flower_app
from consortium.runtime import LocalRuntime
from consortium.runtime.flower import (
    LoopbackFederation,
    SecureAggregation,
    run_on_flower_simulation,
    simulation_backend_config,
    write_node_key,
    write_tls_certificates,
)
from consortium.runtime.flower.gateway import NOT_SERVED
from consortium.runtime.flower.loopback import free_port

pytestmark = pytest.mark.slow

OFFLINE = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}
# One thread per member process, as in this test process (conftest), on 2 shared cores.
NODE_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# A stateful workflow, written as a module into a Flower app folder for the deployment and
# imported from there for the in-process and simulation runs: one source for all three.
STATEFUL_APP = '''
"""Members keep a count, a running array and a list in their own state across rounds."""

import numpy as np

from consortium.core import ClientApp, Message, ReplySpec, Workflow
from consortium.runtime.flower import Member, ServerRun, flower_client_app, flower_server_app


class Accumulate(Workflow):
    name = "accumulate"
    num_rounds = 3

    def __init__(self):
        self.counts, self.sums = {}, {}

    def run_round(self, grid, rnd):
        x = np.full(3, float(rnd), np.float32)
        msgs = {c: Message("accumulate", arrays={"x": x}) for c in grid.sample(2)}
        replies = grid.send(msgs, expect=ReplySpec.like({"acc": x}))
        self.counts = {**self.counts, **{c: int(r.metrics["count"]) for c, r in replies.items()}}
        self.sums = {**self.sums, **{c: r.arrays["acc"] for c, r in replies.items()}}
        return {"seen": sorted(replies)}

    def finish(self, grid):
        return {"counts": {str(c): n for c, n in sorted(self.counts.items())}}

    def final_arrays(self):
        return {f"acc_{c}": a for c, a in sorted(self.sums.items())}

    def state_dict(self):
        return {"counts": self.counts, "sums": self.sums}

    def load_state_dict(self, state):
        self.counts, self.sums = dict(state["counts"]), dict(state["sums"])


def accumulate_app():
    app = ClientApp()

    @app.on("accumulate")
    def accumulate(msg, ctx):
        noise = np.random.default_rng(ctx.seed).normal(size=3).astype(np.float32)
        acc = ctx.state.get("acc", np.zeros(3, np.float32)) + msg.arrays["x"] * ctx.round + noise
        ctx.state["acc"] = acc.astype(np.float32)
        ctx.state["count"] = ctx.state.get("count", 0) + 1
        ctx.state["rounds"] = [*ctx.state.get("rounds", []), ctx.round]
        metrics = {"count": ctx.state["count"], "rounds_kept": len(ctx.state["rounds"])}
        return msg.reply(arrays={"acc": ctx.state["acc"]}, metrics=metrics)

    return app


def members(settings):
    return Member(accumulate_app(), lambda cid: None)


def server_run(settings):
    rc = settings.run_config
    return ServerRun(
        Accumulate(),
        num_clients=int(rc["num-clients"]),
        seed=int(rc["seed"]),
        min_replies=2,
        run_dir=str(rc["run-dir"]),
        reply_timeout=300.0,
    )


serverapp = flower_server_app(server_run)
clientapp = flower_client_app(members)
'''

STATEFUL_PYPROJECT = """
[project]
name = "consortium-stateful-test"
version = "1.0.0"
description = "a stateful consortium workflow"
license = "Apache-2.0"

[tool.flwr.app]
publisher = "consortium-tests"

[tool.flwr.app.components]
serverapp = "stateful_app:serverapp"
clientapp = "stateful_app:clientapp"

[tool.flwr.app.config]
num-clients = {num_clients}
seed = {seed}
run-dir = "{run_dir}"
roster = "{roster}"
"""


def experiment(num_clients, **federation):
    return experiment_from_dict(
        {
            "name": "flower-parity",
            "seed": 5,
            "methods": ["fedavg"],
            "device": "cpu",
            "data": {"dataset": "digits", "num_clients": num_clients, "partition": "iid"},
            "model": {"name": "mlp", "options": {"hidden": [16]}},
            "train": {"epochs": 1, "batch_size": 32, "lr": 0.05},
            "federation": {"rounds": 2, "min_replies": num_clients, **federation},
            "fedavg": {"evaluate_clients": True},
        }
    )


def in_process(exp, method="fedavg"):
    data = build_data(exp.data, exp.seed)
    workflow, app = get_method(method).build(method_context(exp, data), exp.method_options[method])
    fed = exp.federation
    grid = LocalRuntime(
        app, data.client, data.num_clients, seed=exp.seed, min_replies=fed.min_replies
    )
    return run_workflow(workflow, grid, progress=False)


def assert_same_model(expected, actual, tol=1e-6):
    assert sorted(expected) == sorted(actual)
    for name, value in expected.items():
        assert actual[name].shape == value.shape
        assert float(np.max(np.abs(actual[name] - value), initial=0.0)) <= tol, name


def read_run(run_dir):
    run_dir = Path(run_dir)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    with np.load(run_dir / "model.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return lines, json.loads((run_dir / "summary.json").read_text()), arrays


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE.items():
            mp.setenv(key, value)
        mp.setenv("HOME", str(home))
        mp.setenv("FLWR_HOME", str(home / ".flwr"))
        # Flower's Ray backend rewrites PYTHONPATH for its workers; put it back afterwards.
        mp.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        yield home


@pytest.fixture(scope="module")
def stateful_app(tmp_path_factory, offline_env):
    """The stateful app folder, importable as ``stateful_app`` here and in Ray workers."""
    folder = tmp_path_factory.mktemp("stateful")
    (folder / "stateful_app.py").write_text(STATEFUL_APP)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        sys.modules.pop("stateful_app", None)
        yield folder, importlib.import_module("stateful_app")
        sys.modules.pop("stateful_app", None)


# --- Ray simulation ------------------------------------------------------------------------


def test_fedavg_in_flower_simulation_equals_in_process(tmp_path, offline_env):
    pytest.importorskip("ray")
    exp = experiment(4)
    expected = in_process(exp)
    data = build_data(exp.data, exp.seed)
    ctx = method_context(exp, data)
    workflow, _ = get_method("fedavg").build(ctx, exp.method_options["fedavg"])
    result = run_on_simulation(  # the experiment runner's hook
        exp,
        "fedavg",
        workflow,
        data.num_clients,
        run_dir=tmp_path / "run",
        progress=False,
        backend_config=simulation_backend_config(num_cpus=2),
    )
    assert_same_model(expected.final_arrays, result.final_arrays)
    lines, summary, arrays = read_run(tmp_path / "run")
    assert_same_model(expected.final_arrays, arrays)
    assert [r["replies"] for r in lines] == [4, 4]
    assert summary["client_accuracy"] == expected.summary["client_accuracy"]


def secure_experiment(num_clients):
    raw = experiment(num_clients, rounds=1).to_toml_dict()
    raw["fedavg"] = {"evaluate_clients": False, "secure_aggregation": True}
    return experiment_from_dict(raw)


def quantisation_bound(exp):
    """Each member's weighted update entry is rounded to 2·clip/Q; the mean divides the sum
    of those errors by the summed weights (train samples over the largest member's)."""
    data = build_data(exp.data, exp.seed)
    views = [data.client(c) for c in range(data.num_clients)]
    held = [len(v.train_indices) + len(v.test_indices) for v in views]
    weights = [len(v.train_indices) / max(held) for v in views]
    return len(views) * SecureAggregation().quantisation_step / sum(weights)


def test_fedavg_with_secagg_in_flower_simulation(tmp_path, offline_env):
    pytest.importorskip("ray")
    exp = secure_experiment(3)
    expected = in_process(exp)
    data = build_data(exp.data, exp.seed)
    workflow, _ = get_method("fedavg").build(
        method_context(exp, data), exp.method_options["fedavg"]
    )
    result = run_on_simulation(
        exp, "fedavg", workflow, 3, progress=False, data=data,
        backend_config=simulation_backend_config(num_cpus=2),
    )  # fmt: skip
    assert [r["secure_aggregation"] for r in result.rounds] == [True]
    diff = max(
        float(np.abs(result.final_arrays[k] - v).max()) for k, v in expected.final_arrays.items()
    )
    assert 0 < diff <= quantisation_bound(exp), diff


def test_stateful_workflow_in_flower_simulation_equals_in_process(stateful_app):
    pytest.importorskip("ray")
    _, module = stateful_app
    expected = run_workflow(
        module.Accumulate(),
        LocalRuntime(module.accumulate_app(), lambda c: None, 4, seed=2),
        progress=False,
    )
    result = run_on_flower_simulation(
        module.Accumulate(),
        module.members,
        4,
        seed=2,
        min_replies=2,
        progress=False,
        backend_config=simulation_backend_config(num_cpus=2),
    )
    assert_same_model(expected.final_arrays, result.final_arrays, tol=0.0)
    assert result.summary["counts"] == expected.summary["counts"]
    assert [r["seen"] for r in result.rounds] == [r["seen"] for r in expected.rounds]


# --- deployment: SuperLink + SuperNodes as processes on 127.0.0.1 ----------------------------


def _diagnose(fed, run):
    return (
        f"status {run.status}\n{run.log[-3000:]}\n--- superlink ---\n"
        + fed.read_log("superlink")[-3000:]
    )


@pytest.fixture(scope="module")
def tls_federation(tmp_path_factory, offline_env):
    """The documented deployment: three SuperNodes reach a loopback SuperLink (TLS, SuperNode
    authentication) only through the Fleet gateway; the server knows them by its roster."""
    fed = LoopbackFederation(
        3, tmp_path_factory.mktemp("tls-federation"), secure=True, env=NODE_ENV
    )
    try:  # stopped by process id on any failure, in set-up or in a test
        fed.start()
        yield fed
    finally:
        fed.stop()
        for pid in fed.pids().values():
            assert not _alive(pid), f"process {pid} outlived its federation"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie no one has reaped yet counts as gone
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def run_deployed(fed, exp, tmp_path):
    """Run the experiment's first method as a Flower app on ``fed``; (log, run folder files)."""
    app = tmp_path / "app"
    write_flower_app(exp, app, run_dir=tmp_path / "run", reply_timeout=300, roster=fed.roster_path)
    run = fed.run(app, timeout=500)
    assert run.ok, _diagnose(fed, run)
    return run.log, *read_run(tmp_path / "run")


def test_fedavg_on_a_tls_federation_equals_in_process(tls_federation, tmp_path):
    exp = experiment(3)
    expected = in_process(exp)
    log, lines, summary, arrays = run_deployed(tls_federation, exp, tmp_path)
    assert "[consortium] round 2: 3 replies" in log
    assert_same_model(expected.final_arrays, arrays)
    assert [(r["round"], r["replies"], r["failures"]) for r in lines] == [(1, 3, {}), (2, 3, {})]
    assert summary["client_accuracy"] == expected.summary["client_accuracy"]


def test_fedavg_with_secagg_on_a_federation_equals_in_process_up_to_quantisation(
    tls_federation, tmp_path
):
    """SecAgg+ on the documented deployment: Flower's secaggplus_mod on each member, its
    SecAggPlusWorkflow on the server; the model is in-process FedAvg's but for the fixed-point
    quantisation of each member's update (2·clip/Q per entry, divided by the summed weights)."""
    exp = secure_experiment(3)
    expected = in_process(exp)
    log, lines, summary, arrays = run_deployed(tls_federation, exp, tmp_path)
    assert "Secure aggregation completed" in log
    assert [(r["round"], r["replies"], r["secure_aggregation"]) for r in lines] == [(1, 3, True)]
    diff = max(float(np.abs(arrays[k] - v).max()) for k, v in expected.final_arrays.items())
    assert 0 < diff <= quantisation_bound(exp), diff
    assert summary["test_accuracy"] == pytest.approx(expected.summary["test_accuracy"], abs=0.01)


def test_stateful_workflow_on_a_federation_equals_in_process(
    tls_federation, stateful_app, tmp_path
):
    folder, module = stateful_app
    expected = run_workflow(
        module.Accumulate(),
        LocalRuntime(module.accumulate_app(), lambda c: None, 3, seed=2),
        progress=False,
    )
    app = tmp_path / "app"
    app.mkdir()
    (app / "stateful_app.py").write_text((folder / "stateful_app.py").read_text())
    (app / "pyproject.toml").write_text(
        STATEFUL_PYPROJECT.format(
            num_clients=3, seed=2, run_dir=tmp_path / "run", roster=tls_federation.roster_path
        )
    )
    run = tls_federation.run(app, timeout=500)
    assert run.ok, _diagnose(tls_federation, run)
    lines, summary, arrays = read_run(tmp_path / "run")
    assert_same_model(expected.final_arrays, arrays, tol=0.0)
    assert summary["counts"] == expected.summary["counts"]
    assert [r["seen"] for r in lines] == [r["seen"] for r in expected.rounds]


def test_nodes_with_a_wrong_certificate_or_an_unknown_key_are_refused(tls_federation, tmp_path):
    fed = tls_federation
    other_ca = write_tls_certificates(tmp_path / "other-ca").ca_cert
    wrong_ca = fed.start_node(0, name="wrong-ca", root_certificates=other_ca, max_retries=1)
    unknown = fed.start_node(1, name="unknown-key", register=False, max_retries=1)
    assert wrong_ca.wait(120) != 0
    assert unknown.wait(120) != 0
    assert "CERTIFICATE_VERIFY_FAILED" in fed.read_log("wrong-ca")
    assert "Failed to activate SuperNode" in fed.read_log("unknown-key")
    nodes = json.loads(fed.flwr("supernode", "list", "--format", "json").stdout)["nodes"]
    assert sum(n["status"] == "online" for n in nodes) == 3


def test_a_killed_supernode_is_a_recorded_failure_and_the_run_goes_on(tmp_path, offline_env):
    exp = experiment(3, min_replies=2)
    exp.method_options["fedavg"] = exp.method_options["fedavg"].model_copy(
        update={"evaluate_clients": False}
    )
    run_dir = tmp_path / "run"
    write_flower_app(exp, tmp_path / "app", run_dir=run_dir, reply_timeout=40)
    fed = LoopbackFederation(3, tmp_path / "federation", env=NODE_ENV)
    killed = threading.Event()

    def kill_after_round_one():
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            metrics = run_dir / "metrics.jsonl"
            if metrics.exists() and '"round": 1' in metrics.read_text():
                fed.kill_node(2)
                killed.set()
                return
            time.sleep(0.1)

    try:
        fed.start()
        watcher = threading.Thread(target=kill_after_round_one, daemon=True)
        watcher.start()
        run = fed.run(tmp_path / "app", timeout=500)
        watcher.join(5)
    finally:
        fed.stop()
    assert killed.is_set(), _diagnose(fed, run)
    assert run.ok, _diagnose(fed, run)
    lines, summary, arrays = read_run(run_dir)
    first, second = lines
    assert (first["replies"], first["failures"]) == (3, {})
    assert second["replies"] == 2 and "skipped" not in second
    assert list(second["failures"]) == ["2"]
    reason = second["failures"]["2"]
    assert "no reply within 40 s" in reason or "Node Unavailable" in reason
    assert summary["client_failures"] == 1 and summary["rounds_skipped"] == 0
    assert "[consortium] round 2: 2 replies, failures" in run.log
    assert all(np.isfinite(a).all() for a in arrays.values())


# --- who can join: the documented deployment probed as an outsider ---------------------------


def _outsider_cli(fed, tmp_path):
    """An outsider's ``flwr`` set-up: the members' address, the operator's CA, its own key."""
    home = tmp_path / "outsider"
    (home / ".flwr").mkdir(parents=True)
    connection = {"address": fed.fleet_address, "root-certificates": str(fed.certificates.ca_cert)}
    config = {"superlink": {"default": "outsider", "outsider": connection}}
    (home / ".flwr" / "config.toml").write_text(tomli_w.dumps(config))
    key = write_node_key(tmp_path / "outsider-key", "outsider")

    def flwr(*args):
        env = {**fed.env(home), "HOME": str(home), "FLWR_HOME": str(home / ".flwr")}
        return subprocess.run(
            [str(Path(sys.executable).parent / "flwr"), *args],
            env=env, cwd=home, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    return flwr, key


def _listening_addresses(port):
    """Local addresses a TCP port listens on, from /proc/net/tcp (IPv4) and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                found.add(address)
    return found


def test_an_outsider_with_the_ca_and_its_own_key_can_neither_register_nor_submit(
    tls_federation, tmp_path
):
    fed = tls_federation
    flwr, key = _outsider_cli(fed, tmp_path)
    runs_before = fed.flwr("list", "--format", "json").stdout
    nodes_before = fed.flwr("supernode", "list", "--format", "json").stdout
    app = tmp_path / "app"
    write_flower_app(experiment(3), app, run_dir=tmp_path / "run")
    for args in (
        ["supernode", "register", str(key.public_key), "outsider"],  # join as a member
        ["run", str(app), "outsider"],  # submit a run of its own
        ["list", "outsider"],  # see the runs
    ):
        done = flwr(*args)
        said = done.stdout + done.stderr
        assert done.returncode != 0 and "404" in said, (args, said)  # the gateway's answer
        assert "registered successfully" not in said and "started run" not in said
    # the operator sees no new run and no new node
    assert fed.flwr("list", "--format", "json").stdout == runs_before
    nodes_after = fed.flwr("supernode", "list", "--format", "json").stdout
    ids = [[n["node-id"] for n in json.loads(x)["nodes"]] for x in (nodes_before, nodes_after)]
    assert ids[0] == ids[1]
    # what members reach answers the Fleet API only, however the path is spelled
    ca = ssl.create_default_context(cafile=str(fed.certificates.ca_cert))
    with httpx.Client(base_url=f"https://{fed.fleet_address}", verify=ca) as client:
        for path in [
            "/v1/control/register-node",
            "/v1/control/start-run",
            "/v1/runtime/acquire-task",
            "/v1/fleet/../control/start-run",
            "/v1/fleet/%2e%2e/control/start-run",
            "/v1/fleet/pull-messages?x=1",
            "/docs",
        ]:
            reply = client.post(path, content=b"")
            assert reply.status_code == 404 and reply.text == NOT_SERVED, path
    # the SuperLink itself (Control, ServerApp, Fleet) listens on loopback only
    assert _listening_addresses(fed.port) == {"0100007F"}


def test_outsiders_get_no_member_message_and_a_false_claim_is_refused(tls_federation, tmp_path):
    fed = tls_federation
    # an outsider's SuperNode, its key unregistered, claiming member 0: Flower refuses it
    outsider = fed.start_node(0, name="outsider", register=False, max_retries=1)
    # a node whose key the SuperLink knows but the roster does not, claiming member 0 too
    fed.start_node(0, name="impostor")
    assert outsider.wait(120) != 0
    assert "Failed to activate SuperNode" in fed.read_log("outsider")
    exp = experiment(3)
    exp.method_options["fedavg"] = exp.method_options["fedavg"].model_copy(
        update={"evaluate_clients": False}
    )
    expected = in_process(exp)
    app = tmp_path / "app"
    write_flower_app(exp, app, run_dir=tmp_path / "run", reply_timeout=300, roster=fed.roster_path)
    try:
        run = fed.run(app, timeout=500)
    finally:
        fed.kill_node(0, name="impostor")
    assert run.ok, _diagnose(fed, run)
    assert "is not on the roster" in run.log and "[consortium] refused node" in run.log
    assert "Receiving:" not in fed.read_log("impostor")  # not one message, not even a query
    assert "Receiving:" not in fed.read_log("outsider")
    lines, _, arrays = read_run(tmp_path / "run")
    assert [(r["replies"], r["failures"]) for r in lines] == [(3, {}), (3, {})]
    assert_same_model(expected.final_arrays, arrays)


def _wait_port(port, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the command exited"
        if _listening_addresses(port):
            return
        time.sleep(0.3)
    raise TimeoutError(port)


def test_the_superlink_command_runs_the_documented_deployment(tmp_path, offline_env):
    """`consortium flower superlink`: SuperLink on loopback, members admitted through the
    gateway, both stopped with the command."""
    certs = write_tls_certificates(tmp_path / "certs")
    port, fleet = free_port(), free_port()
    home = tmp_path / "operator"
    (home / ".flwr").mkdir(parents=True)
    connection = {"address": f"127.0.0.1:{port}", "root-certificates": str(certs.ca_cert)}
    (home / ".flwr" / "config.toml").write_text(
        tomli_w.dumps({"superlink": {"default": "link", "link": connection}})
    )
    env = {**os.environ, **OFFLINE, "HOME": str(home), "FLWR_HOME": str(home / ".flwr")}
    src = str(Path(consortium.__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    bin_dir = Path(sys.executable).parent
    command = [sys.executable, "-m", "consortium.cli", "flower", "superlink"]
    command += ["--certificates", str(certs.ca_cert.parent), "--port", str(port)]
    command += ["--fleet-host", "127.0.0.1", "--fleet-port", str(fleet)]
    log = open(tmp_path / "superlink-command.log", "wb")  # noqa: SIM115 (closed below)
    link = subprocess.Popen(
        command, env=env, cwd=home, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
    )
    node = None
    try:
        _wait_port(port, link)
        _wait_port(fleet, link)
        assert _listening_addresses(port) == {"0100007F"}
        key = write_node_key(tmp_path / "keys", "member-0")
        flwr = [str(bin_dir / "flwr")]
        done = subprocess.run(
            [*flwr, "supernode", "register", str(key.public_key), "link"],
            env=env, cwd=home, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        member = [str(bin_dir / "flower-supernode"), "--superlink", f"127.0.0.1:{fleet}"]
        member += ["--root-certificates", str(certs.ca_cert)]  # it dials the gateway
        member += ["--auth-supernode-private-key", str(key.private_key)]
        member += ["--host", "127.0.0.1", "--port", str(free_port())]
        node = subprocess.Popen(
            member, env=env, cwd=home, start_new_session=True, stdout=log, stderr=log
        )
        deadline, status = time.monotonic() + 120, []
        while time.monotonic() < deadline and status != ["online"]:
            listed = subprocess.run(
                [*flwr, "supernode", "list", "link", "--format", "json"],
                env=env, cwd=home, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            status = [n["status"] for n in json.loads(listed.stdout or "{}").get("nodes", [])]
            time.sleep(1)
        assert status == ["online"]
    finally:
        for proc in (node, link):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        log.close()
    assert not _listening_addresses(port) and not _listening_addresses(fleet)
