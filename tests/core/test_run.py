import errno
import json
import logging
import re
import time

import numpy as np
import pytest

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.core import Grid, Message, Workflow, load_checkpoint, read_jsonl, run_workflow
from consortium.core import checkpoint as checkpoint_format
from consortium.core.checkpoint import save_checkpoint
from consortium.core.grid import TooFewReplies
from consortium.core.run import CHECKPOINT, STOPPED, RunStopped
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
    # CPU time is accounted per round and, across the resume, in the summary. A round can
    # cost this process no measurable CPU (its members train in worker processes; seen in
    # mutmut's forked runs), so only >= 0 here: test_times_add_up pins the accounting itself.
    assert all(line["cpu_s"] >= 0 for line in cut_lines)
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


# --- the loop's own contract, on a scripted workflow and grid (no training: milliseconds) ---


class EchoGrid(Grid):
    """Members echo what they get; ids in ``down`` fail, and all of them in ``dead_round``."""

    def __init__(self, num_clients=2, down=(), dead_round=None, **kw):
        super().__init__(num_clients, **kw)
        self.down = set(down)
        self.dead_round = dead_round

    def _exchange(self, messages):
        down = set(messages) if self.round == self.dead_round else self.down
        replies = {c: m.reply(arrays=m.arrays) for c, m in messages.items() if c not in down}
        return replies, {c: "down" for c in messages if c in down}


