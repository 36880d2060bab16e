"""When data counts as forgotten: the tests a member runs on its own data, and the last step
of class forgetting that works on the output layer alone.

Fine-tuning stops as soon as the forgetting criterion holds, because every further step costs
time and moves the model away from what it knows about the other data. The criteria are what a
model retrained without the data shows, judged by the member that holds the data (the samples
never leave it):

* a **class** request: the retrained model never predicts the class, so the member's forget
  samples must be classified correctly at most ``max_accuracy`` of the time; and it never
  learned to tell the class apart, so the class must no longer *stand out* on its own samples:
  the model's log-odds of the class on them (median) must be no higher than on the member's
  retained samples (their ``quantile``). A model whose class output was only turned down still
  recognises the class (model inversion reconstructs it, a few rounds of training bring it
  back); one that meets the second test does not (docs/methods/unlearning.md, "Measured");
* a **member's or samples** request (``class_at_client``, ``client``, ``samples``): the
  retrained model still generalises to these samples, it just has not trained on them, so
  their mean loss must reach the loss of samples the model never trained on (the member's own
  held-out samples). Pushing further would make them *stand out* as removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from consortium.algorithms.unlearning.explain import output_layer
from consortium.algorithms.unlearning.losses import StopRule
from consortium.algorithms.unlearning.request import UnlearningRequest
from consortium.metrics.unlearning import sample_outputs
from consortium.training import LocalTrainConfig, eval_batch_size, make_optimizer


def class_log_odds(logits: torch.Tensor, cls: int) -> torch.Tensor:
    """Per sample, ``log p(cls) - log(1 - p(cls))``: how strongly the model says ``cls``."""
    others = logits.clone()
    others[:, cls] = float("-inf")
    return logits[:, cls] - torch.logsumexp(others, 1)


def scored_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s logits on ``x`` in evaluation mode, in chunks of :func:`eval_batch_size`.

    Why chunks: on a CPU a forward pass over a member's whole forget set at once (hundreds of
    Fashion-MNIST images) runs at a third of the speed of the same images in chunks of 128,
    and the members' checks run after every fine-tuning round.
    """
    model.eval()
    size = eval_batch_size(x.device)
    with torch.no_grad():
        chunks = [model(x[s : s + size]) for s in range(0, len(x), size)]
    model.train()
    return torch.cat(chunks) if chunks else torch.zeros((0, 0))


def class_margin(
    forget_logits: torch.Tensor, retain_logits: torch.Tensor, cls: int, quantile: float
) -> float:
    """How far class ``cls`` still scores its own samples (median log-odds) above the
    ``quantile`` of its scores on retained samples; > 0: the class stands out."""
    if len(forget_logits) == 0 or len(retain_logits) == 0:
        return 0.0
    own = float(class_log_odds(forget_logits, cls).median())
    return own - float(torch.quantile(class_log_odds(retain_logits, cls), quantile))


