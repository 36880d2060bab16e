"""consortium against stock Flower and pfl-research on the same jobs, in one run, as ratios.

Every job trains the same members (the same samples), from the same initial weights, the same
model (the demo's small CNN) with the same local training (SGD with momentum, same epochs,
batch size and learning rate), and evaluates the server's model on the same test set after
every round. Each framework runs as its users run it, in a process of its own:

* consortium: ``python -m consortium run EXPERIMENT.toml`` (FedAvg, defaults: one worker
  process per core, one torch thread each);
* stock Flower (``benchmarks/peers_flower.py``): ``ServerApp`` + Flower's ``FedAvg`` strategy +
  a ``ClientApp``, on Flower's Ray simulation with one CPU per member;
* pfl-research (``benchmarks/peers_pfl.py``, optional: ``pip install "consortium[benchmarks]"``):
  ``FederatedDataset``, ``PyTorchModel``, ``SimulatedBackend``, ``FederatedAveraging``, in one
  process and in as many processes as cores under ``torchrun`` (its two best settings).

Printed for each: the whole process (start to exit, what a user waits for), the round loop
(set-up, rounds and final evaluation, as each framework times it), the final test accuracy,
and the ratios to consortium. Repeats are interleaved and medians reported, so a load that
comes and goes hits every framework alike; ``uptime``'s load average is printed with them.

    python benchmarks/peers.py demo        # (a) the demo's digits job, 10 members x 30 rounds
    python benchmarks/peers.py fmnist      # (b) 500 members x 2 rounds, Fashion-MNIST (20k, IID)
    python benchmarks/peers.py hog         # (c) (a) while a CPU hog holds one core
    python benchmarks/peers.py workers     # the demo's FedAvg: workers = 2 vs 1, same model?
    python benchmarks/peers.py memory      # 1,000 members, 10 % a round: peak memory, 2 vs 1
    python benchmarks/peers.py imports     # the Flower member module's import cost over torch's
    python benchmarks/peers.py deploy      # a loopback deployment's round: member app vs stock
    python benchmarks/peers.py all

Options: ``--repeats N`` (repeat r runs seed ``--seed`` + r), ``--skip flower,pfl``
(``pfl1``: only pfl's one-process run, which spins its threads on a loaded machine),
``--rounds R``, ``--json FILE``, ``--timeout S`` (a job past it is stopped and left out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

HERE = Path(__file__).resolve().parent
OFFLINE = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}

# -- the jobs ---------------------------------------------------------------------------------

DEMO = {
    "data": {
        "dataset": "digits",
        "num_clients": 10,
        "partition": "dirichlet",
        "alpha": 0.3,
        "min_size": 20,
    },
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
    "federation": {"rounds": 30, "clients_per_round": 1.0},
}

FMNIST = {
    "data": {
        "dataset": "fashion_mnist",
        "num_clients": 500,
        "partition": "iid",
        "max_samples": 20000,
        "min_size": 1,
    },
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
    "federation": {"rounds": 2, "clients_per_round": 1.0},
}

MEMORY = {
    "data": {"dataset": "fashion_mnist", "num_clients": 1000, "partition": "iid", "min_size": 1},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
    "federation": {"rounds": 3, "clients_per_round": 0.1},
}


def experiment(job: dict[str, Any], rounds: int | None, **federation: Any) -> dict[str, Any]:
    """The consortium experiment (a TOML table) of a job: FedAvg, the demo's CNN."""
    fed = {**job["federation"], **federation}
    if rounds is not None:
        fed["rounds"] = rounds
    return {
        "name": "peers",
        "seed": 0,
        "methods": ["fedavg"],
        "device": "cpu",
        "data": dict(job["data"]),
        "model": {"name": "cnn"},
        "train": dict(job["train"]),
        "federation": fed,
        "fedavg": {"evaluate_clients": False},
    }


