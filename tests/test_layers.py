"""The layering rules of docs/architecture.md, checked on the import graph of the source.

Every ``import`` of ``src/consortium`` counts, the ones inside functions included: a lazy import
is still a dependency. The rules:

* ``core`` imports nothing of ours outside ``core``;
* a runtime imports only ``core`` (never ``experiment``, ``algorithms``, ``report``, ``cli``);
* ``data``, ``models``, ``training``, ``metrics`` and ``report`` never import ``algorithms``,
  ``experiment`` or ``cli``;
* an algorithm imports no other algorithm's package, only the shared ones (``base``,
  ``fairness``, the ``registry``);
* no circles: neither between the parts above, nor among the modules' top-level imports.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "consortium"
SHARED_ALGORITHM_PACKAGES = {"base", "fairness", "registry"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported consortium module, at top level?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found: list[tuple[str, bool]] = []
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        at_top = id(node) in top
        found += [(n, at_top) for n in names if n == "consortium" or n.startswith("consortium.")]
    return found


def graph() -> dict[str, list[tuple[str, bool]]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    out: dict[str, list[tuple[str, bool]]] = {}
    for name, path in modules.items():
        deps = []
        for target, top in imports(path):
            # ``from a.b import c`` names a.b.c: keep it only if it is a module
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                deps.append((target, top))
        out[name] = deps
    return out


def part(module: str) -> str:
    """The layer a module belongs to; each algorithm package is its own part."""
    bits = module.split(".")
    if len(bits) == 1:
        return "consortium"
    if bits[1] == "algorithms" and len(bits) > 2:
        return f"algorithms.{bits[2]}"
    return bits[1]


GRAPH = graph()


def edges(src_part: str) -> set[str]:
    return {part(t) for m, deps in GRAPH.items() if part(m) == src_part for t, _ in deps}


def test_the_graph_is_read():
    assert len(GRAPH) > 50
    assert "consortium.core.grid" in GRAPH
    assert ("consortium.core.message", True) in GRAPH["consortium.core.grid"]


def test_core_imports_only_core():
    assert edges("core") <= {"core", "consortium"}, edges("core")


def test_runtime_imports_only_core():
    # "consortium" is the package face (its version), which every import loads anyway.
    assert edges("runtime") <= {"runtime", "core", "consortium"}, edges("runtime")


@pytest.mark.parametrize(
    "lower", ["data", "models", "training", "metrics", "report", "config", "tracking"]
)
def test_lower_layers_never_import_methods_or_the_application(lower):
    bad = {p for p in edges(lower) if p.startswith("algorithms") or p in ("experiment", "cli")}
    assert not bad, (lower, bad)


def test_no_algorithm_imports_another_algorithms_package():
    algorithms = {part(m) for m in GRAPH if part(m).startswith("algorithms.")}
    shared = {f"algorithms.{s}" for s in SHARED_ALGORITHM_PACKAGES}
    assert {"algorithms.fedavg", "algorithms.aequa", "algorithms.scaffold"} <= algorithms
    for alg in algorithms - shared:
        foreign = {p for p in edges(alg) if p.startswith("algorithms.") and p not in shared}
        assert foreign <= {alg}, (alg, foreign - {alg})
        assert not edges(alg) & {"runtime", "experiment", "report", "cli"}, alg


def _cycle(nodes: set[str], adj: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(adj.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(nodes):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_circle_between_parts():
    adj: dict[str, set[str]] = defaultdict(set)
    for m, deps in GRAPH.items():
        for t, _ in deps:
            if part(t) != part(m):
                adj[part(m)].add(part(t))
    assert _cycle(set(adj), adj) is None, _cycle(set(adj), adj)


def test_no_circle_among_top_level_imports():
    adj = {m: {t for t, top in deps if top} for m, deps in GRAPH.items()}
    # A package's __init__ importing its own modules is the usual re-export, not a circle.
    for m in adj:
        adj[m] = {t for t in adj[m] if not (m.startswith(t + ".") and t == m.rpartition(".")[0])}
    assert _cycle(set(adj), adj) is None, _cycle(set(adj), adj)
