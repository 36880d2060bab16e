import json
import math

import numpy as np
import pytest

from consortium.algorithms.aequa import (
    Aequa,
    AequaConfig,
    AequaTrainingTime,
    AequaTrainingTimeConfig,
    aequa_client_app,
)
from consortium.algorithms.cgsv import CGSV, CGSVConfig
from consortium.algorithms.fairness import own_model_client_app
from consortium.algorithms.iafl import IAFL, IAFLConfig
from consortium.core import load_checkpoint, read_jsonl, run_workflow
from consortium.data import build_federated_data
from consortium.models import build_model
from consortium.models import slimmable as _slimmable  # noqa: F401  (registers slim_cnn)
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig


@pytest.fixture(scope="module")
def digits():
    """Digits split among 6 members by quantity skew (sizes ~ Dir(0.5)); 20 % server val."""
    return build_federated_data(
        "digits", num_clients=6, scheme="quantity", seed=0, server_val_fraction=0.2, min_size=20
    )


def model_fn_for(data, channels=(16, 32), hidden=64):
    return lambda: build_model(
        "slim_cnn", data.input_shape, data.num_classes, channels=list(channels), hidden=hidden
    )


LOCAL = LocalTrainConfig(lr=0.05, batch_size=16)


def aequa(data, cls=Aequa, **kw):
    model_fn = model_fn_for(data)
    config_cls = AequaTrainingTimeConfig if cls is AequaTrainingTime else AequaConfig
    cfg = config_cls(local=LOCAL, **kw)
    wf = cls(cfg, model_fn, data.val_x, data.val_y, data.test_x, data.test_y, device="cpu")
    grid = LocalRuntime(aequa_client_app(model_fn, "cpu"), data.client, data.num_clients, seed=0)
    return wf, grid


def test_short_aequa_run_rewards_data_size_commensurately(digits):
    """Contribution = data size (members report it): Pearson between sizes and the reward
    models' test accuracies must be >= 0.9; the top contributor gets the full model."""
    wf, grid = aequa(
        digits,
        rounds=10,
        contribution="data_size",
        measure_standalone=False,
        eval_every=5,
    )
    result = run_workflow(wf, grid, progress=False)
    s = result.summary
    sizes = {str(c): float(len(digits.client(c).train_indices)) for c in range(6)}
    assert s["contributions"] == sizes
    assert s["pearson"] >= 0.9, s["pearson"]
    top = max(sizes, key=sizes.get)
    assert s["widths"][top] == 1.0
    assert s["reward_test_accuracy"][top] == pytest.approx(s["test_accuracy"])
    assert all(0.1 <= w <= 1.0 for w in s["widths"].values())
    # Rewards are ordered like contributions.
    order = sorted(sizes, key=sizes.get)
    assert [s["widths"][c] for c in order] == sorted(s["widths"].values())
    assert s["test_accuracy"] > 0.8
    assert set(s["client_accuracy"]) == set(sizes)
    curve = s["width_curve"]
    assert curve["width"][0] == pytest.approx(0.1) and curve["width"][-1] == 1.0
    assert np.all(np.diff(curve["monotone_accuracy"]) >= 0)
    # Members received smaller tensors: bytes down of the reward phase follow the widths.
    assert s["curve_split"] == "validation"


