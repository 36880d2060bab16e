"""Domain benchmarks on fixture trees (DomainNet, NICO++ layouts with official split files),
and the feature + label skew split."""

import numpy as np
import pytest

from consortium.data import build_federated_data
from consortium.data.domains import (
    NORMALISATION,
    dirichlet_within_domains,
    image_splits,
    index_domainnet,
    index_nico_pp,
    load_images,
    member_domains,
    subsample,
)
from consortium.data.sources import Dataset, DatasetNotFoundError, DatasetSplits

Image = pytest.importorskip("PIL.Image")


def write_image(path, colour, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((9, 7, 3), colour, np.uint8)).save(path, format=fmt)


def domainnet_tree(root, split_folder="."):
    """2 domains x 3 classes; class 2 has label 120 (dropped by max_classes=100)."""
    classes = {"aircraft_carrier": 0, "bee": 1, "zebra": 120}
    for d, domain in enumerate(["clipart", "sketch"]):
        for split, n in (("train", 3), ("test", 2)):
            lines = []
            for cname, label in classes.items():
                for i in range(n):
                    rel = f"{domain}/{cname}/{domain}_{label:03d}_{split}{i}.jpg"
                    write_image(root / rel, (40 * d, label % 255, 10 * i), "JPEG")
                    lines.append(f"{rel} {label}")
            folder = root / split_folder
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{domain}_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def nico_tree(root):
    """NICO++ DG track: class folders with spaces, split files in NICO_DG_official/."""
    for domain in ["autumn", "rock"]:
        for split, n in (("train", 4), ("test", 2)):
            lines = []
            for label, cname in enumerate(["hot air balloon", "dog"]):
                for i in range(n):
                    rel = f"NICO_DG/{domain}/{cname}/{split}_{i}.png"
                    write_image(root / rel, (200, 10 * label, i), "PNG")
                    lines.append(f"{rel} {label}")
            folder = root / "NICO_DG_official"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{domain}_{split}.txt").write_text("\n".join(lines))
    return root


@pytest.mark.parametrize("split_folder", [".", "splits"])
def test_domainnet_index_reads_the_official_splits(tmp_path, split_folder):
    root = domainnet_tree(tmp_path / "dn", split_folder)
    idx = index_domainnet(root, ["clipart", "sketch"])
    assert idx.num_classes == 100 and set(idx.labels) == {0, 1}  # label 120 dropped
    assert len(idx) == 2 * (3 + 2) * 2
    assert idx.domain_names == ("clipart", "sketch")
    for d, name in enumerate(idx.domain_names):
        mine = idx.domains == d
        assert all(p.parts[-3] == name for p in np.array(idx.paths, object)[mine])
        assert idx.train[mine].sum() == 6 and (~idx.train[mine]).sum() == 4
    assert all(p.exists() for p in idx.paths)
    everything = index_domainnet(root, ["clipart", "sketch"], max_classes=None)
    assert everything.num_classes == 121 and len(everything) == 30


def test_nico_pp_index_handles_spaces_and_its_split_folder(tmp_path):
    root = nico_tree(tmp_path / "nico")
    idx = index_nico_pp(root, ["autumn", "rock"])
    assert len(idx) == 2 * 2 * (4 + 2) and idx.num_classes == 2
    balloons = [p for p, y in zip(idx.paths, idx.labels, strict=True) if y == 0]
    assert all(p.parent.name == "hot air balloon" and p.exists() for p in balloons)
    assert idx.train.sum() == 16
    splits = image_splits(idx, size=8)
    assert splits.train.x.shape == (16, 3, 8, 8) and splits.test.x.shape == (8, 3, 8, 8)
    assert splits.train.x.dtype == np.float32
    assert set(splits.train.groups) == {0, 1} and splits.test.num_classes == 2


def test_images_are_decoded_resized_and_normalised(tmp_path):
    write_image(tmp_path / "a.png", (255, 0, 128), "PNG")
    x = load_images([tmp_path / "a.png"], size=5, normalisation="imagenet")
    assert x.shape == (1, 3, 5, 5)
    mean, std = NORMALISATION["imagenet"]
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), mean, std, strict=True)]
    np.testing.assert_allclose(x[0, :, 2, 2], expected, rtol=1e-5)


def test_subsample_caps_each_domain_and_split(tmp_path):
    idx = index_domainnet(domainnet_tree(tmp_path / "dn"), ["clipart", "sketch"])
    small = subsample(idx, per_domain_train=2, per_domain_test=1, seed=0)
    for d in (0, 1):
        assert (small.train & (small.domains == d)).sum() == 2
        assert (~small.train & (small.domains == d)).sum() == 1
    assert set(small.paths) <= set(idx.paths)


def one_line(err):
    text = str(err.value)
    assert "\n" not in text
    return text


def test_missing_or_malformed_roots_fail_with_one_line(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        index_domainnet(tmp_path / "nowhere")
    assert "DomainNet not found" in one_line(err) and "split files" in one_line(err)
    with pytest.raises(DatasetNotFoundError) as err:
        index_nico_pp(None)
    assert "NICO++" in one_line(err)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        index_domainnet(tmp_path / "empty", ["clipart"])
    assert "clipart_train.txt" in one_line(err)
    root = domainnet_tree(tmp_path / "dn")
    (root / "clipart_test.txt").write_text("clipart/bee/x.jpg one\n")
    with pytest.raises(DatasetNotFoundError) as err:
        index_domainnet(root, ["clipart"])
    assert "clipart_test.txt:1" in one_line(err)
    (root / "clipart_test.txt").write_text("clipart/bee/missing.jpg 1\n")
    idx = index_domainnet(root, ["clipart"])
    with pytest.raises(DatasetNotFoundError) as err:
        image_splits(idx, size=4)
    assert "missing.jpg" in one_line(err)


def test_feature_and_label_skew_keeps_domains_and_skews_labels():
    rng = np.random.default_rng(0)
    n = 600
    groups = np.repeat([0, 1], n // 2)
    y = rng.integers(0, 4, n)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    splits = DatasetSplits(Dataset("toy", x, y, 4, groups), None)
    fd = build_federated_data(
        splits, num_clients=6, scheme="groups", seed=0, client_test_fraction=0.0
    )
    skewed = dirichlet_within_domains(fd, alpha=0.3, seed=0, min_size=5)
    skewed.partition.validate(len(fd.pool_y))
    assert np.array_equal(member_domains(skewed), member_domains(fd))
    for a, b in zip(skewed.partition.client_indices, fd.partition.client_indices, strict=True):
        assert set(fd.pool_groups[a]) == set(fd.pool_groups[b])
    counts = skewed.partition.class_counts(fd.pool_y, 4)
    shares = counts / counts.sum(1, keepdims=True)
    iid = fd.partition.class_counts(fd.pool_y, 4)
    iid_shares = iid / iid.sum(1, keepdims=True)
    assert shares.max() - shares.min() > iid_shares.max() - iid_shares.min()
    assert skewed.scheme.startswith("groups+dirichlet")
    with pytest.raises(ValueError, match="domains"):
        mixed = build_federated_data(splits, num_clients=2, scheme="iid", seed=0)
        dirichlet_within_domains(mixed, 0.5, 0)
