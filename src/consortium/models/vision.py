"""Small vision backbones of FedRA's depth (12 blocks), built on ``transformers`` classes.

FedRA's paper tunes ViT-B/16 and MLP-Mixer-B/16; neither checkpoint (nor any MLP-Mixer) reaches
these machines. The two families here have the same block structure at a size a CPU pretrains
in minutes:

* :func:`small_vit` — ``transformers``' own ``ViTForImageClassification`` (pre-norm blocks,
  CLS token), 12 blocks;
* :class:`MixerForImageClassification` — an MLP-Mixer (Tolstikhin et al., 2021) written as a
  ``transformers`` ``PreTrainedModel``: token-mixing and channel-mixing MLPs named
  ``mlp_tokens`` / ``mlp_channels`` with ``fc1`` / ``fc2`` (the names FedRA's LoRA targets
  use), blocks in ``mixer.layers``, global average pooling, a linear ``classifier``. It saves
  and loads with ``save_pretrained`` / ``AutoModelForImageClassification`` like any other.

Both take float pixels ``(n, 3, H, W)`` and return ``ImageClassifierOutput`` (with per-block
hidden states on request), so :mod:`consortium.models.transformer` cuts them into sub-models,
injects LoRA and reads intermediate blocks out without special cases.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.modeling_outputs import ImageClassifierOutput

MIXER_TYPE = "consortium_mixer"


class MixerConfig(PretrainedConfig):
    """MLP-Mixer hyper-parameters (``num_hidden_layers`` blocks of width ``hidden_size``)."""

    model_type = MIXER_TYPE

    #: Hyper-parameters and their defaults (any of them may be given as a keyword).
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "image_size": 28,
        "patch_size": 7,
        "num_channels": 3,
        "hidden_size": 64,
        "num_hidden_layers": 12,
        "tokens_mlp_dim": 32,
        "channels_mlp_dim": 128,
        "layer_norm_eps": 1e-6,
    }

    def __init__(self, **kwargs: Any) -> None:
        own = {k: kwargs.pop(k, v) for k, v in self.DEFAULTS.items()}
        super().__init__(**kwargs)
        for key, value in own.items():
            setattr(self, key, value)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class MixerMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MixerBlock(nn.Module):
    """Token mixing across patches, then channel mixing, each pre-norm with a skip."""

    def __init__(self, cfg: MixerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp_tokens = MixerMlp(cfg.num_patches, cfg.tokens_mlp_dim)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp_channels = MixerMlp(cfg.hidden_size, cfg.channels_mlp_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mixed = self.mlp_tokens(self.norm1(hidden_states).transpose(1, 2)).transpose(1, 2)
        hidden_states = hidden_states + mixed
        return hidden_states + self.mlp_channels(self.norm2(hidden_states))


class MixerModel(nn.Module):
    """Patch embedding, the blocks, the final norm."""

    def __init__(self, cfg: MixerConfig) -> None:
        super().__init__()
        self.patch_embeddings = nn.Conv2d(
            cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size
        )
        self.layers = nn.ModuleList(MixerBlock(cfg) for _ in range(cfg.num_hidden_layers))
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        h = self.patch_embeddings(pixel_values).flatten(2).transpose(1, 2)
        states = [h]
        for block in self.layers:
            h = block(h)
            states.append(h)
        return self.layernorm(h), tuple(states) if output_hidden_states else None


class MixerPreTrainedModel(PreTrainedModel):
    config_class = MixerConfig
    base_model_prefix = "mixer"
    main_input_name = "pixel_values"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class MixerForImageClassification(MixerPreTrainedModel):
    """MLP-Mixer with a linear head on the mean token (the Mixer paper's read-out)."""

    def __init__(self, config: MixerConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mixer = MixerModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **_: Any,
    ) -> ImageClassifierOutput:
        normed, states = self.mixer(pixel_values, bool(output_hidden_states))
        logits = self.classifier(normed.mean(1))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=states)


AutoConfig.register(MIXER_TYPE, MixerConfig, exist_ok=True)
AutoModelForImageClassification.register(MixerConfig, MixerForImageClassification, exist_ok=True)


#: The small backbones' architecture (any key may be overridden in :func:`small_backbone`).
SMALL = {"image_size": 28, "patch_size": 7, "hidden_size": 64, "layers": 12, "heads": 4}


def small_backbone(family: str, num_labels: int = 10, seed: int = 0, **arch: int) -> nn.Module:
    """A randomly initialised ``vit`` or ``mixer`` (seeded) of :data:`SMALL`'s architecture
    updated with ``arch``; MLPs are twice the width (the Mixer's token MLP half of it)."""
    unknown = set(arch) - set(SMALL)
    if unknown:
        raise TypeError(f"unknown architecture keys {sorted(unknown)}; known: {sorted(SMALL)}")
    a = {**SMALL, **arch}
    image_size, patch_size, hidden_size = a["image_size"], a["patch_size"], a["hidden_size"]
    layers, heads = a["layers"], a["heads"]
    torch.manual_seed(seed)
    shape: dict[str, Any] = {
        "image_size": image_size,
        "patch_size": patch_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": layers,
        "num_labels": num_labels,
    }
    if family == "mixer":
        mlps = {"tokens_mlp_dim": hidden_size // 2, "channels_mlp_dim": 2 * hidden_size}
        return MixerForImageClassification(MixerConfig(**mlps, **shape))
    if family != "vit":
        raise ValueError(f"unknown family {family!r}: vit or mixer")
    vit = {"num_channels": 3, "num_attention_heads": heads, "intermediate_size": 2 * hidden_size}
    return ViTForImageClassification(ViTConfig(**vit, **shape))


def small_vit(num_labels: int = 10, **options: Any) -> nn.Module:
    """:func:`small_backbone` ``("vit", ...)``: 12 blocks of width 64 by default."""
    return small_backbone("vit", num_labels, **options)


def small_mixer(num_labels: int = 10, **options: Any) -> nn.Module:
    """:func:`small_backbone` ``("mixer", ...)``: 12 blocks of width 64 by default."""
    return small_backbone("mixer", num_labels, **options)
