import numpy as np
import pytest
import torch

from consortium.models import build_model, get_arrays
from consortium.models.slimmable import (
    SlimCNN,
    SlimGroupNorm,
    SlimResNet18,
    require_slimmable,
    scaled_channels,
    slice_arrays,
    submodel_arrays,
)

WIDTHS = [0.1, 0.25, 0.3, 0.5, 0.77, 1.0]


def cnn(shape=(1, 28, 28)):
    torch.manual_seed(0)
    return build_model("slim_cnn", shape, 10, channels=[8, 16], hidden=24)


def resnet():
    torch.manual_seed(0)
    return build_model("slim_resnet18", (3, 16, 16), 7, channels=[8, 16, 24, 32], group_size=4)


def masked_full(model, p):
    """The full model with every weight outside the width-p corner zeroed (run at width 1)."""
    shapes = model.submodel_shapes(p)
    masked = model.narrow(1.0)
    state = model.state_dict()
    with torch.no_grad():
        for name, target in masked.state_dict().items():
            corner = tuple(slice(0, s) for s in shapes[name])
            target.zero_()
            target[corner] = state[name][corner]
    return masked


@pytest.mark.parametrize(
    "make,shape", [(cnn, (1, 28, 28)), (lambda: cnn((1, 8, 8)), (1, 8, 8)), (resnet, (3, 16, 16))]
)
@pytest.mark.parametrize("p", WIDTHS)
def test_submodel_computes_the_sliced_and_the_masked_full_model(make, shape, p):
    model = make().eval()
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(1))
    sub = model.submodel(p).eval()
    with torch.no_grad():
        sliced = model(x, width=p)
        standalone = sub(x)
        masked = masked_full(model, p).eval()(x)
    assert torch.allclose(standalone, sliced, atol=1e-5), (standalone - sliced).abs().max()
    assert torch.allclose(standalone, masked, atol=1e-5), (standalone - masked).abs().max()
    # A real, smaller model: its tensors are the leading corners of the full ones.
    full = model.state_dict()
    for name, tensor in sub.state_dict().items():
        corner = tuple(slice(0, s) for s in tensor.shape)
        assert torch.equal(tensor, full[name][corner]), name
    n_sub = sum(t.numel() for t in sub.state_dict().values())
    n_full = sum(t.numel() for t in full.values())
    assert (n_sub < n_full) == (p < 1.0)
    assert type(sub) is type(model) and sub.width == 1.0


def test_widths_slice_hidden_layers_only():
    model = cnn()
    sub = model.submodel(0.25)
    assert sub.conv1.weight.shape == (2, 1, 3, 3)  # input channels never sliced
    assert sub.fc2.weight.shape == (10, 6)  # classes never sliced
    assert [scaled_channels(10, p) for p in (0.1, 0.3, 0.31, 1.0)] == [1, 3, 4, 10]
    r = resnet().submodel(0.3)
    assert r.channels == (4, 8, 8, 12)  # rounded up to multiples of the group size (4)
    assert r.fc.weight.shape == (7, 12)


def test_arrays_of_a_submodel_are_cut_from_the_full_arrays():
    model = resnet()
    arrays = get_arrays(model)
    for p in (0.2, 0.5):
        cut = submodel_arrays(model, arrays, p)
        sub = get_arrays(model.submodel(p))
        assert set(cut) == set(sub)
        for k in cut:
            assert np.array_equal(cut[k], sub[k]), k
    with pytest.raises(ValueError, match="cannot cut"):
        slice_arrays({"w": np.zeros((2, 2))}, {"w": (3, 1)})


def test_set_width_drives_plain_calls_and_is_validated():
    model = cnn().eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        half = model(x, width=0.5)
        model.set_width(0.5)
        assert torch.equal(model(x), half)
        model.set_width(1.0)
        assert not torch.equal(model(x), half)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            model.set_width(bad)


def test_a_narrow_pass_only_trains_the_leading_slice():
    model = resnet()
    loss = model(torch.randn(4, 3, 16, 16), width=0.5).sum()
    loss.backward()
    shapes = model.submodel_shapes(0.5)
    for name, param in model.named_parameters():
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        outside = torch.ones_like(grad, dtype=torch.bool)
        outside[tuple(slice(0, s) for s in shapes[name])] = False
        assert not grad[outside].any(), name


def test_group_norm_needs_whole_groups():
    with pytest.raises(ValueError, match="multiple"):
        SlimGroupNorm(10, 4)
    with pytest.raises(ValueError, match="multiples"):
        SlimResNet18((3, 8, 8), 10, channels=(8, 16, 24, 30), group_size=4)
    norm = SlimGroupNorm(8, 4)
    with pytest.raises(ValueError, match="multiple"):
        norm(torch.randn(2, 6, 3, 3))


def test_registered_and_checked():
    assert isinstance(build_model("slim_cnn", (1, 8, 8), 10), SlimCNN)
    assert isinstance(build_model("slim_resnet18", (3, 32, 32), 10), SlimResNet18)
    assert build_model("slim_resnet18", (3, 32, 32), 10).param_fraction(1.0) == 1.0
    with pytest.raises(TypeError, match="slim_cnn"):
        require_slimmable(build_model("cnn", (1, 8, 8), 10))
