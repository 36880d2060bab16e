"""DepthFL (heads after every block, mutual self-distillation), InclusiveFL's momentum
distillation, per-member cost, and what travels on the wire for every method."""

import math

import numpy as np
import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")

import torch
import torch.nn.functional as F

from consortium.algorithms.fedra import (
    AllLarge,
    DepthFL,
    DepthFLConfig,
    FedRA,
    FedRAConfig,
    InclusiveFL,
    InclusiveFLConfig,
    LogitsOnly,
    fedra_client_app,
)
from consortium.algorithms.fedra.cost import ActivationMeter, peak_bytes, state_bytes
from consortium.algorithms.fedra.heads import (
    DepthHeads,
    head_depth,
    init_head_arrays,
    mutual_distillation_loss,
    rampup_weight,
)
from consortium.algorithms.fedra.inclusive import group_updates, nudge_top_blocks
from consortium.models.transformer import (
    LoraSettings,
    block_prefix,
    readout,
    sub_model,
    tiny_image_classifier,
    tiny_text_classifier,
    with_lora,
)
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig

LOCAL = LocalTrainConfig(epochs=1, lr=0.05, batch_size=16)


def inputs_for(family):
    if family == "bert":
        return tiny_text_classifier(3), {"input_ids": torch.randint(1, 100, (2, 7))}
    return tiny_image_classifier(3, family=family), {"pixel_values": torch.rand(2, 3, 16, 16)}


@pytest.mark.parametrize("family", ["bert", "vit", "dinov2"])
def test_readout_reproduces_the_models_own_head(family):
    base, inputs = inputs_for(family)
    model = with_lora(base, LoraSettings(r=2, alpha=4)).eval()
    out = model(**inputs, output_hidden_states=True)
    head = model.get_base_model().classifier
    torch.testing.assert_close(head(readout(model, out.hidden_states[-1])), out.logits)


def test_each_head_sees_only_the_blocks_below_it():
    model = with_lora(tiny_text_classifier(3, layers=4), LoraSettings(r=2, alpha=4)).eval()
    heads = init_head_arrays(model, range(1, 4), 3, seed=0)
    x = torch.randint(1, 100, (3, 6))
    deep = DepthHeads(sub_model(model, [0, 1, 2]), heads, 3, own_head_last=False).eval()
    outs = deep(x)
    assert len(outs) == 3
    for d in (1, 2):
        shallow = DepthHeads(sub_model(model, list(range(d))), heads, d, own_head_last=False)
        torch.testing.assert_close(shallow.eval()(x)[-1], outs[d - 1])
    full = DepthHeads(model, heads, 4, own_head_last=True).eval()
    assert len(full(x)) == 4
    torch.testing.assert_close(full(x)[-1], model(input_ids=x).logits)


def test_mutual_distillation_loss_matches_its_formula():
    torch.manual_seed(0)
    logits = [torch.randn(5, 3, requires_grad=True) for _ in range(3)]
    y = torch.randint(0, 3, (5,))
    ce = sum(F.cross_entropy(z, y) for z in logits)
    p = [torch.softmax(z.detach(), -1) for z in logits]
    kd = sum(
        (p[j] * (p[j].log() - p[o].log())).sum(1).mean()
        for o in range(3)
        for j in range(3)
        if j != o
    )
    got = mutual_distillation_loss(logits, y, kd_weight=0.7)
    assert math.isclose(got.item(), (ce + 0.7 * kd / 2).item(), rel_tol=1e-5)
    assert math.isclose(mutual_distillation_loss(logits, y, 0.0).item(), ce.item(), rel_tol=1e-6)
    same = [logits[0]] * 3
    assert math.isclose(
        mutual_distillation_loss(same, y, 5.0).item(), 3 * F.cross_entropy(logits[0], y).item()
    )
    # the teacher side is detached: the KL term alone pushes only each student
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3)
    loss = mutual_distillation_loss([a, b], y[:4], 1.0) - F.cross_entropy(a, y[:4])
    loss = loss - F.cross_entropy(b, y[:4])
    loss.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_rampup_weight():
    assert rampup_weight(2.0, 0, 1) == 2.0
    assert math.isclose(rampup_weight(1.0, 500, 0), math.exp(-5))
    assert rampup_weight(1.0, 500, 500) == 1.0 == rampup_weight(1.0, 500, 900)


@pytest.fixture(scope="module")
def federation(make_text_federation):
    return make_text_federation(per_member=48, train=40)


class Recording(LocalRuntime):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.log = []

    def _exchange(self, messages):
        replies, failures = super()._exchange(messages)
        self.log.append((dict(messages), dict(replies)))
        return replies, failures


def one_round(wf, federation, seed=1):
    _, _, views, model_fn = federation
    grid = Recording(fedra_client_app(model_fn, "cpu"), lambda c: views[c], 5, seed=seed)
    grid.start_round(0)
    wf.setup(grid)
    before = dict(wf.adapters)
    grid.start_round(1)
    metrics = wf.run_round(grid, 1)
    return grid, before, metrics


