"""Verification of unlearning, judged against the gold standard: the retrained model.

These run in simulation as an *auditor* that may look at every member's data; they are
measurements of a method, never part of its protocol. Nothing here is fitted to the model it
judges: an attack re-fitted on each model would adapt to it and could call a model that still
knows the data "forgotten". Everything that is fitted is fitted once, before any unlearned model
is seen, on the *original* model or on models of its own:

* **loss threshold** (Yeom et al., 2018): a sample is called a member when the model's loss on
  it is below the threshold that best separated the *original* model's retained training
  samples (members) from held-out samples (non-members). Reported, not a verification: it is
  blind to a class whose output was only turned down (see :data:`GAP_KEYS`);
* **shadow model** (Shokri et al., 2017): a model of the same architecture trained on half of
  the held-out data; a logistic-regression attack learns, from the shadow's outputs (true-label
  probability, loss, entropy, top probability), to tell its training half from the other half;
* **membership AUC**: how well the shadow attack's score (the loss without a shadow model)
  ranks the forgotten samples above non-members — for a class request the held-out samples of
  the *other* classes, otherwise held-out samples weighted to the forget samples' classes.
  0.5: they look alike;
* **output divergence**: Jensen-Shannon divergence (bits, 0..1) between a model's and the
  retrained model's predictions on the forgotten samples;
* **model inversion**: each class is inverted from the model (inputs optimised, within a prior
  learned from retained data only, until the model assigns them the class) and an independent
  classifier (logistic regression on pixels) scores whether the reconstructions show the class;
  a forgotten class should no longer be reconstructable, as with retraining.

``relearn`` (rounds of training on the original data until the forgotten accuracy returns) is a
federated process and runs in the unlearning action; :meth:`UnlearningAuditor.relearned` is its
test. Every figure is reported for the retrained model beside the others, and
:meth:`UnlearningAuditor.compare` adds each model's distance to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from consortium.core.message import Arrays
from consortium.models.weights import set_arrays
from consortium.training import Adam, LocalTrainConfig, eval_batch_size, evaluate, train_local

#: Figures whose distance to the retrained model's :meth:`UnlearningAuditor.compare` reports.
#: Not ``mia_loss``: a model whose forgotten class's output was only turned down raises the
#: loss of all its samples past any fixed threshold, so that attack calls them non-members
#: while the model still recognises most of them (tests/algorithms/unlearning/
#: test_verification.py); it is reported beside the others, not used to verify.
GAP_KEYS = ("forget_accuracy", "mia_shadow", "mia_auc", "inversion_forget")


@torch.no_grad()
def sample_outputs(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(per-sample loss, softmax probabilities)."""
    model.eval()
    device = next(model.parameters()).device
    batch = batch or eval_batch_size(device)
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


