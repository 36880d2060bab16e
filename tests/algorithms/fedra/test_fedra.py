"""FedRA: faithful sub-models, allocation rows, per-block aggregation, only adapters train."""

import numpy as np
import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")

import torch

from consortium.algorithms.fedra import (
    FedRA,
    FedRAConfig,
    LogitsOnly,
    allocate,
    fedra_client_app,
)
from consortium.core import run_workflow
from consortium.models.transformer import (
    LoraSettings,
    adapter_arrays,
    block_prefix,
    renumber,
    skip_blocks,
    sub_model,
    tiny_image_classifier,
    tiny_text_classifier,
    with_lora,
)
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig, train_local


def randomise_adapters(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()


@pytest.mark.parametrize("family", ["bert", "vit", "dinov2"])
@pytest.mark.parametrize("keep", [[0, 2, 3], [1], [0, 1, 2, 3]])
def test_sub_model_computes_exactly_what_its_blocks_compute(family, keep):
    if family == "bert":
        base = tiny_text_classifier(3)
        inputs = {
            "input_ids": torch.randint(1, 100, (2, 7)),
            "attention_mask": torch.tensor([[1] * 7, [1] * 5 + [0] * 2]),
        }
    else:
        base = tiny_image_classifier(3, family=family)
        inputs = {"pixel_values": torch.rand(2, 3, 16, 16)}
    model = with_lora(base, LoraSettings(r=4, alpha=8)).eval()
    randomise_adapters(model)
    sub = sub_model(model, keep).eval()
    assert sum(p.numel() for p in sub.parameters()) <= sum(p.numel() for p in model.parameters())
    handles = skip_blocks(model, keep)
    try:
        full_out = model(**inputs).logits
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(full_out, sub(**inputs).logits)


def test_bad_block_lists_are_rejected():
    model = tiny_text_classifier(2)
    for bad in ([], [2, 1], [0, 0], [4]):
        with pytest.raises(ValueError):
            sub_model(model, bad)


@pytest.mark.parametrize("seed", range(5))
def test_random_rows_have_exactly_capacity_distinct_blocks(seed):
    caps = [6, 5, 4, 3, 2, 2]
    rows = allocate(caps, 6, "random", np.random.default_rng(seed))
    assert rows.sum(1).tolist() == caps
    cover = allocate([2, 2, 1, 1], 6, "random", np.random.default_rng(seed), cover_all_layers=True)
    assert cover.sum(1).tolist() == [2, 2, 1, 1] and cover.any(0).all()


def test_baseline_allocations():
    caps = [4, 2, 1]
    first = allocate(caps, 4, "first", np.random.default_rng(0))
    assert [np.flatnonzero(r).tolist() for r in first] == [[0, 1, 2, 3], [0, 1], [0]]
    assert allocate(caps, 4, "all", np.random.default_rng(0)).all()
    assert allocate(caps, 4, "first_min", np.random.default_rng(0)).sum(1).tolist() == [1, 1, 1]


def test_renumber_maps_block_indices_only():
    arrays = {"m.layer.0.q.lora_A.weight": 1, "m.layer.1.q.lora_A.weight": 2, "head.weight": 3}
    out = renumber(arrays, "m.layer", {0: 3, 1: 5})
    assert set(out) == {"m.layer.3.q.lora_A.weight", "m.layer.5.q.lora_A.weight", "head.weight"}


@pytest.fixture(scope="module")
def federation(make_text_federation):
    return make_text_federation(per_member=60, train=48)


class Recording(LocalRuntime):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.sent, self.got = {}, {}

    def _exchange(self, messages):
        replies, failures = super()._exchange(messages)
        self.sent, self.got = dict(messages), dict(replies)
        return replies, failures


def test_each_block_is_averaged_over_the_members_that_trained_it(federation):
    x, y, views, model_fn = federation
    cfg = FedRAConfig(
        capacities=(3, 2, 2, 1, 1),
        rounds=1,
        local=LocalTrainConfig(epochs=1, lr=0.05, batch_size=16),
    )
    wf = FedRA(cfg, model_fn, x[:50], y[:50])
    grid = Recording(fedra_client_app(model_fn, "cpu"), lambda c: views[c], 5, seed=1)
    grid.start_round(0)
    wf.setup(grid)
    before = dict(wf.adapters)
    grid.start_round(1)
    metrics = wf.run_round(grid, 1)
    prefix = block_prefix(wf.full())
    for key, old in before.items():
        senders = [c for c, r in grid.got.items() if key in r.arrays]
        if not senders:
            assert np.array_equal(wf.adapters[key], old), key  # untrained block kept
            continue
        expected = np.mean([grid.got[c].arrays[key] for c in senders], axis=0)
        np.testing.assert_allclose(wf.adapters[key], expected, rtol=1e-6, atol=1e-7)
    # each member was sent exactly its blocks' adapters plus the head, and sent only those back
    for cid, msg in grid.sent.items():
        blocks = metrics["allocation"][str(cid)]
        assert len(blocks) == cfg.capacities[cid]
        sent_blocks = {
            int(k[len(prefix) + 1 :].split(".")[0])
            for k in msg.arrays
            if k.startswith(prefix + ".")
        }
        assert sent_blocks == set(blocks)
        assert set(grid.got[cid].arrays) == set(msg.arrays) - {"blocks"}


def test_only_adapters_and_head_change_in_local_training(federation):
    x, y, views, model_fn = federation
    sub = sub_model(model_fn(), [0, 3])
    before = {n: p.detach().clone() for n, p in sub.named_parameters()}
    trainable = {n for n, p in sub.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n) or ("classifier" in n) for n in trainable)
    train_local(
        LogitsOnly(sub),
        x,
        y,
        views[0].train_indices,
        LocalTrainConfig(epochs=1, lr=0.1, batch_size=16),
        seed=0,
    )
    for name, p in sub.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        if name not in trainable:
            assert not changed, name
    assert any(
        not torch.equal(before[n], p.detach()) for n, p in sub.named_parameters() if "lora_B" in n
    )
    assert set(adapter_arrays(sub)) <= {k for k in adapter_arrays(model_fn())}


def test_trains_when_no_member_holds_the_whole_model(federation):
    x, y, views, model_fn = federation
    cfg = FedRAConfig(
        capacities=(2, 2, 1, 1, 1),
        rounds=2,
        cover_all_layers=True,
        local=LocalTrainConfig(epochs=1, lr=0.05, batch_size=16),
    )
    result = run_workflow(
        FedRA(cfg, model_fn, x[:50], y[:50]),
        LocalRuntime(fedra_client_app(model_fn, "cpu"), lambda c: views[c], 5, seed=0),
        progress=False,
    )
    assert all(r["blocks_trained"] == 4 for r in result.rounds if r["phase"] == "train")
    assert 0 <= result.summary["test_accuracy"] <= 1
    full_bytes = sum(v.nbytes for v in adapter_arrays(model_fn()).values())
    assert all(b < full_bytes + 1000 for b in result.rounds[-1]["bytes_up_by_client"].values())
