"""FedRA's training protocol switches (each as the official code does it), dynamic
capacities, the ALL-small fix, and per-member peak memory against the full model's."""

import math

import numpy as np
import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")

import torch

from consortium.algorithms.fedra import AllSmall, FedRA, FedRAConfig, fedra_client_app
from consortium.algorithms.fedra.client import LogitsOnly, capped_batches, measured_training
from consortium.algorithms.fedra.config import PROTOCOLS
from consortium.config import ConfigError, validate
from consortium.core import run_workflow
from consortium.models.transformer import LoraSettings, sub_model, with_lora
from consortium.models.vision import small_mixer, small_vit
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig, train_batches

LOCAL = LocalTrainConfig(epochs=1, lr=0.05, batch_size=8)


def test_official_protocol_sets_every_switch_and_explicit_values_win():
    cfg = validate(FedRAConfig, {"capacities": [12, 3], "protocol": "official"})
    assert cfg.local_steps == "min_member" and cfg.clip_grad_norm == 10.0
    assert cfg.sampling == "one_per_domain" and cfg.capacity_by == "domain"
    assert (cfg.lora.alpha, cfg.lora.dropout, cfg.lora.preset) == (8, 0.1, "official")
    ours = validate(FedRAConfig, {"capacities": [12, 3]})
    assert {k: getattr(ours, k) for k in PROTOCOLS["ours"]} == PROTOCOLS["ours"]
    mixed = validate(
        FedRAConfig,
        {"capacities": [3], "protocol": "official", "clip_grad_norm": 0.0, "sampling": "uniform"},
    )
    assert mixed.clip_grad_norm == 0.0 and mixed.sampling == "uniform"
    assert mixed.local_steps == "min_member"
    with pytest.raises(ConfigError, match="protocol"):
        validate(FedRAConfig, {"capacities": [3], "protocol": "paper"}, "fedra")
    with pytest.raises(ConfigError, match="lora_targets"):
        validate(FedRAConfig, {"capacities": [3], "lora_targets": []}, "fedra")


def test_step_cap_cuts_every_epoch_after_max_steps_batches():
    ix = np.arange(100)
    full = capped_batches(ix, 16, seed=3, epochs=2)
    assert len(full) == 14  # 7 batches per epoch
    cut = capped_batches(ix, 16, seed=3, epochs=2, max_steps=3)
    assert len(cut) == 6
    for got, want in zip(cut, full[:3] + full[7:10], strict=True):
        assert np.array_equal(got, want)
    assert len(capped_batches(ix, 16, 3, 1, max_steps=50)) == 7


def lin_model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_gradient_norm_is_clipped_before_the_step(clip):
    model = lin_model()
    x = np.full((8, 4), 50.0, np.float32)  # large inputs: a large gradient
    y = np.zeros(8, np.int64)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = LocalTrainConfig(lr=1.0, momentum=0.0, batch_size=8)
    train_batches(model, x, y, [np.arange(8)], cfg, clip_grad_norm=clip)
    step = torch.cat(
        [(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)]
    )
    norm = float(step.norm())  # plain SGD, lr 1: the step is the (clipped) gradient
    if clip:
        assert norm == pytest.approx(clip, rel=1e-4)
    else:
        assert norm > 5


def text_workflow(make_text_federation, cls=FedRA, **options):
    x, y, views, model_fn = make_text_federation(per_member=60, train=48)
    cfg = FedRAConfig(**{"capacities": (3, 2, 2, 1, 1), "rounds": 2, "local": LOCAL, **options})
    return x, y, views, model_fn, cfg, cls


