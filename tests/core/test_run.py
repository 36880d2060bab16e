import json

import numpy as np
import pytest

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.core import load_checkpoint, read_jsonl, run_workflow
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig


def model_fn():
    return build_model("mlp", (1, 4, 4), 2, hidden=[8])


def make(views, x, y, rounds=5, failure_rate=0.3):
    cfg = FedAvgConfig(
        rounds=rounds,
        clients_per_round=3,
        local=LocalTrainConfig(lr=0.1, batch_size=8, momentum=0.9),
    )
    wf = FedAvg(cfg, model_fn, x[:20], y[:20], device="cpu")
    grid = LocalRuntime(
        supervised_client_app(model_fn, "cpu"),
        lambda c: views[c],
        4,
        seed=7,
        failure_rate=failure_rate,
    )
    return wf, grid


class Crash(Exception):
    pass


def test_kill_and_resume_is_bit_identical(tiny_federation, tmp_path):
    x, y, views = tiny_federation
    full = run_workflow(*make(views, x, y), run_dir=tmp_path / "full", progress=False)

    def crash_after_3(rnd, metrics):
        if rnd == 3:
            raise Crash

    with pytest.raises(Crash):
        run_workflow(
            *make(views, x, y), run_dir=tmp_path / "cut", progress=False, callbacks=[crash_after_3]
        )
    assert (
        load_checkpoint(tmp_path / "cut")["next_round"] == 3
    )  # crash hit before round 3's checkpoint
    resumed = run_workflow(
        *make(views, x, y), run_dir=tmp_path / "cut", resume=True, progress=False
    )
    assert resumed.resumed_from == 2
    for k in full.final_arrays:
        assert np.array_equal(full.final_arrays[k], resumed.final_arrays[k]), k
    rounds = [r["round"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")]
    assert rounds == [1, 2, 3, 4, 5]
    full_lines = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    cut_lines = read_jsonl(tmp_path / "cut" / "metrics.jsonl")
    for a, b in zip(full_lines, cut_lines, strict=True):
        assert a["failures"] == b["failures"] and a["test_accuracy"] == b["test_accuracy"]
    # CPU time is accounted per round and, across the resume, in the summary
    assert all(line["cpu_s"] > 0 for line in cut_lines)
    cpu_rounds = sum(line["cpu_s"] for line in cut_lines)
    assert cpu_rounds <= resumed.summary["cpu_time_s"] < cpu_rounds + 60


def test_resuming_a_finished_run_returns_it(tiny_federation, tmp_path):
    x, y, views = tiny_federation
    first = run_workflow(*make(views, x, y, rounds=2), run_dir=tmp_path, progress=False)
    again = run_workflow(
        *make(views, x, y, rounds=2), run_dir=tmp_path, resume=True, progress=False
    )
    assert again.summary == first.summary
    assert all(
        np.array_equal(first.final_arrays[k], again.final_arrays[k]) for k in first.final_arrays
    )


def test_run_folder_contents(tiny_federation, tmp_path):
    x, y, views = tiny_federation
    run_workflow(*make(views, x, y, rounds=2, failure_rate=0.0), run_dir=tmp_path, progress=False)
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["round"] for r in lines] == [1, 2]
    for line in lines:
        assert line["replies"] == 3
        assert line["bytes_up"] == sum(line["bytes_up_by_client"].values()) > 0
        assert line["bytes_down"] > 0
        assert 0.0 <= line["test_accuracy"] <= 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["bytes_up_total"] >= sum(r["bytes_up"] for r in lines)
    assert set(summary["client_accuracy"]) == {"0", "1", "2", "3"}
    model = np.load(tmp_path / "model.npz")
    assert set(model.files) == set(model_fn().state_dict())


def test_resume_needs_matching_workflow(tiny_federation, tmp_path):
    x, y, views = tiny_federation
    run_workflow(*make(views, x, y, rounds=1), run_dir=tmp_path, progress=False)
    wf, grid = make(views, x, y, rounds=1)
    wf.name = "other"
    with pytest.raises(ValueError, match="belongs to"):
        run_workflow(wf, grid, run_dir=tmp_path, resume=True, progress=False)
