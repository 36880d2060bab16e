"""``consortium``: run experiments, the demo, and reports from the command line.

Errors a user can fix (a bad config key, a missing dataset, a run folder in the way) end with
exit code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from consortium import __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="consortium", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"consortium {__version__}")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="log every rejected reply and failure"
    )
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment TOML file")
    run.add_argument("experiment", type=Path)
    _run_options(run)
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set federation.rounds=5 (repeatable)",
    )

    demo = sub.add_parser(
        "demo", help="FedAvg vs standalone vs centralised on digits (no download)"
    )
    _run_options(demo)
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    unl = sub.add_parser("unlearn", help="remove a class, a member or samples from a saved model")
    unl.add_argument("run_dir", type=Path)
    who = unl.add_argument_group("what to forget (class, class at a member, a member, samples)")
    who.add_argument("--class", dest="class_id", type=int, help="class to forget")
    who.add_argument("--client", dest="client_id", type=int, help="member whose data is forgotten")
    who.add_argument(
        "--samples", type=_int_list, help="comma-separated pool ids of --client's samples"
    )
    unl.add_argument("--from", dest="source", default=None, help="method folder holding model.npz")
    unl.add_argument("--methods", type=_str_list, help="comma-separated unlearning methods")
    _run_options(unl)
    unl.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="unlearning options, e.g. --set unlearn.ratio=0.05",
    )

    rep = sub.add_parser(
        "report", help="print the summary table of a run folder and redraw its plots"
    )
    rep.add_argument("run_dir", type=Path)

    fl = sub.add_parser(
        "flower",
        add_help=False,
        help="Flower app folder, TLS certificates, SuperNode keys (docs/flower.md)",
    )
    fl.add_argument("args", nargs=argparse.REMAINDER)

    sub.add_parser("methods", help="list the methods an experiment can name")
    sub.add_parser("datasets", help="list the datasets an experiment can name")
    return p


def _flower(argv: list[str]) -> int:
    try:
        from consortium.runtime.flower.__main__ import main as flower_main
    except ImportError:
        print('consortium: error: needs pip install "consortium[flower]"', file=sys.stderr)
        return 2
    return flower_main(argv, prog="consortium flower")


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _str_list(text: str) -> list[str]:
    return [v for v in text.split(",") if v]


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="run folder (default: OUTPUT_DIR/NAME)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run folder")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _unlearn_overrides(args: argparse.Namespace) -> list[str]:
    """Turn the unlearn flags into ``unlearn.*`` overrides of the saved configuration."""
    out: list[str] = []
    if args.samples:
        kind = "samples"
    elif args.class_id is not None:
        kind = "class_at_client" if args.client_id is not None else "class"
    elif args.client_id is not None:
        kind = "client"
    else:
        kind = None
    if kind is not None:
        out.append(f'unlearn.kind="{kind}"')
    if args.class_id is not None:
        out.append(f"unlearn.class_id={args.class_id}")
    if args.client_id is not None:
        out.append(f"unlearn.client_id={args.client_id}")
    if args.samples:
        out.append(f"unlearn.sample_ids={args.samples}")
    if args.source:
        out.append(f'unlearn.source="{args.source}"')
    if args.methods:
        out.append("unlearn.methods=[" + ",".join(f'"{m}"' for m in args.methods) + "]")
    return out + list(args.overrides)


def _demo_path() -> Path:
    return Path(str(importlib.resources.files("consortium") / "experiments" / "demo.toml"))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["flower"]:  # its own command line, options included
        return _flower(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Tables are wide: do not squeeze them into 80 columns when output goes to a file or pipe.
    console = Console(width=None if sys.stdout.isatty() else 160)
    # Imported here so `consortium --help` answers without loading torch.
    from consortium.data import DatasetNotFoundError
    from consortium.experiment import ConfigError, available_methods, load_experiment
    from consortium.experiment.runner import run_experiment

    try:
        if args.command in ("run", "demo"):
            path = args.experiment if args.command == "run" else _demo_path()
            exp = load_experiment(path, args.overrides)
            # The demo is meant to be run again and again: it replaces its previous folder.
            overwrite = args.overwrite or (args.command == "demo" and not args.resume)
            run_experiment(
                exp,
                args.out,
                resume=args.resume,
                overwrite=overwrite,
                progress=not args.no_progress,
                console=console,
            )
        elif args.command == "unlearn":
            from consortium.experiment.unlearn import run_unlearning

            exp = load_experiment(args.run_dir / "config.toml", _unlearn_overrides(args))
            if exp.unlearn is None:
                raise ConfigError("unlearn: say what to forget: --class, --client or --samples")
            run_unlearning(
                exp,
                args.run_dir,
                exp.unlearn,
                out=args.out,
                resume=args.resume,
                overwrite=args.overwrite,
                progress=not args.no_progress,
                console=console,
            )
        elif args.command == "report":
            from consortium.experiment.runner import write_family_reports
            from consortium.report import write_report

            console.print(write_report(args.run_dir))
            config = Path(args.run_dir) / "config.json"
            if config.exists():  # the families' own plots too (methods still registered)
                names = json.loads(config.read_text()).get("methods", [])
                write_family_reports([n for n in names if n in available_methods()], config.parent)
        elif args.command == "methods":
            table = Table("method", "what it is")
            for name, text in available_methods().items():
                table.add_row(name, text)
            console.print(table)
        elif args.command == "datasets":
            from consortium.data import available_datasets

            console.print("\n".join(available_datasets()))
    except (ConfigError, DatasetNotFoundError, FileNotFoundError) as err:
        print(f"consortium: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad values found while building data or models
        print(f"consortium: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