def test_aequa_resumes_bit_identically_after_a_crash(digits, tmp_path):
    def make():
        return aequa(digits, rounds=4, contribution="cgsv", eval_every=2)

    full = run_workflow(*make(), run_dir=tmp_path / "full", progress=False)

    class Crash(Exception):
        pass

    def crash_after_2(rnd, metrics):
        if rnd == 3:
            raise Crash

    with pytest.raises(Crash):
        run_workflow(*make(), run_dir=tmp_path / "cut", progress=False, callbacks=[crash_after_2])
    assert load_checkpoint(tmp_path / "cut")["next_round"] == 3
    resumed = run_workflow(*make(), run_dir=tmp_path / "cut", resume=True, progress=False)
    assert resumed.resumed_from == 2
    for k in full.final_arrays:
        assert np.array_equal(full.final_arrays[k], resumed.final_arrays[k]), k
    for key in ("contributions", "widths", "reward_test_accuracy", "client_accuracy"):
        assert full.summary[key] == resumed.summary[key], key
    rounds = [r["round"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")]
    assert rounds == [0, 1, 2, 3, 4]


def test_training_time_variant_sends_each_member_its_width(digits):
    wf, grid = aequa(
        digits,
        cls=AequaTrainingTime,
        rounds=5,
        warmup_rounds=2,
        curve_step=0.2,
        contribution="data_size",
        measure_standalone=False,
        eval_every=5,
    )
    result = run_workflow(wf, grid, progress=False)
    warm, late = result.rounds[1], result.rounds[-1]  # rounds[0] is the set-up phase
    assert set(warm["widths"].values()) == {1.0}
    widths = {int(c): w for c, w in late["widths"].items()}
    assert max(widths.values()) == 1.0 and min(widths.values()) < 1.0
    full_bytes = max(late["bytes_down_by_client"].values())
    for c, w in widths.items():
        down = late["bytes_down_by_client"][str(c)]
        assert (down < full_bytes) == (w < 1.0)  # narrower members never receive the full model
    assert math.isfinite(result.summary["pearson"])
    assert result.summary["test_accuracy"] > 0.5


def test_cgsv_and_iafl_run_and_resume(digits, tmp_path):
    model_fn = model_fn_for(digits, (8, 16), 32)
    for cls, cfg in [
        (CGSV, CGSVConfig(rounds=3, local=LOCAL, contribution="data_size")),
        (IAFL, IAFLConfig(rounds=3, local=LOCAL, q=0.3)),
    ]:

        def make(cls=cls, cfg=cfg):
            wf = cls(cfg, model_fn, digits.val_x, digits.val_y, digits.test_x, digits.test_y, "cpu")
            app = own_model_client_app(model_fn, "cpu")
            return wf, LocalRuntime(app, digits.client, digits.num_clients, seed=3)

        full = run_workflow(*make(), run_dir=tmp_path / cls.name / "full", progress=False)
        s = full.summary
        assert set(s["client_accuracy"]) == {str(c) for c in range(6)}
        assert 0.0 <= s["ipr"] <= 1.0 and set(s["standalone_accuracy"]) == set(s["contributions"])
        assert len(s["reward_test_accuracy"]) == 6

        def crash(rnd, metrics):
            if rnd == 2:
                raise RuntimeError("crash")

        cut = tmp_path / cls.name / "cut"
        with pytest.raises(RuntimeError):
            run_workflow(*make(), run_dir=cut, progress=False, callbacks=[crash])
        resumed = run_workflow(*make(), run_dir=cut, resume=True, progress=False)
        for k in full.final_arrays:
            assert np.array_equal(full.final_arrays[k], resumed.final_arrays[k]), (cls.name, k)
        assert s["reward_test_accuracy"] == resumed.summary["reward_test_accuracy"]


def test_experiment_methods_share_one_standalone_phase(tmp_path):
    from consortium.experiment import experiment_from_dict, run_experiment

    raw = {
        "name": "fair-tiny",
        "methods": ["aequa", "aequa_training_time", "cgsv", "iafl"],
        "data": {
            "dataset": "digits",
            "num_clients": 4,
            "partition": "quantity",
            "min_size": 40,
            "server_val_fraction": 0.2,
        },
        "model": {"name": "slim_cnn", "options": {"channels": [4, 8], "hidden": 16}},
        "train": {"batch_size": 32, "lr": 0.1},
        "federation": {"rounds": 2},
        "aequa": {"grid_step": 0.1},
        "aequa_training_time": {"warmup_rounds": 1, "contribution": "cgsv"},
        "iafl": {"contribution": "standalone"},
    }
    out = run_experiment(experiment_from_dict(raw), tmp_path, progress=False)
    for name, s in out.summaries.items():
        for key in ("test_accuracy", "mean_client_accuracy", "client_accuracy", "pearson", "ipr"):
            assert key in s, (name, key)
        assert set(s["standalone_accuracy"]) == {"0", "1", "2", "3"}, name
    first = out.summaries["aequa"]["standalone_accuracy"]
    assert all(s["standalone_accuracy"] == first for s in out.summaries.values())
    # Only the first method ran the phase; the others reused it (no train_alone messages).
    setup = {n: [r for r in res.rounds if r["round"] == 0] for n, res in out.results.items()}
    assert setup["aequa"][0]["clients_sent"] == 4
    assert all(
        not rows or rows[0]["clients_sent"] == 0 for n, rows in setup.items() if n != "aequa"
    )
    assert "widths" in out.summaries["aequa"] and "widths" in out.summaries["aequa_training_time"]
    summary = json.loads((tmp_path / "aequa" / "summary.json").read_text())
    assert summary["contribution_kind"] == "standalone"
    # the family's plots are drawn by the run itself
    assert (tmp_path / "aequa" / "width_curve.png").exists()
    for name in ("aequa", "cgsv", "iafl"):
        assert (tmp_path / name / "contribution_vs_reward.png").exists(), name
