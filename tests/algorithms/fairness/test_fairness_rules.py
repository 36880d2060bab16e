import math
import types

import numpy as np
import pytest

from consortium.algorithms.cgsv import (
    CGSV,
    CGSVConfig,
    masked_reward,
    reward_fractions,
    top_fraction_mask,
    update_reputations,
)
from consortium.algorithms.fairness import CosineContribution, cosine, rescale, subtract
from consortium.algorithms.iafl import (
    IAFL,
    IAFLConfig,
    average,
    reward_proportions,
    reward_set,
    reward_size,
)
from consortium.models import build_model


def model_fn():
    return build_model("mlp", (1, 2, 2), 2, hidden=[3])


def empty(n=0):
    return np.zeros((n, 1, 2, 2), np.float32), np.zeros(n, np.int64)


def fake_grid(n):
    return types.SimpleNamespace(client_ids=list(range(n)), num_clients=n, seed=0)


# --- CGSV ---------------------------------------------------------------------------------


def test_cgsv_reputation_update_clamps_and_normalises():
    r = update_reputations({0: 0.0, 1: 0.0, 2: 0.0}, {0: 0.8, 1: 0.2, 2: -0.5}, alpha=0.95)
    raw = np.array([0.05 * 0.8, 0.05 * 0.2, 1e-3])  # the negative one is clamped to 1e-3
    assert [r[i] for i in range(3)] == pytest.approx(list(raw / raw.sum()))
    # A member without a cosine this round keeps its value before the normalisation.
    r2 = update_reputations({0: 0.5, 1: 0.5}, {0: 1.0}, alpha=0.5)
    assert r2 == pytest.approx({0: 0.75 / 1.25, 1: 0.5 / 1.25})


def test_cgsv_reward_fractions():
    q = reward_fractions({0: 0.5, 1: 0.25, 2: 0.25}, beta=1.0)
    assert q[0] == 1.0
    assert q[1] == pytest.approx(math.tanh(0.25) / math.tanh(0.5))
    big = reward_fractions({0: 0.5, 1: 0.25}, beta=1e7)
    assert big == {0: 1.0, 1: 1.0}  # large beta: everyone gets the whole aggregate


def test_top_fraction_masks_per_layer():
    layer = np.array([[0.1, -3.0, 0.2], [2.0, -0.05, 1.0]])
    assert top_fraction_mask(layer, 0.5).tolist() == [[False, True, False], [True, False, True]]
    assert top_fraction_mask(layer, 0.0).sum() == 0
    assert top_fraction_mask(layer, 1.0).all()
    assert top_fraction_mask(np.ones(10), 0.25).sum() == 3  # ceil, ties broken by position
    reward = masked_reward({"a": layer, "b": np.array([5.0, 1.0])}, 0.3)
    assert reward["a"].tolist() == [[0, -3.0, 0], [2.0, 0, 0]]
    assert reward["b"].tolist() == [5.0, 0.0]


def test_rescale_to_norm_gamma():
    out = rescale({"a": np.array([3.0, 0.0], np.float32), "b": np.array([4.0], np.float32)}, 0.5)
    norm = math.sqrt(sum(float((v**2).sum()) for v in out.values()))
    assert norm == pytest.approx(0.5, rel=1e-5)
    assert out["a"].dtype == np.float32


def test_cgsv_round_rewards_on_hand_made_updates():
    cfg = CGSVConfig(rounds=2, alpha=0.5, beta=1.0, contribution="data_size")
    wf = CGSV(cfg, model_fn, *empty(), *empty(), device="cpu")
    d = {
        0: {"w": np.array([1.0, 0.0, 0.0])},
        1: {"w": np.array([1.0, 1.0, 0.0])},
        2: {"w": np.array([-1.0, 0.0, 0.0])},
    }
    agg, rewards, _ = wf.rewards(fake_grid(3), 1, d, {0: 2.0, 1: 1.0, 2: 1.0})
    # First round: data-size weights (2, 1, 1) / 4.
    assert agg["w"].tolist() == pytest.approx([0.5, 0.25, 0.0])
    phis = {c: cosine(d[c], agg) for c in d}
    assert phis[0] == pytest.approx(2 / math.sqrt(5))
    assert phis[1] > phis[0] > 0 > phis[2]
    expected = update_reputations({0: 0, 1: 0, 2: 0}, phis, 0.5)
    assert wf.reputations == pytest.approx(expected)
    q = reward_fractions(expected, 1.0)
    for c in d:
        assert rewards[c]["w"].tolist() == pytest.approx(masked_reward(agg, q[c])["w"].tolist())
    # Second round: the reputations weight the aggregate.
    agg2, _, _ = wf.rewards(fake_grid(3), 2, d, {0: 2.0, 1: 1.0, 2: 1.0})
    w = np.array([expected[c] for c in range(3)])
    manual = sum(w[c] * d[c]["w"] for c in range(3)) / w.sum()
    assert agg2["w"].tolist() == pytest.approx(manual.tolist())


