"""Multi-domain federations: feature skew and feature + label skew, and the on-disk image
domain benchmarks FedRA is evaluated on (DomainNet, NICO++).

* Feature skew: one domain per member (or a domain's samples split IID among several) — the
  ``groups`` partition of :mod:`consortium.data.partition`.
* Feature + label skew (FedRA's second setting): members are dealt to domains as for feature
  skew, then each domain's samples are split among its members with NIID-Bench Dirichlet
  label skew (:func:`dirichlet_within_domains`).

The image loaders read the datasets' standard layouts with their official split files and never
download anything; a missing or malformed root raises :class:`DatasetNotFoundError` with one
line saying what was expected and where to get it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from consortium.config import ConfigError, Options
from consortium.data.config import DataConfig
from consortium.data.federated import FederatedData
from consortium.data.partition import Partition, partition
from consortium.data.registry import federate, register_dataset
from consortium.data.sources import Dataset, DatasetNotFoundError, DatasetSplits

# --- feature + label skew -----------------------------------------------------------------


def member_domains(fd: FederatedData) -> np.ndarray:
    """The domain of each member of a ``groups`` federation (its samples' only domain)."""
    if fd.pool_groups is None:
        raise ValueError(f"{fd.name}: the data has no domains")
    out = []
    for cid, ix in enumerate(fd.partition.client_indices):
        doms = np.unique(fd.pool_groups[ix])
        if len(doms) != 1:
            raise ValueError(f"member {cid} holds {len(doms)} domains: not a groups partition")
        out.append(int(doms[0]))
    return np.asarray(out, np.int64)


def dirichlet_within_domains(
    fd: FederatedData,
    alpha: float,
    seed: int,
    min_size: int = 10,
    client_test_fraction: float = 0.0,
) -> FederatedData:
    """Re-split each domain's samples among that domain's members with Dir(``alpha``) label
    skew; members keep their domain. ``fd`` must come from the ``groups`` partition."""
    domains = member_domains(fd)
    rng = np.random.default_rng([seed, 7])
    parts: list[np.ndarray] = [np.zeros(0, np.int64)] * fd.num_clients
    for dom in np.unique(domains):
        members = np.flatnonzero(domains == dom)
        pool = np.sort(np.concatenate([fd.partition.client_indices[c] for c in members]))
        if len(members) == 1:
            parts[members[0]] = pool
            continue
        sub = partition(
            fd.pool_y[pool], len(members), "dirichlet", rng=rng, alpha=alpha, min_size=min_size
        )
        for c, ix in zip(members, sub.client_indices, strict=True):
            parts[c] = pool[ix]
    new = Partition(tuple(np.sort(p) for p in parts))
    new.validate(len(fd.pool_y))
    split_rng = np.random.default_rng([seed, 8])
    train, test = [], []
    for ix in new.client_indices:
        n_test = min(round(client_test_fraction * len(ix)), max(len(ix) - 1, 0))
        perm = split_rng.permutation(ix)
        train.append(np.sort(perm[n_test:]))
        test.append(np.sort(perm[:n_test]))
    return dataclasses.replace(
        fd,
        scheme=f"groups+dirichlet({alpha:g})",
        partition=new,
        client_train=tuple(train),
        client_test=tuple(test),
    )


def with_skew(data: FederatedData, cfg: DataConfig, skew: str, seed: int) -> FederatedData:
    """``data`` as a dataset's ``skew`` option asks: ``feature`` keeps the ``groups``
    partition, ``feature_label`` re-splits each domain with Dirichlet(``cfg.alpha``) labels."""
    if skew != "feature_label":
        return data
    return dirichlet_within_domains(data, cfg.alpha, seed, cfg.min_size, cfg.client_test_fraction)


# --- DomainNet and NICO++ on disk ------------------------------------------------------------

DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
NICO_PP_DOMAINS = ("autumn", "dim", "grass", "outdoor", "rock", "water")
#: CLIP's normalisation, which the FedRA code applies to both benchmarks; ``imagenet`` is what
#: ``transformers``' ViT / DINOv2 image processors use.
NORMALISATION = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

_HOW = {
    "DomainNet": "get DomainNet (6 domains, 345 classes) from its project page (M3SDA) and unpack "
    "the domain folders and the <domain>_train.txt / <domain>_test.txt split files into it",
    "NICO++": "get NICO++ (NICO_DG track: 6 domains, 60 classes) from its project page and unpack "
    "the images and the official NICO_DG_official/<domain>_train.txt / _test.txt split files",
}


@dataclass(frozen=True)
class ImageIndex:
    """The images of a domain benchmark (files, not pixels): one entry per image.

    ``train`` marks the official training split; everything else is the official test split.
    """

    name: str
    paths: tuple[Path, ...]
    labels: np.ndarray
    domains: np.ndarray
    train: np.ndarray
    domain_names: tuple[str, ...]
    num_classes: int

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, keep: np.ndarray) -> ImageIndex:
        keep = np.asarray(keep)
        return dataclasses.replace(
            self,
            paths=tuple(self.paths[i] for i in keep),
            labels=self.labels[keep],
            domains=self.domains[keep],
            train=self.train[keep],
        )


