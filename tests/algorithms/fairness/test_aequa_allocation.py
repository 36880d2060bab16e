import numpy as np
import pytest

from consortium.algorithms.aequa.allocation import (
    allocate,
    monotone,
    normalise,
    width_for_target,
    width_grid,
)


def random_curve(rng, grid):
    """A noisy, roughly increasing accuracy curve (not monotone: the allocation must fix it)."""
    base = 0.3 + 0.6 * (grid - grid[0]) / (grid[-1] - grid[0]) ** rng.uniform(0.3, 3)
    return np.clip(base + rng.normal(0, 0.03, grid.size), 0, 1)


def test_width_grid_holds_both_ends():
    assert list(width_grid(0.25, 0.25)) == [0.25, 0.5, 0.75, 1.0]
    g = width_grid(0.1, 0.2)
    assert g[0] == 0.1 and g[-1] == 1.0 and np.all(np.diff(g) > 0)
    assert list(width_grid(1.0, 0.05)) == [1.0]
    with pytest.raises(ValueError):
        width_grid(0.0, 0.1)


def test_monotone_is_the_running_max():
    assert list(monotone([0.2, 0.5, 0.4, 0.6, 0.55])) == [0.2, 0.5, 0.5, 0.6, 0.6]


@pytest.mark.parametrize("normalisation", ["minmax", "max"])
@pytest.mark.parametrize("rule", ["first_reaching", "nearest"])
def test_allocation_properties_on_random_instances(normalisation, rule):
    rng = np.random.default_rng(0)
    for _ in range(200):
        p_min = float(rng.choice([0.1, 0.25, 0.5]))
        grid = width_grid(p_min, float(rng.choice([0.05, 0.1, 0.2])))
        raw = random_curve(rng, grid)
        n = int(rng.integers(2, 12))
        contributions = dict(enumerate(rng.exponential(1.0, n)))
        out = allocate(contributions, grid, raw, normalisation=normalisation, rule=rule)
        widths = np.array([out.widths[i] for i in range(n)])
        targets = np.array([out.targets[i] for i in range(n)])
        c = np.array([contributions[i] for i in range(n)])
        order = np.argsort(c)
        # Monotone in the contribution: more never buys a narrower model or a lower target.
        assert np.all(np.diff(widths[order]) >= 0)
        assert np.all(np.diff(targets[order]) >= -1e-12)
        # The top contributor gets the full model.
        assert widths[np.argmax(c)] == 1.0
        # Within the achievable range.
        curve = monotone(raw)
        assert np.all((widths >= p_min) & (widths <= 1.0))
        assert np.all((targets >= curve[0] - 1e-12) & (targets <= curve[-1] + 1e-12))
        assert set(widths) <= set(grid)
        if rule == "first_reaching":
            # Each member's width reaches its target (on the monotone curve).
            reached = np.interp(widths, grid, curve)
            assert np.all((reached >= targets - 1e-12) | (widths == 1.0))
        if normalisation == "minmax":
            assert widths[np.argmin(c)] == p_min or curve[0] >= curve[-1]


def test_allocation_on_a_hand_made_curve():
    grid = [0.25, 0.5, 0.75, 1.0]
    acc = [0.60, 0.70, 0.65, 0.80]  # a dip at 0.75: the running max fills it
    out = allocate({0: 0.0, 1: 0.5, 2: 1.0, 3: 0.75}, grid, acc)
    assert out.curve == (0.60, 0.70, 0.70, 0.80)
    assert out.targets == {0: 0.60, 1: pytest.approx(0.70), 2: 0.80, 3: pytest.approx(0.75)}
    assert out.widths == {0: 0.25, 1: 0.5, 2: 1.0, 3: 1.0}
    d = out.as_dict()
    assert d["widths"] == {"0": 0.25, "1": 0.5, "2": 1.0, "3": 1.0}
    assert d["width_curve"]["accuracy"] == acc


def test_a_flat_curve_still_gives_the_top_contributor_the_full_width():
    out = allocate({0: 1.0, 1: 2.0, 2: 3.0}, [0.25, 0.5, 1.0], [0.9, 0.9, 0.9])
    assert out.widths == {0: 0.25, 1: 0.25, 2: 1.0}


def test_equal_contributions_give_everyone_the_full_model():
    assert normalise({0: 3.0, 1: 3.0}) == {0: 1.0, 1: 1.0}
    out = allocate({0: 3.0, 1: 3.0, 2: 3.0}, [0.25, 1.0], [0.5, 0.9])
    assert set(out.widths.values()) == {1.0}


def test_normalisations():
    assert normalise({0: 1.0, 1: 3.0, 2: 2.0}, "minmax") == {0: 0.0, 1: 1.0, 2: 0.5}
    assert normalise({0: 1.0, 1: 4.0, 2: -2.0}, "max") == {0: 0.25, 1: 1.0, 2: 0.0}
    assert normalise({0: 1.0, 1: 4.0, 2: 2.0}) == {0: 0.25, 1: 1.0, 2: 0.5}  # default: c/c_max
    with pytest.raises(ValueError):
        normalise({0: 1.0}, "median")
    with pytest.raises(ValueError):
        normalise({0: float("nan"), 1: 1.0})


def test_width_for_target_rules():
    grid = np.array([0.25, 0.5, 0.75, 1.0])
    curve = np.array([0.5, 0.6, 0.7, 0.8])
    assert width_for_target(0.61, grid, curve) == 0.75
    assert width_for_target(0.61, grid, curve, "nearest") == 0.5
    assert width_for_target(0.95, grid, curve) == 1.0
    assert width_for_target(0.1, grid, curve) == 0.25
