"""Explanation-guided unlearning: the mask, what crosses the wire, and forgetting on digits."""

import itertools

import numpy as np
import pytest
import torch

from consortium.algorithms.base.supervised import supervised_client_app
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
from consortium.metrics.unlearning import loss_threshold, sample_outputs
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig, evaluate


def grid_for(data, model_fn, cls=LocalRuntime):
    app = add_unlearning_handlers(supervised_client_app(model_fn, "cpu"), model_fn, "cpu")
    return cls(app, data.client, data.num_clients, seed=0)


class RecordingRuntime(LocalRuntime):
    """Keeps every reply so tests can inspect exactly what left each member."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = []

    def _exchange(self, messages):
        replies, failures = super()._exchange(messages)
        self.log += [(messages[c].kind, c, r) for c, r in replies.items()]
        return replies, failures


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
    # Members explain and then only check the server's result on their own data: no member
    # trains, and a check's reply carries figures, not arrays.
    assert {kind for kind, _, _ in grid.log} == {"explain", "unlearn_check"}
    assert all(not r.arrays for kind, _, r in grid.log if kind == "unlearn_check")
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


def test_server_scheme_lowers_the_row_by_what_the_members_report(trained):
    """When the class still stands out on the members' samples after a server round (their
    class margin > 0), the next round lowers the row on the impressions twice as far plus
    that margin, instead of repeating the same round."""
    data, model_fn, weights = trained
    cfg = SelectiveUnlearningConfig(
        ratio=0.1,
        rounds=3,
        scheme="server",
        class_score_quantile=0.0,
        local=LocalTrainConfig(lr=0.01),
    )
    wf = SelectiveUnlearning(
        cfg, UnlearningRequest("class", class_id=3), model_fn, weights, 10, data.input_shape, "cpu"
    )
    result = run_workflow(wf, grid_for(data, model_fn), progress=False)
    rounds = [r for r in result.rounds if r.get("phase") == "train" and "row_slack" in r]
    assert rounds[0]["row_slack"] == cfg.server_row_slack
    assert rounds[0]["members_class_margin"] > 0  # quantile 0: the class still stands out
    for before, after in itertools.pairwise(rounds):
        margin = before["members_class_margin"]
        grown = 2 * before["row_slack"] + margin if margin > 0 else before["row_slack"]
        assert after["row_slack"] == pytest.approx(grown)
    assert rounds[1]["members_class_margin"] < rounds[0]["members_class_margin"]


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
        dict(contrast="max"),
        dict(forget_accuracy=1.5),
        dict(class_score_quantile=-0.1),
        dict(row_steps=-1),
    ],
)
def test_bad_selective_options_raise(bad):
    with pytest.raises(ValueError):
        SelectiveUnlearningConfig(**bad)


def test_retain_fraction_caps_a_round_of_fine_tuning(trained):
    data, model_fn, weights = trained
    request = UnlearningRequest("class", class_id=3)

    def steps(fraction):
        cfg = SelectiveUnlearningConfig(rounds=1, retain_fraction=fraction, forget_accuracy=0.0)
        wf = SelectiveUnlearning(cfg, request, model_fn, weights, 10, data.input_shape, "cpu")
        grid = grid_for(data, model_fn, RecordingRuntime)
        run_workflow(wf, grid, progress=False)
        return {c: r.metrics["steps"] for kind, c, r in grid.log if kind == "unlearn_train"}

    for cid, taken in steps(0.05).items():
        member = data.client(cid)
        forget, retain = request.split(cid, member.train_indices, member.y)
        cap = max(np.ceil(round(0.05 * len(retain)) / 32), np.ceil(len(forget) / 32))
        assert 1 <= taken <= cap, (cid, taken, cap)


def test_members_stop_once_forgotten_and_the_server_stops_asking(trained):
    data, model_fn, weights = trained
    request = UnlearningRequest("class", class_id=3)
    cfg = SelectiveUnlearningConfig(rounds=6)
    wf = SelectiveUnlearning(cfg, request, model_fn, weights, 10, data.input_shape, "cpu")
    grid = grid_for(data, model_fn, RecordingRuntime)
    result = run_workflow(wf, grid, progress=False)
    used = result.summary["fine_tuning_rounds"]
    assert result.summary["members_found_forgotten"] and 1 <= used < 6
    rounds = {r["round"]: r for r in result.rounds}
    # The round after the last fine-tuning asked the members, who found the model forgotten
    # and took no step; then the run stopped: no more rounds, and the summary says so.
    assert rounds[used + 1]["members_fine_tuning"] == 0
    assert rounds[used + 1]["members_forget_accuracy"] <= cfg.forget_accuracy
    assert max(r for r in rounds if r > 0 and rounds[r]["phase"] == "train") == used + 1
    assert result.summary["rounds"] == used + 1 and result.summary["round_budget"] == 6
    f1, _ = class_accuracy(model_fn, result.final_arrays, data, 3)
    assert f1 <= 0.02


def test_first_round_of_a_class_request_does_not_judge_the_original(trained):
    """The original was trained on the class: members skip the pass that would find it not
    forgotten, and report no figures for it; a member's request is still judged, since its
    samples may already sit at unseen samples' loss."""
    data, model_fn, weights = trained

    def first_round(request):
        cfg = SelectiveUnlearningConfig(rounds=2)
        wf = SelectiveUnlearning(cfg, request, model_fn, weights, 10, data.input_shape, "cpu")
        grid = grid_for(data, model_fn, RecordingRuntime)
        result = run_workflow(wf, grid, progress=False)
        replies = [r for kind, _, r in grid.log if kind == "unlearn_train"]
        return result, replies[: len({c for kind, c, _ in grid.log if kind == "unlearn_train"})]

    result, replies = first_round(UnlearningRequest("class", class_id=3))
    holding = [r for r in replies if r.metrics["num_forget"] > 0]
    assert holding and all("forget_accuracy" not in r.metrics for r in holding)
    assert all(r.metrics["steps"] >= 1 for r in holding)
    train = [r for r in result.rounds if r.get("phase") == "train"]
    assert "members_forget_accuracy" not in train[0]  # no made-up figure for the original
    assert train[1]["members_forget_accuracy"] <= 0.02

    _, replies = first_round(UnlearningRequest("client", client_id=1))
    holding = [r for r in replies if r.metrics["num_forget"] > 0]
    assert holding and all("forget_accuracy" in r.metrics for r in holding)


