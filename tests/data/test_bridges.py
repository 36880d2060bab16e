"""Bridges: a Hugging Face dataset saved on disk in the test, and flwr-datasets partitioners."""

from __future__ import annotations

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from consortium.config import ConfigError  # noqa: E402
from consortium.data import DatasetNotFoundError, build_data, build_federated_data  # noqa: E402
from consortium.data.bridges import FlwrPartitioner, hf_splits  # noqa: E402
from consortium.experiment import experiment_from_dict, run_experiment  # noqa: E402


def digits_table(n: int, offset: int = 0):
    """A small image dataset as Hugging Face holds one: PIL images and a ClassLabel."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    images = [
        Image.fromarray((d.images[i] * 16).astype(np.uint8)) for i in range(offset, offset + n)
    ]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10),
         "writer": datasets.Value("int64")}
    )  # fmt: skip
    labels = d.target[offset : offset + n].tolist()
    writers = [i % 5 for i in range(n)]
    return datasets.Dataset.from_dict(
        {"image": images, "label": labels, "writer": writers}, features=features
    ), d


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf") / "digits-hf"
    train, d = digits_table(300)
    test, _ = digits_table(100, offset=300)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(root))
    return root, d


def raw(path, **options):
    return {"name": "hf", "methods": ["fedavg"],
            "data": {"dataset": "hf_disk", "path": str(path), "num_clients": 5,
                     "partition": "iid", "options": options},
            "model": {"name": "mlp", "options": {"hidden": [16]}},
            "federation": {"rounds": 2}}  # fmt: skip


def test_images_and_labels_arrive_as_consortium_arrays(saved):
    root, d = saved
    exp = experiment_from_dict(raw(root))
    data = build_data(exp.data, exp.seed)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert (
        len(data.test_y) == 100
        and sum(map(len, data.client_train)) + sum(map(len, data.client_test)) == 300
    )
    np.testing.assert_array_equal(data.test_y, d.target[300:400])
    expected = (d.images[300] * 16).astype(np.uint8).astype(np.float32) / 255.0
    np.testing.assert_allclose(data.test_x[0, 0], expected)


def test_a_flwr_datasets_partitioner_makes_the_members(saved):
    pytest.importorskip("flwr_datasets")
    from flwr_datasets.partitioner import DirichletPartitioner

    root, _ = saved
    settings = {"partition_by": "label", "alpha": 0.3, "min_partition_size": 5}
    options = {"partitioner": "DirichletPartitioner", "partitioner_options": settings}
    exp = experiment_from_dict(raw(root, **options))
    data = build_data(exp.data, exp.seed)
    assert data.scheme == "flwr:DirichletPartitioner"
    # The same partitioner, used directly on the same rows, gives the same members.
    direct = DirichletPartitioner(num_partitions=5, partition_by="label", alpha=0.3,
                                  min_partition_size=5, seed=exp.seed)  # fmt: skip
    direct.dataset = datasets.load_from_disk(str(root))["train"]
    for cid in range(5):
        member = data.client(cid)
        held = np.sort(np.concatenate([member.train_indices, member.test_indices]))
        labels = sorted(direct.load_partition(cid)["label"])
        assert sorted(data.pool_y[held].tolist()) == labels
    data.partition.validate(300)


def test_a_natural_id_partitioner_splits_by_another_column(saved):
    pytest.importorskip("flwr_datasets")
    root, _ = saved
    exp = experiment_from_dict(raw(root, partitioner="NaturalIdPartitioner",
                                   partitioner_options={"partition_by": "writer"}))  # fmt: skip
    data = build_data(exp.data, exp.seed)
    train = datasets.load_from_disk(str(root))["train"]
    writers = np.asarray(train["writer"])
    for cid in range(5):
        held = data.partition.client_indices[cid]
        assert len(set(writers[held].tolist())) == 1  # one writer per member


def test_an_experiment_runs_on_it(saved, tmp_path):
    root, _ = saved
    result = run_experiment(experiment_from_dict(raw(root)), tmp_path / "run", progress=False)
    assert result.summaries["fedavg"]["rounds"] == 2


def test_tabular_columns_and_a_plain_split(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    table = datasets.Dataset.from_dict({"a": rng.normal(size=200) + y, "b": rng.normal(size=200),
                                        "target": y.tolist()})  # fmt: skip
    splits = hf_splits(table, x=["a", "b"], y="target")
    assert (
        splits.train.x.shape == (200, 2) and splits.train.num_classes == 3 and splits.test is None
    )
    data = build_federated_data(splits, num_clients=4, scheme="iid")
    assert data.input_shape == (2,) and len(data.test_y) == 40


def test_mistakes_are_one_line_errors(saved, tmp_path):
    root, _ = saved
    with pytest.raises(ConfigError, match=r"data\.options\.x: no column 'pixels'"):
        build_data(experiment_from_dict(raw(root, x="pixels")).data)
    with pytest.raises(ConfigError, match="not a partitioner"):
        build_data(experiment_from_dict(raw(root, partitioner="os")).data)
    with pytest.raises(DatasetNotFoundError, match="no such folder"):
        build_data(experiment_from_dict(raw(tmp_path / "nothing")).data)
    with pytest.raises(ConfigError, match="partitioner_options"):
        build_data(experiment_from_dict(raw(root, partitioner="IidPartitioner",
                                            partitioner_options={"bogus": 1})).data)  # fmt: skip


def test_a_partitioner_that_drops_samples_is_refused(saved):
    pytest.importorskip("flwr_datasets")
    root, _ = saved
    train = datasets.load_from_disk(str(root))["train"]

    class Half:
        num_partitions = 2

        def load_partition(self, i):
            return self.dataset.select(range(i, len(self.dataset) // 2, 2))

    with pytest.raises(ConfigError, match="exactly one member"):
        FlwrPartitioner(Half(), train, 2)(np.arange(300), np.zeros(300, np.int64))
