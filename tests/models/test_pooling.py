"""The channels-last max-pool: the stock operator's outputs and gradients, bit for bit."""

import pytest
import torch
import torch.nn.functional as F

from consortium.models.cnn import SmallCNN
from consortium.models.pooling import MaxPool2d, max_pool2d


def _both(x: torch.Tensor, k: int, grad_seed: int = 0):
    a = x.detach().clone().requires_grad_(True)
    b = x.detach().clone().requires_grad_(True)
    out_a, out_b = F.max_pool2d(a, k), max_pool2d(b, k)
    g = torch.randn(out_a.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=x.dtype)
    out_a.backward(g)
    out_b.backward(g)
    return out_a, out_b, a.grad, b.grad


@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (2, 5, 7, 9), (1, 1, 2, 2), (3, 16, 28, 28)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_and_gradients_equal_the_stock_operator(shape, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    out_a, out_b, grad_a, grad_b = _both(x, 2)
    assert out_b.is_contiguous() and out_b.shape == out_a.shape
    assert torch.equal(out_a, out_b)
    assert torch.equal(grad_a, grad_b)
    with torch.no_grad():  # scoring takes the path without indices
        assert torch.equal(max_pool2d(x, 2), F.max_pool2d(x, 2))


def test_ties_route_the_gradient_where_the_stock_operator_does():
    """After a ReLU, and over a blank background, whole windows hold equal values: the
    gradient must still go to the same element of each window."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 3, (4, 6, 12, 12), generator=gen).float()  # many exact ties
    x[:, :, :6] = 0.5  # whole windows equal
    out_a, out_b, grad_a, grad_b = _both(x, 2)
    assert torch.equal(out_a, out_b) and torch.equal(grad_a, grad_b)
    x3 = torch.randint(0, 2, (2, 3, 9, 9), generator=gen).double()
    out_a, out_b, grad_a, grad_b = _both(x3, 3)
    assert torch.equal(out_a, out_b) and torch.equal(grad_a, grad_b)


def test_module_is_a_maxpool_with_the_same_training_result():
    """SmallCNN trained with the fast pool ends bit-identical to the same net with nn.MaxPool2d."""
    torch.manual_seed(0)
    fast = SmallCNN((1, 8, 8), 10)
    assert isinstance(fast.features[2], MaxPool2d)  # an nn.MaxPool2d subclass
    stock = SmallCNN((1, 8, 8), 10)
    stock.load_state_dict(fast.state_dict())
    stock.features[2], stock.features[5] = torch.nn.MaxPool2d(2), torch.nn.MaxPool2d(2)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(64, 1, 8, 8, generator=gen)
    x[x < 0.6] = 0  # digit-like: mostly blank
    y = torch.randint(0, 10, (64,), generator=gen)
    for net in (fast, stock):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for _ in range(20):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    for p, q in zip(fast.parameters(), stock.parameters(), strict=True):
        assert torch.equal(p, q)


def test_other_inputs_use_the_stock_operator():
    x = torch.randn(3, 8, 8)  # 3-D (unbatched): handed to F.max_pool2d unchanged
    assert torch.equal(max_pool2d(x, 2), F.max_pool2d(x, 2))
    h = torch.randn(1, 2, 4, 4).half()
    assert torch.equal(max_pool2d(h, 2), F.max_pool2d(h, 2))