def prepare(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write what the peer jobs read: each member's training samples (ids into the dataset's
    own training split), the test ids and the initial weights; returns the jobs' settings.

    The members are those consortium builds for the same experiment: the split is computed
    once on a copy of the dataset whose images are their own row numbers.
    """
    from consortium.algorithms.base.supervised import initial_arrays
    from consortium.data import registry
    from consortium.data.sources import Dataset, DatasetSplits
    from consortium.experiment import experiment_from_dict
    from consortium.models import build_model

    exp = experiment_from_dict(raw)
    real = registry.load_dataset(exp.data.dataset, exp.data.path)

    def numbered(split: Dataset) -> Dataset:
        rows = np.arange(len(split), dtype=np.float64).reshape(-1, 1, 1, 1)
        return Dataset(split.name, rows, split.y, split.num_classes, split.groups)

    test = None if real.test is None else numbered(real.test)
    coded = DatasetSplits(numbered(real.train), test)
    registry.register_dataset("peers-numbered", load=lambda path=None: coded, replace=True)
    data = registry.build_data(exp.data.model_copy(update={"dataset": "peers-numbered"}), 0)
    members = [data.pool_x[t].reshape(-1).astype(np.int64) for t in data.client_train]
    np.savez(
        folder / "members.npz",
        ids=np.concatenate(members),
        cut=np.concatenate([[0], np.cumsum([len(m) for m in members])]),
        test=data.test_x.reshape(-1).astype(np.int64),
    )
    shape, classes = real.train.input_shape, real.train.num_classes
    init = initial_arrays(lambda: build_model("cnn", shape, classes), exp.seed)
    np.savez(folder / "init.npz", **init)
    fed, train = exp.federation, exp.train
    fraction = fed.clients_per_round
    if isinstance(fraction, int):
        fraction = fraction / data.num_clients
    return {
        "dataset": exp.data.dataset,
        "data_dir": exp.data.path or "/usr/share/datasets/fashion-mnist",
        "members": str(folder / "members.npz"),
        "init": str(folder / "init.npz"),
        "input_shape": list(shape),
        "num_classes": classes,
        "rounds": fed.rounds,
        "fraction": float(fraction),
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "lr": train.lr,
        "momentum": train.momentum,
        "cpus": len(os.sched_getaffinity(0)),
    }


# -- running and timing -----------------------------------------------------------------------


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    out = dict(os.environ)
    for key, value in OFFLINE.items():
        out.setdefault(key, value)
    src = str(HERE.parent / "src")
    out["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [out.get("PYTHONPATH")])])
    out.update(extra or {})
    return out


#: Seconds one job may run (``--timeout``); a job past it is stopped and left out of the medians.
TIMEOUT_S = [900.0]


class TooSlow(RuntimeError):
    """A job ran past ``--timeout`` (pfl's threads spin on a loaded machine, for one)."""


def timed(argv: Sequence[str], extra_env: dict[str, str] | None = None) -> dict[str, float]:
    """Run one job to its end: wall seconds and the CPU seconds of its process tree."""
    before = os.times()
    start = time.perf_counter()
    # a session of its own, so that a job stopped for time goes with all its processes
    proc = subprocess.Popen(
        list(argv), env=env(extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S[0])
    except subprocess.TimeoutExpired as err:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TooSlow(f"stopped after {TIMEOUT_S[0]:g} s") from err
    wall = time.perf_counter() - start
    after = os.times()
    if proc.returncode != 0:
        log = f"{stdout[-3000:]}\n{stderr[-3000:]}"
        raise RuntimeError(f"{' '.join(argv)} failed:\n{log}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return {"process_s": wall, "process_cpu_s": cpu}


def run_consortium(raw: dict[str, Any], folder: Path, tag: str) -> dict[str, float]:
    path = folder / f"{tag}.toml"
    path.write_text(tomli_w.dumps(raw))
    out = folder / tag
    cmd = [sys.executable, "-m", "consortium", "run", str(path), "--out", str(out)]
    result = timed([*cmd, "--no-progress", "--overwrite"])
    summary = json.loads((out / "fedavg" / "summary.json").read_text())
    return {**result, "loop_s": summary["wall_time_s"], "test_accuracy": summary["test_accuracy"]}


def run_peer(script: str, spec: dict[str, Any], folder: Path, tag: str, procs: int = 1) -> dict:
    spec = {**spec, "result": str(folder / f"{tag}.json")}
    path = folder / f"{tag}.spec.json"
    path.write_text(json.dumps(spec))
    cmd = [sys.executable, str(HERE / script), str(path)]
    extra = {}
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc_per_node={procs}", str(HERE / script), str(path)]
        extra = {"OMP_NUM_THREADS": "1"}
    try:
        result = timed(cmd, extra)
    except TooSlow:
        raise
    except RuntimeError as err:
        # torchrun's workers sometimes abort while shutting down (gloo: "terminate called
        # without an active exception"); one failed run is repeated, a second one stops us
        print(f"  {tag}: failed ({str(err).splitlines()[0][:60]}...); once more", flush=True)
        Path(spec["result"]).unlink(missing_ok=True)
        result = timed(cmd, extra)
    return {**result, **json.loads(Path(spec["result"]).read_text())}


def available(module: str) -> bool:
    probe = [sys.executable, "-c", f"import {module}"]
    return subprocess.run(probe, env=env(), capture_output=True).returncode == 0


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def frameworks(
    raw: dict[str, Any], spec: dict[str, Any], folder: Path, skip: Sequence[str]
) -> dict[str, Callable[[str], dict]]:
    """One runner per framework (minus ``--skip``) for one prepared job: tag -> its row."""
    cores = spec["cpus"]
    runners: dict[str, Callable[[str], dict]] = {
        "consortium": lambda tag: run_consortium(raw, folder, tag),
    }
    if "flower" not in skip and available("flwr.simulation"):
        runners["flower"] = lambda tag: run_peer("peers_flower.py", spec, folder, tag)
    if "pfl" not in skip and available("pfl"):
        if "pfl1" not in skip:
            runners["pfl"] = lambda tag: run_peer("peers_pfl.py", spec, folder, tag)
        if cores > 1:
            runners[f"pfl x{cores}"] = lambda tag: run_peer(
                "peers_pfl.py", spec, folder, tag, procs=cores
            )
    return runners


def race(raw: dict[str, Any], args: argparse.Namespace, title: str) -> dict[str, Any]:
    """Interleaved repeats of every framework on one job; medians, accuracies and ratios.

    Repeat ``r`` uses seed ``--seed + r`` for everything a seed decides (the members' samples,
    the initial weights, consortium's and pfl's batch order; stock Flower jobs shuffle
    unseeded, as users write them), and every framework gets that repeat's members and
    weights. Accuracy is compared as mean ± std over the repeats, paired by repeat: one run of
    this job moves by about a point with the batch order alone, so a single seed's figure
    cannot tell two frameworks apart.
    """
    root = Path(tempfile.mkdtemp(prefix="peers-"))
    try:
        rows: dict[str, list[dict[str, float]]] = {}
        loads = []
        for rep in range(args.repeats):
            seed = args.seed + rep
            folder = root / f"seed{seed}"
            folder.mkdir()
            raw_rep = {**raw, "seed": seed}
            spec = {**prepare(raw_rep, folder), "seed": seed}
            runners = frameworks(raw_rep, spec, folder, args.skip)
            for name, runner in runners.items():
                try:
                    row = runner(f"{name.replace(' ', '')}-{rep}")
                except TooSlow as err:
                    print(f"  {name} #{rep}: {err}; left out", flush=True)
                    continue
                rows.setdefault(name, []).append({**row, "seed": seed})
                loads.append(load_average())
                print(
                    f"  {name} seed {seed}: process {row['process_s']:.2f} s, loop "
                    f"{row['loop_s']:.2f} s, accuracy {row['test_accuracy']:.4f} "
                    f"(load {loads[-1]})",
                    flush=True,
                )
        return report(title, rows, loads)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(title: str, rows: dict[str, list[dict]], loads: list[str]) -> dict[str, Any]:
    if "consortium" not in rows:
        print(f"\n{title}: no consortium run finished in time; no ratios")
        return {"title": title, "load": loads, "frameworks": rows}
    base = rows["consortium"]
    ours = {k: median(base, k) for k in ("process_s", "loop_s")}
    our_acc = {r["seed"]: r["test_accuracy"] for r in base}
    print(f"\n{title}  (medians of {len(base)}; load averages seen: {', '.join(loads)})")
    head = f"{'':14} {'process s':>10} {'cpu s':>8} {'loop s':>8} {'accuracy (mean ± std)':>22}"
    print(head + f" {'process x':>10} {'loop x':>7} {'acc - ours (pts)':>17}")
    out: dict[str, Any] = {"title": title, "load": loads, "frameworks": {}}
    for name, runs in rows.items():
        med = {k: median(runs, k) for k in ("process_s", "process_cpu_s", "loop_s")}
        accs = [r["test_accuracy"] for r in runs]
        acc, spread = statistics.fmean(accs), statistics.pstdev(accs)
        # paired by seed: the same members and initial weights on both sides
        diffs = [
            100 * (r["test_accuracy"] - our_acc[r["seed"]]) for r in runs if r["seed"] in our_acc
        ]
        gap = statistics.fmean(diffs) if diffs else float("nan")
        ratio = {k: med[k] / ours[k] for k in ("process_s", "loop_s")}
        print(
            f"{name:14} {med['process_s']:10.2f} {med['process_cpu_s']:8.1f} "
            f"{med['loop_s']:8.2f} {acc:15.4f} ± {spread:.4f} {ratio['process_s']:9.2f}x "
            f"{ratio['loop_s']:6.2f}x {gap:+17.2f}"
        )
        out["frameworks"][name] = {
            **med,
            "test_accuracy": acc,
            "test_accuracy_std": spread,
            "accuracy_gap_points": gap,
            "ratios": ratio,
            "runs": runs,
        }
    print(
        "(x: the framework's time over consortium's; above 1 means consortium is faster. "
        "acc - ours: mean over seeds of the paired accuracy difference, target within 1 point)"
    )
    return out


# -- scenarios --------------------------------------------------------------------------------


def scenario_demo(args: argparse.Namespace) -> dict[str, Any]:
    raw = experiment(DEMO, args.rounds)
    return race(raw, args, "(a) the demo's digits job: 10 members, FedAvg")


def scenario_fmnist(args: argparse.Namespace) -> dict[str, Any]:
    raw = experiment(FMNIST, args.rounds)
    return race(raw, args, "(b) 500 members x 2 rounds, Fashion-MNIST 20k IID")


def scenario_hog(args: argparse.Namespace) -> dict[str, Any]:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(hog.pid, {min(os.sched_getaffinity(0))})
        return race(experiment(DEMO, args.rounds), args, "(c) (a) with a CPU hog on one core")
    finally:
        hog.kill()
        hog.wait()


def scenario_workers(args: argparse.Namespace) -> dict[str, Any]:
    """The demo's FedAvg with one worker and with two: times, and the same final model."""
    folder = Path(tempfile.mkdtemp(prefix="peers-"))
    try:
        rows: dict[str, list[dict[str, float]]] = {"workers=1": [], "workers=2": []}
        loads = []
        for rep in range(args.repeats):
            for name in rows:
                raw = experiment(DEMO, args.rounds, workers=int(name[-1]))
                rows[name].append(run_consortium(raw, folder, f"{name[-1]}-{rep}"))
                loads.append(load_average())
        models = [np.load(folder / f"{w}-0" / "fedavg" / "model.npz") for w in (1, 2)]
        same = all(np.array_equal(models[0][k], models[1][k]) for k in models[0].files)
        loop = [median(rows[n], "loop_s") for n in rows]
        proc = [median(rows[n], "process_s") for n in rows]
        cpu = [median(rows[n], "process_cpu_s") for n in rows]
        print(f"\nworkers: the demo's FedAvg (medians of {args.repeats}; loads {', '.join(loads)})")
        for i, name in enumerate(rows):
            print(f"{name:10} process {proc[i]:7.2f} s  cpu {cpu[i]:6.1f} s  loop {loop[i]:7.2f} s")
        print(
            f"speed-up of 2 workers: round loop {loop[0] / loop[1]:.2f}x, "
            f"whole process {proc[0] / proc[1]:.2f}x; final models bit-identical: {same}"
        )
        return {"rows": rows, "loop_speedup": loop[0] / loop[1], "identical": same, "load": loads}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and all its descendants (shared pages split)."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def scenario_memory(args: argparse.Namespace) -> dict[str, Any]:
    """1,000 members, 10 % sampled per round: peak memory of the whole run, 2 workers vs 1."""
    folder = Path(tempfile.mkdtemp(prefix="peers-"))
    try:
        peaks: dict[int, float] = {}
        for workers in (1, 2):
            raw = experiment(MEMORY, args.rounds, workers=workers)
            path = folder / f"memory-{workers}.toml"
            path.write_text(tomli_w.dumps(raw))
            cmd = [sys.executable, "-m", "consortium", "run", str(path)]
            cmd += ["--out", str(folder / f"memory-{workers}"), "--no-progress"]
            proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL)
            peak = 0.0
            while proc.poll() is None:
                peak = max(peak, tree_pss_mb(proc.pid))
                time.sleep(0.05)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed")
            peaks[workers] = peak
        ratio = peaks[2] / peaks[1]
        print("\nmemory: 1,000 members, 10 % sampled per round (peak PSS of the process tree)")
        print(f"workers=1 {peaks[1]:.0f} MB, workers=2 {peaks[2]:.0f} MB: ratio {ratio:.2f}")
        return {"peak_mb": peaks, "ratio": ratio}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def scenario_imports(args: argparse.Namespace) -> dict[str, Any]:
    """Import cost of the module a SuperNode loads per message, over ``import torch``."""

    def cost(module: str) -> float:
        cmd = [sys.executable, "-X", "importtime", "-c", f"import {module}"]
        done = subprocess.run(cmd, env=env(), capture_output=True, text=True, check=True)
        total = 0
        for line in done.stderr.splitlines():
            parts = line.split("|")
            top = len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  ")
            if top and parts[1].strip().isdigit():
                total += int(parts[1])  # cumulative time of a top-level import
        return total / 1e6

    # A member trains with torch whatever it imports first: the cost that counts is what the
    # module adds to a process that imports torch (the member module alone skips torch).
    modules = {"torch": "torch", "member": "torch, consortium.experiment.flower"}
    if available("flwr"):
        modules["stock"] = "torch, flwr.clientapp, flwr.app"
    seen: dict[str, list[float]] = {k: [] for k in modules}
    for _ in range(args.repeats):
        for key, module in modules.items():
            seen[key].append(cost(module))
    med = {k: statistics.median(v) for k, v in seen.items()}
    print(f"\nimports (python -X importtime, medians of {args.repeats}; load {load_average()})")
    for key, module in modules.items():
        print(f"{module:36} {med[key]:6.3f} s  (+{med[key] - med['torch']:.3f} s over torch)")
    return {"seconds": med, "overhead_s": med["member"] - med["torch"]}


def stock_flower_app(app: Path) -> Path:
    """A Flower app folder of ``peers_flower.py`` as its users deploy one (``flwr run``)."""
    app.mkdir()
    for name in ("peers_flower.py", "peers_job.py"):
        shutil.copy(HERE / name, app / name)
    project = {
        "project": {"name": "stock-fedavg", "version": "1.0.0", "dependencies": ["flwr"]},
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "peers",
                    "components": {
                        "serverapp": "peers_flower:server",
                        "clientapp": "peers_flower:app",
                    },
                    "config": {},
                }
            }
        },
    }
    (app / "pyproject.toml").write_text(tomli_w.dumps(project))
    return app