def read_split_file(file: Path, root: Path, dataset: str) -> list[tuple[Path, int]]:
    """Lines ``<path relative to root> <integer label>``; paths may hold spaces (NICO++ class
    folders do), so the label is what follows the last space."""
    out = []
    for n, raw in enumerate(file.read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        path, _, label = line.rpartition(" ")
        if not path or not label.lstrip("-").isdigit() or int(label) < 0:
            raise DatasetNotFoundError(
                f"{dataset}: {file}:{n}: expected '<relative path> <label>', got {line!r}"
            )
        out.append((root / path.strip(), int(label)))
    return out


def _split_file(root: Path, folders: Sequence[str], domain: str, split: str) -> Path | None:
    for folder in folders:
        f = root / folder / f"{domain}_{split}.txt"
        if f.is_file():
            return f
    return None


def _index(
    dataset: str,
    root: str | Path | None,
    domains: Sequence[str],
    folders: Sequence[str],
    max_classes: int | None,
) -> ImageIndex:
    if root is None:
        raise DatasetNotFoundError(f"{dataset}: no path given; {_HOW[dataset]}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetNotFoundError(f"{dataset} not found at {base}: {_HOW[dataset]}")
    paths: list[Path] = []
    labels, doms, train = [], [], []
    for d, domain in enumerate(domains):
        for split in ("train", "test"):
            f = _split_file(base, folders, domain, split)
            if f is None:
                where = " or ".join(str(base / x / f"{domain}_{split}.txt") for x in folders)
                raise DatasetNotFoundError(f"{dataset}: no split file {where}; {_HOW[dataset]}")
            for path, label in read_split_file(f, base, dataset):
                if max_classes is not None and label >= max_classes:
                    continue
                paths.append(path)
                labels.append(label)
                doms.append(d)
                train.append(split == "train")
    if not paths:
        raise DatasetNotFoundError(f"{dataset}: the split files under {base} list no images")
    y = np.asarray(labels, np.int64)
    return ImageIndex(
        dataset,
        tuple(paths),
        y,
        np.asarray(doms, np.int64),
        np.asarray(train, bool),
        tuple(domains),
        int(max_classes if max_classes is not None else y.max() + 1),
    )


def index_domainnet(
    root: str | Path | None,
    domains: Sequence[str] = DOMAINNET_DOMAINS,
    max_classes: int | None = 100,
) -> ImageIndex:
    """DomainNet: ``<root>/<domain>/<class>/<image>.jpg`` and the official split files
    ``<domain>_train.txt`` / ``<domain>_test.txt`` (in ``root`` or ``root/splits``), lines
    ``<domain>/<class>/<image>.jpg <label>``. ``max_classes`` = 100 keeps labels < 100, as
    the FedRA code does; ``None`` keeps all 345."""
    return _index("DomainNet", root, domains, (".", "splits"), max_classes)


def index_nico_pp(
    root: str | Path | None,
    domains: Sequence[str] = NICO_PP_DOMAINS,
    max_classes: int | None = None,
) -> ImageIndex:
    """NICO++ (domain-generalisation track): images under ``root`` and the official split
    files ``NICO_DG_official/<domain>_train.txt`` / ``_test.txt`` (or directly in ``root``),
    lines ``<path relative to root> <label>`` with labels 0..59."""
    return _index("NICO++", root, domains, ("NICO_DG_official", "."), max_classes)


def subsample(
    index: ImageIndex, per_domain_train: int | None, per_domain_test: int | None, seed: int
) -> ImageIndex:
    """At most that many training / test images per domain, drawn at random (seeded), so a
    quick run decodes only what it uses."""
    rng = np.random.default_rng([seed, 11])
    keep = []
    for d in np.unique(index.domains):
        for is_train, cap in ((True, per_domain_train), (False, per_domain_test)):
            ix = np.flatnonzero((index.domains == d) & (index.train == is_train))
            if cap is not None and len(ix) > cap:
                ix = np.sort(rng.choice(ix, cap, replace=False))
            keep.append(ix)
    return index.subset(np.sort(np.concatenate(keep)))


def load_images(
    paths: Sequence[Path],
    size: int = 224,
    normalisation: Literal["clip", "imagenet"] = "clip",
) -> np.ndarray:
    """Decode images to float32 ``(n, 3, size, size)``: RGB, bicubic resize, normalised (the
    FedRA code's pre-processing, without augmentation)."""
    from PIL import Image

    mean, std = (np.asarray(v, np.float32)[:, None, None] for v in NORMALISATION[normalisation])
    out = np.empty((len(paths), 3, size, size), np.float32)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        except FileNotFoundError:
            raise DatasetNotFoundError(f"image listed in a split file is missing: {path}") from None
        out[i] = (np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0 - mean) / std
    return out


def image_splits(
    index: ImageIndex, size: int = 224, normalisation: Literal["clip", "imagenet"] = "clip"
) -> DatasetSplits:
    """Decoded official train and test splits, with the domain of every image as its group."""

    def part(mask: np.ndarray, tag: str) -> Dataset:
        sub = index.subset(np.flatnonzero(mask))
        x = load_images(sub.paths, size, normalisation)
        return Dataset(f"{index.name}-{tag}", x, sub.labels, index.num_classes, sub.domains)

    return DatasetSplits(part(index.train, "train"), part(~index.train, "test"))


# --- DomainNet and NICO++ as experiment datasets ----------------------------------------------


class DomainImageOptions(Options):
    """``[data] options`` of ``domainnet`` and ``nico_pp``."""

    image_size: int = Field(224, ge=8, le=1024, description="images are resized to this square")
    normalisation: Literal["clip", "imagenet"] = Field("clip", description="clip | imagenet")
    domains: list[str] | None = Field(None, description="domains to use (default: all six)")
    max_classes: int | None = Field(None, ge=1, description="keep the first classes only")
    per_domain_train: int | None = Field(None, ge=1, description="subsample training images")
    per_domain_test: int | None = Field(None, ge=1, description="subsample test images")
    skew: Literal["feature", "feature_label"] = Field(
        "feature", description="feature | feature_label (Dirichlet(data.alpha) within domains)"
    )


def _domain_images(dataset: Literal["domainnet", "nico_pp"]):  # type: ignore[no-untyped-def]
    """Builder of DomainNet / NICO++: official splits, domains as groups, decoded at
    ``image_size`` after subsampling."""

    def build(cfg: DataConfig, opts: DomainImageOptions, seed: int) -> FederatedData:
        if cfg.partition != "groups":
            raise ConfigError(f'{dataset}: partition must be "groups" (a domain per member)')
        root = cfg.path or os.environ.get("CONSORTIUM_DATA_DIR")
        if dataset == "domainnet":
            domains = tuple(opts.domains or DOMAINNET_DOMAINS)
            index = index_domainnet(root, domains, opts.max_classes or 100)
        else:
            domains = tuple(opts.domains or NICO_PP_DOMAINS)
            index = index_nico_pp(root, domains, opts.max_classes)
        index = subsample(index, opts.per_domain_train, opts.per_domain_test, seed)
        splits = image_splits(index, opts.image_size, opts.normalisation)
        return with_skew(federate(cfg, splits, seed), cfg, opts.skew, seed)

    return build


for _name, _text in (
    ("domainnet", "DomainNet's six styles (its on-disk layout and split files; data.path)"),
    ("nico_pp", "NICO++'s six contexts (its on-disk layout and split files; data.path)"),
):
    register_dataset(
        _name, build=_domain_images(_name), options=DomainImageOptions, description=_text
    )
