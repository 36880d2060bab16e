"""Check that the setuptools floor in pyproject.toml really builds the package.

    python tools/build_floor.py                 # the floor must build a wheel
    python tools/build_floor.py --below 76.1.0  # ... and this older release must refuse

The floor is the lowest ``setuptools>=X`` that pyproject.toml accepts. A floor set too low lets
pip pick a setuptools that cannot read the metadata (76.1.0 refuses the SPDX ``license``
string), and the install fails on the user's machine, not ours. This script makes a throw-away
virtual environment with exactly that setuptools and builds the wheel without build isolation,
so the pinned version, not the newest, does the build. Needs the package index (CI has it).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def floor() -> str:
    """The version in ``setuptools>=X`` of ``[build-system] requires``."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for req in requires:
        found = re.fullmatch(r"\s*setuptools\s*>=\s*([0-9][0-9a-z.]*)\s*", req)
        if found:
            return found.group(1)
    raise SystemExit("pyproject.toml: no setuptools>=X in [build-system] requires")


def builds(version: str) -> tuple[bool, str]:
    """Build the wheel with exactly setuptools ``version``; (whether it built, pip's last lines)."""
    with tempfile.TemporaryDirectory(prefix="build-floor-") as tmp:
        env = Path(tmp) / "env"
        venv.create(env, with_pip=True)
        python = str(env / "bin" / "python")
        pip = [python, "-m", "pip", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", f"setuptools=={version}", "wheel"], check=True)
        # A copy: an in-tree build would leave build/ and *.egg-info behind in the checkout.
        src = Path(tmp) / "src"
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True,
                                 capture_output=True).stdout  # fmt: skip
        src.mkdir()
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        done = subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(Path(tmp) / "w"), "."],
            cwd=src, capture_output=True, text=True,
        )  # fmt: skip
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
        return done.returncode == 0, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--below", help="an older setuptools that must fail to build")
    args = parser.parse_args()
    low = floor()
    ok, tail = builds(low)
    print(f"setuptools=={low} (the floor): {'builds' if ok else 'FAILS'}")
    if not ok:
        print(tail, file=sys.stderr)
    refused = True
    if args.below:
        below_ok, _ = builds(args.below)
        refused = not below_ok
        verdict = "builds" if below_ok else "fails, as it should"
        print(f"setuptools=={args.below} (below): {verdict}")
    return 0 if ok and refused else 1


if __name__ == "__main__":
    sys.exit(main())