def membership_auc(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    nonmember_weights: np.ndarray | None = None,
) -> float | None:
    """Probability that a (former) member scores above a non-member; 0.5: indistinguishable."""
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        return None
    scores = np.concatenate([member_scores, nonmember_scores])
    labels = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    weights = None
    if nonmember_weights is not None:
        weights = np.concatenate([np.full(len(member_scores), 1.0), nonmember_weights])
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores, sample_weight=weights))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Mean Jensen-Shannon divergence (bits, 0..1) between rows of two probability arrays."""
    if len(p) == 0:
        return float("nan")
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> np.ndarray:
        return (a * (np.log2(np.clip(a, 1e-12, 1)) - np.log2(np.clip(m, 1e-12, 1)))).sum(1)

    return float(np.clip(0.5 * (kl(p) + kl(q)), 0, 1).mean())


def invert_classes(
    model: nn.Module,
    labels: torch.Tensor,
    start: torch.Tensor,
    make_input: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int,
    lr: float = 0.1,
    penalty: float = 1e-3,
) -> torch.Tensor:
    """Model inversion: optimise ``start`` (Adam) until ``model(make_input(start))`` assigns
    each row its label, with an L2 ``penalty`` on the optimised values; returns the inputs.

    The model's parameters are left untouched (gradients flow only to the inputs).
    """
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    raw = start.detach().clone().requires_grad_(True)
    opt = Adam([raw], lr=lr)
    try:
        for _ in range(steps):
            loss = F.cross_entropy(model(make_input(raw)), labels) + penalty * (raw**2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    with torch.no_grad():
        return make_input(raw).detach()


class InversionCheck:
    """Can a class be reconstructed from a model? (see the module docstring)

    Parameters
    ----------
    prior_x
        Data the attacker's prior is learned from: the principal components of these samples
        span the reconstructions (a linear stand-in for the generative priors of GAN-based
        inversion), so they look like data rather than adversarial noise. Retained data only.
    judge_x, judge_y
        What the independent judge (logistic regression on pixels) is trained on; never the
        forgotten samples.
    per_class, steps
        Reconstructions per class, optimiser steps of each.
    """

    def __init__(
        self,
        prior_x: np.ndarray,
        judge_x: np.ndarray,
        judge_y: np.ndarray,
        num_classes: int,
        *,
        per_class: int = 16,
        steps: int = 100,
        components: int | None = None,
        seed: int = 0,
    ) -> None:
        self.shape = prior_x.shape[1:]
        flat = prior_x.reshape(len(prior_x), -1).astype(np.float64)
        k = components or max(1, min(50, flat.shape[1] // 3, len(flat) - 1))
        mean = flat.mean(0)
        _, sing, vt = np.linalg.svd(flat - mean, full_matrices=False)
        # Scaled so that coefficients ~ N(0, 1) span the data's spread along each component.
        self.mean = torch.from_numpy(mean).float()
        self.basis = torch.from_numpy(vt[:k] * (sing[:k, None] / np.sqrt(len(flat)))).float()
        self.low, self.high = float(flat.min()), float(flat.max())
        self.num_classes = num_classes
        self.per_class = per_class
        self.steps = steps
        self.seed = seed
        from sklearn.linear_model import LogisticRegression  # 1 s to import: only when used

        self.judge = LogisticRegression(max_iter=2000).fit(
            judge_x.reshape(len(judge_x), -1), judge_y
        )

    def reconstruct(self, model: nn.Module, classes: Sequence[int]) -> torch.Tensor:
        device = next(model.parameters()).device
        labels = torch.tensor([c for c in classes for _ in range(self.per_class)], device=device)
        gen = torch.Generator().manual_seed(self.seed)
        start = 0.5 * torch.randn(len(labels), len(self.basis), generator=gen)
        mean, basis = self.mean.to(device), self.basis.to(device)

        def make_input(z: torch.Tensor) -> torch.Tensor:
            x = (mean + z @ basis).clamp(self.low, self.high)
            return x.view(-1, *self.shape)

        return invert_classes(
            model, labels, start.to(device), make_input, steps=self.steps, penalty=0.01
        )

    def __call__(self, model: nn.Module) -> np.ndarray:
        """Per class, the share of its reconstructions the judge labels as that class."""
        classes = list(range(self.num_classes))
        x = self.reconstruct(model, classes).cpu().numpy()
        pred = self.judge.predict(x.reshape(len(x), -1))
        return (pred.reshape(self.num_classes, self.per_class) == np.array(classes)[:, None]).mean(
            1
        )

    def judge_accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self.judge.score(x.reshape(len(x), -1), y))


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

    def member_score(self, losses: np.ndarray, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The attack's membership probability per sample."""
        if len(y) == 0:
            return np.zeros(0)
        return self.classifier.predict_proba(attack_features(losses, probs, y))[:, 1]

    def member_rate(self, losses: np.ndarray, probs: np.ndarray, y: np.ndarray) -> float:
        if len(y) == 0:
            return float("nan")
        return float(self.classifier.predict(attack_features(losses, probs, y)).mean())