# --- IAFL ---------------------------------------------------------------------------------


def test_iafl_reward_proportions_and_sizes():
    g = reward_proportions({0: 100.0, 1: 50.0, 2: 10.0})
    assert g == pytest.approx({0: 1.0, 1: 0.5, 2: 0.1})
    assert reward_proportions({0: 100.0, 1: 25.0}, kappa=0.5) == pytest.approx({0: 1.0, 1: 0.5})
    assert reward_proportions({0: 100.0, 1: 25.0}, kappa=1.0) == {0: 1.0, 1: 1.0}
    assert [reward_size(p, 11) for p in (1.0, 0.5, 0.1, 0.01, 0.0)] == [10, 5, 1, 1, 0]


def test_iafl_reward_sets():
    rng = np.random.default_rng(0)
    joined = [0, 1, 2, 3, 4]
    assert reward_set(0, joined, 1.0, rng) == joined  # the top contributor gets everyone's
    small = reward_set(3, joined, 0.25, rng)
    assert 3 in small and len(small) == 2 and set(small) <= set(joined)
    absent = reward_set(7, joined, 0.5, rng)  # did not train: others' updates only
    assert 7 not in absent and len(absent) == 2
    assert reward_set(7, joined, 0.0, rng) == []
    avg = average({0: {"w": np.array([1.0, 3.0])}, 1: {"w": np.array([3.0, 5.0])}}, [0, 1])
    assert avg["w"].tolist() == [2.0, 4.0]
    assert average({}, []) == {}


def test_iafl_round_rewards_on_hand_made_updates():
    cfg = IAFLConfig(rounds=1, contribution="given", contribution_values=[4.0, 2.0, 1.0])
    wf = IAFL(cfg, model_fn, *empty(), *empty(), device="cpu")
    d = {c: {"w": np.full(2, float(c + 1))} for c in range(3)}
    server, rewards, metrics = wf.rewards(fake_grid(3), 1, d, {})
    # Member 0 (top, gamma 1) averages all three; the server follows member 0's set.
    assert rewards[0]["w"].tolist() == [2.0, 2.0]
    assert server["w"].tolist() == [2.0, 2.0]
    # Member 2 (gamma 1/4): ceil(0.25 * 2) = 1 other update and its own.
    assert metrics["reward_set_size"] == {"0": 3, "1": 2, "2": 2}
    assert rewards[2]["w"][0] in (2.0, 2.5)


# --- CGSV-style online contribution (Aequa) -------------------------------------------------


def test_cosine_contribution_is_a_bias_corrected_moving_average():
    t = CosineContribution(alpha=0.5)
    agg = {"w": np.array([1.0, 0.0])}
    t.observe({0: {"w": np.array([1.0, 0.0])}, 1: {"w": np.array([0.0, 1.0])}}, agg)
    assert t.values() == pytest.approx({0: 1.0, 1: 0.0})
    t.observe({0: {"w": np.array([-1.0, 0.0])}}, agg)  # member 1 sat this round out
    assert t.values()[0] == pytest.approx((0.25 * 1 + 0.5 * -1) / 0.75)
    assert t.values()[1] == pytest.approx(0.0)
    # A width-sliced update is compared on the entries it covers.
    big = {"w": np.array([[1.0, 5.0], [7.0, 9.0]])}
    small = {"w": np.array([[2.0]])}
    assert cosine(small, big) == pytest.approx(1.0)
    assert subtract(big, {"w": np.ones((2, 2))})["w"].tolist() == [[0.0, 4.0], [6.0, 8.0]]
    state = t.state_dict()
    t2 = CosineContribution(0.5)
    t2.load_state_dict(state)
    assert t2.values() == t.values()