def test_depthfl_round_sends_heads_to_their_holders_and_averages_them(federation):
    x, y, _, model_fn = federation
    cfg = DepthFLConfig(capacities=(4, 2, 2, 1, 1), rounds=1, local=LOCAL)
    wf = DepthFL(cfg, model_fn, x[:60], y[:60])
    grid, before, metrics = one_round(wf, federation)
    sent, got = grid.log[-1]
    assert {head_depth(k) for k in before} - {None} == {1, 2, 3}
    for cid, msg in sent.items():
        depth = cfg.capacities[cid]
        assert msg.kind == "depthfl_train"
        heads = {head_depth(k) for k in msg.arrays} - {None}
        assert heads == set(range(1, min(depth, 3) + 1))
        has_own_head = any("classifier" in k for k in msg.arrays)
        assert has_own_head == (depth == 4)
        assert set(got[cid].arrays) == set(msg.arrays) - {"blocks"}
    for key, old in before.items():
        senders = [c for c in got if key in got[c].arrays]
        if not senders:
            assert np.array_equal(wf.adapters[key], old), key
            continue
        expected = np.mean([got[c].arrays[key] for c in senders], axis=0)
        np.testing.assert_allclose(wf.adapters[key], expected, rtol=1e-6, atol=1e-7)
        assert not np.array_equal(wf.adapters[key], old) or "lora_A" in key, key
    assert wf.trained_heads == {1, 2, 3, 4}
    assert {"last_head_accuracy", "ensemble_accuracy", "test_accuracy"} <= set(metrics)
    assert metrics["test_accuracy"] == metrics["ensemble_accuracy"]


def test_depthfl_when_nobody_holds_the_last_block(federation):
    x, y, _views, model_fn = federation
    cfg = DepthFLConfig(capacities=(1, 1, 2, 1, 2), rounds=2, local=LOCAL, eval_head="last")
    wf = DepthFL(cfg, model_fn, x[:60], y[:60])
    _grid, before, metrics = one_round(wf, federation)
    own_head = [k for k in before if "classifier" in k]
    assert own_head and all(np.array_equal(wf.adapters[k], before[k]) for k in own_head)
    assert wf.trained_heads == {1, 2}
    assert metrics["test_accuracy"] == metrics["last_head_accuracy"]


def test_momentum_nudge_mixes_only_the_shallow_top_blocks():
    prefix = "m.layer"
    keys = [f"{prefix}.{b}.q.lora_B" for b in range(4)] + ["head.w"]
    ref = {k: np.zeros(2) for k in keys}
    last = {
        2: {f"{prefix}.{b}.q.lora_B": np.full(2, 10.0 + b) for b in range(2)},
        4: {f"{prefix}.{b}.q.lora_B": np.full(2, 100.0 + b) for b in range(4)},
    }
    arrays = {
        0: {keys[0]: np.ones(2), "head.w": np.ones(2)},  # depth 1
        1: {keys[0]: np.ones(2), keys[1]: np.full(2, 2.0), "head.w": np.ones(2)},  # depth 2
        2: {k: np.full(2, 3.0) for k in keys},  # depth 4 (deepest)
    }
    depth_of = {0: 1, 1: 2, 2: 4}
    out = nudge_top_blocks(arrays, depth_of, [1, 2, 4], ref, last, 0.2, prefix)
    # depth 1: top block 0 mixed with the depth-2 group's blocks 0..1
    np.testing.assert_allclose(out[0][keys[0]], 0.8 * 1 + 0.2 * np.mean([10.0, 11.0]))
    # depth 2: top block 1 mixed with the depth-4 group's blocks 1..3; block 0 untouched
    np.testing.assert_allclose(out[1][keys[1]], 0.8 * 2 + 0.2 * np.mean([101.0, 102.0, 103.0]))
    np.testing.assert_array_equal(out[1][keys[0]], arrays[1][keys[0]])
    for cid in arrays:
        np.testing.assert_array_equal(out[cid]["head.w"], arrays[cid]["head.w"])
    assert all(np.array_equal(out[2][k], arrays[2][k]) for k in keys)
    # no deeper momentum yet: nothing changes
    same = nudge_top_blocks(arrays, depth_of, [1, 2, 4], ref, {}, 0.2, prefix)
    assert all(np.array_equal(same[c][k], arrays[c][k]) for c in arrays for k in arrays[c])
    means = group_updates(arrays, depth_of, ref, prefix)
    assert set(means) == {1, 2, 4} and "head.w" not in means[1]