def test_members_train_min_batches_plus_one_steps_with_clipping(make_text_federation):
    x, y, views, model_fn, _, _ = text_workflow(make_text_federation)
    # members of 48, 20, 48, 9, 48 training samples: batches of 8 -> 6, 3, 6, 2, 6
    sizes = [48, 20, 48, 9, 48]
    for v, n in zip(views, sizes, strict=True):
        v.train_indices = v.train_indices[:n]
    cfg = FedRAConfig(
        capacities=(3, 2, 2, 1, 1),
        rounds=1,
        local=LOCAL,
        protocol="official",
        capacity_by="member",
        sampling="uniform",
    )
    wf = FedRA(cfg, model_fn, x[:20], y[:20], member_sizes=sizes)
    assert wf.step_cap == 3  # min_k ceil(n_k / 8) + 1 = 2 + 1
    assert wf.train_config(1)["clip_grad_norm"] == 10.0
    result = run_workflow(
        wf, LocalRuntime(fedra_client_app(model_fn, "cpu"), lambda c: views[c], 5), progress=False
    )
    cost = result.rounds[-1]["member_cost"]
    assert [cost[str(c)]["steps"] for c in range(5)] == [3, 3, 3, 2, 3]
    uncapped = FedRA(cfg.model_copy(update={"local_steps": "epoch"}), model_fn, x, y)
    assert uncapped.step_cap == 0
    with pytest.raises(ValueError, match="member_sizes"):
        FedRA(cfg, model_fn, x, y).setup(
            LocalRuntime(fedra_client_app(model_fn), views.__getitem__, 5)
        )


class _Grid:
    num_clients = 6

    def __init__(self, seed):
        self.seed = seed


def test_one_member_per_domain_each_round(make_text_federation):
    _, _, _, model_fn, _, _ = text_workflow(make_text_federation)
    domains = [0, 0, 0, 1, 1, 2]
    cfg = FedRAConfig(capacities=[2] * 6, sampling="one_per_domain", clients_per_round=2)
    wf = FedRA(cfg, model_fn, np.zeros((0, 4)), np.zeros(0), member_domains=domains)
    seen = set()
    for rnd in range(1, 31):
        sampled = wf.sample(_Grid(5), rnd)
        assert sorted(domains[c] for c in sampled) == [0, 1, 2]
        seen.update(sampled)
        assert sampled == wf.sample(_Grid(5), rnd)  # seeded by run seed and round
    assert seen == set(range(6))


def test_capacity_per_domain_ties_capacities_to_domains():
    cfg = FedRAConfig(capacities=[12, 8, 3], capacity_by="domain")
    assert cfg.member_capacities(6, [0, 0, 1, 1, 2, 2]) == (12, 12, 8, 8, 3, 3)
    assert cfg.member_capacities(4, [2, 0, 2, 1]) == (3, 12, 3, 8)
    with pytest.raises(ValueError, match="4 domains but 3 capacities"):
        cfg.member_capacities(4, [0, 1, 2, 3])
    cycled = FedRAConfig(capacities=[12, 8, 3])
    assert cycled.member_capacities(6, [0, 0, 1, 1, 2, 2]) == (12, 8, 3, 12, 8, 3)


def lora_modules(model):
    return {n.split(".lora_A")[0] for n, _ in model.named_parameters() if "lora_A" in n}


@pytest.mark.parametrize("family", ["vit", "mixer"])
def test_lora_targets_alpha_and_dropout_come_from_the_options(family):
    build = small_vit if family == "vit" else small_mixer
    official = validate(FedRAConfig, {"capacities": [2], "protocol": "official"}).lora
    model = with_lora(build(3, layers=2, hidden_size=16), official)
    names = lora_modules(model)
    if family == "vit":
        assert any(n.endswith("attention.o_proj") for n in names)
        assert any(n.endswith("mlp.fc2") for n in names)
        assert any(n.endswith("patch_embeddings.projection") for n in names)
        assert not any("q_proj" in n or "fc1" in n for n in names)
    else:
        assert {n.split(".")[-1] for n in names} == {"fc2"}
        assert any("mlp_tokens" in n for n in names) and any("mlp_channels" in n for n in names)
    peft_cfg = model.peft_config["default"]
    assert (peft_cfg.lora_alpha, peft_cfg.lora_dropout) == (8, 0.1)
    custom = validate(
        FedRAConfig,
        {"capacities": [2], "lora_targets": ["fc1"], "lora_alpha": 4, "lora_dropout": 0.2},
    ).lora
    names = lora_modules(with_lora(build(3, layers=2, hidden_size=16), custom))
    assert names and all(n.split(".")[-1] == "fc1" for n in names)


