"""Which channels serve the data to forget: importance scores and the parameter mask.

Two scores share one selection step, so the method and its TF-IDF precursor differ only where
they really differ:

* **ablation** (this method): zero one channel's output and measure how much the model's
  confidence in the forget samples' labels drops, minus the largest such drop of any retained
  class, so that channels other classes depend on are not picked; **taylor** estimates the
  same drops to first order from one backward pass;
* **tfidf** (Wang et al., WWW 2022): term frequency of the target class's mean activation over a
  layer's channels, times the inverse "document" frequency of channels across classes.

A *channel* is an output channel of a Conv2d or an output unit of a hidden Linear layer; the
output layer is never ablated (its row for the forgotten class can be added to the mask).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def channel_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv2d and hidden Linear layers in forward order (the last Linear is the output)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if layers and isinstance(layers[-1][1], nn.Linear):
        layers = layers[:-1]
    return layers


def output_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no Linear output layer")
    return linears[-1]  # type: ignore[return-value]


def _channels(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features  # type: ignore[return-value]


@contextmanager
def _ablate_blocks(module: nn.Module, channels: list[int], n: int) -> Iterator[None]:
    """Zero channel ``channels[j]`` in the j-th block of ``n`` samples of a replicated batch."""

    def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        for j, c in enumerate(channels):
            out[j * n : (j + 1) * n, c] = 0
        return out

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


Contrast = Literal["per_class", "mean", "none"]


def contrasted(
    forget: np.ndarray,
    retain: np.ndarray | None,
    retain_labels: np.ndarray | None,
    contrast: Contrast = "per_class",
) -> np.ndarray:
    """A layer's scores from per-sample drops (channels x samples).

    The mean drop on the forget samples, minus, for ``per_class``, the largest mean drop of
    any one retained class (a channel counts only as far as it serves the forgotten data more
    than it serves *every* other class), or, for ``mean``, the mean drop over all retained
    samples (a channel that one other class depends on hides in an average over many).
    """
    score = forget.mean(1)
    if contrast == "none" or retain is None or retain.shape[1] == 0:
        return score
    if contrast == "mean":
        return score - retain.mean(1)
    if contrast != "per_class":
        raise ValueError(f"unknown contrast {contrast!r}")
    assert retain_labels is not None
    per_class = [retain[:, retain_labels == c].mean(1) for c in np.unique(retain_labels)]
    return score - np.max(per_class, axis=0)


@torch.no_grad()
def _confidence_drops(
    model: nn.Module,
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    width: int,
    max_batch: int,
) -> np.ndarray:
    """Per-sample label-confidence drop (channels x samples) for every channel of ``module``,
    many ablations per forward pass.

    The batch is replicated once per ablated channel so one forward pass evaluates a whole
    chunk of channels: the same arithmetic as one pass per channel, without its overhead.
    """
    n = len(y)
    base = F.softmax(model(x), dim=1).gather(1, y[:, None])[:, 0].cpu().numpy()
    drops = np.zeros((width, n), np.float32)
    per_pass = max(1, max_batch // max(n, 1))
    for start in range(0, width, per_pass):
        chans = list(range(start, min(width, start + per_pass)))
        xs = x.repeat(len(chans), *([1] * (x.dim() - 1)))
        with _ablate_blocks(module, chans, n):
            probs = F.softmax(model(xs), dim=1)
        conf = probs.gather(1, y.repeat(len(chans))[:, None]).view(len(chans), n)
        drops[start : start + len(chans)] = base[None, :] - conf.cpu().numpy()
    return drops


@torch.no_grad()
def ablation_scores(
    model: nn.Module,
    forget: tuple[np.ndarray, np.ndarray],
    retain: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    contrast: Contrast = "per_class",
    device: torch.device | None = None,
    max_batch: int = 4096,
) -> dict[str, np.ndarray]:
    """Per layer, the drop in label confidence on the forget samples when a channel is zeroed,
    contrasted with the drops on ``retain`` (see :func:`contrasted`)."""
    device = device or next(model.parameters()).device
    model.eval()
    fx, fy = (torch.from_numpy(a).to(device) for a in forget)
    use_retain = retain is not None and len(retain[1]) > 0
    if use_retain:
        rx, ry = (torch.from_numpy(a).to(device) for a in retain)  # type: ignore[union-attr]
    scores: dict[str, np.ndarray] = {}
    for name, module in channel_layers(model):
        width = _channels(module)
        f = _confidence_drops(model, module, fx, fy, width, max_batch)
        r = _confidence_drops(model, module, rx, ry, width, max_batch) if use_retain else None
        labels = retain[1] if use_retain else None  # type: ignore[index]
        scores[name] = contrasted(f, r, labels, contrast).astype(np.float32)
    return scores


def taylor_scores(
    model: nn.Module,
    forget: tuple[np.ndarray, np.ndarray],
    retain: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    contrast: Contrast = "per_class",
    device: torch.device | None = None,
) -> dict[str, np.ndarray]:
    """First-order estimate of :func:`ablation_scores` from one forward and backward pass.

    Zeroing channel c of sample i changes its label confidence p_i by about
    ``-sum(a_ic * dp_i/da_ic)`` (a first-order Taylor expansion around the channel's activation
    ``a_ic``). A sample's activations reach only its own output, so one backward pass of the
    summed confidences gives every sample's drop for every channel of every layer, at the cost
    of one gradient instead of one forward pass per channel.
    """
    device = device or next(model.parameters()).device
    model.eval()
    layers = channel_layers(model)
    use_retain = retain is not None and len(retain[1]) > 0
    # Forget and retained samples go through one pass: each sample's confidence reaches only
    # its own activations, so the split afterwards is exact, and on small inputs a pass costs
    # mostly its fixed overhead.
    x = np.concatenate([forget[0], retain[0]]) if use_retain else forget[0]  # type: ignore[index]
    y = np.concatenate([forget[1], retain[1]]) if use_retain else forget[1]  # type: ignore[index]
    acts: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in layers:

        def keep(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
            out.retain_grad()
            acts[name] = out

        handles.append(module.register_forward_hook(keep))
    # Only the activations' gradients are needed: the parameters are frozen for the pass (no
    # weight gradients computed), and the input carries the graph instead.
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        xb = torch.from_numpy(x).to(device).requires_grad_(True)
        yb = torch.from_numpy(y).to(device)
        with torch.enable_grad():
            F.softmax(model(xb), 1).gather(1, yb[:, None]).sum().backward()
    finally:
        for h in handles:
            h.remove()
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    n = len(forget[1])
    f: dict[str, np.ndarray] = {}
    r: dict[str, np.ndarray] = {}
    for name, a in acts.items():
        prod = (a * a.grad).detach()  # type: ignore[operator]
        per_sample = prod.sum(dim=tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
        both = per_sample.T.cpu().numpy()
        f[name] = both[:, :n]
        if use_retain:
            r[name] = both[:, n:]
    labels = retain[1] if use_retain else None  # type: ignore[index]
    return {k: contrasted(v, r.get(k), labels, contrast).astype(np.float32) for k, v in f.items()}


@torch.no_grad()
def class_activations(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    device: torch.device | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per layer, the sum over samples of each class of ``mean(ReLU(output))`` per channel.

    Returns (sums per layer of shape (classes, channels), sample counts per class); members
    send sums and counts so the server can form exact class means across members.
    """
    device = device or next(model.parameters()).device
    model.eval()
    layers = channel_layers(model)
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in layers:

        def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
            act = F.relu(out)
            captured[name] = act.mean(dim=(2, 3)) if act.dim() == 4 else act

        handles.append(module.register_forward_hook(hook))
    sums = {name: np.zeros((num_classes, _channels(m)), np.float64) for name, m in layers}
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    try:
        for start in range(0, len(y), 512):
            xb = torch.from_numpy(x[start : start + 512]).to(device)
            yb = y[start : start + 512]
            model(xb)
            for name in sums:
                act = captured[name].double().cpu().numpy()
                np.add.at(sums[name], yb, act)
    finally:
        for h in handles:
            h.remove()
    return sums, counts


