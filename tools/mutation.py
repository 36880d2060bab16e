"""Mutation testing of the core and the partitioner: run mutmut, print the score per file.

Slow (minutes) and outside CI. Run from the repository root::

    python tools/mutation.py                 # fresh run, table of scores per file
    python tools/mutation.py --survivors     # ... and the diff of every surviving mutant
    python tools/mutation.py --keep          # reuse mutants/ from the last run (incremental:
                                             # only mutants not killed then are tested again)

What is mutated and which tests run is configured in ``[tool.mutmut]`` of ``pyproject.toml``;
mutmut records which test reaches which function, so each mutant runs only the tests of
``tests/core`` or ``tests/data/test_partition.py`` that call the function it changed.

A mutant that changes no behaviour (an *equivalent* mutant) cannot be killed by any test. Each
one is listed with the reason in ``tools/mutation_equivalents.toml``, identified by its function
and the exact line it changes (not by mutmut's number, which shifts when code is edited), and
left out of the score: score = killed / (mutants - equivalent); an optional ``near`` text,
which must appear in the mutant's diff, tells apart identical lines of one function. "No
tests" and timeouts of a mutant count as survivors. An entry that no longer matches any
mutant is reported as stale.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "tools" / "mutation_equivalents.toml"
KILLED = {1, 3}  # mutmut's exit codes of a failing test run (3: pytest internal error)
NAMES = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout"}


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    exit_code: int | None
    removed: tuple[str, ...]
    added: tuple[str, ...]
    diff: str

    @property
    def function(self) -> str:
        return self.name.rsplit("__mutmut_", 1)[0]

    @property
    def killed(self) -> bool:
        return self.exit_code in KILLED

    @property
    def status(self) -> str:
        return "killed" if self.killed else NAMES.get(self.exit_code, f"exit {self.exit_code}")


def run_mutmut(max_children: int, keep: bool) -> None:
    """Run mutmut in a clean environment: the mutated copy must be what the tests import."""
    if not keep:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    else:
        retest_unkilled()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    mutmut = Path(sys.executable).with_name("mutmut")
    cmd = [str(mutmut) if mutmut.exists() else "mutmut", "run", "--max-children", str(max_children)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        sys.exit(f"mutmut run failed with exit code {done.returncode}; rerun it by hand to see why")


def retest_unkilled() -> None:
    """Forget the verdict of every mutant that was not killed, so that ``--keep`` tests it again.

    mutmut keeps every verdict of an earlier run and only tests mutants without one (new or
    changed functions); tests written since would never see the survivors they target.
    Killed mutants stay killed: tests are only ever added to kill more.
    """
    os.chdir(ROOT)
    if not (ROOT / "mutants").is_dir():
        return
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.utils.file_utils import walk_mutatable_files

    for path in walk_mutatable_files():
        if not (ROOT / "mutants" / (str(path) + ".meta")).exists():
            continue
        data = SourceFileMutationData(path=path)
        data.load()
        codes = data.exit_code_by_key
        stale = [k for k, code in codes.items() if code is not None and code not in KILLED]
        if stale:
            for key in stale:
                codes[key] = None
            data.save()


def load_mutants() -> list[Mutant]:
    """Every mutant of the last run with its verdict and its diff (read through mutmut's API)."""
    os.chdir(ROOT)
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.utils.file_utils import walk_mutatable_files

    mutants = []
    for path in sorted(walk_mutatable_files()):
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in data.exit_code_by_key.items():
            diff = get_diff_for_mutant(name, path=path)
            lines = diff.splitlines()[2:]
            removed = tuple(ln[1:].strip() for ln in lines if ln.startswith("-"))
            added = tuple(ln[1:].strip() for ln in lines if ln.startswith("+"))
            mutants.append(Mutant(name, str(path), code, removed, added, diff))
    return mutants


def load_equivalents() -> list[dict[str, str]]:
    with open(EQUIVALENTS, "rb") as fh:
        entries = tomllib.load(fh).get("equivalent", [])
    for e in entries:
        missing = {"function", "from", "to", "reason"} - set(e)
        if missing:
            sys.exit(f"{EQUIVALENTS}: entry {e} lacks {sorted(missing)}")
    return entries


def _matches(entry: dict[str, str], m: Mutant) -> bool:
    to = entry["to"].strip()
    return (
        m.function == entry["function"]
        and entry["from"].strip() in m.removed
        and (to in m.added if to else not m.added)  # "": the mutant only deletes the line
        and entry.get("near", "") in m.diff  # tells apart twin lines of one function
    )


def score(mutants: list[Mutant], entries: list[dict[str, str]]) -> tuple[dict, list, list]:
    """Per-file counts, the equivalent mutants found and the stale equivalence entries."""
    equivalent: list[tuple[Mutant, str]] = []
    used: Counter[int] = Counter()
    per_file: dict[str, Counter[str]] = defaultdict(Counter)
    for m in mutants:
        hit = next((i for i, e in enumerate(entries) if _matches(e, m)), None)
        counts = per_file[m.path]
        counts["mutants"] += 1
        if hit is not None and not m.killed:
            used[hit] += 1
            equivalent.append((m, entries[hit]["reason"]))
            counts["equivalent"] += 1
        elif m.killed:
            counts["killed"] += 1
            if hit is not None:
                used[hit] += 1  # listed as equivalent yet killed: the listing is wrong
                counts["killed_but_listed"] += 1
        else:
            counts[m.status] += 1
    stale = [e for i, e in enumerate(entries) if not used[i]]
    return per_file, equivalent, stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="reuse mutants/ (incremental run)")
    parser.add_argument("--no-run", action="store_true", help="only report the last run")
    parser.add_argument("--survivors", action="store_true", help="print surviving diffs")
    parser.add_argument("--equivalents", action="store_true", help="list equivalent mutants")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--fail-under", type=float, default=95.0, help="exit 1 below (percent)")
    parser.add_argument("--filter", default="", help="regex on mutant names for --survivors")
    args = parser.parse_args()

    if not args.no_run:
        run_mutmut(args.max_children, args.keep)
    mutants = load_mutants()
    if not mutants:
        sys.exit("no mutants found: run without --no-run first")
    entries = load_equivalents()
    per_file, equivalent, stale = score(mutants, entries)

    header = f"{'file':44} {'mutants':>7} {'killed':>6} {'surv.':>5} {'equiv.':>6} {'score':>7}"
    print(header)
    print("-" * len(header))
    total: Counter[str] = Counter()
    for path, c in sorted(per_file.items()):
        total.update(c)
        alive = c["mutants"] - c["killed"] - c["equivalent"]
        denom = c["mutants"] - c["equivalent"]
        pct = 100.0 * c["killed"] / denom if denom else 100.0
        row = f"{c['mutants']:7} {c['killed']:6} {alive:5} {c['equivalent']:6} {pct:6.1f}%"
        print(f"{path:44} {row}")
    denom = total["mutants"] - total["equivalent"]
    overall = 100.0 * total["killed"] / denom if denom else 100.0
    alive = denom - total["killed"]
    print("-" * len(header))
    print(
        f"{'all':44} {total['mutants']:7} {total['killed']:6} {alive:5} "
        f"{total['equivalent']:6} {overall:6.1f}%"
    )
    kinds = Counter(m.status for m in mutants if not m.killed)
    print("not killed by kind:", dict(kinds), "(equivalent ones included)")

    for path, c in sorted(per_file.items()):
        if c["killed_but_listed"]:
            print(f"WARNING: {path}: {c['killed_but_listed']} mutant(s) listed as equivalent "
                  "were killed; fix tools/mutation_equivalents.toml")
    for e in stale:
        print(f"WARNING: stale equivalence entry (matches no surviving mutant): {e['function']}: "
              f"{e['from']!r} -> {e['to']!r}")

    if args.equivalents:
        print("\nequivalent mutants (left out of the score):")
        for m, reason in equivalent:
            print(f"  {m.name}: {' / '.join(m.added)}  -- {reason}")
    if args.survivors:
        listed = {m.name for m, _ in equivalent}
        pattern = re.compile(args.filter)
        for m in mutants:
            if not m.killed and m.name not in listed and pattern.search(m.name):
                print(f"\n# {m.name}: {m.status}\n{m.diff}")
    return 0 if overall >= args.fail_under else 1


if __name__ == "__main__":
    sys.exit(main())
