"""Scores of per-task models, computed by the members and combined by the server.

Every multi-task method ends the same way: each member scores its own model on its own test
set and sends sums (:mod:`consortium.metrics.mtl`); the server turns them into per-task and
mean scores. One code path for all four methods keeps their numbers comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from consortium.algorithms.mtl.client import EVALUATE
from consortium.core.grid import Grid
from consortium.core.message import Message, Scalar
from consortium.core.validation import ReplySpec
from consortium.core.workflow import Workflow
from consortium.metrics.mtl import ClassificationStats, RegressionStats

TaskKind = Literal["regression", "classification"]


def task_scores(replies: Mapping[int, Message], kind: TaskKind) -> dict[str, Any]:
    """Per-task and mean test scores from the members' statistics.

    Regression: ``mean_rmse`` (mean over tasks of each task's RMSE), ``pooled_rmse`` (over all
    test samples), ``mean_explained_variance``, ``mean_nmse`` and per-member dicts.
    Classification: ``test_accuracy`` (pooled), ``mean_client_accuracy`` (= ``mean_accuracy``,
    mean over tasks), ``min_client_accuracy`` and ``client_accuracy``.
    """
    ids = sorted(c for c, r in replies.items() if r.metrics.get("test_n", 0) > 0)
    if not ids:
        return {}
    if kind == "classification":
        cls = {c: ClassificationStats.from_metrics(replies[c].metrics) for c in ids}
        pooled = sum(cls.values(), ClassificationStats())
        accs = {str(c): s.accuracy for c, s in cls.items()}
        return {
            "test_accuracy": pooled.accuracy,
            "mean_client_accuracy": float(np.mean(list(accs.values()))),
            "mean_accuracy": float(np.mean(list(accs.values()))),
            "min_client_accuracy": float(np.min(list(accs.values()))),
            "client_accuracy": accs,
        }
    reg = {c: RegressionStats.from_metrics(replies[c].metrics) for c in ids}
    pooled_r = sum(reg.values(), RegressionStats())
    rmse = {str(c): s.rmse for c, s in reg.items()}
    ev = {str(c): s.explained_variance for c, s in reg.items()}
    nm = [s.nmse for s in reg.values()]
    return {
        "mean_rmse": float(np.mean(list(rmse.values()))),
        "pooled_rmse": pooled_r.rmse,
        "mean_explained_variance": float(np.nanmean(list(ev.values()))),
        "pooled_explained_variance": pooled_r.explained_variance,
        "mean_nmse": float(np.nanmean(nm)),
        "client_rmse": rmse,
        "client_explained_variance": ev,
    }


def round_scores(scores: Mapping[str, Any]) -> dict[str, float]:
    """The scalar scores worth a column in the per-round log."""
    keys = ("mean_rmse", "pooled_rmse", "mean_explained_variance", "test_accuracy")
    return {k: scores[k] for k in (*keys, "mean_client_accuracy") if k in scores}


def evaluate_models(
    grid: Grid,
    w: np.ndarray,
    loss: str,
    extra: Mapping[int, Mapping[str, Scalar]] | None = None,
) -> dict[int, Message]:
    """Send member ``i`` its column ``w[:, i]`` for scoring; returns the replies."""
    msgs = {
        c: Message(
            EVALUATE,
            arrays={"w": np.ascontiguousarray(w[:, c])},
            config={"loss": loss, **((extra or {}).get(c, {}))},
        )
        for c in grid.client_ids
    }
    return grid.send(msgs, expect=ReplySpec({}))


def member_values(replies: Mapping[int, Message], key: str, num_clients: int) -> np.ndarray | None:
    """Every member's ``key`` in member order, or ``None`` when some member's reply is missing
    (the objective is a sum over all members, so none can be formed that round)."""
    if len(replies) != num_clients or any(key not in r.metrics for r in replies.values()):
        return None
    return np.array([replies[c].metrics[key] for c in range(num_clients)])


class OneShot(Workflow):
    """Base of the multi-task references solved in one server step (single-task learning, one
    global model, centralised MTRL).

    Parameters
    ----------
    config
        The method's options; its loss is fixed here for tasks of ``kind``.
    kind
        ``"regression"`` or ``"classification"``.
    info
        Entries copied into the summary as they are (e.g. how λ was chosen).
    train_sets
        ``(X_i, y_i)`` training arrays of every task, in member order, for the references that
        pool them at the server (a simulation-only shortcut; empty for single-task learning).
    """

    num_rounds = 1
    progress_keys: tuple[str, ...] = ("objective",)

    def __init__(
        self,
        config: Any,
        kind: Literal["regression", "classification"] = "regression",
        info: Mapping[str, Any] | None = None,
        train_sets: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    ) -> None:
        self.config = config.resolved(kind)
        self.kind = kind
        self.info = dict(info or {})
        self.train_sets = list(train_sets)
        self.reset()

    def reset(self) -> None:
        """Set the state a fresh run starts from."""
