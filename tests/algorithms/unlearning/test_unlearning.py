"""Explanation-guided unlearning: the mask, what crosses the wire, and forgetting on digits."""

import numpy as np
import pytest
import torch

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.algorithms.unlearning import (
    SelectiveUnlearning,
    SelectiveUnlearningConfig,
    TfidfPrune,
    UnlearningRequest,
    add_unlearning_handlers,
    channel_layers,
    parameter_mask,
    select_channels,
    tfidf_scores,
)
from consortium.algorithms.unlearning.baselines import BaselineConfig
from consortium.core import run_workflow
from consortium.data import build_federated_data
from consortium.metrics.unlearning import loss_threshold
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig, evaluate


@pytest.fixture(scope="module")
def trained():
    data = build_federated_data("digits", num_clients=4, scheme="iid", seed=0)

    def model_fn():
        return build_model("cnn", data.input_shape, data.num_classes)

    cfg = FedAvgConfig(
        rounds=12, local=LocalTrainConfig(epochs=2, lr=0.05), eval_every=12, evaluate_clients=False
    )
    grid = LocalRuntime(supervised_client_app(model_fn, "cpu"), data.client, 4, seed=0)
    result = run_workflow(
        FedAvg(cfg, model_fn, data.test_x, data.test_y, "cpu"), grid, progress=False
    )
    assert result.summary["test_accuracy"] > 0.85
    return data, model_fn, result.final_arrays


