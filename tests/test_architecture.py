"""The module map holds: imports go one way (no cycles, lazy imports included), the RQ worker
never imports Flask or the web layer, and sam_model stays a library that knows nothing of
the backend, Flask, Redis, RQ or Label Studio. docs/ARCHITECTURE.md draws the same map."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> every module or top-level library it imports, at any depth in its code (lazy
    imports inside functions count: they hide a cycle, they do not remove it)."""
    files = {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's own package
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` imports pkg.mod when that is a module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in targets:
                edges.add(target if target in files else target.split(".")[0])
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the graph's own modules, or None (iterative DFS, colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start] & graph.keys()))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt] & graph.keys())))
    return None


def reachable(graph: dict[str, set[str]], roots: list[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def test_backend_has_no_import_cycle() -> None:
    assert find_cycle(import_graph("backend")) is None, (
        f"import cycle: {' -> '.join(find_cycle(import_graph('backend')))}"
    )


def test_the_cycle_finder_finds_a_lazy_cycle() -> None:
    graph = {"a": {"b", "os"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_worker_entry_points_never_reach_flask_or_the_web_layer() -> None:
    graph = {**import_graph("backend"), **import_graph("sam_model")}
    worker_side = reachable(graph, ["backend.autoannotate.jobs", "backend.autoannotate.worker", "backend.__main__"])
    assert "flask" not in worker_side and "werkzeug" not in worker_side
    assert not {m for m in worker_side if m.startswith("backend.web")}
    # and at run time, as RQ imports a job function:
    code = "import sys, backend.autoannotate.jobs, backend.__main__; print(sorted(m for m in sys.modules if m in ('flask', 'werkzeug')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_sam_model_is_a_library_of_its_own() -> None:
    graph = import_graph("sam_model")
    outside = {m for edges in graph.values() for m in edges}
    assert not outside & {"backend", "flask", "werkzeug", "redis", "rq", "label_studio_sdk", "label_studio"}


def test_no_module_imports_a_test_module_or_a_conftest() -> None:
    """Shared test code lives in tests/support: a test module or conftest is nobody's library."""
    graph = {**import_graph("tests"), **import_graph("bench")}
    offending = {
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if target.rsplit(".", 1)[-1].startswith("test_") or target.endswith("conftest")
    }
    assert not offending