def test_only_members_holding_forget_data_fine_tune(trained):
    data, model_fn, weights = trained
    request = UnlearningRequest("class_at_client", class_id=5, client_id=2)
    cfg = SelectiveUnlearningConfig(rounds=2)
    wf = SelectiveUnlearning(cfg, request, model_fn, weights, 10, data.input_shape, "cpu")
    grid = grid_for(data, model_fn, RecordingRuntime)
    run_workflow(wf, grid, progress=False)
    assert {c for kind, c, _ in grid.log if kind == "unlearn_train"} == {2}


def member_losses(trained, member):
    """(the trained model, its mean loss on the member's held-out samples, the member's
    training indices, its loss on each)."""
    data, model_fn, weights = trained
    model = model_fn()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    held = member.test_indices
    held_loss = float(sample_outputs(model, data.pool_x[held], data.pool_y[held])[0].mean())
    own = member.train_indices
    losses, _ = sample_outputs(model, data.pool_x[own], data.pool_y[own])
    return model, held_loss, own, losses


def test_a_members_samples_are_forgotten_to_the_level_of_unseen_samples(trained):
    """A samples request stops where a model that never saw them would be: their loss at the
    member's held-out loss under the original model, not driven to misclassification (which
    would single them out)."""
    data, model_fn, weights = trained
    member = data.client(1)
    before, held_loss, own, losses = member_losses(trained, member)
    # Samples the model has learned (below the held-out loss): there is something to forget.
    ids = tuple(int(i) for i in own[losses < held_loss][:40])
    request = UnlearningRequest("samples", client_id=1, sample_ids=ids)
    cfg = SelectiveUnlearningConfig(rounds=5)
    wf = SelectiveUnlearning(cfg, request, model_fn, weights, 10, data.input_shape, "cpu")
    result = run_workflow(wf, grid_for(data, model_fn), progress=False)
    assert result.summary["members_found_forgotten"]
    model = model_fn()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in result.final_arrays.items()})
    idx = np.asarray(ids)
    forgot = evaluate(model, data.pool_x, data.pool_y, idx)
    # The level of unseen samples, read on the model being unlearned (as retraining keeps it).
    assert forgot["loss"] >= held_loss
    assert forgot["loss"] > evaluate(before, data.pool_x, data.pool_y, idx)["loss"]
    assert forgot["accuracy"] >= 0.5  # not pushed into misclassification
    _, rest = request.split(1, member.train_indices, data.pool_y)
    kept = evaluate(model, data.pool_x, data.pool_y, rest)["accuracy"]
    assert kept >= evaluate(before, data.pool_x, data.pool_y, rest)["accuracy"] - 0.05


