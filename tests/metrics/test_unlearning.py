"""Unlearning verification metrics, each on cases whose answer is known."""

import numpy as np
import pytest
import torch
from torch import nn

from consortium.metrics.unlearning import (
    InversionCheck,
    _class_weights,
    invert_classes,
    js_divergence,
    loss_threshold,
    membership_auc,
)


def test_loss_threshold_separates():
    t = loss_threshold(np.array([0.1, 0.2, 0.15]), np.array([1.0, 2.0, 0.9]))
    assert 0.2 <= t < 0.9


def test_membership_auc_reads_how_well_members_outscore_non_members():
    assert membership_auc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert membership_auc(np.array([0.1, 0.2]), np.array([0.9, 0.8])) == 0.0
    assert membership_auc(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.5
    assert membership_auc(np.array([]), np.array([0.5])) is None
    # Weights count a non-member as several: one outscored member now loses more.
    plain = membership_auc(np.array([0.5, 0.9]), np.array([0.7, 0.1]))
    weighted = membership_auc(np.array([0.5, 0.9]), np.array([0.7, 0.1]), np.array([3.0, 1.0]))
    assert weighted < plain


def test_class_weights_give_non_members_the_members_class_mix():
    members = np.array([0, 0, 0, 1])
    nonmembers = np.array([0, 1, 1, 1, 2])
    w = _class_weights(members, nonmembers)
    share = [w[nonmembers == c].sum() / w.sum() for c in range(3)]
    assert np.allclose(share, [0.75, 0.25, 0.0])
    assert _class_weights(np.array([3]), nonmembers) is None  # no non-member of that class


def test_js_divergence_is_zero_for_equal_and_one_for_disjoint_predictions():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-9)
    assert js_divergence(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == pytest.approx(1.0)
    a, b = np.array([[0.7, 0.3]]), np.array([[0.2, 0.8]])
    assert js_divergence(a, b) == pytest.approx(js_divergence(b, a))


def test_inversion_leaves_the_model_alone_and_reaches_the_class():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    before = [p.detach().clone() for p in model.parameters()]
    labels = torch.tensor([0, 1, 2])
    x = invert_classes(model, labels, torch.zeros(3, 4), lambda z: z.view(3, 1, 2, 2), steps=200)
    assert model(x).argmax(1).tolist() == [0, 1, 2]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.requires_grad for p in model.parameters())


def _blobs(seed=0, n=60):
    """Three classes of 2x2 'images', each bright in its own pixel."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n)
    x = rng.normal(0.1, 0.05, (len(y), 1, 2, 2)).astype(np.float32)
    x.reshape(len(y), 4)[np.arange(len(y)), y] += 0.8
    return x, y


def test_inversion_check_tells_a_model_that_knows_a_class_from_one_that_lost_it():
    x, y = _blobs()
    check = InversionCheck(x, x, y, 3, per_class=8, steps=150, components=3)
    assert check.judge_accuracy(*_blobs(seed=1)) > 0.95

    def linear(rows):
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        with torch.no_grad():
            model[1].weight.copy_(torch.tensor(rows))
            model[1].bias.zero_()
        return model

    knows = linear([[5.0, -1, -1, 0], [-1, 5.0, -1, 0], [-1, -1, 5.0, 0]])
    # Class 2's output answers to class 0's pixel: inverting "2" yields 0s, and the judge
    # (not the model) says so.
    lost = linear([[5.0, -1, -1, 0], [-1, 5.0, -1, 0], [5.0, -1, -1, 0]])
    assert check(knows).tolist() == [1.0, 1.0, 1.0]
    shown = check(lost)
    assert shown[1] == 1.0 and shown[2] == 0.0
