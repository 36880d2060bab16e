"""Build the API reference from the docstrings, offline, with pdoc; fail on any warning.

    python tools/apidoc.py                 # build/api/index.html
    python tools/apidoc.py --out DIR

pdoc imports every module of the package (the optional extras included: install
``.[test,docs]``) and warns about what it cannot document: a module that fails to import, a
docstring it cannot parse, a link to a name that does not exist. CI runs this script, so the
reference builds and stays free of those warnings. Warnings raised by other libraries while
they are imported (deprecations in their own code) are printed, but do not count.
"""

from __future__ import annotations

import argparse
import pkgutil
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(out: Path) -> list[str]:
    """Write the HTML reference to ``out``; returns pdoc's warnings (empty: a clean build)."""
    import pdoc
    import pdoc.render

    sys.path.insert(0, str(ROOT / "src"))
    pdoc.render.configure(docformat="numpy", footer_text="consortium API reference")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import consortium

        for name in consortium.__all__:  # the lazily imported names, resolved for pdoc
            getattr(consortium, name)
        pdoc.pdoc(*_specs(consortium), output_directory=out)
    ours, theirs = [], []
    for w in caught:
        source = Path(w.filename).as_posix()
        (ours if "/pdoc/" in source or "/consortium/" in source else theirs).append(
            f"{w.category.__name__}: {w.message} ({source}:{w.lineno})"
        )
    for line in theirs:
        print(f"(not counted) {line}", file=sys.stderr)
    return ours


def _specs(package: object) -> list[str]:
    """Module names for pdoc that reach every module once: a package with ``__all__`` hides
    the submodules it does not list, so those are named on their own."""
    import pdoc.extract

    found = [m for m in pkgutil.walk_packages(package.__path__, "consortium.")]  # type: ignore[attr-defined]
    covered: set[str] = set()
    specs: list[str] = []
    for info in [pkgutil.ModuleInfo(None, "consortium", True), *found]:  # type: ignore[arg-type]
        if info.name in covered or info.name.endswith("__main__"):
            continue
        specs.append(info.name)
        covered.update(m.name for m in pdoc.extract.walk_packages2([info]))
    return specs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "api")
    args = parser.parse_args()
    problems = build(args.out)
    for line in problems:
        print(line, file=sys.stderr)
    pages = sum(1 for _ in args.out.rglob("*.html"))
    print(f"API reference: {pages} pages in {args.out}, {len(problems)} warnings")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