@dataclass(frozen=True)
class ForgetCriterion:
    """``max_accuracy`` (class requests) or ``min_loss`` (the others); neither set: it never
    holds, and fine-tuning runs its full budget."""

    max_accuracy: float | None = None
    min_loss: float | None = None

    def holds(self, accuracy: float, loss: float) -> bool:
        if self.max_accuracy is not None:
            return accuracy <= self.max_accuracy
        if self.min_loss is not None:
            return loss >= self.min_loss
        return False

    def holds_on_logits(self, logits: torch.Tensor, y: torch.Tensor) -> bool:
        accuracy = float((logits.argmax(1) == y).float().mean())
        return self.holds(accuracy, float(F.cross_entropy(logits, y)))

    def check(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[bool, dict[str, Any]]:
        """Whether the criterion holds on all of these samples (``logits``: a model's outputs
        on them, see :func:`scored_logits`), and the figures."""
        if len(y) == 0:
            return self.holds(0.0, 0.0), {"forget_accuracy": 0.0, "forget_loss": 0.0}
        accuracy = float((logits.argmax(1) == y).cpu().numpy().mean())
        loss = float(F.cross_entropy(logits, y, reduction="none").cpu().numpy().mean())
        return self.holds(accuracy, loss), {"forget_accuracy": accuracy, "forget_loss": loss}

    def stop_rule(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StopRule:
        """A rule for :func:`~consortium.algorithms.unlearning.losses.masked_steps`: when the
        current forget batch looks forgotten (free: its logits exist already), confirm on all
        forget samples (one forward pass) before stopping."""

        def rule(logits: torch.Tensor, yb: torch.Tensor) -> bool:
            return self.holds_on_logits(logits, yb) and self.check(scored_logits(model, x), y)[0]

        return rule


def criterion_for(
    request: UnlearningRequest,
    max_accuracy: float,
    model: nn.Module,
    held_out: tuple[np.ndarray, np.ndarray] | None,
) -> ForgetCriterion:
    """The criterion member-side fine-tuning stops at (see the module docstring)."""
    if request.kind == "class":
        return ForgetCriterion(max_accuracy=max_accuracy)
    if held_out is None or len(held_out[1]) == 0:
        return ForgetCriterion()
    losses, _ = sample_outputs(model, *held_out)
    return ForgetCriterion(min_loss=float(losses.mean()))


def _features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs of the output layer, logits) of ``model`` on ``x``."""
    _, out = output_layer(model)
    seen: list[torch.Tensor] = []
    handle = out.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].detach()))
    try:
        logits = scored_logits(model, x)
    finally:
        handle.remove()
    if seen[0].dim() != 2:
        raise ValueError("the output layer's inputs must be (samples, features)")
    return torch.cat(seen), logits


def retire_class_row(
    model: nn.Module,
    cls: int,
    forget_x: torch.Tensor,
    retain_x: torch.Tensor,
    retain_target: torch.Tensor,
    cfg: LocalTrainConfig,
    *,
    quantile: float,
    max_steps: int,
    slack: float = 1.0,
) -> int:
    """Train only the output row and bias of ``cls`` until the class no longer stands out on
    ``forget_x`` against ``retain_x`` (its margin is at most ``-slack``: the members' rows are
    averaged afterwards, and an average of rows each just at the line need not be across it);
    returns the steps taken.

    The layers below stay as they are, so their outputs on these samples are computed once and
    every step is a product with one row: many steps cost less than one forward pass of the
    model. Each step lowers the class's log-odds on the forget samples (a term that does not
    fade as the probability vanishes, unlike cross-entropy), while cross-entropy with
    ``retain_target`` (labels or probability rows) keeps the retained samples' answers. Other
    classes' rows never change, so no retained sample can be pulled towards another class.
    """
    _, out = output_layer(model)
    hf, zf = _features(model, forget_x)
    hr, zr = _features(model, retain_x)
    row = out.weight[cls].detach().clone().requires_grad_(True)
    bias = out.bias[cls].detach().clone().requires_grad_(True) if out.bias is not None else None
    params = [row] if bias is None else [row, bias]
    opt = make_optimizer(params, cfg)
    steps = 0
    for steps in range(max_steps + 1):
        own_f = hf @ row + (bias if bias is not None else 0.0)
        own_r = hr @ row + (bias if bias is not None else 0.0)
        logits_f = torch.cat([zf[:, :cls], own_f[:, None], zf[:, cls + 1 :]], 1)
        logits_r = torch.cat([zr[:, :cls], own_r[:, None], zr[:, cls + 1 :]], 1)
        margin = class_margin(logits_f.detach(), logits_r.detach(), cls, quantile)
        if steps == max_steps or margin <= -slack:
            break
        loss = class_log_odds(logits_f, cls).mean() + F.cross_entropy(logits_r, retain_target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        out.weight[cls] = row.detach()
        if bias is not None:
            out.bias[cls] = bias.detach()
    model.train()
    return steps
