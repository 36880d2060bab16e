"""A FedRA member: build the sub-model of the blocks it was given, tune adapters and head,
send back only those (renamed to the global block indices), with what the tuning cost it.

``depthfl_train`` is the DepthFL member: the same sub-model plus one classifier after each
block, trained with mutual self-distillation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from consortium.algorithms.base.supervised import evaluate_member
from consortium.algorithms.fedra.cost import ActivationMeter, peak_bytes, state_bytes
from consortium.algorithms.fedra.heads import (
    DepthHeads,
    head_depth,
    mutual_distillation_loss,
)
from consortium.core.client import ClientApp, ClientContext
from consortium.core.message import Message
from consortium.models.transformer import (
    adapter_arrays,
    block_prefix,
    load_adapter_arrays,
    model_inputs,
    num_blocks,
    renumber,
    sub_model,
)
from consortium.training import (
    LocalTrainConfig,
    batch_order,
    cross_entropy,
    resolve_device,
    train_batches,
)


class LogitsOnly(nn.Module):
    """Lets the shared training loop call a ``transformers`` classifier as ``model(x)``.

    Integer inputs are token ids (0 is padding, masked out); float inputs are pixel values.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(**model_inputs(x)).logits


def capped_batches(
    indices: np.ndarray, batch_size: int, seed: int, epochs: int, max_steps: int = 0
) -> list[np.ndarray]:
    """The shuffled mini-batches of ``epochs`` passes, each pass cut after ``max_steps``
    batches when ``max_steps > 0`` (the FedRA code's ``if i > mmm: break``)."""
    batches = batch_order(np.asarray(indices), batch_size, seed, epochs)
    if max_steps <= 0:
        return batches
    per_epoch = -(-len(indices) // batch_size)
    return [
        b for e in range(epochs) for b in batches[e * per_epoch : (e + 1) * per_epoch][:max_steps]
    ]


def measured_training(
    model: nn.Module,
    data: object,
    cfg: LocalTrainConfig,
    seed: int,
    device: torch.device,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    max_steps: int = 0,
    clip_grad_norm: float = 0.0,
) -> dict[str, float]:
    """Local training (at most ``max_steps`` steps per epoch, gradient norm clipped at
    ``clip_grad_norm``; 0 = no limit) plus its cost: wall time, and the peak-memory parts of
    :mod:`consortium.algorithms.fedra.cost` for the model as trained."""
    meter = ActivationMeter()
    meter.watch(model)
    start = time.perf_counter()
    indices = np.asarray(data.train_indices)  # type: ignore[attr-defined]
    fit: dict[str, float] = {"train_loss": 0.0, "num_examples": 0.0, "steps": 0}
    if len(indices):
        torch.manual_seed(seed)
        batches = capped_batches(indices, cfg.batch_size, seed, cfg.epochs, max_steps)
        fit = train_batches(
            model,
            data.x,  # type: ignore[attr-defined]
            data.y,  # type: ignore[attr-defined]
            batches,
            cfg,
            device=device,
            loss_fn=meter.wrap(loss_fn),
            clip_grad_norm=clip_grad_norm,
        )
        fit["num_examples"] = float(len(indices))
    costs: dict[str, float] = {"train_time_s": time.perf_counter() - start}
    costs.update({k: float(v) for k, v in state_bytes(model, cfg.optimizer, cfg.momentum).items()})
    costs["activation_bytes"] = float(meter.peak)
    costs["peak_bytes"] = peak_bytes(costs)
    return {**fit, **costs}


def limits(msg: Message) -> dict[str, Any]:
    """The step cap and gradient clipping a training message asks for."""
    return {
        "max_steps": int(msg.config.get("max_steps", 0)),
        "clip_grad_norm": float(msg.config.get("clip_grad_norm", 0.0)),
    }


def fedra_client_app(lora_model_fn: Callable[[], nn.Module], device: str = "auto") -> ClientApp:
    """Handlers ``fedra_train`` and ``fedra_evaluate``.

    ``lora_model_fn`` builds the full pretrained backbone with LoRA injected; it is built once
    per process and only the member's blocks are copied out of it for each message.
    """
    app = ClientApp()
    dev = resolve_device(device)
    cache: dict[str, nn.Module] = {}

    def full() -> nn.Module:
        if "full" not in cache:
            cache["full"] = lora_model_fn()
        return cache["full"]

    def member_model(msg: Message) -> tuple[nn.Module, list[int], str]:
        blocks = [int(b) for b in msg.arrays["blocks"]]
        prefix = block_prefix(full())
        model = sub_model(full(), blocks).to(dev)
        local = renumber(
            {k: v for k, v in msg.arrays.items() if k != "blocks"},
            prefix,
            {g: j for j, g in enumerate(blocks)},
        )
        # arrays not sent (DepthFL's head for a shallow member) keep the model's own values
        load_adapter_arrays(model, {**adapter_arrays(model), **local})
        return model, blocks, prefix

    @app.on("fedra_train")
    def train(msg: Message, ctx: ClientContext) -> Message:
        model, blocks, prefix = member_model(msg)
        cfg = LocalTrainConfig.from_config(msg.config)
        fit = measured_training(LogitsOnly(model), ctx.data, cfg, ctx.seed, dev, **limits(msg))
        arrays = renumber(adapter_arrays(model), prefix, dict(enumerate(blocks)))
        return msg.reply(arrays=arrays, metrics={**fit, "blocks": float(len(blocks))})

    @app.on("depthfl_train")
    def train_depthfl(msg: Message, ctx: ClientContext) -> Message:
        heads = {k: v for k, v in msg.arrays.items() if head_depth(k) is not None}
        inner = Message(msg.kind, {k: v for k, v in msg.arrays.items() if k not in heads})
        model, blocks, prefix = member_model(inner)
        if blocks != list(range(len(blocks))):
            raise ValueError(f"DepthFL members hold their first blocks, got {blocks}")
        full_depth = len(blocks) == num_blocks(full())
        net = DepthHeads(model, heads, len(blocks), own_head_last=full_depth).to(dev)
        cfg = LocalTrainConfig.from_config(msg.config)
        kd = float(msg.config.get("kd_weight", 0.0))

        def loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return mutual_distillation_loss(m(xb), yb, kd)

        fit = measured_training(net, ctx.data, cfg, ctx.seed, dev, loss, **limits(msg))
        arrays = renumber(adapter_arrays(model), prefix, dict(enumerate(blocks)))
        if not full_depth:  # the model's own head sits after the last block: not trained here
            head = f".{msg.config.get('head_name', 'classifier')}."
            arrays = {k: v for k, v in arrays.items() if head not in f".{k}"}
        arrays.update(net.head_arrays())
        return msg.reply(arrays=arrays, metrics={**fit, "blocks": float(len(blocks))})

    @app.on("fedra_evaluate")
    def evaluate_local(msg: Message, ctx: ClientContext) -> Message:
        model, _, _ = member_model(msg)
        return msg.reply(metrics=evaluate_member(LogitsOnly(model), ctx, dev))

    return app


def block_arrays(
    arrays: dict[str, np.ndarray], prefix: str, blocks: list[int]
) -> dict[str, np.ndarray]:
    """The adapters of ``blocks`` plus every non-block entry (the head)."""
    marker = prefix + "."
    keep = {f"{marker}{b}." for b in blocks}
    return {k: v for k, v in arrays.items() if marker not in k or any(m in k for m in keep)}