class UnlearningAuditor:
    """Scores models against one request on a federation's data (simulation only).

    Parameters
    ----------
    model_fn
        Builds the architecture.
    forget_x, forget_y
        The forgotten training samples (all members).
    retain_x, retain_y
        A sample of retained training samples (members for the attacks; the inversion prior
        and, with held-out samples of a forgotten class, the judge's data).
    test_x, test_y
        The global held-out set.
    original
        The model before unlearning: the loss-threshold attack is fitted on it, once.
    forget_class
        For class requests: test samples of this class measure forgetting, the others
        retention and non-membership.
    member_retain
        For a request on part of one member's data: that member's other training samples
        (``member_retain_accuracy``: what it keeps).
    shadow
        Fit the shadow-model attack (costs one small training run, done once).
    inversion
        Run the model-inversion check (class requests).
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
        *,
        original: Arrays,
        forget_class: int | None = None,
        member_retain: tuple[np.ndarray, np.ndarray] | None = None,
        shadow: bool = True,
        inversion: bool = True,
        seed: int = 0,
    ) -> None:
        self.model = model_fn()
        self.member_retain = member_retain
        self.forget = (forget_x, forget_y)
        self.retain = (retain_x, retain_y)
        self.test = (test_x, test_y)
        self.forget_class = forget_class
        nonmember = np.ones(len(test_y), bool) if forget_class is None else test_y != forget_class
        self.nonmember = (test_x[nonmember], test_y[nonmember])
        self.nonmember_weights = _class_weights(forget_y, self.nonmember[1])
        self.shadow = ShadowAttack(model_fn, test_x, test_y, seed) if shadow else None
        set_arrays(self.model, original)
        r_loss, _ = sample_outputs(self.model, retain_x, retain_y)
        n_loss, _ = sample_outputs(self.model, *self.nonmember)
        self.threshold = loss_threshold(r_loss, n_loss)
        self.inversion: InversionCheck | None = None
        if inversion and forget_class is not None:
            held = np.flatnonzero(test_y == forget_class)
            rng = np.random.default_rng(seed)
            judge_part = np.sort(rng.permutation(held)[: len(held) // 2])
            rest = np.setdiff1d(np.arange(len(test_y)), judge_part)
            self.inversion = InversionCheck(
                retain_x,
                np.concatenate([retain_x, test_x[judge_part]]),
                np.concatenate([retain_y, test_y[judge_part]]),
                int(max(test_y.max(), retain_y.max())) + 1,
                seed=seed,
            )
            self.judge_accuracy = self.inversion.judge_accuracy(test_x[rest], test_y[rest])
        self._outputs: dict[str, np.ndarray] = {}
        self.original = self(original, "original")

    def __call__(self, weights: Arrays, name: str | None = None) -> dict[str, Any]:
        """Every figure for one model; ``name`` keeps its outputs for :meth:`compare`."""
        set_arrays(self.model, weights)
        fx, fy = self.forget
        rx, ry = self.retain
        tx, ty = self.test
        out: dict[str, Any] = {}
        out["forget_accuracy"] = evaluate(self.model, fx, fy)["accuracy"]
        out["retain_train_accuracy"] = evaluate(self.model, rx, ry)["accuracy"]
        if self.member_retain is not None and len(self.member_retain[1]):
            out["member_retain_accuracy"] = evaluate(self.model, *self.member_retain)["accuracy"]
        out["test_accuracy"] = evaluate(self.model, tx, ty)["accuracy"]
        if self.forget_class is not None:
            hit = ty == self.forget_class
            out["forget_test_accuracy"] = evaluate(self.model, tx[hit], ty[hit])["accuracy"]
            out["retain_test_accuracy"] = evaluate(self.model, tx[~hit], ty[~hit])["accuracy"]
        else:
            out["retain_test_accuracy"] = out["test_accuracy"]
        f_loss, f_probs = sample_outputs(self.model, fx, fy)
        n_loss, n_probs = sample_outputs(self.model, *self.nonmember)
        out["forget_loss"] = float(f_loss.mean()) if len(f_loss) else None
        out["mia_loss"] = float((f_loss <= self.threshold).mean()) if len(f_loss) else None
        if self.shadow is not None:
            out["mia_shadow"] = self.shadow.member_rate(f_loss, f_probs, fy)
            f_score = self.shadow.member_score(f_loss, f_probs, fy)
            n_score = self.shadow.member_score(n_loss, n_probs, self.nonmember[1])
        else:
            f_score, n_score = -f_loss, -n_loss
        out["mia_auc"] = membership_auc(f_score, n_score, self.nonmember_weights)
        if self.inversion is not None:
            shown = self.inversion(self.model)
            c = int(self.forget_class)  # type: ignore[arg-type]
            out["inversion_forget"] = float(shown[c])
            out["inversion_retain"] = float(np.delete(shown, c).mean())
        if name is not None:
            self._outputs[name] = f_probs
        return out

    def compare(self, summaries: dict[str, dict[str, Any]], reference: str = "retrain") -> None:
        """Add each model's distance to ``reference`` (in place): ``divergence`` (output
        divergence on the forgotten samples) and ``<figure>_gap`` for :data:`GAP_KEYS`."""
        if reference not in summaries or reference not in self._outputs:
            return
        ref = summaries[reference]
        for name, s in summaries.items():
            if name in self._outputs:
                s["divergence"] = js_divergence(self._outputs[name], self._outputs[reference])
            for key in GAP_KEYS:
                if s.get(key) is not None and ref.get(key) is not None:
                    s[f"{key}_gap"] = abs(float(s[key]) - float(ref[key]))

    def relearned(self, weights: Arrays, share: float) -> bool:
        """Whether ``weights`` has relearned the forgotten data: a class request's forget
        accuracy, or otherwise the loss attack's member rate on the forget samples, is back to
        ``share`` of the original model's."""
        set_arrays(self.model, weights)
        fx, fy = self.forget
        if self.forget_class is not None:
            now = evaluate(self.model, fx, fy)["accuracy"]
            return bool(now >= share * self.original["forget_accuracy"])
        f_loss, _ = sample_outputs(self.model, fx, fy)
        return bool((f_loss <= self.threshold).mean() >= share * (self.original["mia_loss"] or 0))


def _class_weights(member_y: np.ndarray, nonmember_y: np.ndarray) -> np.ndarray | None:
    """Weights that give the non-members the members' class mix (None if it cannot)."""
    if len(member_y) == 0 or len(nonmember_y) == 0:
        return None
    classes, counts = np.unique(member_y, return_counts=True)
    have = np.bincount(nonmember_y, minlength=int(max(classes.max(), nonmember_y.max())) + 1)
    if np.any(have[classes] == 0):
        return None
    want = np.zeros_like(have, dtype=np.float64)
    want[classes] = counts / counts.sum()
    w = want[nonmember_y] / (have[nonmember_y] / len(nonmember_y))
    return w * (len(nonmember_y) / w.sum()) if w.sum() > 0 else None