def burn(seconds):
    """Spend wall time and CPU time, at least ``seconds`` of each."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    while time.process_time() - start_cpu < seconds or time.perf_counter() - start_wall < seconds:
        pass


class Scripted(Workflow):
    """A workflow whose phases do what a test says and remember what they saw."""

    name = "scripted"

    def __init__(
        self,
        num_rounds=3,
        setup_metrics=None,
        setup_sends=False,
        metrics=None,
        slow=0.0,
        finish_sends=False,
    ):
        self.num_rounds = num_rounds
        self.setup_metrics = setup_metrics or {}
        self.setup_sends = setup_sends
        self.metrics = metrics if metrics is not None else {"test_accuracy": 0.5}
        self.slow = slow
        self.finish_sends = finish_sends
        self.done = 0  # rounds completed: the state a resume must restore
        self.seen = []  # (phase, grid.round)

    def setup(self, grid):
        self.seen.append(("setup", grid.round))
        burn(4 * self.slow)
        if self.setup_sends:
            grid.send({0: Message("hello")})
        return dict(self.setup_metrics)

    def run_round(self, grid, rnd):
        self.seen.append(("round", grid.round))
        burn(self.slow / 5)
        grid.send({c: Message("train", arrays={"w": np.zeros(3)}) for c in grid.client_ids})
        self.done += 1
        return dict(self.metrics)

    def finish(self, grid):
        self.seen.append(("finish", grid.round))
        burn(self.slow)
        if self.finish_sends:
            grid.send({1: Message("evaluate")})
        return {"done": self.done}

    def final_arrays(self):
        return {"w": np.full(2, float(self.done))}

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state):
        self.done = state["done"]


def quiet(wf, grid=None, **kw):
    return run_workflow(wf, grid or EchoGrid(), progress=False, **kw)


def test_phases_run_in_their_grid_rounds_and_lines_say_what_happened(tmp_path):
    seen_by_callback = []
    wf = Scripted(setup_metrics={"picked": 1})
    result = quiet(wf, run_dir=tmp_path, callbacks=[lambda r, m: seen_by_callback.append((r, m))])
    assert wf.seen == [("setup", 0), ("round", 1), ("round", 2), ("round", 3), ("finish", 4)]
    setup, *train = result.rounds
    assert setup["round"] == 0 and setup["phase"] == "setup" and setup["picked"] == 1
    assert [r["round"] for r in train] == [1, 2, 3]
    assert all(r["phase"] == "train" and r["test_accuracy"] == 0.5 for r in train)
    assert all(r["replies"] == 2 and r["bytes_up"] > 0 for r in train)
    for line in result.rounds:
        assert {"time_s", "cpu_s", "clients_sent", "bytes_down", "failures"} <= set(line)
        assert 0 <= line["time_s"] < 5 and 0 <= line["cpu_s"] < 5
    assert seen_by_callback == [(r["round"], r) for r in result.rounds]
    assert read_jsonl(tmp_path / "metrics.jsonl") == result.rounds


@pytest.mark.parametrize(
    ("metrics", "sends", "has_line"),
    [({"k": 1}, False, True), ({}, True, True), ({}, False, False)],
)
def test_setup_is_logged_when_it_reports_or_sends(metrics, sends, has_line):
    result = quiet(Scripted(setup_metrics=metrics, setup_sends=sends))
    assert (result.rounds[0]["round"] == 0) is has_line


def test_times_add_up(tmp_path):
    # Bounds that hold however loaded the machine is: each phase spends at least its share of
    # wall and CPU time, and the phases together never exceed what the whole call took.
    burn(0.3)  # time spent before the run must not leak into its accounting
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = quiet(Scripted(slow=0.05, setup_metrics={"k": 1}), run_dir=tmp_path)
    wall_total, cpu_total = time.perf_counter() - wall0, time.process_time() - cpu0
    s = result.summary
    walls = sum(r["time_s"] for r in result.rounds)
    cpus = sum(r["cpu_s"] for r in result.rounds)
    assert result.rounds[0]["time_s"] >= 0.2 and result.rounds[0]["cpu_s"] >= 0.2
    assert all(r["time_s"] >= 0.01 and r["cpu_s"] >= 0.01 for r in result.rounds[1:])
    # setup and rounds are in the lines, the finish phase (>= 0.05 s) only in the totals
    assert walls + 0.05 <= s["wall_time_s"] <= wall_total
    assert cpus + 0.05 <= s["cpu_time_s"] <= cpu_total
    assert result.wall_time_s == s["wall_time_s"]
    assert json.loads((tmp_path / "summary.json").read_text())["wall_time_s"] == s["wall_time_s"]


def test_summary_totals(tmp_path):
    grid = EchoGrid(3, down={2}, dead_round=2, min_replies=1)
    result = quiet(Scripted(finish_sends=True), grid, run_dir=tmp_path)
    lines = result.rounds
    s = result.summary
    assert s["done"] == 2  # the skipped round left the workflow as it was
    assert s["workflow"] == "scripted" and s["rounds"] == 3
    assert s["rounds_skipped"] == 1
    assert s["client_failures"] == 1 + 3 + 1  # member 2 in rounds 1 and 3, all three in round 2
    assert s["replies_rejected"] == 0
    finish_up = Message("evaluate").nbytes
    assert s["bytes_up_total"] == sum(r["bytes_up"] for r in lines) + finish_up
    assert s["bytes_down_total"] == sum(r["bytes_down"] for r in lines) + finish_up
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert list(on_disk) == list(s)  # written in the summary's own order
    second = (tmp_path / "summary.json").read_text().splitlines()[1]
    assert second.startswith('  "') and not second.startswith("   ")  # indented by 2, for people


def test_a_round_with_too_few_replies_is_skipped_and_logged(caplog):
    grid = EchoGrid(2, dead_round=2, min_replies=1)
    with caplog.at_level(logging.WARNING, logger="consortium.run"):
        result = quiet(Scripted(), grid)
    reason = "round 2: 0 valid replies of 2, fewer than min_replies=1"
    assert result.rounds[1]["skipped"] == reason
    assert result.rounds[1]["failures"] == {"0": "down", "1": "down"}
    assert "skipped" not in result.rounds[0] and "skipped" not in result.rounds[2]
    assert reason in caplog.messages


def test_metrics_become_json(tmp_path):
    odd = {
        "pair": (np.float32(1.5), 2),
        "arr": np.arange(3),
        "nan": float("nan"),
        "i": np.int64(3),
        "nested": {1: [np.float64(0.25)]},
    }
    result = quiet(Scripted(num_rounds=1, metrics=odd), run_dir=tmp_path)
    line = read_jsonl(tmp_path / "metrics.jsonl")[0]
    for got in (line, result.rounds[0]):
        assert got["pair"] == [1.5, 2] and got["arr"] == [0, 1, 2] and got["nan"] is None
        assert got["i"] == 3 and got["nested"] == {"1": [0.25]}


def test_without_a_folder_nothing_is_written_and_resume_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = quiet(Scripted())
    assert [r["round"] for r in result.rounds] == [1, 2, 3] and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"^resume needs a run directory$"):
        quiet(Scripted(), resume=True)


def test_a_new_run_into_a_used_folder_starts_afresh(tmp_path):
    run_dir = tmp_path / "a" / "b"  # parents are created
    quiet(Scripted(), run_dir=run_dir)
    again = Scripted()
    result = quiet(again, run_dir=run_dir)  # no resume asked: nothing is reused
    assert again.done == 3 and result.resumed_from is None
    assert [r["round"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert load_checkpoint(run_dir)["next_round"] == 4 and load_checkpoint(run_dir)["finished"]
    np.testing.assert_array_equal(np.load(run_dir / "model.npz")["w"], [3.0, 3.0])


class Stop(Exception):
    pass


def stop_at(rnd):
    def cb(r, metrics):
        if r == rnd:
            raise Stop

    return cb


class StopsAfter(Scripted):
    """Its stopping rule holds once ``after`` rounds are done (0: before the first)."""

    name = "scripted"

    def __init__(self, after, **kw):
        super().__init__(**kw)
        self.after = after

    @property
    def should_stop(self):
        return self.done >= self.after


def test_a_met_stopping_rule_ends_the_rounds_and_the_summary_counts_those_that_ran(tmp_path):
    wf = StopsAfter(2, num_rounds=5)
    result = quiet(wf, run_dir=tmp_path)
    assert wf.seen == [("setup", 0), ("round", 1), ("round", 2), ("finish", 6)]
    assert [r["round"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    assert result.summary["status"] == "complete" and result.summary["done"] == 2
    assert (result.summary["rounds"], result.summary["round_budget"]) == (2, 5)


def test_a_stopping_rule_met_at_once_runs_no_round_and_is_not_a_failure(tmp_path):
    wf = StopsAfter(0, num_rounds=3)
    result = quiet(wf, run_dir=tmp_path)
    assert wf.seen == [("setup", 0), ("finish", 4)]
    assert result.summary["status"] == "complete" and result.summary["rounds"] == 0


def test_a_resumed_run_whose_rule_was_met_runs_no_more_rounds(tmp_path):
    class CrashesInFinish(StopsAfter):
        def finish(self, grid):
            raise Stop

    with pytest.raises(Stop):
        quiet(CrashesInFinish(2, num_rounds=5), run_dir=tmp_path)
    assert load_checkpoint(tmp_path)["next_round"] == 3
    wf = StopsAfter(2, num_rounds=5)
    result = quiet(wf, run_dir=tmp_path, resume=True)
    assert wf.seen == [("finish", 6)] and result.summary["rounds"] == 2


def test_resume_after_a_crash_in_round_1_redoes_round_1(tmp_path, caplog):
    with pytest.raises(Stop):
        quiet(Scripted(), run_dir=tmp_path, callbacks=[stop_at(1)])
    assert load_checkpoint(tmp_path)["next_round"] == 1  # only the set-up was saved
    wf = Scripted()
    with caplog.at_level(logging.INFO, logger="consortium.run"):
        result = quiet(wf, run_dir=tmp_path, resume=True)
    assert "resuming scripted after round 0" in caplog.messages
    assert result.resumed_from == 0 and wf.done == 3
    assert wf.seen[-4:] == [("round", 1), ("round", 2), ("round", 3), ("finish", 4)]
    assert [r["round"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_resume_after_the_setup_does_not_repeat_it(tmp_path):
    with pytest.raises(Stop):
        quiet(Scripted(setup_metrics={"k": 1}), run_dir=tmp_path, callbacks=[stop_at(1)])
    wf = Scripted(setup_metrics={"k": 1})
    quiet(wf, run_dir=tmp_path, resume=True)
    assert ("setup", 0) not in wf.seen
    assert [r["round"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1, 2, 3]


def test_progress_bar(capsys, tmp_path):
    wf = Scripted(metrics={"test_accuracy": 0.5, "train_loss": 0.25, "other": 1})
    run_workflow(wf, EchoGrid())
    out = capsys.readouterr().out
    assert re.fullmatch(
        r"scripted ━+ 3/3 \d:\d\d:\d\d test_accuracy=0\.5 train_loss=0\.25\s*", out
    ), out
    wf = Scripted(metrics={"a": 1.23456, "flag": True, "text": "x", "b": 2})
    wf.progress_keys = ("a", "flag", "text", "b", "missing")
    run_workflow(wf, EchoGrid(), description="my run")
    out = capsys.readouterr().out
    assert re.fullmatch(r"my run ━+ 3/3 \d:\d\d:\d\d a=1\.235 b=2\s*", out), out
    run_workflow(Scripted(num_rounds=0), EchoGrid())
    assert re.fullmatch(r"scripted ━+ 0/0 \d:\d\d:\d\d\s*", capsys.readouterr().out)
    quiet(Scripted())
    assert capsys.readouterr().out == ""
    with pytest.raises(Stop):
        run_workflow(
            Scripted(), EchoGrid(), run_dir=tmp_path, callbacks=[stop_at(2)], progress=False
        )
    run_workflow(Scripted(), EchoGrid(), run_dir=tmp_path, resume=True)
    assert re.fullmatch(r"scripted ━+ 3/3 .*\s*", capsys.readouterr().out)


def test_resuming_a_finished_run_returns_it_as_it_was(tmp_path):
    first = quiet(Scripted(), run_dir=tmp_path)
    wf = Scripted()
    again = quiet(wf, run_dir=tmp_path, resume=True)
    assert wf.seen == [] and wf.done == 3
    assert again.summary == first.summary and again.rounds == first.rounds
    assert 0 < again.wall_time_s <= first.summary["wall_time_s"]
    assert again.resumed_from == 3
    np.testing.assert_array_equal(again.final_arrays["w"], [3.0, 3.0])


def test_checkpoints_without_cpu_accounting_resume(tmp_path):
    with pytest.raises(Stop):
        quiet(Scripted(), run_dir=tmp_path, callbacks=[stop_at(2)])
    state = load_checkpoint(tmp_path)
    del state["cpu_elapsed"]
    save_checkpoint(tmp_path / CHECKPOINT, state)
    result = quiet(Scripted(), run_dir=tmp_path, resume=True)
    assert result.summary["cpu_time_s"] < 0.5


def test_unknown_checkpoint_version_is_refused(tmp_path, monkeypatch):
    with pytest.raises(Stop):
        quiet(Scripted(), run_dir=tmp_path, callbacks=[stop_at(1)])
    state = load_checkpoint(tmp_path)
    monkeypatch.setattr(checkpoint_format, "VERSION", 0)
    save_checkpoint(tmp_path / CHECKPOINT, state)
    monkeypatch.undo()
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path)
    assert str(err.value) == f"{tmp_path / CHECKPOINT}: checkpoint version 0 is not supported"
    assert load_checkpoint(tmp_path / "nothing") is None


def test_a_legacy_or_incomplete_checkpoint_is_a_one_line_error(tmp_path):
    legacy = tmp_path / "checkpoint.pkl"
    legacy.write_bytes(b"never unpickled")
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path)
    assert str(err.value) == (
        f"{legacy}: a pickled checkpoint of an older version; it is not loaded because "
        "unpickling can run code: start the run again with --overwrite"
    )
    full = {"workflow_name": "w", "next_round": 1, "workflow": {}, "grid": {}}
    for key in full:
        save_checkpoint(tmp_path / CHECKPOINT, {k: v for k, v in full.items() if k != key})
        with pytest.raises(ValueError) as err:
            load_checkpoint(tmp_path)
        assert str(err.value) == f"{tmp_path / CHECKPOINT}: checkpoint has no {key!r}"
    save_checkpoint(tmp_path / CHECKPOINT, full)
    assert load_checkpoint(tmp_path) == full


def test_failure_hint_names_the_most_common_reason_failed_or_rejected():
    from consortium.core.run import _failure_hint

    lines = [
        {"failures": {"0": "down", "1": "down"}, "rejected": {"2": "zz bad"}},
        {"failures": {"0": "down"}, "rejected": {}},
        {},  # a line that says nothing about members
    ]
    assert _failure_hint(lines) == "; the most common member failure (3x): down"
    rejected = [{"failures": {}, "rejected": {"1": "nan", "2": "nan", "3": "big"}}]
    assert _failure_hint(rejected) == "; the most common member failure (2x): nan"
    assert _failure_hint([{}, {"failures": {}, "rejected": {}}]) == ""
    assert _failure_hint([]) == ""


class ShortHanded(Scripted):
    """Its rounds find too few members by its own count (no member failed)."""

    def run_round(self, grid, rnd):
        raise TooFewReplies(f"round {rnd}: too few members by the workflow's count")


def test_a_stop_without_member_failures_has_no_hint_and_keeps_its_times(tmp_path):
    with pytest.raises(RunStopped) as info:
        quiet(ShortHanded(num_rounds=2, slow=0.05), run_dir=tmp_path)
    msg = "no round succeeded: all 2 were skipped (last: round 2: too few members by the "
    assert str(info.value) == msg + "workflow's count)"
    summary = json.loads((tmp_path / STOPPED).read_text())
    assert summary == info.value.summary
    assert summary["status"] == "stopped" and summary["stop_reason"] == str(info.value)
    # the set-up burnt 0.2 s of wall and CPU time: the stopped summary counts it
    assert isinstance(summary["wall_time_s"], float) and summary["wall_time_s"] >= 0.2
    assert isinstance(summary["cpu_time_s"], float) and summary["cpu_time_s"] >= 0.2
    assert not (tmp_path / "summary.json").exists()


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_names_its_file(tmp_path, monkeypatch):
    from consortium.core import run as run_module

    with monkeypatch.context() as patch:
        patch.setattr(run_module.os, "replace", _no_space)
        with pytest.raises(OSError) as err:
            run_module.write_json(tmp_path / "x.json", {"a": 1})
        assert err.value.filename == str(tmp_path / "x.json") and err.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as err:
            run_module._rewrite_jsonl(tmp_path / "m.jsonl", [{"a": 1}])
        assert err.value.filename == str(tmp_path / "m.jsonl")

    class Full:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        write = _no_space

    with monkeypatch.context() as patch:
        patch.setattr(run_module, "open", Full, raising=False)
        with pytest.raises(OSError) as err:
            quiet(Scripted(), run_dir=tmp_path / "lines")
        assert err.value.filename == str(tmp_path / "lines" / "metrics.jsonl")

    with monkeypatch.context() as patch:
        patch.setattr(run_module.np, "savez", _no_space)
        with pytest.raises(OSError) as err:
            quiet(Scripted(), run_dir=tmp_path / "model")
        assert err.value.filename == str(tmp_path / "model" / "model.npz")


def test_each_short_try_is_logged_with_its_number(caplog, tmp_path):
    grid = EchoGrid(2, dead_round=0)
    with caplog.at_level(logging.WARNING, logger="consortium.run"), pytest.raises(RunStopped):
        quiet(Scripted(setup_sends=True), grid, retries=2, run_dir=tmp_path)
    (line,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert (line["round"], line["phase"]) == (0, "setup") and "stopped" in line
    reason = "round 0: 0 valid replies of 1, fewer than min_replies=1"
    logged = [r.getMessage() for r in caplog.records if r.name == "consortium.run"]
    assert logged == [f"{reason} (try {k} of 3)" for k in (1, 2, 3)]


class NoSetUp(Scripted):
    """Its set-up finds too few members by its own count, before sending anything."""

    def setup(self, grid):
        raise TooFewReplies("round 0: nobody to ask")


def test_a_set_up_that_stops_before_sending_shows_an_empty_bar(capsys):
    with pytest.raises(RunStopped, match=r"^set-up: round 0: nobody to ask \(3 tries\); nothing"):
        run_workflow(NoSetUp(), EchoGrid())
    # nothing was sent, so the live column still holds its empty start
    assert re.fullmatch(r"scripted [━ ]+ 0/3 \d:\d\d:\d\d\s*", capsys.readouterr().out)


def test_a_failed_checkpoint_names_its_file(tmp_path, monkeypatch):
    from consortium.core import run as run_module

    monkeypatch.setattr(run_module, "save_checkpoint", _no_space)
    with pytest.raises(OSError) as err:
        quiet(Scripted(), run_dir=tmp_path)
    assert err.value.filename == str(tmp_path / CHECKPOINT)


class Telling(EchoGrid):
    """Member 0 is down and member 2 answers garbage; every exchange tells progress that one
    member answered of five asked (more than were sent: the count must still add up)."""

    def _exchange(self, messages):
        if self.progress is not None:
            self.progress(1, 5)
        replies, failures = super()._exchange(messages)
        if 2 in replies:
            replies[2] = "garbage"
        return replies, failures


class Chatty(Scripted):
    def setup(self, grid):
        for _ in range(2):
            grid.send({c: Message("hello") for c in grid.client_ids})
        return {}


def test_the_live_column_counts_who_answered_in_each_phase(monkeypatch):
    from rich.progress import Progress

    from consortium.core import run as run_module

    lives = []

    class Recording(Progress):
        def add_task(self, *args, **fields):
            lives.append(("add", fields.get("live")))
            return super().add_task(*args, **fields)

        def update(self, task, **fields):
            if "live" in fields:
                lives.append(fields["live"])
            super().update(task, **fields)

    monkeypatch.setattr(run_module, "Progress", Recording)
    grid = Telling(3, down={0}, dead_round=2)
    wf = Chatty(num_rounds=3, metrics={"test_accuracy": 0.25}, finish_sends=True)
    quiet(wf, grid)
    dim = "[dim]{}[/dim]".format
    acc = "test_accuracy=0.25"
    skipped = f"{acc} [yellow]skipped 1[/yellow]"
    assert lives == [
        ("add", ""),
        # set-up, first exchange: nobody answered yet; then all 3 are in
        dim("set-up: 1/5 members answered"),
        dim("set-up: 3/3 members answered"),
        # second exchange: 3 answered (1 reply, 1 failure, 1 rejected) of the 6 sent
        dim("set-up: 4/8 members answered"),
        dim("set-up: 6/6 members answered"),
        dim("round 1: 1/5 members answered"),
        dim("round 1: 3/3 members answered"),
        acc,
        f"{acc} " + dim("round 2: 1/5 members answered"),
        f"{acc} " + dim("round 2: 3/3 members answered"),
        " [yellow]skipped 1[/yellow]",  # a skipped round has no metrics to show
        "[yellow]skipped 1[/yellow] " + dim("round 3: 1/5 members answered"),
        "[yellow]skipped 1[/yellow] " + dim("round 3: 3/3 members answered"),
        skipped,
        f"{skipped} " + dim("final phase: 1/5 members answered"),
        f"{skipped} " + dim("final phase: 1/1 members answered"),
        skipped,
    ]
