"""Experiment tracking: a run's rounds, configuration, summary and plots, also in MLflow,
TensorBoard or CSV files.

The run folder stays the record (``metrics.jsonl``, ``summary.json``, the plots); a tracker
copies what the run writes to where researchers compare runs. Each tracker is switched on in the
``[tracking]`` table (or with ``consortium run --track mlflow``) and needs only its own library:

* **MLflow** (``pip install "consortium[tracking]"``): one MLflow run per experiment run, holding
  the resolved configuration as parameters and the report (``summary.md``, ``config.toml``,
  the plots) as artefacts, and one nested run per method with its own options as parameters,
  every round's numbers as metrics (step = round) and its ``summary.json`` as an artefact. The
  default store is a local MLflow file store, ``mlruns/`` beside the run folder (``mlflow ui
  --backend-store-uri runs/mlruns``); ``mlflow_uri`` names any other store MLflow accepts.
* **TensorBoard** (same extra): event files under ``RUN_DIR/tensorboard/<method>/`` with every
  round's numbers as scalars, and under ``RUN_DIR/tensorboard/report/`` the configuration and
  summary as text and the plots as images (``tensorboard --logdir runs``).
* **CSV** (no extra): ``RUN_DIR/<method>/metrics.csv``, one row per round, one column per number.

Only numbers reach a tracker's metrics: per-member dicts, lists and strings in a round's line
stay in ``metrics.jsonl``. A resumed run continues the MLflow runs it started (their ids are in
``RUN_DIR/tracking.json``) and the TensorBoard folders it wrote; rounds that ran before tracking
was switched on are logged when their method finishes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from consortium.config import ConfigError, Options

__all__ = [
    "CsvTracker",
    "MethodDone",
    "MlflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "Trackers",
    "TrackingConfig",
    "flatten",
    "numbers",
    "open_trackers",
]

#: Keys of a round's line that are bookkeeping, not metrics.
NOT_METRICS = frozenset({"round"})
EXTRA_HINT = 'pip install "consortium[tracking]"'
IDS_FILE = "tracking.json"


class TrackingConfig(Options):
    """The ``[tracking]`` table: where a run's metrics go besides its run folder."""

    mlflow: bool = Field(False, description="log to MLflow (consortium[tracking])")
    mlflow_uri: str | None = Field(
        None, min_length=1, description="MLflow tracking URI (default: a file store, OUT/mlruns)"
    )
    mlflow_experiment: str | None = Field(
        None, min_length=1, description="MLflow experiment name (default: the run's name)"
    )
    tensorboard: bool = Field(
        False, description="write TensorBoard event files to RUN_DIR/tensorboard"
    )
    csv: bool = Field(False, description="write RUN_DIR/<method>/metrics.csv")

    @property
    def enabled(self) -> bool:
        return self.mlflow or self.tensorboard or self.csv


def numbers(line: Mapping[str, Any]) -> dict[str, float]:
    """The finite top-level numbers of a round's line (bools and ``round`` left out)."""
    out: dict[str, float] = {}
    for key, value in line.items():
        if key in NOT_METRICS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested configuration as ``{"data.alpha": "0.5", ...}`` (what trackers take as
    parameters); lists and other leaves become their JSON text."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, str):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


@dataclass(frozen=True)
class MethodDone:
    """What a tracker hears when a method finished: its options, every round it ran (those
    of an earlier process, when resumed, included), its summary and its folder."""

    method: str
    options: Mapping[str, Any]
    rounds: Sequence[Mapping[str, Any]]
    summary: Mapping[str, Any]
    method_dir: Path


