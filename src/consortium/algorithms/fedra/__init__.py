"""FedRA: federated LoRA tuning by members that hold only some transformer blocks, with the
depth-heterogeneous baselines ALL-large, ALL-small, InclusiveFL (optionally with its momentum
distillation) and DepthFL; registers ``fedra``, ``all_large``, ``all_small``, ``inclusivefl``
and ``depthfl``."""

from __future__ import annotations

from typing import Any

import numpy as np

from consortium.algorithms.fedra.allocation import allocate
from consortium.algorithms.fedra.client import LogitsOnly, fedra_client_app
from consortium.algorithms.fedra.config import DepthFLConfig, FedRAConfig, InclusiveFLConfig
from consortium.algorithms.fedra.depthfl import DepthFL
from consortium.algorithms.fedra.workflow import (
    AllLarge,
    AllSmall,
    FedRA,
    InclusiveFL,
    seeded_lora_model_fn,
)
from consortium.algorithms.registry import MethodContext, MethodSpec, register_method
from consortium.config import ConfigError
from consortium.core.client import ClientApp
from consortium.data.domains import member_domains
from consortium.data.text import MINILM

__all__ = [
    "AllLarge",
    "AllSmall",
    "DepthFL",
    "DepthFLConfig",
    "FedRA",
    "FedRAConfig",
    "InclusiveFL",
    "InclusiveFLConfig",
    "LogitsOnly",
    "allocate",
    "fedra_client_app",
    "seeded_lora_model_fn",
]


def backbone_fn(cfg: FedRAConfig, data: Any) -> Any:
    """Builds the configured pretrained backbone with a head for the data's classes."""
    from consortium.models.pretrain import PRETRAINED, BackboneUnavailableError, backbone_folder
    from consortium.models.transformer import (
        load_image_classifier,
        load_text_classifier,
        tiny_image_classifier,
        tiny_text_classifier,
    )

    images = np.issubdtype(data.pool_x.dtype, np.floating)
    source = cfg.backbone
    if images and source in PRETRAINED:
        # Built (pretrained or converted) once here, before any member process loads it.
        try:
            source = str(backbone_folder(source))
        except BackboneUnavailableError as err:
            raise ConfigError(f"backbone {cfg.backbone!r}: {err}") from None

    def backbone() -> Any:
        size = int(data.pool_x.shape[-1])
        if images and cfg.backbone in ("tiny", "tiny_dinov2"):
            family = "dinov2" if cfg.backbone == "tiny_dinov2" else "vit"
            return tiny_image_classifier(data.num_classes, 6, size, family)
        if images and cfg.backbone == "tiny_mixer":
            from consortium.models.vision import small_mixer

            arch = {"image_size": size, "patch_size": 4, "hidden_size": 16, "layers": 6}
            return small_mixer(data.num_classes, **arch)
        if images:
            if cfg.backbone == MINILM:
                raise ConfigError("image data: set backbone to a ViT / DINOv2 / Mixer")
            return load_image_classifier(source, data.num_classes)
        if cfg.backbone == "tiny":
            return tiny_text_classifier(data.num_classes, layers=6, vocab=30522)
        return load_text_classifier(cfg.backbone, data.num_classes)

    return backbone


def _build(cls: type[FedRA]):  # type: ignore[no-untyped-def]
    def build(ctx: MethodContext, cfg: FedRAConfig) -> tuple[FedRA, ClientApp]:
        data = ctx.data
        domains = None
        if getattr(data, "pool_groups", None) is not None:
            domains = member_domains(data)
        try:
            caps = cfg.member_capacities(data.num_clients, domains)
        except ValueError as err:
            raise ConfigError(f"{cls.name}: {err}") from None
        if cfg.sampling == "one_per_domain" and domains is None:
            raise ConfigError(f'{cls.name}: sampling = "one_per_domain" needs data with domains')
        # One capacity per member (cycled, or its domain's); the run keeps the resolved list.
        cfg = cfg.model_copy(update={"capacities": list(caps)})
        model_fn = seeded_lora_model_fn(backbone_fn(cfg, data), cfg.lora, ctx.seed)
        sizes = [len(ix) for ix in data.client_train]
        wf = cls(cfg, model_fn, data.test_x, data.test_y, data.test_groups, domains, sizes)
        return wf, fedra_client_app(model_fn, ctx.device)

    return build


for _cls, _config, _text in (
    (FedRA, FedRAConfig, "FedRA: random block allocation per round, LoRA on held blocks"),
    (AllLarge, FedRAConfig, "ALL-large: every member trains every block (ignores limits)"),
    (AllSmall, FedRAConfig, "ALL-small: everyone uses the first min L_k blocks"),
    (InclusiveFL, InclusiveFLConfig, "InclusiveFL: first L_k blocks, depth-wise partial averaging"),
    (DepthFL, DepthFLConfig, "DepthFL: first L_k blocks, a head per block, self-distillation"),
):
    register_method(MethodSpec(_cls.name, _config, _build(_cls), _text, report="fedra"))
