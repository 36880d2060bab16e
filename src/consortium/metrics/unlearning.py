"""Verification of unlearning: accuracies on what was forgotten and kept, and membership
inference on the forgotten samples.

These run in simulation as an *auditor* that may look at every member's data; they are
measurements of a method, never part of its protocol.

Membership inference (MIA) answers "does the model still treat the forgotten samples as
training data?". Two attacks, both fitted on data whose membership is known:

* **loss threshold** (Yeom et al., 2018): a sample is called a member when its loss is below
  a threshold chosen to best separate retained training samples (members) from held-out test
  samples (non-members);
* **shadow model** (Shokri et al., 2017): a model of the same architecture is trained on half
  of the held-out data; a logistic-regression attack learns, from the shadow's outputs
  (true-label probability, loss, entropy, top probability), to tell its training half from the
  other half, and is then applied to the target model's outputs on the forgotten samples.

The reported success is the fraction of forgotten samples called members; the retrained model
gives the value to match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from consortium.core.message import Arrays
from consortium.models.weights import set_arrays
from consortium.training import LocalTrainConfig, evaluate, train_local


@torch.no_grad()
def sample_outputs(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """(per-sample loss, softmax probabilities)."""
    model.eval()
    device = next(model.parameters()).device
    losses, probs = [], []
    for s in range(0, len(y), batch):
        logits = model(torch.from_numpy(x[s : s + batch]).to(device))
        yb = torch.from_numpy(y[s : s + batch]).to(device)
        losses.append(F.cross_entropy(logits, yb, reduction="none").cpu().numpy())
        probs.append(F.softmax(logits, 1).cpu().numpy())
    if not losses:
        return np.zeros(0), np.zeros((0, 1))
    return np.concatenate(losses), np.concatenate(probs)


def attack_features(losses: np.ndarray, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    p_true = probs[np.arange(len(y)), y]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1)
    return np.stack([p_true, np.minimum(losses, 50.0), entropy, probs.max(1)], axis=1)


def loss_threshold(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """The loss threshold that best separates members from non-members (balanced accuracy)."""
    candidates = np.unique(np.concatenate([member_losses, nonmember_losses]))
    if len(candidates) > 2000:
        candidates = np.quantile(candidates, np.linspace(0, 1, 2000))
    best, best_acc = float(candidates[0]), -1.0
    for t in candidates:
        acc = 0.5 * ((member_losses <= t).mean() + (nonmember_losses > t).mean())
        if acc > best_acc:
            best, best_acc = float(t), acc
    return best


class ShadowAttack:
    """A fitted shadow-model membership attack (see the module docstring)."""

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        x: np.ndarray,
        y: np.ndarray,
        seed: int = 0,
        epochs: int = 10,
    ) -> None:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y))
        inside, outside = np.sort(order[: len(y) // 2]), np.sort(order[len(y) // 2 :])
        torch.manual_seed(seed)
        shadow = model_fn()
        train_local(shadow, x, y, inside, LocalTrainConfig(epochs=epochs, lr=0.05), seed)
        feats, labels = [], []
        for idx, member in ((inside, 1), (outside, 0)):
            losses, probs = sample_outputs(shadow, x[idx], y[idx])
            feats.append(attack_features(losses, probs, y[idx]))
            labels.append(np.full(len(idx), member))
        from sklearn.linear_model import LogisticRegression  # 1 s to import: only when used

        self.classifier = LogisticRegression(max_iter=1000).fit(
            np.concatenate(feats), np.concatenate(labels)
        )
        self.shadow_test_accuracy = evaluate(shadow, x, y, outside)["accuracy"]

    def member_rate(self, losses: np.ndarray, probs: np.ndarray, y: np.ndarray) -> float:
        if len(y) == 0:
            return float("nan")
        return float(self.classifier.predict(attack_features(losses, probs, y)).mean())


class UnlearningAuditor:
    """Scores a model against one request on a federation's data (simulation only).

    Parameters
    ----------
    forget_x, forget_y
        The forgotten training samples (all members).
    retain_x, retain_y
        A sample of retained training samples (members for the attacks).
    test_x, test_y
        The global test set.
    forget_class
        For class requests: test samples of this class measure forgetting, the others retention.
    shadow
        Fit the shadow-model attack (costs one small training run, done once).
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        forget_x: np.ndarray,
        forget_y: np.ndarray,
        retain_x: np.ndarray,
        retain_y: np.ndarray,
        test_x: np.ndarray,
        test_y: np.ndarray,
        forget_class: int | None = None,
        shadow: bool = True,
        seed: int = 0,
    ) -> None:
        self.model = model_fn()
        self.forget = (forget_x, forget_y)
        self.retain = (retain_x, retain_y)
        self.test = (test_x, test_y)
        self.forget_class = forget_class
        self.shadow = ShadowAttack(model_fn, test_x, test_y, seed) if shadow else None

    def __call__(self, weights: Arrays) -> dict[str, Any]:
        set_arrays(self.model, weights)
        fx, fy = self.forget
        rx, ry = self.retain
        tx, ty = self.test
        out: dict[str, Any] = {}
        out["forget_accuracy"] = evaluate(self.model, fx, fy)["accuracy"]
        out["retain_train_accuracy"] = evaluate(self.model, rx, ry)["accuracy"]
        out["test_accuracy"] = evaluate(self.model, tx, ty)["accuracy"]
        if self.forget_class is not None:
            hit = ty == self.forget_class
            out["forget_test_accuracy"] = evaluate(self.model, tx[hit], ty[hit])["accuracy"]
            out["retain_test_accuracy"] = evaluate(self.model, tx[~hit], ty[~hit])["accuracy"]
            nonmember = ~hit
        else:
            out["retain_test_accuracy"] = out["test_accuracy"]
            nonmember = np.ones(len(ty), bool)
        f_loss, f_probs = sample_outputs(self.model, fx, fy)
        r_loss, _ = sample_outputs(self.model, rx, ry)
        t_loss, _ = sample_outputs(self.model, tx[nonmember], ty[nonmember])
        threshold = loss_threshold(r_loss, t_loss)
        out["mia_loss_threshold"] = float((f_loss <= threshold).mean()) if len(f_loss) else None
        if self.shadow is not None:
            out["mia_shadow"] = self.shadow.member_rate(f_loss, f_probs, fy)
        return out
