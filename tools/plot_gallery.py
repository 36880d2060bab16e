"""Draw every plot consortium makes, from small runs, into one folder to look at.

    python tools/plot_gallery.py OUT            # all families (a few minutes on 2 cores)
    python tools/plot_gallery.py OUT --only generic unlearn

Each family runs a shrunken version of its experiment (few rounds, few samples) with every
method of the family, so overlapping curves, member labels and per-method colours show up
as they would in a real run; then every PNG under OUT is listed. Not a test: a reviewer's tool
for looking at the plots after a change to ``consortium.report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from consortium.experiment import (  # noqa: E402
    experiment_from_dict,
    load_experiment,
    run_action,
    run_experiment,
)

SMALL_TRAIN = {"epochs": 1, "batch_size": 16, "lr": 0.05}


def generic(out: Path) -> None:
    exp = experiment_from_dict({
        "name": "generic",
        "methods": ["fedavg", "fedprox", "scaffold", "standalone", "centralised"],
        "data": {"num_clients": 12, "partition": "dirichlet", "alpha": 0.5, "max_samples": 900},
        "model": {"name": "cnn", "options": {"channels": [8, 16], "hidden": 32}},
        "train": SMALL_TRAIN,
        "federation": {"rounds": 6},
    })  # fmt: skip
    run_experiment(exp, out / "generic", overwrite=True, progress=False)


def unlearn(out: Path) -> None:
    exp = load_experiment(out / "generic" / "config.toml")
    request = {"kind": "class", "class_id": 3, "baseline_rounds": 1, "retrain_rounds": 2,
               "shadow_attack": False}  # fmt: skip
    run_action(exp, "unlearn", out / "generic", request, overwrite=True, progress=False)


def fairness(out: Path) -> None:
    exp = load_experiment(
        ROOT / "experiments" / "aequa_digits.toml",
        ["federation.rounds=4", "federation.eval_every=1", "data.max_samples=800"],
    )
    run_experiment(exp, out / "aequa", overwrite=True, progress=False)


def mtl(out: Path) -> None:
    exp = load_experiment(ROOT / "experiments" / "dmtrl_synthetic.toml", ["federation.rounds=300"])
    run_experiment(exp, out / "dmtrl", overwrite=True, progress=False)


def fedra(out: Path) -> None:
    corpus = out / "spam-fixture"
    groups = {"easy-ham-1": 16, "spam-1": 16, "easy-ham-2": 16, "spam-2": 16}
    for group, n in groups.items():
        folder = corpus / "package" / "data" / group
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            word = "offer cash now" if group.startswith("spam") else "meeting notes attached"
            text = f"Subject: x\n\n{word} {i} " * 3
            (folder / f"{i:05d}.json").write_text(json.dumps({"group": group, "text": text}))
    capacities = {"capacities": [3, 2, 1, 1], "backbone": "tiny"}
    exp = experiment_from_dict({
        "name": "fedra",
        "methods": ["fedra", "all_large", "all_small", "inclusivefl", "depthfl"],
        "data": {"dataset": "spam_assassin", "path": str(corpus), "num_clients": 4,
                 "partition": "groups", "min_size": 1,
                 "options": {"max_tokens": 24, "tokenizer": "bytes"}},
        "train": {"lr": 0.05, "batch_size": 8},
        "federation": {"rounds": 4},
        "fedra": {**capacities, "lora_r": 2, "lora_alpha": 4},
        "all_large": capacities,
        "all_small": capacities,
        "inclusivefl": capacities,
        "depthfl": capacities,
    })  # fmt: skip
    run_experiment(exp, out / "fedra", overwrite=True, progress=False)


FAMILIES = {"generic": generic, "unlearn": unlearn, "fairness": fairness, "mtl": mtl,
            "fedra": fedra}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        print(f"== {name}", flush=True)
        FAMILIES[name](args.out)
    for png in sorted(args.out.rglob("*.png")):
        print(png.relative_to(args.out))


if __name__ == "__main__":
    main()
