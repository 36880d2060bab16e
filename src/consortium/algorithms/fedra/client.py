"""A FedRA member: build the sub-model of the blocks it was given, tune adapters and head,
send back only those (renamed to the global block indices)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from consortium.core.client import ClientApp, ClientContext
from consortium.core.message import Message
from consortium.models.transformer import (
    adapter_arrays,
    block_prefix,
    load_adapter_arrays,
    renumber,
    sub_model,
)
from consortium.training import LocalTrainConfig, evaluate, resolve_device, train_local


class LogitsOnly(nn.Module):
    """Lets the shared training loop call a ``transformers`` classifier as ``model(x)``.

    Integer inputs are token ids (0 is padding, masked out); float inputs are pixel values.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.int64, torch.int32):
            return self.model(input_ids=x, attention_mask=(x != 0).long()).logits
        return self.model(pixel_values=x).logits


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
        load_adapter_arrays(model, local)
        return model, blocks, prefix

    @app.on("fedra_train")
    def train(msg: Message, ctx: ClientContext) -> Message:
        model, blocks, prefix = member_model(msg)
        cfg = LocalTrainConfig.from_config(msg.config)
        data = ctx.data
        fit = train_local(
            LogitsOnly(model), data.x, data.y, data.train_indices, cfg, ctx.seed, device=dev
        )
        arrays = renumber(adapter_arrays(model), prefix, dict(enumerate(blocks)))
        return msg.reply(arrays=arrays, metrics={**fit, "blocks": float(len(blocks))})

    @app.on("fedra_evaluate")
    def evaluate_local(msg: Message, ctx: ClientContext) -> Message:
        model, _, _ = member_model(msg)
        data = ctx.data
        metrics = evaluate(LogitsOnly(model), data.x, data.y, data.test_indices, device=dev)
        if metrics["num_examples"] == 0:
            metrics = {"num_examples": 0.0}
        return msg.reply(metrics=metrics)

    return app


def block_arrays(
    arrays: dict[str, np.ndarray], prefix: str, blocks: list[int]
) -> dict[str, np.ndarray]:
    """The adapters of ``blocks`` plus every non-block entry (the head)."""
    marker = prefix + "."
    keep = {f"{marker}{b}." for b in blocks}
    return {k: v for k, v in arrays.items() if marker not in k or any(m in k for m in keep)}
