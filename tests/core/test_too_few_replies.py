"""Too few replies, handled one declared way in every phase (consortium.core.run):
a round is skipped, the set-up and the final phase are tried again and then stop the run
cleanly, a run without a successful round stops before its final phase, and finished
training is never lost."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.core import ClientApp, Grid, Message, Workflow, read_jsonl, run_workflow
from consortium.core.run import CHECKPOINT, MODEL, STOPPED, SUMMARY, RunStopped, load_checkpoint
from consortium.core.sampling import rng_for
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig


class DeadGrid(Grid):
    """Members echo; every member is down in the (round, attempt) pairs of ``dead``
    (``attempt=None``: every attempt of that round)."""

    def __init__(self, num_clients=2, dead=(), **kw):
        super().__init__(num_clients, **kw)
        self.dead = set(dead)
        self.asked = []  # (round, attempt) of every exchange

    def _exchange(self, messages):
        self.asked.append((self.round, self.attempt))
        if (self.round, self.attempt) in self.dead or (self.round, None) in self.dead:
            return {}, {c: "unplugged" for c in messages}
        return {c: m.reply(arrays=m.arrays) for c, m in messages.items()}, {}


class Phases(Workflow):
    """Sends in every phase; its finish changes state *before* it sends (the loop must undo
    that between tries)."""

    name = "phases"

    def __init__(self, num_rounds=3):
        self.num_rounds = num_rounds
        self.done = 0
        self.finish_calls = 0
        self.setups = 0

    def setup(self, grid):
        self.setups += 1
        grid.send({c: Message("hello") for c in grid.client_ids})
        return {"hello": True}

    def run_round(self, grid, rnd):
        grid.send({c: Message("train", arrays={"w": np.zeros(2)}) for c in grid.client_ids})
        self.done += 1
        return {"test_accuracy": 0.5}

    def finish(self, grid):
        self.finish_calls += 1
        self.done += 100  # state changed before the send: a retry must not see it
        grid.send({c: Message("evaluate") for c in grid.client_ids})
        return {"done": self.done}

    def final_arrays(self):
        return {"w": np.full(2, float(self.done))}

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state):
        self.done = state["done"]


def run(wf, grid, tmp_path=None, **kw):
    return run_workflow(wf, grid, run_dir=tmp_path, progress=False, **kw)


def summary_of(path):
    return json.loads((path / SUMMARY).read_text())


def stopped_of(path):
    """What a stopped run wrote: ``stopped.json``, and never a ``summary.json``."""
    assert not (path / SUMMARY).exists()
    return json.loads((path / STOPPED).read_text())


def test_a_complete_run_says_so(tmp_path):
    result = run(Phases(), DeadGrid(), tmp_path)
    assert result.summary["status"] == "complete" and "stop_reason" not in result.summary
    assert summary_of(tmp_path)["status"] == "complete" and not (tmp_path / STOPPED).exists()


def test_a_set_up_short_of_replies_is_tried_again_and_goes_on(tmp_path):
    grid = DeadGrid(dead={(0, 0), (0, 1)})
    wf = Phases()
    result = run(wf, grid, tmp_path)
    assert wf.setups == 3 and grid.asked[:3] == [(0, 0), (0, 1), (0, 2)]
    setup = result.rounds[0]
    assert setup["phase"] == "setup" and setup["hello"] is True
    # the line keeps what the failed tries cost: 2 members failed twice
    assert setup["failures"] == {"0": "unplugged", "1": "unplugged"}
    assert setup["clients_sent"] == 2 and setup["replies"] == 2
    assert result.summary["status"] == "complete" and result.summary["done"] == 103


def test_a_set_up_short_on_every_try_stops_before_anything_is_trained(tmp_path):
    grid = DeadGrid(dead={(0, None)})
    wf = Phases()
    with pytest.raises(RunStopped) as info:
        run(wf, grid, tmp_path, retries=1)
    msg = str(info.value)
    assert msg.startswith("set-up: round 0: 0 valid replies of 2, fewer than min_replies=1")
    assert "(2 tries); nothing was trained" in msg and "unplugged" in msg
    assert "\n" not in msg
    assert wf.setups == 2 and wf.done == 0
    assert not (tmp_path / CHECKPOINT).exists() and not (tmp_path / MODEL).exists()
    summary = stopped_of(tmp_path)
    assert summary["status"] == "stopped" and summary["stop_reason"] == msg
    assert info.value.summary == summary
    (line,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert line["round"] == 0 and line["stopped"] == msg


def test_a_final_phase_short_of_replies_is_tried_again_from_the_rounds_state(tmp_path):
    grid = DeadGrid(dead={(4, 0)})
    wf = Phases()
    result = run(wf, grid, tmp_path)
    assert wf.finish_calls == 2
    assert result.summary["done"] == 103  # not 203: the first try's change was undone
    assert result.summary["status"] == "complete"
    assert result.summary["client_failures"] == 2


def test_a_final_phase_short_on_every_try_keeps_the_trained_model_and_resumes(tmp_path):
    grid = DeadGrid(dead={(4, None)})
    wf = Phases()
    with pytest.raises(RunStopped) as info:
        run(wf, grid, tmp_path)
    msg = str(info.value)
    assert msg.startswith("final phase: round 4: 0 valid replies of 2")
    assert "(3 tries); the trained model is kept" in msg and str(tmp_path / MODEL) in msg
    assert "--resume tries the final phase again" in msg
    # training is not lost: the model after round 3, the checkpoint, the rounds' lines
    with np.load(tmp_path / MODEL) as saved:
        assert saved["w"].tolist() == [3.0, 3.0]
    state = load_checkpoint(tmp_path)
    assert state["next_round"] == 4 and not state["finished"]
    assert state["workflow"] == {"done": 3} and state["tries"] == {"4": 3}
    summary = stopped_of(tmp_path)
    assert summary["status"] == "stopped" and summary["rounds_skipped"] == 0
    assert summary["client_failures"] == 2  # members that failed in the phase (every try)
    # resuming runs the final phase only, drawing afresh (tries 3, 4, ...), and completes
    healed = DeadGrid()
    again = Phases()
    result = run(again, healed, tmp_path, resume=True)
    assert healed.asked == [(4, 3)] and again.setups == 0 and again.finish_calls == 1
    assert result.summary["status"] == "complete" and result.summary["done"] == 103
    assert [r["round"] for r in result.rounds] == [0, 1, 2, 3]
    assert summary_of(tmp_path)["status"] == "complete" and not (tmp_path / STOPPED).exists()


def test_a_run_without_a_successful_round_stops_before_its_final_phase(tmp_path):
    grid = DeadGrid(dead={(1, None), (2, None), (3, None)})
    wf = Phases()
    with pytest.raises(RunStopped) as info:
        run(wf, grid, tmp_path)
    msg = str(info.value)
    assert msg.startswith("no round succeeded: all 3 were skipped (last: round 3: 0 valid")
    assert msg.endswith("; the most common member failure (6x): unplugged")
    assert wf.finish_calls == 0 and not (tmp_path / MODEL).exists()
    summary = stopped_of(tmp_path)
    assert summary["status"] == "stopped" and summary["rounds_skipped"] == 3
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert [line["phase"] for line in lines] == ["setup", "train", "train", "train", "finish"]
    assert lines[-1]["stopped"] == msg


def test_one_successful_round_is_enough_to_finish(tmp_path):
    grid = DeadGrid(dead={(1, None), (3, None)})
    result = run(Phases(), grid, tmp_path)
    assert result.summary["status"] == "complete" and result.summary["rounds_skipped"] == 2


def test_retries_must_not_be_negative():
    with pytest.raises(ValueError, match="retries must be >= 0"):
        run(Phases(), DeadGrid(), retries=-1)


# -- the in-process runtime: dropouts of a retried phase are drawn afresh -------------------


def model_fn():
    return build_model("mlp", (1, 4, 4), 2, hidden=[4])


def ping_app():
    app = ClientApp()
    app.on("ping")(lambda msg, ctx: msg.reply())
    return app


def test_a_retry_draws_dropouts_afresh_and_the_first_try_draws_as_before():
    grid = LocalRuntime(ping_app(), lambda c: None, 8, failure_rate=0.5)
    msg = Message("ping")

    def dropped(attempt):
        grid.start_round(5, attempt)
        _, failures = grid._exchange({c: msg for c in range(8)})
        assert set(failures.values()) <= {"simulated dropout"}
        return tuple(sorted(failures))

    # try 0 draws what earlier versions drew: (seed, "dropout", round, exchange, member)
    expected = tuple(c for c in range(8) if rng_for(0, "dropout", 5, 1, c).random() < 0.5)
    assert dropped(0) == expected
    draws = {dropped(a) for a in range(1, 6)}
    assert len(draws) > 1 and draws != {expected}  # other tries lose other members
    assert dropped(3) == dropped(3)  # and each try is reproducible


def test_the_runtime_reports_progress_member_by_member():
    grid = LocalRuntime(ping_app(), lambda c: None, 4)
    seen = []
    grid.progress = lambda answered, asked: seen.append((answered, asked))
    grid.start_round(1)
    grid.send({c: Message("ping") for c in range(3)})
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_fedavg_with_heavy_dropouts_never_loses_its_training(tiny_federation, tmp_path):
    """The issue's crash: heavy dropouts with min_replies > 1 used to die in the final
    evaluation after all rounds, writing no model. Now a run completes, or stops with its
    model kept, or (no round trained) stops before its final phase: these six seeds give
    all three."""
    x, y, views = tiny_federation
    outcomes = set()
    for seed in range(6):
        cfg = FedAvgConfig(rounds=4, local=LocalTrainConfig(lr=0.1, batch_size=8))
        wf = FedAvg(cfg, model_fn, x[:20], y[:20], device="cpu")
        app = supervised_client_app(model_fn, "cpu")
        grid = LocalRuntime(app, lambda c: views[c], 4, seed=seed, failure_rate=0.75, min_replies=2)
        out = tmp_path / str(seed)
        try:
            result = run(wf, grid, out)
            outcomes.add("complete")
            assert result.summary["status"] == "complete"
        except RunStopped as err:
            summary = stopped_of(out)
            assert summary["status"] == "stopped" and summary["stop_reason"] == str(err)
            trained = summary["rounds_skipped"] < summary["rounds"]
            assert (out / MODEL).exists() == trained
            outcomes.add("final phase" if trained else "no round")
            if trained:
                assert str(err).startswith("final phase:")
                assert load_checkpoint(out)["next_round"] == 5
    assert outcomes == {"complete", "final phase", "no round"}


class Watched(DeadGrid):
    """Notes, at every exchange, whether someone listens to progress, and tells them."""

    def _exchange(self, messages):
        self.listened = getattr(self, "listened", [])
        self.listened.append(self.progress is not None)
        if self.progress is not None:
            self.progress(0, len(messages))
        return super()._exchange(messages)


def test_every_phase_is_shown_while_it_runs(tmp_path, capsys):
    grid = Watched()
    result = run_workflow(Phases(), grid, run_dir=tmp_path, progress=True, description="watch")
    assert result.summary["status"] == "complete"
    assert grid.listened == [True] * 5  # set-up, three rounds, the final phase
    assert grid.progress is None  # nobody listens once the run is over
    stopped = Watched(dead={(2, None), (1, None), (3, None)})
    with pytest.raises(RunStopped):
        run_workflow(Phases(), stopped, progress=True)
    assert stopped.progress is None
    assert "watch" in capsys.readouterr().out


def test_a_timeout_shorter_than_its_own_set_up_leaves_no_handler_behind():
    """member_timeout = 1e-9 fires inside the runtime's guard itself (before or after the
    handler): every member fails, and the signal handlers and timers are put back."""
    import signal
    import time

    grid = LocalRuntime(ping_app(), lambda c: None, 4, member_timeout=1e-9)
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGALRM))
    for rnd in range(25):
        grid.start_round(rnd)
        replies, failures = grid._exchange({c: Message("ping") for c in range(4)})
        assert len(replies) + len(failures) == 4
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGALRM)) == before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    time.sleep(0.6)  # no timer is left to fire into the code that runs next


# -- details of the stopped runs (what mutation testing asked for) ---------------------------


def test_no_retries_means_one_try():
    with pytest.raises(RunStopped, match=r"^set-up: .* \(1 tries\); nothing was trained"):
        run(Phases(), DeadGrid(dead={(0, None)}), retries=0)
    wf = Phases()
    assert run(wf, DeadGrid(), retries=0).summary["status"] == "complete" and wf.setups == 1


def test_a_one_round_run_whose_round_was_skipped_stops(tmp_path):
    grid = DeadGrid(dead={(1, None)})
    wf = Phases(num_rounds=1)
    with pytest.raises(
        RunStopped, match=r"^no round succeeded: all 1 were skipped \(last: round 1"
    ):
        run(wf, grid, tmp_path)
    assert wf.finish_calls == 0 and grid.round == 2  # the stop is the final phase's
    stop = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    assert (stop["round"], stop["phase"]) == (2, "finish")
    assert stop["time_s"] == 0.0 and stop["cpu_s"] == 0.0  # nothing ran in that phase
    summary = stopped_of(tmp_path)
    assert summary["bytes_up_total"] == sum(
        r["bytes_up"] for r in read_jsonl(tmp_path / "metrics.jsonl")
    )
    assert summary["bytes_down_total"] == sum(
        r["bytes_down"] for r in read_jsonl(tmp_path / "metrics.jsonl")
    )


def test_a_resumed_run_whose_lines_are_lost_stops_before_its_final_phase(tmp_path):
    run(Phases(), DeadGrid(), tmp_path)
    state = load_checkpoint(tmp_path)
    state["finished"] = False
    from consortium.core.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / CHECKPOINT, state)
    (tmp_path / "metrics.jsonl").unlink()
    wf = Phases()
    with pytest.raises(RunStopped) as info:
        run(wf, DeadGrid(), tmp_path, resume=True)
    assert str(info.value) == "no round succeeded: all 3 were skipped (last: )"
    assert wf.finish_calls == 0


def test_a_final_phase_stop_says_where_the_model_is_kept(tmp_path):
    tail = "; --resume tries the final phase again; the most common member failure (2x): unplugged"
    head = "final phase: round 4: 0 valid replies of 2, fewer than min_replies=1 (3 tries)"
    with pytest.raises(RunStopped) as info:
        run(Phases(), DeadGrid(dead={(4, None)}))
    assert str(info.value) == f"{head}; the trained model is kept{tail}"
    with pytest.raises(RunStopped) as info:
        run(Phases(), DeadGrid(dead={(4, None)}), tmp_path)
    assert str(info.value) == f"{head}; the trained model is kept ({tmp_path / MODEL}){tail}"
    stop = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    assert (stop["round"], stop["phase"], stop["stopped"]) == (4, "finish", str(info.value))


class Remembers(Phases):
    """Keeps a history in its state, which its finish extends in place before it sends."""

    def __init__(self):
        super().__init__()
        self.history = []

    def finish(self, grid):
        self.history.append("finish")
        return super().finish(grid)

    def state_dict(self):
        return {"done": self.done, "history": self.history}

    def load_state_dict(self, state):
        self.done, self.history = state["done"], state["history"]


def test_every_retry_of_the_final_phase_starts_from_a_deep_copy_of_the_state():
    wf = Remembers()
    result = run(wf, DeadGrid(dead={(4, 0), (4, 1)}))
    assert result.summary["done"] == 103 and wf.finish_calls == 3
    assert wf.history == ["finish"]  # not one entry per try
