"""``python -m consortium.runtime.flower``: TLS certificates and SuperNode keys.

(Flower app folders for experiment files: ``consortium flower app``, in the application layer.)

    python -m consortium.runtime.flower certificates DIR [--host link.example.org ...]
    python -m consortium.runtime.flower node-key DIR NAME

Errors a user can fix end with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


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
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run a subcommand; ``prog`` names the command in help texts (e.g. "consortium flower")."""
    args = (parser(prog) if prog else parser()).parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
