"""``consortium``: run experiments, the demo, post-hoc actions and reports from the command line.

Exit status and what is printed on stderr, always one line (``-v`` adds a traceback where one
helps):

* 0: done; a run that lost rounds or members still says so in its table and in a yellow line;
* 2: an error the user can fix before running (a bad config key or value, a missing dataset, a
  device this machine lacks, a run folder in the way), found before the run folder is made;
* 1: the run could not finish: a method stopped (too few replies in its set-up or final
  phase, or no successful round; what it trained is kept), a file could not be read or
  written (the path and the reason: disk full, read-only folder, no permission), or code
  failed (``consortium: error: ValueError: ... (an error of the code, ...)``); members' own
  failures are not this: they are counted per round and named in the table and the stop
  reason;
* 130: interrupted (Ctrl-C); ``--resume`` continues after the last finished round.

``--plugin MODULE`` (repeatable) loads a module that registers methods, models or datasets
before anything else is read.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import json
import logging
import sys
import traceback
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


def _run_options(p: argparse.ArgumentParser, check: bool = False) -> None:
    if check:
        p.add_argument(
            "--check",
            action="store_true",
            help="check the experiment (config, device, data, methods, run folder) and stop; "
            "writes nothing",
        )
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
    _run_options(run, check=True)
    _tracking_options(run)

    demo = sub.add_parser(
        "demo", help="FedAvg vs standalone vs centralised on digits (no download)"
    )
    _run_options(demo, check=True)
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
    verbose = any(a in ("-v", "--verbose") for a in argv)
    try:
        return _main(argv, console)
    except KeyboardInterrupt:
        _error("interrupted; --resume continues after the last finished round")
        return 130
    except Exception as err:
        code, line = _classify(err)
        _error(line)
        if verbose and code == 1:
            traceback.print_exc()
        return code


def _error(line: str) -> None:
    print(f"consortium: error: {' '.join(line.split())}", file=sys.stderr)


def _classify(err: BaseException) -> tuple[int, str]:
    """(exit status, one line) for an error that ended the command (see the module doc)."""
    from consortium.config import ConfigError
    from consortium.core.checkpoint import CheckpointError
    from consortium.core.run import RunStopped
    from consortium.core.rundir import RunDirError

    if isinstance(err, ConfigError | RunDirError | CheckpointError):
        return 2, str(err)
    if isinstance(err, RunStopped):
        return 1, str(err)
    if isinstance(err, OSError):
        if err.errno is None:  # raised by us with a message (a missing dataset, run folder)
            return 2, str(err)
        where = err.filename if err.filename is not None else "a file"
        return 1, f"{where}: {err.strerror or err}"
    why = "an error of the code, not of the settings; -v shows where"
    return 1, f"{type(err).__name__}: {err} ({why})"


def _main(argv: list[str], console: Console) -> int:
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
    return 0


def _check(exp: Any, args: argparse.Namespace, overwrite: bool, console: Console) -> None:
    """``--check``: everything a run checks before it makes its folder, and nothing else."""
    from consortium.experiment import check_experiment

    _, ready = check_experiment(
        exp, args.out, resume=args.resume, overwrite=overwrite, console=console
    )
    methods = ", ".join(exp.methods)
    console.print(f"ok: {exp.name}: {ready.data.num_clients} members, methods {methods}")


def _dispatch(args: argparse.Namespace, console: Console) -> None:
    from consortium.algorithms.registry import actions
    from consortium.experiment import load_experiment, run_action, run_experiment

    if args.command in ("run", "demo"):
        path = args.experiment if args.command == "run" else _demo_path()
        exp = load_experiment(path, [*args.overrides, *_tracking_overrides(args)])
        # The demo is meant to be run again and again: it replaces its previous folder.
        overwrite = args.overwrite or (args.command == "demo" and not args.resume)
        if args.check:
            _check(exp, args, overwrite, console)
            return
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
        given = {k: getattr(args, k) for k in ("out", "resume", "overwrite")}
        run_action(
            exp, args.command, args.run_dir, progress=not args.no_progress, console=console, **given
        )
    elif args.command == "report":
        _report(console, args.run_dir)
    elif args.command == "methods":
        _list_methods(console, args.name)
    elif args.command == "datasets":
        _list_datasets(console, args.name)


def console_main() -> None:
    """The ``consortium`` command: :func:`main`, then an exit that skips the interpreter's
    teardown.

    After a run every file is written and closed; what normal shutdown still does is tear
    down each of the thousands of modules torch and its neighbours loaded and collect their
    objects, 0.4 s on a quiet machine and seconds on a loaded one. Exit handlers still run
    (worker processes are stopped, logs flushed) and standard output is flushed; an error
    still prints its traceback through the normal path.
    """
    code = main()
    exit_now(code)


def exit_now(code: int) -> None:
    """Run the exit handlers, flush standard output and error, and end the process."""
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
