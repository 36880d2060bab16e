"""``consortium``: run experiments, the demo, post-hoc actions and reports from the command line.

Errors a user can fix (a bad config key, a missing dataset, a run folder in the way) end with
exit code 2 and one line on stderr, never a traceback. ``--plugin MODULE`` (repeatable) loads a
module that registers methods, models or datasets before anything else is read.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from consortium import __version__

BUILTIN_COMMANDS = ("run", "demo", "report", "methods", "datasets", "flower")


def _plugins_in(argv: list[str]) -> list[str]:
    """The ``--plugin`` values, read before the parser exists (plugins add commands)."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--plugin" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            out.append(arg.split("=", 1)[1])
    return out


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="run folder (default: OUTPUT_DIR/NAME)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run folder")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set federation.rounds=5 (repeatable)",
    )


def _tracking_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--track",
        action="append",
        default=[],
        choices=("mlflow", "tensorboard", "csv"),
        help="also send every round, the config and the report there (repeatable; "
        "same as --set tracking.NAME=true)",
    )
    p.add_argument(
        "--mlflow-uri", metavar="URI", help="MLflow tracking URI (implies --track mlflow)"
    )


def _tracking_overrides(args: argparse.Namespace) -> list[str]:
    """``--track`` and ``--mlflow-uri`` as the ``--set`` overrides they stand for."""
    out = [f"tracking.{name}=true" for name in getattr(args, "track", [])]
    uri = getattr(args, "mlflow_uri", None)
    if uri:
        out += ["tracking.mlflow=true", f"tracking.mlflow_uri={json.dumps(uri)}"]
    return out


def _parser(actions: dict[str, Any]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="consortium", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"consortium {__version__}")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="log every rejected reply and failure"
    )
    p.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module that registers methods, models or datasets (repeatable)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment TOML file")
    run.add_argument("experiment", type=Path)
    _run_options(run)
    _tracking_options(run)

    demo = sub.add_parser(
        "demo", help="FedAvg vs standalone vs centralised on digits (no download)"
    )
    _run_options(demo)
    _tracking_options(demo)

    for name, spec in actions.items():
        act = sub.add_parser(name, help=spec.description)
        act.add_argument("run_dir", type=Path)
        if spec.add_arguments is not None:
            spec.add_arguments(act)
        _run_options(act)

    rep = sub.add_parser(
        "report", help="print the summary table of a run folder and redraw its plots"
    )
    rep.add_argument("run_dir", type=Path)

    fl = sub.add_parser(
        "flower",
        add_help=False,
        help="Flower app folders, TLS certificates, SuperNode keys (docs/flower.md)",
    )
    fl.add_argument("args", nargs=argparse.REMAINDER)

    m = sub.add_parser("methods", help="list the methods (or one method's options)")
    m.add_argument("name", nargs="?", help="a method or action: print its options")
    d = sub.add_parser("datasets", help="list the datasets (or one dataset's options)")
    d.add_argument("name", nargs="?", help="a dataset: print its options")
    return p


def _demo_path() -> Path:
    return Path(str(importlib.resources.files("consortium") / "experiments" / "demo.toml"))


def _options_table(title: str, cls: Any, skip: frozenset[str] = frozenset()) -> Table:
    from consortium.config import describe

    table = Table("option", "type", "default", "what it does", title=escape(title))
    for row in describe(cls, skip):
        cells = (row["name"], row["type"], json.dumps(row["default"]), row["help"])
        table.add_row(*(escape(c) for c in cells))
    return table


