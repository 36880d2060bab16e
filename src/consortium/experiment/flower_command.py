"""``consortium flower``: Flower app folders for experiment files (here, in the application
layer), and the runtime's own tools (TLS certificates, SuperNode keys).

    consortium flower app EXPERIMENT.toml --out APP_DIR [--method fedavg]
    consortium flower certificates DIR [--host link.example.org ...]
    consortium flower node-key DIR NAME

Errors a user can fix end with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def app_parser(prog: str) -> argparse.ArgumentParser:
    app = argparse.ArgumentParser(
        prog=f"{prog} app", description="write a Flower app folder that runs an experiment file"
    )
    app.add_argument("experiment", type=Path, help="experiment TOML file")
    app.add_argument("--out", type=Path, required=True, help="app folder to write")
    app.add_argument("--method", help="which of the experiment's methods (default: the first)")
    app.add_argument(
        "--run-dir", help="server's run folder (relative: to the SuperLink's working folder)"
    )
    app.add_argument(
        "--reply-timeout",
        type=float,
        default=0.0,
        help="seconds to wait for one exchange's replies (0: until Flower reports them)",
    )
    app.add_argument(
        "--connect-timeout", type=float, default=300.0, help="seconds to wait for members"
    )
    app.add_argument("--data-path", help="the server's dataset folder")
    app.add_argument("--roster", help="the server's roster file (member id = node key)")
    app.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an experiment value, e.g. --set federation.rounds=5 (repeatable)",
    )
    return app


def main(argv: Sequence[str] | None = None, prog: str = "consortium flower") -> int:
    """``app`` here; every other subcommand is the runtime's (certificates, node-key)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from consortium.runtime.flower.__main__ import main as runtime_main
    except ImportError:
        print(f'{prog}: error: needs pip install "consortium[flower]"', file=sys.stderr)
        return 2
    if argv[:1] != ["app"]:
        if argv[:1] in (["-h"], ["--help"], []):
            print(f"{prog} app EXPERIMENT.toml --out APP_DIR   (a Flower app folder)")
        return runtime_main(argv, prog=prog)
    args = app_parser(prog).parse_args(argv[1:])
    from consortium.config import ConfigError
    from consortium.experiment.config import load_experiment
    from consortium.experiment.flower import write_flower_app

    try:
        exp = load_experiment(args.experiment, args.overrides)
        options = ("method", "run_dir", "reply_timeout", "connect_timeout", "data_path", "roster")
        path = write_flower_app(exp, args.out, **{k: getattr(args, k) for k in options})
    except (ConfigError, ValueError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}; run it with: flwr run {args.out} <superlink connection> --stream")
    return 0


if __name__ == "__main__":
    sys.exit(main())