class RecordingRuntime(LocalRuntime):
    """Keeps every reply so tests can inspect exactly what left each member."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = []

    def _exchange(self, messages):
        replies, failures = super()._exchange(messages)
        self.log += [(messages[c].kind, c, r) for c, r in replies.items()]
        return replies, failures


def grid_for(data, model_fn, cls=LocalRuntime):
    app = add_unlearning_handlers(supervised_client_app(model_fn, "cpu"), model_fn, "cpu")
    return cls(app, data.client, data.num_clients, seed=0)


def class_accuracy(model_fn, weights, data, cls):
    model = model_fn()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    hit = data.test_y == cls
    forget = evaluate(model, data.test_x[hit], data.test_y[hit])["accuracy"]
    retain = evaluate(model, data.test_x[~hit], data.test_y[~hit])["accuracy"]
    return forget, retain


def test_class_unlearning_forgets_the_class_and_keeps_the_rest(trained):
    data, model_fn, weights = trained
    request = UnlearningRequest("class", class_id=3)
    cfg = SelectiveUnlearningConfig(ratio=0.1, rounds=2)
    wf = SelectiveUnlearning(cfg, request, model_fn, weights, 10, data.input_shape, "cpu")
    grid = grid_for(data, model_fn, RecordingRuntime)
    result = run_workflow(wf, grid, progress=False)
    new = result.final_arrays
    f0, r0 = class_accuracy(model_fn, weights, data, 3)
    f1, r1 = class_accuracy(model_fn, new, data, 3)
    assert f0 > 0.8
    assert f1 <= 0.05, f1
    assert r1 >= r0 - 0.04, (r0, r1)

    # Only masked parameters changed.
    for name, before in weights.items():
        after = new[name]
        mask = wf.mask.get(name)
        if mask is None:
            assert np.array_equal(before, after), name
        else:
            assert np.array_equal(before[~mask], after[~mask]), name
    assert any(not np.array_equal(weights[n][m], new[n][m]) for n, m in wf.mask.items())

    # What left the members: scores per channel, then only masked entries.
    widths = {
        n: (m.out_channels if isinstance(m, torch.nn.Conv2d) else m.out_features)
        for n, m in channel_layers(model_fn())
    }
    explain = [r for kind, _, r in grid.log if kind == "explain"]
    assert explain
    for reply in explain:
        assert set(reply.arrays) <= set(widths)
        assert all(v.shape == (widths[k],) for k, v in reply.arrays.items())
    counts = {n: int(m.sum()) for n, m in wf.mask.items()}
    train = [r for kind, _, r in grid.log if kind == "unlearn_train"]
    assert train
    for reply in train:
        assert {k: v.shape for k, v in reply.arrays.items()} == {k: (c,) for k, c in counts.items()}
    up = sum(r.nbytes for r in train)
    full = sum(v.nbytes for v in weights.values()) * len(train)
    assert up < 0.2 * full


def test_member_without_forget_data_sends_no_scores(trained):
    data, model_fn, weights = trained
    request = UnlearningRequest("class_at_client", class_id=5, client_id=2)
    cfg = SelectiveUnlearningConfig(ratio=0.1, rounds=1)
    wf = SelectiveUnlearning(cfg, request, model_fn, weights, 10, data.input_shape, "cpu")
    grid = grid_for(data, model_fn, RecordingRuntime)
    run_workflow(wf, grid, progress=False)
    asked = {c for kind, c, _ in grid.log if kind == "explain"}
    assert asked == {2}


def test_server_scheme_needs_no_member_data_for_fine_tuning(trained):
    data, model_fn, weights = trained
    cfg = SelectiveUnlearningConfig(
        ratio=0.1, rounds=2, scheme="server", local=LocalTrainConfig(lr=0.01)
    )
    request = UnlearningRequest("class", class_id=3)
    wf = SelectiveUnlearning(cfg, request, model_fn, weights, 10, data.input_shape, "cpu")
    grid = grid_for(data, model_fn, RecordingRuntime)
    result = run_workflow(wf, grid, progress=False)
    assert {kind for kind, _, _ in grid.log} == {"explain"}
    f1, _ = class_accuracy(model_fn, result.final_arrays, data, 3)
    assert f1 < 0.5
    with pytest.raises(ValueError, match="class request"):
        SelectiveUnlearning(
            cfg,
            UnlearningRequest("client", client_id=1),
            model_fn,
            weights,
            10,
            data.input_shape,
            "cpu",
        )


def test_tfidf_prune_zeroes_and_keeps_pruned_channels(trained):
    data, model_fn, weights = trained
    wf = TfidfPrune(
        BaselineConfig(rounds=1, prune_ratio=0.1),
        UnlearningRequest("class", 3),
        model_fn,
        weights,
        10,
        device="cpu",
    )
    result = run_workflow(wf, grid_for(data, model_fn), progress=False)
    for name, m in wf.prune.items():
        assert np.all(result.final_arrays[name][m] == 0)


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        (lambda arrays: arrays.pop("counts"), "missing arrays ['counts']"),
        (lambda arrays: arrays.update(counts=np.ones(3)), "has shape (3,)"),
        (lambda arrays: arrays.update(extra=np.ones(2)), "unexpected arrays ['extra']"),
    ],
)
def test_malformed_class_activations_are_rejected_and_pruning_goes_on(trained, attack, reason):
    data, model_fn, weights = trained
    grid = grid_for(data, model_fn)
    honest = grid.app._handlers["class_activations"]

    def activations(msg, ctx):
        reply = honest(msg, ctx)
        if ctx.client_id == 1:
            attack(reply.arrays)
        return reply

    grid.app._handlers["class_activations"] = activations
    request = UnlearningRequest("class", 3)
    wf = TfidfPrune(BaselineConfig(rounds=1, prune_ratio=0.1), request, model_fn, weights, 10)
    result = run_workflow(wf, grid, progress=False)
    setup = result.rounds[0]
    assert setup["replies"] == 3 and reason in setup["rejected"]["1"]
    assert all(np.isfinite(a).all() for a in result.final_arrays.values())


def test_request_split_and_validation():
    labels = np.array([0, 1, 1, 2, 1])
    idx = np.array([0, 1, 2, 3, 4])
    f, r = UnlearningRequest("class", class_id=1).split(0, idx, labels)
    assert f.tolist() == [1, 2, 4] and r.tolist() == [0, 3]
    f, r = UnlearningRequest("class_at_client", class_id=1, client_id=3).split(0, idx, labels)
    assert f.size == 0 and r.tolist() == idx.tolist()
    f, _ = UnlearningRequest("client", client_id=0).split(0, idx, labels)
    assert f.tolist() == idx.tolist()
    f, _ = UnlearningRequest("samples", client_id=0, sample_ids=(3, 9)).split(0, idx, labels)
    assert f.tolist() == [3]
    for bad in [
        dict(kind="class"),
        dict(kind="client"),
        dict(kind="samples", client_id=1),
        dict(kind="nope"),
    ]:
        with pytest.raises(ValueError):
            UnlearningRequest(**bad)


def test_selection_and_mask():
    scores = {"a": np.array([0.1, 0.9, 0.5, 0.0]), "b": np.array([0.2, 0.3])}
    per_layer = select_channels(scores, 0.5)
    assert per_layer["a"].tolist() == [False, True, True, False]
    assert per_layer["b"].tolist() == [False, True]
    overall = select_channels(scores, 0.5, per_layer=False)
    assert overall["a"].tolist() == [False, True, True, False]
    assert overall["b"].tolist() == [False, True]
    with pytest.raises(ValueError):
        select_channels(scores, 0.0)
    model = build_model("mlp", (1, 2, 2), 3, hidden=[4])
    mask = parameter_mask(model, {"net.1": np.array([True, False, False, True])}, forget_class=2)
    assert mask["net.1.weight"].sum() == 2 * 4 and mask["net.1.bias"].tolist() == [1, 0, 0, 1]
    assert mask["net.3.weight"][2].all() and mask["net.3.weight"][:2].sum() == 0


def test_tfidf_prefers_channels_specific_to_the_target_class():
    means = {"l": np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 5.0]])}
    s = tfidf_scores(means, 2)["l"]
    assert s.argmax() == 2 and s[0] < s[2]


def test_loss_threshold_separates():
    t = loss_threshold(np.array([0.1, 0.2, 0.15]), np.array([1.0, 2.0, 0.9]))
    assert 0.2 <= t < 0.9


def test_taylor_scores_track_ablation_scores(trained):
    from scipy.stats import spearmanr

    from consortium.algorithms.unlearning import ablation_scores
    from consortium.algorithms.unlearning.explain import taylor_scores

    data, model_fn, weights = trained
    model = model_fn()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    f = np.flatnonzero(data.pool_y == 3)[:64]
    r = np.flatnonzero(data.pool_y != 3)[:64]
    forget, retain = (data.pool_x[f], data.pool_y[f]), (data.pool_x[r], data.pool_y[r])
    exact = ablation_scores(model, forget, retain)
    approx = taylor_scores(model, forget, retain)
    assert set(exact) == set(approx)
    for name in exact:
        assert approx[name].shape == exact[name].shape
        assert spearmanr(exact[name], approx[name]).statistic > 0.6, name


@pytest.mark.parametrize(
    "bad",
    [
        dict(ratio=0.0),
        dict(rounds=0),
        dict(retain_fraction=0.0),
        dict(score="nope"),
        dict(scheme="peer"),
        dict(forget_weight=-1.0),
        dict(explain_samples=0),
    ],
)
def test_bad_selective_options_raise(bad):
    with pytest.raises(ValueError):
        SelectiveUnlearningConfig(**bad)


def test_retain_fraction_fine_tunes_on_fewer_samples(trained):
    data, model_fn, weights = trained
    request = UnlearningRequest("class", class_id=3)

    def samples_used(fraction):
        cfg = SelectiveUnlearningConfig(ratio=0.1, rounds=1, retain_fraction=fraction)
        wf = SelectiveUnlearning(cfg, request, model_fn, weights, 10, data.input_shape, "cpu")
        grid = grid_for(data, model_fn, RecordingRuntime)
        run_workflow(wf, grid, progress=False)
        return sum(r.metrics["num_examples"] for kind, _, r in grid.log if kind == "unlearn_train")

    assert samples_used(0.25) < 0.5 * samples_used(1.0)