def test_all_small_trains_only_blocks_every_member_holds(make_text_federation):
    x, y, views, model_fn, _, _ = text_workflow(make_text_federation)
    cfg = FedRAConfig(capacities=(4, 4, 4, 2, 4), rounds=6, clients_per_round=2, local=LOCAL)
    wf = AllSmall(cfg, model_fn, x[:20], y[:20])
    result = run_workflow(
        wf,
        LocalRuntime(fedra_client_app(model_fn, "cpu"), lambda c: views[c], 5, seed=1),
        progress=False,
    )
    rounds = [r for r in result.rounds if r["phase"] == "train"]
    # some round samples two members of capacity 4 (the old rule then trained 4 blocks) ...
    assert any(3 not in r["sampled"] for r in rounds)
    # ... yet every member trains exactly the released model's blocks
    for r in rounds:
        assert all(blocks == [0, 1] for blocks in r["allocation"].values())
    assert result.summary["global_blocks"] == 2


def test_dynamic_capacities_are_redrawn_each_round_from_the_list(make_text_federation):
    x, y, views, model_fn, _, _ = text_workflow(make_text_federation)
    cfg = FedRAConfig(capacities=(4, 3, 2, 1, 1), capacity_schedule="redraw", rounds=3, local=LOCAL)
    wf = FedRA(cfg, model_fn, x[:20], y[:20])
    draws = [tuple(wf.round_capacities(_Grid(2), r, [0, 1, 2, 3, 4])) for r in range(1, 40)]
    assert len(set(draws)) > 10 and {c for d in draws for c in d} == {1, 2, 3, 4}
    assert draws == [tuple(wf.round_capacities(_Grid(2), r, [0, 1, 2, 3, 4])) for r in range(1, 40)]
    result = run_workflow(
        wf,
        LocalRuntime(fedra_client_app(model_fn, "cpu"), lambda c: views[c], 5, seed=2),
        progress=False,
    )
    for r in (r for r in result.rounds if r["phase"] == "train"):
        got = [len(r["allocation"][str(c)]) for c in range(5)]
        assert got == list(wf.round_capacities(_Grid(2), r["round"], list(range(5))))


@pytest.mark.parametrize("build", [small_vit, small_mixer], ids=["vit", "mixer"])
def test_peak_memory_of_a_member_scales_with_its_blocks(build):
    """Peak training memory of L_k of L blocks <= L_k / L + 10 % of the full model's."""
    model = with_lora(build(10), LoraSettings(preset="official"))
    rng = np.random.default_rng(0)
    data = type("D", (), {})()
    data.x = rng.random((32, 3, 28, 28), dtype=np.float32)
    data.y = rng.integers(0, 10, 32)
    data.train_indices = np.arange(32)
    cfg = LocalTrainConfig(batch_size=32, lr=0.01)
    depth = 12

    def peak(blocks):
        sub = sub_model(model, blocks)
        return measured_training(LogitsOnly(sub), data, cfg, 0, torch.device("cpu"))["peak_bytes"]

    full = peak(list(range(depth)))
    for k in (1, 3, 6, 10):
        blocks = sorted(rng.choice(depth, k, replace=False).tolist())
        ratio = peak(blocks) / full
        assert ratio <= k / depth + 0.10, (k, ratio)
        assert ratio >= k / depth - 0.05, (k, ratio)  # and it is not an undercount
    assert math.isfinite(full) and full > 0