def _list_methods(console: Console, name: str | None) -> None:
    from consortium.algorithms.base.config import SHARED_FIELDS
    from consortium.algorithms.registry import actions, get_action, methods

    if name is None:
        table = Table("method", "what it is")
        for n, spec in methods().items():
            table.add_row(n, escape(spec.description))
        for n, spec in actions().items():
            table.add_row(f"{n} (action)", escape(spec.description))
        console.print(table)
        return
    if name in actions():
        spec = get_action(name)
        console.print(_options_table(f"[{name}] — {spec.description}", spec.config))
        return
    from consortium.algorithms.registry import get_method

    spec = get_method(name)
    shared = ", ".join(sorted(f for f in SHARED_FIELDS if f in spec.config.model_fields))
    console.print(_options_table(f"[{name}] — {spec.description}", spec.config, SHARED_FIELDS))
    if shared:
        console.print(escape(f"shared with every method ([federation] / [train]): {shared}"))


def _list_datasets(console: Console, name: str | None) -> None:
    from consortium.data.registry import datasets, get_dataset

    if name is None:
        table = Table("dataset", "what it is", "[data] options")
        for n, spec in datasets().items():
            table.add_row(n, escape(spec.description), "yes" if spec.options else "—")
        console.print(table)
        return
    spec = get_dataset(name)
    if spec.options is None:
        console.print(escape(f"{spec.name}: {spec.description}\n(no [data] options)"))
    else:
        console.print(_options_table(f"{spec.name} [data] options", spec.options))


def _report(console: Console, run_dir: Path) -> None:
    from consortium.report import family_report, write_report
    from consortium.report.unlearning import is_unlearning_folder

    if is_unlearning_folder(run_dir):  # its own table, from its own files
        console.print(family_report("unlearn", run_dir))
        return
    console.print(write_report(run_dir))
    config = run_dir / "config.json"
    if config.exists():  # the families' own plots too
        from consortium.algorithms.registry import methods
        from consortium.experiment.runner import write_family_reports

        names = json.loads(config.read_text()).get("methods", [])
        write_family_reports([n for n in names if n in methods()], run_dir)
    requests = sorted(p.name for p in run_dir.iterdir() if is_unlearning_folder(p))
    if requests:
        console.print(
            "unlearning requests: "
            + ", ".join(requests)
            + f" (consortium report {run_dir}/<request>)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(f"consortium {__version__}")
        return 0
    from consortium.report.summary import report_console

    console = report_console()
    from consortium.config import ConfigError
    from consortium.data.sources import DatasetNotFoundError

    try:
        from consortium.plugins import load_plugins

        load_plugins(_plugins_in(argv))
        if argv[:1] == ["flower"]:  # its own command line, options included
            from consortium.experiment.flower_command import main as flower_main

            return flower_main(argv[1:], prog="consortium flower")
        from consortium.algorithms.registry import actions

        args = _parser(dict(actions())).parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.ERROR,
            format="%(levelname)s %(name)s: %(message)s",
        )
        _dispatch(args, console)
    except (ConfigError, DatasetNotFoundError, FileNotFoundError) as err:
        print(f"consortium: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad values found while building data or models
        print(f"consortium: error: {err}", file=sys.stderr)
        return 2
    return 0


def _dispatch(args: argparse.Namespace, console: Console) -> None:
    from consortium.algorithms.registry import actions
    from consortium.experiment import load_experiment, run_action, run_experiment

    if args.command in ("run", "demo"):
        path = args.experiment if args.command == "run" else _demo_path()
        exp = load_experiment(path, [*args.overrides, *_tracking_overrides(args)])
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
    elif args.command in actions():
        from consortium.config import ConfigError

        spec = actions()[args.command]
        flags = spec.overrides(args) if spec.overrides is not None else []
        exp = load_experiment(args.run_dir / "config.toml", [*flags, *args.overrides])
        if exp.action(args.command) is None:
            raise ConfigError(f"{args.command}: {spec.hint}")
        run_action(
            exp,
            args.command,
            args.run_dir,
            out=args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            console=console,
        )
    elif args.command == "report":
        _report(console, args.run_dir)
    elif args.command == "methods":
        _list_methods(console, args.name)
    elif args.command == "datasets":
        _list_datasets(console, args.name)


if __name__ == "__main__":
    sys.exit(main())
