import numpy as np
import pytest

from consortium.core import derive_seed, rng_for, sample_clients


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(1, "a", 2) == derive_seed(1, "a", 2)
    assert derive_seed(1, "a", 2) != derive_seed(1, "a", 3)
    assert derive_seed(1, "a", 2) != derive_seed(2, "a", 2)
    assert rng_for(0, "x").random() == rng_for(0, "x").random()


@pytest.mark.parametrize(("num", "expected"), [(3, 3), (0.5, 5), (1.0, 10), (10, 10), (0.01, 1)])
def test_sample_sizes(num, expected):
    ids = list(range(10))
    out = sample_clients(ids, num, np.random.default_rng(0))
    assert len(out) == expected == len(set(out))
    assert out == sorted(out)


@pytest.mark.parametrize("num", [0, 11, 0.0, 1.5, -1])
def test_bad_sample_sizes(num):
    with pytest.raises(ValueError):
        sample_clients(list(range(10)), num, np.random.default_rng(0))
