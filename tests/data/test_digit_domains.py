"""The offline six-domain digit benchmark: deterministic, domains and splits disjoint, each
domain with its own test split, feature and feature + label skew."""

import numpy as np
import pytest

pytest.importorskip("mlxtend")
pytest.importorskip("scipy")

from consortium.config import ConfigError
from consortium.data import DataConfig, build_data
from consortium.data.digit_domains import DEFAULT_DOMAINS, build_domains, cached_domains
from consortium.data.domains import member_domains


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("CONSORTIUM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield cached_domains()
    mp.undo()


def test_domains_are_deterministic_and_cached(bench, tmp_path, monkeypatch):
    again = build_domains()
    for field in ("y", "domain", "train", "source"):
        assert np.array_equal(getattr(bench, field), getattr(again, field)), field
    # the cache stores 8-bit pixels: equal up to rounding
    assert np.abs(bench.x - again.x).max() <= 0.5 / 255 + 1e-6
    other = build_domains(style_seed=1)
    assert np.array_equal(cached_domains(style_seed=0).y, bench.y)
    assert not np.array_equal(other.source, again.source)
    assert bench.x.dtype == np.float32 and bench.x.shape[1:] == (3, 28, 28)
    assert bench.x.min() >= 0 and bench.x.max() <= 1


def test_no_image_is_in_two_domains_or_in_both_splits(bench):
    assert len(set(bench.source)) == len(bench.source)  # each source image used once
    train, test = set(bench.source[bench.train]), set(bench.source[~bench.train])
    assert not train & test
    assert bench.names == DEFAULT_DOMAINS
    for d, name in enumerate(bench.names):
        mine = bench.domain == d
        assert set(np.unique(bench.y[mine & ~bench.train])) == set(range(10)), name
        share = (~bench.train[mine]).mean()
        assert 0.18 < share < 0.25, (name, share)
        prefix = "digits:" if name == "digits" else "mnist:"
        assert all(s.startswith(prefix) for s in bench.source[mine])


def test_domains_really_differ_in_style(bench):
    means = [bench.x[bench.domain == d].mean(axis=(0, 2, 3)) for d in range(6)]
    inverted, mnist_m, thick = (DEFAULT_DOMAINS.index(n) for n in ("inverted", "mnist_m", "thick"))
    assert means[inverted].mean() > 0.7 > means[0].mean()  # white background
    assert np.ptp(means[mnist_m]) > 0.01 and np.ptp(means[0]) < 1e-6  # colour vs grey

    def ink(d):  # share of pixels a stroke covers
        return (bench.x[bench.domain == d].max(1) > 0.1).mean()

    assert ink(thick) > 1.3 * ink(0)


def cfg(n, skew="feature", **opts):
    return DataConfig(
        dataset="digit_domains",
        num_clients=n,
        partition="groups",
        alpha=0.5,
        client_test_fraction=0.0,
        options={"skew": skew, "per_domain_train": 100, "per_domain_test": 40, **opts},
    )


def test_feature_skew_one_member_per_domain(bench):
    data = build_data(cfg(6), seed=3)
    assert sorted(member_domains(data).tolist()) == list(range(6))
    assert [len(t) for t in data.client_train] == [100] * 6
    assert np.bincount(data.test_groups).tolist() == [40] * 6
    assert data.pool_x.shape[1:] == (3, 28, 28)


def test_feature_label_skew_splits_each_domain_with_dirichlet(bench):
    data = build_data(cfg(30, "feature_label"), seed=3)
    doms = member_domains(data)
    assert np.bincount(doms).tolist() == [5] * 6
    classes = [len(np.unique(data.pool_y[ix])) for ix in data.client_train]
    assert min(classes) < 10  # label skew inside domains
    again = build_data(cfg(30, "feature_label"), seed=3)
    assert all(
        np.array_equal(a, b) for a, b in zip(data.client_train, again.client_train, strict=True)
    )


def test_resized_and_normalised_for_dinov2(bench):
    data = build_data(cfg(6, image_size=56, normalisation="imagenet"), seed=0)
    assert data.pool_x.shape[1:] == (3, 56, 56) and data.pool_x.min() < -1


def test_bad_options_are_one_line_errors(bench):
    with pytest.raises(ConfigError, match="domains"):
        build_data(cfg(6, domains=["mnist", "svhn"]))
    with pytest.raises(ConfigError, match="groups"):
        build_data(DataConfig(dataset="digit_domains", partition="iid"))