def test_samples_that_already_look_unseen_are_left_alone(trained):
    """Samples whose loss is already at the member's held-out level need no step: the model
    comes back unchanged, at no fine-tuning cost."""
    data, model_fn, weights = trained
    _, held_loss, own, losses = member_losses(trained, data.client(1))
    ids = tuple(int(i) for i in own[np.argsort(-losses)][:5])  # its hardest samples
    assert losses[np.argsort(-losses)][:5].mean() >= held_loss
    request = UnlearningRequest("samples", client_id=1, sample_ids=ids)
    wf = SelectiveUnlearning(
        SelectiveUnlearningConfig(rounds=3), request, model_fn, weights, 10, data.input_shape, "cpu"
    )
    result = run_workflow(wf, grid_for(data, model_fn), progress=False)
    assert result.summary["members_found_forgotten"]
    assert result.summary["fine_tuning_rounds"] == 0
    assert all(np.array_equal(result.final_arrays[k], v) for k, v in weights.items())


def test_retiring_the_class_row_touches_that_row_alone(trained):
    from consortium.algorithms.unlearning.stopping import class_margin, retire_class_row

    data, model_fn, weights = trained
    model = model_fn()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    f = np.flatnonzero(data.pool_y == 3)[:60]
    r = np.flatnonzero(data.pool_y != 3)[:120]
    fx, rx = torch.from_numpy(data.pool_x[f]), torch.from_numpy(data.pool_x[r])
    ry = torch.from_numpy(data.pool_y[r])
    with torch.no_grad():
        assert class_margin(model(fx), model(rx), 3, 0.9) > 0
        before = model(rx).argmax(1)
    steps = retire_class_row(
        model, 3, fx, rx, ry, LocalTrainConfig(lr=0.01), quantile=0.9, max_steps=200
    )
    assert 0 < steps < 200
    after = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for name, old in weights.items():
        changed = ~np.isclose(old, after[name])
        if name == "classifier.3.weight":
            assert changed[3].any() and not np.delete(changed, 3, axis=0).any()
        elif name == "classifier.3.bias":
            assert changed.tolist() == [i == 3 for i in range(10)]
        else:
            assert not changed.any(), name
    with torch.no_grad():
        assert class_margin(model(fx), model(rx), 3, 0.9) <= -1.0
        now = model(rx).argmax(1)
    # Only an answer "3" can change: no retained sample is pulled towards another class.
    assert torch.equal(now[before != 3], before[before != 3])


def test_others_forget_term_moves_the_label_s_probability_onto_the_rest():
    from consortium.algorithms.unlearning.losses import forget_term

    logits = torch.tensor([[4.0, 1.0, 0.0, -1.0], [0.5, 3.0, 0.2, 0.1]], requires_grad=True)
    y = torch.tensor([0, 1])
    forget_term(logits, y, "others", 4, torch.Generator()).backward()
    p = torch.softmax(logits.detach(), 1)
    grad = logits.grad * len(y)
    for i, label in enumerate(y.tolist()):
        assert torch.isclose(grad[i, label], p[i, label], atol=1e-6)  # pushes the label down
        others = [j for j in range(4) if j != label]
        ratio = grad[i, others] / p[i, others]
        assert torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-5)  # in proportion
        assert (ratio < 0).all()  # ... and the others up


def test_per_class_contrast_rejects_a_channel_one_other_class_depends_on():
    from consortium.algorithms.unlearning.explain import contrasted

    # Channel 0 serves the forgotten class and, as much, class 2 (nine other classes would
    # hide it in a mean); channel 1 serves the forgotten class alone.
    forget = np.array([[1.0, 1.0], [0.8, 0.8]])
    labels = np.repeat(np.arange(1, 10), 2)
    retain = np.zeros((2, len(labels)))
    retain[0, labels == 2] = 1.0
    per_class = contrasted(forget, retain, labels, "per_class")
    mean = contrasted(forget, retain, labels, "mean")
    assert per_class.argmax() == 1 and per_class[0] <= 0
    assert mean[0] > 0.8  # the mean barely notices class 2
    assert contrasted(forget, None, None, "per_class").tolist() == forget.mean(1).tolist()
