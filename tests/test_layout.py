"""The layout rules of the package tree, read from the import statements (lazy ones included).

The service's own modules read alone: none imports an app (sidecar/apps/), only the CLI registers
them; the connectors reach the service only through its client; and no two modules import each
other, directly or through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sidecar", "connectors")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each project module -> the project modules it imports anywhere in its body."""
    paths = [p for package in PACKAGES for p in (REPO / package).rglob("*.py") if "_proto" not in p.parts]
    modules = {module_name(p): p for p in paths}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            imported |= {t for t in targets if t in modules and t != name}
        graph[name] = imported
    return graph


def test_service_modules_never_import_an_app() -> None:
    offenders = {
        name: sorted(t for t in targets if t.startswith("sidecar.apps"))
        for name, targets in import_graph().items()
        if not name.startswith("sidecar.apps") and name != "sidecar.cli"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_connectors_reach_the_service_only_through_its_client() -> None:
    # and through sidecar.experiments, the torch-free experiment core the HTTP face shares
    allowed = {"sidecar", "sidecar.client", "sidecar._proto"}
    offenders = {
        name: sorted(
            t
            for t in targets
            if t.startswith("sidecar") and t not in allowed and not t.startswith("sidecar.experiments")
        )
        for name, targets in import_graph().items()
        if name.startswith("connectors")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles() -> None:
    graph = import_graph()
    # A package importing its own submodules (re-exports in __init__) is not a cycle between modules.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []
