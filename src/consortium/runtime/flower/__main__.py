"""``python -m consortium.runtime.flower``: TLS certificates and SuperNode keys.

(Flower app folders for experiment files: ``consortium flower app``, in the application layer.)

    python -m consortium.runtime.flower certificates DIR [--host link.example.org ...]
    python -m consortium.runtime.flower node-key DIR NAME
    python -m consortium.runtime.flower roster ROSTER.toml 0=member-0.pub 1=member-1.pub ...
    python -m consortium.runtime.flower superlink --certificates DIR [--fleet-host 0.0.0.0]
    python -m consortium.runtime.flower gateway --listen HOST:PORT --superlink HOST:PORT ...

Errors a user can fix end with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from consortium.runtime.flower.gateway import add_commands as add_deployment_commands
from consortium.runtime.flower.gateway import run_command as run_deployment_command


def parser(prog: str = "python -m consortium.runtime.flower") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    certs = sub.add_parser(
        "certificates", help="write a test CA and a server certificate for the SuperLink"
    )
    certs.add_argument("directory", type=Path)
    certs.add_argument(
        "--host",
        dest="hosts",
        action="append",
        help="name or IP address SuperNodes use to reach the SuperLink (repeatable; "
        "127.0.0.1 and localhost are always included)",
    )

    key = sub.add_parser("node-key", help="write a SuperNode key pair (OpenSSH, EC P-384)")
    key.add_argument("directory", type=Path)
    key.add_argument("name")

    roster = sub.add_parser("roster", help="write the roster: member id = SuperNode public key")
    roster.add_argument("path", type=Path)
    roster.add_argument("members", nargs="+", metavar="ID=KEY.pub")
    add_deployment_commands(sub)
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run a subcommand; ``prog`` names the command in help texts (e.g. "consortium flower")."""
    args = (parser(prog) if prog else parser()).parse_args(argv)
    if args.command in ("gateway", "superlink", "roster"):
        return _deployment(args)
    from consortium.runtime.flower.security import write_node_key, write_tls_certificates

    try:
        if args.command == "certificates":
            files = write_tls_certificates(args.directory, args.hosts or ())
            print(
                f"wrote {files.ca_cert} (give it to every member), {files.server_cert}, "
                f"{files.server_key} (keep on the SuperLink)"
            )
        elif args.command == "node-key":
            key = write_node_key(args.directory, args.name)
            print(
                f"wrote {key.private_key} (keep on the SuperNode), {key.public_key} "
                "(send to the SuperLink's operator)"
            )
    except (ValueError, OSError) as err:
        print(f"consortium.runtime.flower: error: {err}", file=sys.stderr)
        return 2
    return 0


def _deployment(args: argparse.Namespace) -> int:
    """The server operator's deployment commands (no experiment needed, nothing heavy)."""
    from consortium.runtime.flower.security import write_roster

    try:
        if args.command == "roster":
            pairs = dict(m.split("=", 1) for m in args.members if "=" in m)
            if len(pairs) != len(args.members) or not all(k.isdigit() for k in pairs):
                raise ValueError("give members as ID=KEY.pub, e.g. 0=member-0.pub")
            path = write_roster(args.path, {int(k): v for k, v in pairs.items()})
            print(f"wrote {path}: members {sorted(int(k) for k in pairs)}")
            return 0
        return run_deployment_command(args)
    except (ValueError, OSError) as err:
        print(f"consortium.runtime.flower: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
