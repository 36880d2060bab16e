"""A whole Flower federation on this machine: one SuperLink and N SuperNodes on 127.0.0.1.

For trying a deployment before spreading it over machines, for tests and for benchmarks.
Every process is a real ``flower-superlink`` / ``flower-supernode`` started on free loopback
ports, optionally with TLS and SuperNode authentication, and the app is submitted with the
real ``flwr run``. The federation stops every process it started, by process id, when it is
closed (also when the block it guards raised).

``secure=True`` is the documented deployment in miniature: TLS, SuperNode authentication,
a roster of the members' keys, and SuperNodes that reach the SuperLink only through the Fleet
gateway (:mod:`~consortium.runtime.flower.gateway`), as members on other machines would.

    with LoopbackFederation(3, "fed", secure=True) as fed:
        write_flower_app(experiment, "fed/app", run_dir="fed/run", roster=fed.roster_path)
        run = fed.run("fed/app")
        assert run.status == "finished:completed"

``simulation=True`` starts the SuperLink in Flower's simulation mode instead (no SuperNode
processes: ``num_nodes`` virtual ones on Flower's Ray engine), which is how Flower runs a
simulation with ``flwr run`` now that ``flwr.simulation.run_simulation`` is deprecated.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from consortium.runtime.flower.security import (
    NodeKey,
    TlsFiles,
    write_node_key,
    write_roster,
    write_tls_certificates,
)

#: Environment every process of a loopback federation gets unless the caller sets it.
OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}

CONNECTION = "loopback"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _node_config_arg(config: Mapping[str, Any]) -> str:
    parts = []
    for key, value in config.items():
        if isinstance(value, str):
            parts.append(f'{key}="{value}"')
        elif isinstance(value, bool):
            parts.append(f"{key}={str(value).lower()}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def federation_config(num_nodes: int, backend: Mapping[str, Any]) -> dict[str, Any]:
    """Flower's simulation ``backend_config`` (``client_resources``, ``init_args``) as the flat
    keys of ``flwr run --federation-config``.

    ``flwr run`` takes whole CPUs per member: a fraction is rounded up.
    """
    config: dict[str, Any] = {"num-supernodes": num_nodes}
    for section in ("client_resources", "init_args"):
        for key, value in dict(backend.get(section) or {}).items():
            name = f"{section}_{key}".replace("_", "-")
            if name == "client-resources-num-cpus":
                value = math.ceil(value)
            config[name] = value
    return config


@dataclass
class FlowerRun:
    """What ``flwr run`` reported: the run id, its final status and the streamed log."""

    run_id: int | None
    status: str
    log: str
    returncode: int

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)


class LoopbackFederation:
    """One SuperLink and ``num_nodes`` SuperNodes as separate processes on 127.0.0.1.

    Parameters
    ----------
    num_nodes
        SuperNodes to start; node ``i`` gets ``--node-config "partition-id=i
        num-partitions=num_nodes"`` plus ``node_config(i)``.
    workdir
        Folder for logs, certificates, keys and each process's own ``FLWR_HOME``.
    tls
        Serve HTTPS with a freshly generated CA and server certificate (else ``--insecure``).
    node_auth
        Start the SuperLink with ``--enable-supernode-auth`` and register each node's
        public key with ``flwr supernode register`` before the node starts (needs ``tls``).
    node_config
        Extra node config per node index (e.g. ``{"data-path": ...}``).
    env
        Environment overrides for every process (e.g. ``{"OMP_NUM_THREADS": "1"}``).
    gateway
        SuperNodes dial a Fleet gateway (its own process) instead of the SuperLink: they
        reach the Fleet API only (:attr:`fleet_address`; the ``flwr`` CLI keeps
        :attr:`address`).
    roster
        Write :attr:`roster_path` (member id = node ``i``'s public key; needs ``node_auth``).
    secure
        Shorthand for ``tls``, ``node_auth``, ``gateway`` and ``roster`` together.
    simulation
        A simulation SuperLink with ``num_nodes`` virtual SuperNodes (no node processes, no
        TLS); ``backend`` is Flower's simulation backend config (``client_resources``,
        ``init_args``), handed to every ``flwr run`` as its federation config.
    """

    def __init__(
        self,
        num_nodes: int,
        workdir: str | Path,
        *,
        tls: bool = False,
        node_auth: bool = False,
        node_config: Callable[[int], Mapping[str, Any]] | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 120.0,
        gateway: bool = False,
        roster: bool = False,
        secure: bool = False,
        simulation: bool = False,
        backend: Mapping[str, Any] | None = None,
    ) -> None:
        if simulation and (secure or tls or gateway or roster):
            raise ValueError("a simulation SuperLink runs without TLS, gateway or roster")
        if secure:
            tls = node_auth = gateway = roster = True
        if node_auth and not tls:
            raise ValueError("SuperNode authentication needs TLS (tls=True)")
        if roster and not node_auth:
            raise ValueError("a roster of node keys needs SuperNode authentication")
        self.num_nodes = num_nodes
        self.workdir = Path(workdir).absolute()
        self.tls = tls
        self.node_auth = node_auth
        self.gateway = gateway
        self.roster = roster
        self.fleet_port = 0
        self.roster_path: Path | None = None
        self.node_config = node_config or (lambda i: {})
        self.startup_timeout = startup_timeout
        self.port = 0
        self.certificates: TlsFiles | None = None
        self.node_keys: dict[int, NodeKey] = {}
        self._env_overrides = dict(env or {})
        self._procs: dict[str, _Proc] = {}
        self.simulation = simulation
        self.backend = dict(backend or {})

    # --- environment ---------------------------------------------------------------------

    def env(self, home: Path | None = None) -> dict[str, str]:
        """Environment of one process: offline Flower, its own HOME / FLWR_HOME."""
        env = dict(os.environ)
        for key, value in OFFLINE_ENV.items():
            env.setdefault(key, value)
        # Subprocesses import the same consortium as this process.
        src = str(Path(__file__).resolve().parents[3])  # .../src of consortium/runtime/flower
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
        home = home or self.workdir / "cli"
        home.mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)
        env["FLWR_HOME"] = str(home / ".flwr")
        env.update(self._env_overrides)
        return env

    @property
    def address(self) -> str:
        """Where the SuperLink listens (all its APIs; the server operator's address)."""
        return f"127.0.0.1:{self.port}"

    @property
    def fleet_address(self) -> str:
        """What members dial: the Fleet gateway, or the SuperLink itself without one."""
        return f"127.0.0.1:{self.fleet_port}" if self.gateway else self.address

    # --- processes -----------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str], home: Path) -> _Proc:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as fh:
            popen = subprocess.Popen(
                list(argv),
                cwd=home,
                env=self.env(home),
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped as one
            )
        proc = _Proc(name, popen, log)
        self._procs[name] = proc
        return proc

    def start(self) -> LoopbackFederation:
        """Start the SuperLink, register node keys, start the SuperNodes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_superlink()
            self._write_cli_config()
            if self.simulation:
                return self
            if self.gateway:
                self._start_gateway()
            for i in range(self.num_nodes):
                self.start_node(i)
            if self.roster:
                keys = {i: self.node_keys[i].public_key for i in range(self.num_nodes)}
                self.roster_path = write_roster(self.workdir / "roster.toml", keys)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_superlink(self) -> None:
        self.port = free_port()
        argv = [_bin("flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port)]
        argv.append("--disable-runtime-dependency-installation")
        if self.simulation:
            argv += ["--simulation", "--isolation", "subprocess"]
        if self.tls:
            self.certificates = write_tls_certificates(self.workdir / "certificates")
            argv += [
                "--ssl-ca-certfile", str(self.certificates.ca_cert),
                "--ssl-certfile", str(self.certificates.server_cert),
                "--ssl-keyfile", str(self.certificates.server_key),
            ]  # fmt: skip
        else:
            argv.append("--insecure")
        if self.node_auth:
            argv.append("--enable-supernode-auth")
        home = self.workdir / "superlink"
        home.mkdir(parents=True, exist_ok=True)
        proc = self._spawn("superlink", argv, home)
        self._wait_listening(proc, self.port)

    def _start_gateway(self) -> None:
        self.fleet_port = free_port()
        argv = [sys.executable, "-m", "consortium.runtime.flower", "gateway"]
        argv += ["--listen", self.fleet_address, "--superlink", self.address]
        if self.certificates is not None:
            argv += ["--certificates", str(self.certificates.ca_cert.parent)]
        else:
            argv.append("--insecure")
        home = self.workdir / "gateway"
        home.mkdir(parents=True, exist_ok=True)
        self._wait_listening(self._spawn("gateway", argv, home), self.fleet_port)

    def _wait_listening(self, proc: _Proc, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                code = proc.popen.returncode
                raise RuntimeError(
                    f"{proc.name} exited with code {code}:\n{self.read_log(proc.name)}"
                )
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{proc.name} did not listen on port {port} within the timeout")

    def _write_cli_config(self) -> None:
        connection: dict[str, Any] = {"address": self.address}
        if self.certificates is not None:
            connection["root-certificates"] = str(self.certificates.ca_cert)
        else:
            connection["insecure"] = True
        home = Path(self.env()["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        config = {"superlink": {"default": CONNECTION, CONNECTION: connection}}
        (home / "config.toml").write_text(tomli_w.dumps(config))

    def start_node(
        self,
        index: int,
        *,
        name: str | None = None,
        node_config: Mapping[str, Any] | None = None,
        root_certificates: str | Path | None = None,
        private_key: str | Path | None = None,
        register: bool = True,
        max_retries: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start SuperNode ``index`` (it serves ``partition-id=index``).

        ``root_certificates`` / ``private_key`` replace the federation's own (to try a node
        that should be refused); ``register=False`` skips registering its key.
        """
        name = name or f"supernode-{index}"
        config = {"partition-id": index, "num-partitions": self.num_nodes}
        config.update(self.node_config(index))
        config.update(node_config or {})
        home = self.workdir / name
        home.mkdir(parents=True, exist_ok=True)
        argv = [
            _bin("flower-supernode"),
            "--superlink", self.fleet_address,
            "--host", "127.0.0.1",
            "--port", str(free_port()),
            "--node-config", _node_config_arg(config),
        ]  # fmt: skip
        if self.tls:
            ca = root_certificates or (self.certificates and self.certificates.ca_cert)
            argv += ["--root-certificates", str(ca)]
        else:
            argv.append("--insecure")
        if self.node_auth or private_key is not None:
            if private_key is None:
                key = write_node_key(self.workdir / "keys", name)
                if name == f"supernode-{index}":  # a member's node, not a trial one
                    self.node_keys[index] = key
                if register:
                    self.flwr("supernode", "register", str(key.public_key), CONNECTION)
                private_key = key.private_key
            argv += ["--auth-supernode-private-key", str(private_key)]
        if max_retries is not None:
            argv += ["--max-retries", str(max_retries)]
        return self._spawn(name, argv, home).popen

    def kill_node(self, index: int, name: str | None = None) -> None:
        """Kill SuperNode ``index`` at once (SIGKILL to its process group), as a crash would."""
        self._kill(self._procs[name or f"supernode-{index}"], signal.SIGKILL)

    def read_log(self, name: str) -> str:
        proc = self._procs.get(name)
        path = proc.log if proc else self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def process(self, name: str) -> subprocess.Popen[bytes]:
        return self._procs[name].popen

    @staticmethod
    def _kill(proc: _Proc, sig: int) -> None:
        if proc.popen.poll() is not None:
            return
        try:
            os.killpg(proc.popen.pid, sig)  # the group this federation created for it
        except ProcessLookupError:
            return

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process this federation started (SIGTERM, then SIGKILL)."""
        procs = list(self._procs.values())
        for proc in reversed(procs):
            self._kill(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self._kill(proc, signal.SIGKILL)
                proc.popen.wait(5)
        for proc in procs:  # children left in a group whose leader has exited
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGKILL)

    def pids(self) -> dict[str, int]:
        """Process id of every process this federation started."""
        return {name: p.popen.pid for name, p in self._procs.items()}

    def __enter__(self) -> LoopbackFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the flwr CLI --------------------------------------------------------------------

    def flwr(
        self, *args: str, timeout: float | None = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI against this federation's SuperLink connection."""
        env = self.env()
        env.setdefault("COLUMNS", "200")
        done = subprocess.run(
            [_bin("flwr"), *args],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"flwr {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def run(
        self,
        app_dir: str | Path,
        *,
        run_config: Mapping[str, Any] | None = None,
        timeout: float | None = 600.0,
    ) -> FlowerRun:
        """Submit the app with ``flwr run --stream``, wait for it to end, report its status."""
        args = ["run", str(Path(app_dir).absolute()), CONNECTION, "--stream"]
        if self.simulation:
            settings = self.workdir / "federation-config.toml"
            settings.write_text(tomli_w.dumps(federation_config(self.num_nodes, self.backend)))
            args += ["--federation-config", str(settings)]
        if run_config:
            overrides = self.workdir / "run-config.toml"
            overrides.write_text(tomli_w.dumps(dict(run_config)))
            args += ["--run-config", str(overrides)]
        done = self.flwr(*args, timeout=timeout, check=False)
        log = done.stdout + done.stderr
        found = re.search(r"started run (\d+)", log)
        run_id = int(found.group(1)) if found else None
        status = "unknown"
        if run_id is not None:
            status = self.run_status(run_id)
        return FlowerRun(run_id, status, log, done.returncode)

    def run_status(self, run_id: int) -> str:
        """Status of a run as the SuperLink reports it (e.g. ``finished:completed``)."""
        deadline = time.monotonic() + 30
        status = "unknown"
        while time.monotonic() < deadline:
            done = self.flwr("list", "--run-id", str(run_id), "--format", "json", check=False)
            try:
                runs = json.loads(done.stdout)["runs"]
                status = str(runs[0]["status"])
            except (ValueError, KeyError, IndexError):
                status = "unknown"
            if status.startswith("finished"):
                break
            time.sleep(1)
        return status
