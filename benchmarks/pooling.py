"""The channels-last max-pool against torch's stock one, inside the small CNN, as ratios.

Two copies of the same ``SmallCNN`` (one with ``nn.MaxPool2d``, one with
``consortium.models.pooling.MaxPool2d``) train on the same batches and score the same images,
interleaved step by step in one process on one torch thread (as the runtime's members run);
medians are printed, then whether the two copies ended bit-identical.

    python benchmarks/pooling.py                 # Fashion-MNIST-sized and digits-sized inputs
    python benchmarks/pooling.py --steps 200
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from consortium.models.cnn import SmallCNN


def compare(shape: tuple[int, int, int], batch: int, steps: int, eval_every: int) -> None:
    torch.manual_seed(0)
    fast = SmallCNN(shape, 10)
    stock = copy.deepcopy(fast)
    stock.features[2], stock.features[5] = nn.MaxPool2d(2), nn.MaxPool2d(2)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch, *shape, generator=gen)
    x[x < 0.5] = 0  # blank background, as in the digit images: ties in the pooling windows
    y = torch.randint(0, 10, (batch,), generator=gen)
    test = torch.rand(1000, *shape, generator=gen)
    nets = {"stock": stock, "channels-last": fast}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for k, m in nets.items()}
    train: dict[str, list[float]] = {k: [] for k in nets}
    score: dict[str, list[float]] = {k: [] for k in nets}
    for step in range(steps):
        for name, net in nets.items():
            t = time.perf_counter()
            opts[name].zero_grad()
            F.cross_entropy(net(x), y).backward()
            opts[name].step()
            train[name].append(time.perf_counter() - t)
            if step % eval_every == 0:
                with torch.no_grad():
                    t = time.perf_counter()
                    net(test)
                    score[name].append(time.perf_counter() - t)
    med = {k: (statistics.median(train[k]), statistics.median(score[k])) for k in nets}
    pairs = zip(stock.parameters(), fast.parameters(), strict=True)
    same = all(torch.equal(p, q) for p, q in pairs)
    (st, se), (ft, fe) = med["stock"], med["channels-last"]
    print(
        f"{'x'.join(map(str, shape))}, batch {batch}: "
        f"train step {st * 1e3:.2f} -> {ft * 1e3:.2f} ms "
        f"({st / ft:.2f}x); scoring 1,000 images {se * 1e3:.1f} -> {fe * 1e3:.1f} ms "
        f"({se / fe:.2f}x); bit-identical after {steps} steps: {same}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(1)
    compare((1, 28, 28), 32, args.steps, 10)
    compare((1, 8, 8), 32, args.steps * 3, 30)


if __name__ == "__main__":
    main()