class Tracker:
    """What every tracker does; each hook does nothing unless a tracker needs it.

    The runner calls :meth:`start` once, :meth:`log_round` after every round of a method,
    :meth:`method_done` when a method finished (with every round it ran, resumed ones too),
    :meth:`finish` after the report was drawn and :meth:`close` at the end, also on failure.
    """

    def start(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        """A run begins in ``run_dir`` with the resolved ``config``."""

    def log_round(self, method: str, rnd: int, line: Mapping[str, Any]) -> None:
        """One round's line of ``method`` (as written to ``metrics.jsonl``)."""

    def method_done(self, done: MethodDone) -> None:
        """A method finished (``done.rounds`` holds earlier processes' rounds too)."""

    def finish(self, run_dir: Path, artefacts: Iterable[Path]) -> None:
        """The report was written; ``artefacts`` are its files (tables, plots)."""

    def close(self, failed: bool) -> None:
        """Release what the tracker holds; ``failed`` when the run raised."""


class _Backfill:
    """Which rounds of a method this process logged, so :meth:`Tracker.method_done` can log
    the earlier ones a fresh tracker never saw (a run resumed with tracking newly on)."""

    def __init__(self) -> None:
        self.live: dict[str, int] = {}  # method -> first round logged by this process
        self.fresh: set[str] = set()  # methods whose tracker run this process created

    def seen(self, method: str, rnd: int) -> None:
        self.live.setdefault(method, rnd)

    def missing(self, method: str, rounds: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        if method not in self.fresh:
            return []
        first = self.live.get(method)
        return [r for r in rounds if first is None or int(r["round"]) < first]


class CsvTracker(Tracker):
    """``RUN_DIR/<method>/metrics.csv``: one row per round, a column per number (written when
    the method finishes, from every round it ran)."""

    FILE = "metrics.csv"

    def method_done(self, done: MethodDone) -> None:
        rows = [{"round": int(r["round"]), **numbers(r)} for r in done.rounds]
        columns = ["round", *sorted({k for row in rows for k in row} - {"round"})]
        tmp = done.method_dir / (self.FILE + ".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, done.method_dir / self.FILE)


class TensorBoardTracker(Tracker):
    """TensorBoard event files: a folder per method, and ``report/`` for the run's config,
    summary and plots (written with torch's ``SummaryWriter``)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package
            raise ConfigError(f"tracking.tensorboard needs: {EXTRA_HINT}") from None
        self._writer_cls = SummaryWriter
        self.folder = None if folder is None else Path(folder)
        self.writers: dict[str, Any] = {}
        self.backfill = _Backfill()

    def start(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        self.root = self.folder or run_dir / "tensorboard"
        report = self._writer("report")
        report.add_text("config", _code_block(json.dumps(config, indent=2)), 0)

    def _writer(self, name: str) -> Any:
        if name not in self.writers:
            path = self.root / name
            if not path.exists():
                self.backfill.fresh.add(name)
            self.writers[name] = self._writer_cls(log_dir=str(path))
        return self.writers[name]

    def _scalars(self, method: str, rnd: int, line: Mapping[str, Any]) -> None:
        writer = self._writer(method)
        for key, value in numbers(line).items():
            writer.add_scalar(key, value, rnd)

    def log_round(self, method: str, rnd: int, line: Mapping[str, Any]) -> None:
        self._writer(method)
        self.backfill.seen(method, rnd)
        self._scalars(method, rnd, line)
        self.writers[method].flush()

    def method_done(self, done: MethodDone) -> None:
        writer = self._writer(done.method)
        for line in self.backfill.missing(done.method, done.rounds):
            self._scalars(done.method, int(line["round"]), line)
        writer.add_text("options", _code_block(json.dumps(dict(done.options), indent=2)), 0)
        writer.add_text("summary", _code_block(json.dumps(dict(done.summary), indent=2)), 0)
        writer.flush()

    def finish(self, run_dir: Path, artefacts: Iterable[Path]) -> None:
        import matplotlib.image as mpimg

        report = self._writer("report")
        for path in artefacts:
            if path.suffix == ".png":
                image = mpimg.imread(path)[..., :3]  # HWC floats in [0, 1], alpha dropped
                report.add_image(str(path.relative_to(run_dir)), image, 0, dataformats="HWC")
            elif path.suffix in (".md", ".toml"):
                text = path.read_text()
                report.add_text(path.name, text if path.suffix == ".md" else _code_block(text), 0)
        report.flush()

    def close(self, failed: bool) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def _code_block(text: str) -> str:
    """TensorBoard renders text as Markdown: indent it so it shows as written."""
    return "\n".join("    " + line for line in text.splitlines())


def _is_local_store(uri: str) -> bool:
    return uri.startswith("file:") or ("://" not in uri and not uri.startswith("databricks"))


class MlflowTracker(Tracker):
    """MLflow: a parent run for the experiment run, a nested run per method.

    Uses :class:`mlflow.MlflowClient` only, never MLflow's global active run, so tracking a
    consortium run does not touch an MLflow run the caller may have open.
    """

    def __init__(self, uri: str | None, experiment: str | None) -> None:
        self.uri_given, self.experiment_name = uri, experiment
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise ConfigError(f"tracking.mlflow needs: {EXTRA_HINT}") from None
        self.runs: dict[str, str] = {}  # "" (the experiment run) and each method -> run id
        self.backfill = _Backfill()

    def start(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        from mlflow import MlflowClient

        uri = self.uri_given or (run_dir.resolve().parent / "mlruns").as_uri()
        if _is_local_store(uri):
            # MLflow 3 keeps its file store in maintenance mode and asks for this opt-in;
            # a local folder of files is what a run on a laptop or a cluster node wants.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        name = self.experiment_name or str(config.get("name") or run_dir.name)
        found = self.client.get_experiment_by_name(name)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(name)
        self.ids_path = run_dir / IDS_FILE
        saved = _read_ids(self.ids_path).get("mlflow", {}) if resume else {}
        if saved.get("uri") == uri:
            self.runs = dict(saved.get("runs", {}))
        self.run_dir = run_dir
        parent = self._run("", str(config.get("name") or run_dir.name), {})
        if "" in self.backfill.fresh:
            params = flatten({k: v for k, v in config.items() if not isinstance(v, dict)})
            params.update(flatten({k: v for k, v in config.items() if isinstance(v, dict)}))
            self._params(parent, params)
            self.client.set_tag(parent, "consortium.run_dir", str(run_dir.resolve()))

    def _run(self, key: str, name: str, tags: Mapping[str, str]) -> str:
        """The MLflow run of ``key`` (the experiment run, or a method), created on first use."""
        if key in self.runs:
            try:
                self.client.update_run(self.runs[key], status="RUNNING")
                return self.runs[key]
            except Exception:  # the store lost it: start afresh
                del self.runs[key]
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags))
        self.runs[key] = run.info.run_id
        self.backfill.fresh.add(key)
        _write_ids(self.ids_path, {"mlflow": {"uri": self.uri, "runs": self.runs}})
        return run.info.run_id

    def _method_run(self, method: str) -> str:
        tags = {"mlflow.parentRunId": self.runs[""], "consortium.method": method}
        return self._run(method, method, tags)

    def _params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(run_id, params=items[i : i + 100], synchronous=True)

    def _metrics(self, run_id: str, lines: Iterable[Mapping[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key, value, now, int(line["round"]))
            for line in lines
            for key, value in numbers(line).items()
        ]
        for i in range(0, len(batch), 1000):  # MLflow's batch limit
            self.client.log_batch(run_id, metrics=batch[i : i + 1000], synchronous=True)

    def log_round(self, method: str, rnd: int, line: Mapping[str, Any]) -> None:
        run_id = self._method_run(method)
        self.backfill.seen(method, rnd)
        self._metrics(run_id, [line])

    def method_done(self, done: MethodDone) -> None:
        run_id = self._method_run(done.method)
        self._metrics(run_id, self.backfill.missing(done.method, done.rounds))
        if done.method in self.backfill.fresh:
            self._params(run_id, flatten(dict(done.options)))
        final = {f"final.{k}": v for k, v in numbers(done.summary).items()}
        if final:
            step = int(done.summary.get("rounds", 0) or 0)
            self._metrics(run_id, [{"round": step, **final}])
        summary_file = done.method_dir / "summary.json"
        if summary_file.exists():
            self.client.log_artifact(run_id, str(summary_file))
        self.client.set_terminated(run_id, "FINISHED")

    def finish(self, run_dir: Path, artefacts: Iterable[Path]) -> None:
        for path in artefacts:
            sub = path.parent.relative_to(run_dir).as_posix()
            self.client.log_artifact(self.runs[""], str(path), None if sub == "." else sub)

    def close(self, failed: bool) -> None:
        status = "FAILED" if failed else "FINISHED"
        for key, run_id in self.runs.items():
            if key == "" or failed:
                with contextlib.suppress(Exception):  # never hide the run's own error
                    self.client.set_terminated(run_id, status)


def _read_ids(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_ids(path: Path, value: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)


class Trackers(Tracker):
    """Every configured tracker behind one :class:`Tracker` (nothing when none is on)."""

    def __init__(self, trackers: Sequence[Tracker] = ()) -> None:
        self.trackers = list(trackers)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def start(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        for t in self.trackers:
            t.start(run_dir, config, resume)

    def log_round(self, method: str, rnd: int, line: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.log_round(method, rnd, line)

    def method_done(self, done: MethodDone) -> None:
        for t in self.trackers:
            t.method_done(done)

    def finish(self, run_dir: Path, artefacts: Iterable[Path]) -> None:
        files = list(artefacts)
        for t in self.trackers:
            t.finish(run_dir, files)

    def close(self, failed: bool) -> None:
        for t in self.trackers:
            t.close(failed)


def open_trackers(config: TrackingConfig) -> Trackers:
    """The trackers ``config`` switches on; a missing library is a one-line error, raised
    before anything runs."""
    out: list[Tracker] = []
    if config.mlflow:
        out.append(MlflowTracker(config.mlflow_uri, config.mlflow_experiment))
    if config.tensorboard:
        out.append(TensorBoardTracker())
    if config.csv:
        out.append(CsvTracker())
    return Trackers(out)