def test_inclusivefl_momentum_changes_exactly_the_shallow_top_blocks(federation):
    x, y, views, model_fn = federation

    def run(momentum):
        cfg = InclusiveFLConfig(
            capacities=(4, 2, 2, 1, 1), momentum_distillation=momentum, rounds=2, local=LOCAL
        )
        wf = InclusiveFL(cfg, model_fn, x[:40], y[:40])
        grid = LocalRuntime(fedra_client_app(model_fn, "cpu"), lambda c: views[c], 5, seed=0)
        grid.start_round(0)
        wf.setup(grid)
        states = []
        for rnd in (1, 2):
            grid.start_round(rnd)
            wf.run_round(grid, rnd)
            states.append(dict(wf.adapters))
        return wf, states

    plain, a = run(False)
    _mom, b = run(True)
    assert all(np.array_equal(a[0][k], b[0][k]) for k in a[0])  # round 1: no momentum yet
    prefix = block_prefix(plain.full())
    changed = {k for k in a[1] if not np.array_equal(a[1][k], b[1][k])}
    tops = {f"{prefix}.0.", f"{prefix}.1."}  # top blocks of the depth-1 and depth-2 groups
    assert changed and all(any(t in k for t in tops) for k in changed), changed
    assert {t for t in tops if any(t in k and "lora_B" in k for k in changed)} == tops
    with pytest.raises(ValueError, match="momentum_distillation"):  # InclusiveFL's own option
        FedRAConfig(capacities=(2,), momentum_distillation=True)


def test_measured_memory_grows_with_depth_and_state_bytes_are_exact():
    model = with_lora(tiny_text_classifier(2, layers=4), LoraSettings(r=2, alpha=4))
    x = torch.randint(1, 100, (8, 12))
    peaks = []
    for blocks in ([0], [0, 1], [0, 1, 2, 3]):
        net = LogitsOnly(sub_model(model, blocks)).train()
        meter = ActivationMeter()
        meter.watch(net)
        with meter.forward():
            out = net(x).sum()
        out.backward()
        peaks.append(meter.peak)
    assert 0 < peaks[0] < peaks[1] < peaks[2]
    sb = state_bytes(model, "sgd", 0.9)
    assert sb["param_bytes"] == 4 * sum(p.numel() for p in model.parameters())
    assert sb["grad_bytes"] == sb["optimizer_bytes"] == sb["trainable_bytes"]
    assert state_bytes(model, "adam")["optimizer_bytes"] == 2 * sb["trainable_bytes"]
    assert state_bytes(model, "sgd", 0.0)["optimizer_bytes"] == 0
    assert peak_bytes({"param_bytes": 1, "grad_bytes": 2, "activation_bytes": 3}) == 6


def test_member_cost_is_logged_relative_to_the_full_model(federation):
    x, y, _, model_fn = federation
    cfg = FedRAConfig(capacities=(4, 2, 2, 1, 1), rounds=1, local=LOCAL)
    wf = FedRA(cfg, model_fn, x[:60], y[:60])
    _, _, metrics = one_round(wf, federation)
    cost = metrics["member_cost"]
    assert set(cost) == {str(c) for c in range(5)}
    assert all(c["train_time_s"] > 0 and c["activation_bytes"] > 0 for c in cost.values())
    assert 0.9 < cost["0"]["peak_vs_full"] < 1.1  # holds all 4 blocks
    assert cost["3"]["peak_vs_full"] < cost["1"]["peak_vs_full"] < cost["0"]["peak_vs_full"]
    summary = wf.finish(None)
    assert summary["member_cost"]["3"]["rounds"] == 1


METHODS = {
    "fedra": lambda caps: (FedRA, FedRAConfig(capacities=caps, local=LOCAL, rounds=1)),
    "all_large": lambda caps: (AllLarge, FedRAConfig(capacities=caps, local=LOCAL, rounds=1)),
    "inclusivefl_momentum": lambda caps: (
        InclusiveFL,
        InclusiveFLConfig(capacities=caps, momentum_distillation=True, local=LOCAL, rounds=1),
    ),
    "depthfl": lambda caps: (DepthFL, DepthFLConfig(capacities=caps, local=LOCAL, rounds=1)),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_only_adapters_and_heads_travel(federation, method):
    x, y, _, model_fn = federation
    cls, cfg = METHODS[method]((4, 3, 2, 1, 1))
    wf = cls(cfg, model_fn, x[:40], y[:40])
    grid, _, _ = one_round(wf, federation)
    sent, got = grid.log[-1]

    def travels(key):
        return "lora_" in key or "classifier" in key or head_depth(key) is not None

    full_params = sum(p.numel() * p.element_size() for p in model_fn().parameters())
    exchanged = sum(v.nbytes for v in wf.adapters.values())
    assert exchanged < full_params / 10
    for cid, msg in sent.items():
        assert all(travels(k) for k in msg.arrays if k != "blocks"), msg.arrays.keys()
        assert all(travels(k) for k in got[cid].arrays)
        for m, counted in (
            (msg, grid.record.bytes_down[cid]),
            (got[cid], grid.record.bytes_up[cid]),
        ):
            payload = sum(a.nbytes for k, a in m.arrays.items() if k != "blocks")
            assert counted == m.nbytes and payload <= exchanged
            assert m.nbytes - payload < 8000  # names, block list and scalars only