def deployed(app: Path, nodes: int, folder: Path, env_extra: dict[str, str]) -> float:
    """Seconds from ``flwr run`` to the run's end on a fresh loopback deployment."""
    from consortium.runtime.flower.loopback import LoopbackFederation

    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with LoopbackFederation(nodes, folder, env={**OFFLINE, **threads, **env_extra}) as fed:
        start = time.perf_counter()
        run = fed.run(app, timeout=TIMEOUT_S[0])
        took = time.perf_counter() - start
    if not run.ok:
        raise RuntimeError(f"{app} ended {run.status}:\n{run.log[-3000:]}")
    return took


def scenario_deploy(args: argparse.Namespace) -> dict[str, Any]:
    """The demo's job on a loopback deployment (a SuperLink and one SuperNode per member, each
    message served by a fresh ClientApp process): consortium's member app against stock
    Flower's ClientApp doing the same training."""
    from consortium.experiment import experiment_from_dict
    from consortium.experiment.flower import write_flower_app

    raw = experiment(DEMO, args.rounds or 3)
    folder = Path(tempfile.mkdtemp(prefix="peers-"))
    try:
        spec = prepare(raw, folder)
        nodes = raw["data"]["num_clients"]
        rows: dict[str, list[dict[str, float]]] = {"consortium": [], "flower": []}
        loads = []
        for rep in range(args.repeats):
            out = folder / f"consortium-{rep}"
            app = folder / f"consortium-app-{rep}"
            write_flower_app(experiment_from_dict(raw), app, run_dir=out)
            took = deployed(app, nodes, folder / f"fed-c{rep}", {})
            lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            rounds = [x["time_s"] for x in lines if x.get("phase", "train") == "train"]
            summary = json.loads((out / "summary.json").read_text())
            rows["consortium"].append(
                {"run_s": took, "round_s": statistics.median(rounds),
                 "test_accuracy": summary["test_accuracy"]}
            )  # fmt: skip
            spec_path = folder / f"stock-{rep}.spec.json"
            spec_path.write_text(json.dumps({**spec, "result": str(folder / f"stock-{rep}.json")}))
            app = stock_flower_app(folder / f"stock-app-{rep}")
            took = deployed(app, nodes, folder / f"fed-s{rep}", {"PEERS_SPEC": str(spec_path)})
            result = json.loads((folder / f"stock-{rep}.json").read_text())
            rows["flower"].append(
                {"run_s": took, "round_s": result["loop_s"] / raw["federation"]["rounds"],
                 "test_accuracy": result["test_accuracy"]}
            )  # fmt: skip
            loads.append(load_average())
        med = {n: {k: median(r, k) for k in ("run_s", "round_s")} for n, r in rows.items()}
        print(f"\ndeployment: the demo's job, {nodes} SuperNodes on loopback, "
              f"{raw['federation']['rounds']} rounds (medians of {args.repeats}; loads "
              f"{', '.join(loads)})")  # fmt: skip
        for name, m in med.items():
            acc = statistics.median(r["test_accuracy"] for r in rows[name])
            print(f"{name:12} flwr run {m['run_s']:7.2f} s  round {m['round_s']:6.2f} s  "
                  f"accuracy {acc:.4f}")  # fmt: skip
        ratio = med["flower"]["round_s"] / med["consortium"]["round_s"]
        print(f"stock Flower's round over consortium's: {ratio:.2f}x")
        return {"rows": rows, "round_ratio": ratio, "load": loads}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


SCENARIOS = {
    "demo": scenario_demo,
    "fmnist": scenario_fmnist,
    "hog": scenario_hog,
    "workers": scenario_workers,
    "memory": scenario_memory,
    "imports": scenario_imports,
    "deploy": scenario_deploy,
}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", choices=[*SCENARIOS, "all"])
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    p.add_argument("--rounds", type=int, default=None, help="override the job's rounds")
    p.add_argument("--seed", type=int, default=0, help="repeat r runs seed SEED + r (default 0)")
    p.add_argument("--skip", type=lambda s: s.split(","), default=[], help="e.g. flower,pfl")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds one job may run")
    args = p.parse_args(argv)
    TIMEOUT_S[0] = args.timeout
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    print(f"{os.cpu_count()} cores; load average at the start: {load_average()}", flush=True)
    results = {name: SCENARIOS[name](args) for name in names}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
