"""FedRA vs ALL-large vs ALL-small vs InclusiveFL vs DepthFL on six visual domains: the
paper's comparison, as one command.

Grid: backbone (a 12-block ViT and MLP-Mixer pretrained on printed digits, optionally DINOv2
ViT-S/14) x skew (feature: one member per domain; feature + label: five members per domain,
Dirichlet(0.5) labels within each) x capacities ([12,10,8,6,4,3] per domain, and every member
3 of 12 blocks) x seeds, under the official FedRA training protocol (step cap, clipping, one
member per domain each round, capacity per domain, LoRA r 8 / alpha 8 / dropout 0.1 on the
attention output, MLP fc2 and patch embedding). The data is the offline ``digit_domains``
benchmark. ALL-large and ALL-small do not depend on the capacity list's spread (ALL-large ignores
it, ALL-small uses its minimum, 3 in both), so they run once per cell.

    python experiments/fedra_domains.py --out runs/fedra-domains            # the table
    python experiments/fedra_domains.py --out runs/fedra-domains --dinov2   # + DINOv2 ViT-S
    python experiments/fedra_domains.py --report-only --out runs/fedra-domains

Runs already finished are kept (the command resumes); the report, ``fedra_domains.md``, is
written into ``--out`` (mean ± std over seeds per domain and over domains, per-member peak memory
and time, bytes per round).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from consortium.data.config import DataConfig
from consortium.data.digit_domains import DEFAULT_DOMAINS
from consortium.experiment import Experiment, run_experiment
from consortium.experiment.config import FederationSection
from consortium.report.fedra import seed_table
from consortium.training import LocalTrainConfig

METHODS = ("fedra", "all_large", "all_small", "inclusivefl", "depthfl")
HETERO = [12, 10, 8, 6, 4, 3]
SMALL = [3] * 6
SMALL_METHODS = ("fedra", "inclusivefl", "depthfl")


def cell_experiment(
    backbone: str, skew: str, caps: list[int], seed: int, args: argparse.Namespace
) -> Experiment:
    """One run folder: every method of one (backbone, skew, capacities, seed)."""
    dinov2 = backbone == "dinov2_small"
    per_domain = 1 if skew == "feature" else 5
    options: dict[str, Any] = {
        "skew": skew,
        "per_domain_train": args.dinov2_train if dinov2 else args.per_domain_train,
        "per_domain_test": args.dinov2_test if dinov2 else args.per_domain_test,
    }
    if dinov2:
        options.update(image_size=args.dinov2_size, normalisation="imagenet")
    methods = METHODS if caps != SMALL else SMALL_METHODS
    section = {"capacities": caps, "backbone": backbone, "protocol": "official"}
    rounds = args.rounds if skew == "feature" else args.rounds_label
    if dinov2:
        rounds = args.dinov2_rounds
    tag = "hetero" if caps == HETERO else "small"
    return Experiment(
        name=f"{backbone}-{skew}-{tag}-seed{seed}",
        seed=seed,
        methods=list(methods),
        device="cpu",
        data=DataConfig(
            dataset="digit_domains",
            num_clients=6 * per_domain,
            partition="groups",
            alpha=0.5,
            min_size=5,
            client_test_fraction=0.0,
            options=options,
        ),
        train=LocalTrainConfig(
            epochs=1,
            batch_size=args.dinov2_batch_size if dinov2 else args.batch_size,
            optimizer="adam",
            lr=args.dinov2_lr if dinov2 else args.lr,
            weight_decay=1e-5,
        ),
        federation=FederationSection(rounds=rounds, eval_every=rounds),
        method_options={m: section for m in methods},
    )


def finished(run_dir: Path, methods: list[str]) -> bool:
    return all((run_dir / m / "summary.json").is_file() for m in methods)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/fedra-domains"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--backbones", nargs="+", default=["small_mixer", "small_vit"])
    p.add_argument("--skews", nargs="+", default=["feature", "feature_label"])
    p.add_argument("--capacities", nargs="+", default=["hetero", "small"])
    p.add_argument("--rounds", type=int, default=10, help="rounds under feature skew")
    p.add_argument("--rounds-label", type=int, default=20, help="under feature + label skew")
    p.add_argument("--per-domain-train", type=int, default=128)
    p.add_argument("--per-domain-test", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--dinov2", action="store_true", help="add DINOv2 ViT-S/14 (reduced)")
    p.add_argument("--dinov2-size", type=int, default=56)
    p.add_argument("--dinov2-train", type=int, default=64, help="images per domain")
    p.add_argument("--dinov2-test", type=int, default=50)
    p.add_argument("--dinov2-rounds", type=int, default=8)
    p.add_argument("--dinov2-batch-size", type=int, default=16)
    # 3e-3 diverged in a central probe (loss 2.5 -> 4.3 after one step); 1e-3 did not.
    p.add_argument("--dinov2-lr", type=float, default=1e-3)
    p.add_argument("--dinov2-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # Seed by seed, so an interrupted grid has every cell of its first seeds.
    caps_lists = [c for t, c in (("hetero", HETERO), ("small", SMALL)) if t in args.capacities]
    cells = [
        (b, s, caps, seed)
        for seed in args.seeds
        for b in args.backbones
        for s in args.skews
        for caps in caps_lists
    ]
    if args.dinov2:  # feature skew only: the budget of these machines
        cells += [
            ("dinov2_small", "feature", caps, seed)
            for seed in args.dinov2_seeds
            for caps in caps_lists
        ]
    timing = {}
    if not args.report_only:
        for cell in cells:
            exp = cell_experiment(*cell, args)
            run_dir = args.out / exp.name
            if finished(run_dir, exp.methods):
                continue
            start = time.perf_counter()
            run_experiment(exp, run_dir, resume=run_dir.exists(), progress=False)
            timing[exp.name] = time.perf_counter() - start
            print(f"{exp.name}: {timing[exp.name]:.0f} s", flush=True)
    runs = sorted(d for d in args.out.iterdir() if (d / "config.json").is_file())
    text = seed_table(runs, list(DEFAULT_DOMAINS))
    (args.out / "fedra_domains.md").write_text(text)
    if timing:
        (args.out / "timing.json").write_text(json.dumps(timing, indent=2))
    print(text)


if __name__ == "__main__":
    main()