def tfidf_scores(class_means: dict[str, np.ndarray], target: int) -> dict[str, np.ndarray]:
    """TF-IDF of channels for ``target`` from class-mean activations (classes, channels)."""
    out: dict[str, np.ndarray] = {}
    for name, a in class_means.items():
        num_classes = a.shape[0]
        tf = a[target] / max(float(a[target].sum()), 1e-12)
        high = (a >= a.mean(axis=1, keepdims=True)).sum(axis=0)
        idf = np.log((1 + num_classes) / (1 + high))
        out[name] = (tf * idf).astype(np.float32)
    return out


def select_channels(
    scores: dict[str, np.ndarray], ratio: float, per_layer: bool = True
) -> dict[str, np.ndarray]:
    """Boolean channel selection: the top ``ratio`` by score, per layer or over all layers."""
    if not 0 < ratio <= 1:
        raise ValueError(f"selection ratio must be in (0, 1], got {ratio}")
    chosen: dict[str, np.ndarray] = {}
    if per_layer:
        for name, s in scores.items():
            k = max(1, round(ratio * len(s)))
            keep = np.zeros(len(s), bool)
            keep[np.argsort(-s, kind="stable")[:k]] = True
            chosen[name] = keep
        return chosen
    flat = np.concatenate([s for s in scores.values()])
    k = max(1, round(ratio * len(flat)))
    threshold_idx = np.argsort(-flat, kind="stable")[:k]
    hit = np.zeros(len(flat), bool)
    hit[threshold_idx] = True
    start = 0
    for name, s in scores.items():
        chosen[name] = hit[start : start + len(s)]
        start += len(s)
    return chosen


def parameter_mask(
    model: nn.Module,
    channels: dict[str, np.ndarray],
    *,
    forget_class: int | None = None,
) -> dict[str, np.ndarray]:
    """Mask over the model's parameters that produce the selected channels.

    For a selected channel c of a layer: its filter / weight row ``weight[c]`` and ``bias[c]``.
    With ``forget_class``, the output layer's row and bias of that class are added.
    Parameters with no selected entry are left out of the mask (they stay frozen).
    """
    params = dict(model.named_parameters())
    mask: dict[str, np.ndarray] = {}
    for layer, keep in channels.items():
        for suffix in ("weight", "bias"):
            name = f"{layer}.{suffix}"
            if name not in params:
                continue
            m = np.zeros(tuple(params[name].shape), bool)
            m[keep] = True
            if m.any():
                mask[name] = m
    if forget_class is not None:
        out_name, out = output_layer(model)
        for suffix in ("weight", "bias"):
            name = f"{out_name}.{suffix}"
            if getattr(out, suffix, None) is None:
                continue
            m = mask.get(name, np.zeros(tuple(params[name].shape), bool))
            m[forget_class] = True
            mask[name] = m
    return mask
