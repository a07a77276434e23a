"""The layering: the import contracts of pyproject.toml hold, no module is part of an import
cycle, and only ``actors.queue`` holds SQL."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("actors", "supervisors")


def test_the_import_contracts_hold() -> None:
    # lint-imports in a process of its own, on this checkout: its report is the failure message.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
            "--no-logo",
            str(ROOT / "pyproject.toml"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def strongly_connected_components(graph: grimp.ImportGraph) -> list[list[str]]:
    """Return the import graph's cycles: its strongly connected components of more than one
    module, and any module that imports itself (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def imported_by(module: str) -> Iterator[str]:
        return iter(sorted(graph.find_modules_directly_imported_by(module)))

    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, imported_by(root))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, imported = work[-1]
            for other in imported:
                if other not in index:
                    index[other] = low[other] = len(index)
                    stack.append(other)
                    on_stack.add(other)
                    work.append((other, imported_by(other)))
                    break
                if other in on_stack:
                    low[module] = min(low[module], index[other])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1 or module in graph.find_modules_directly_imported_by(
                        module
                    ):
                        components.append(sorted(component))
    return sorted(components)


def describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    members = set(component)
    lines: list[str] = []
    for importer in component:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            for detail in graph.get_import_details(importer=importer, imported=imported):
                lines.append(f"  {importer} -> {imported} (l.{detail['line_number']})")
    return "\n".join(lines)


def test_no_module_is_part_of_an_import_cycle() -> None:
    # Every import counts, those inside a function too: deferring an import changes when a module
    # loads, not what it depends on. Imports under `if TYPE_CHECKING:` never run and do not count.
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    cycles = strongly_connected_components(graph)
    assert cycles == [], "import cycles:\n" + "\n".join(describe(graph, c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("def f():\n    from cyclic import c\n")
    (package / "c.py").write_text("import cyclic.a\n")
    (package / "d.py").write_text("import cyclic.a\n")
    sys.path.insert(0, str(tmp_path))
    try:
        graph = grimp.build_graph("cyclic", cache_dir=None)
    finally:
        sys.path.remove(str(tmp_path))
    assert strongly_connected_components(graph) == [["cyclic.a", "cyclic.b", "cyclic.c"]]


# Statements, not words: "SELECT ... FROM", "UPDATE t SET", a PRAGMA... in any string literal
# (f-strings' literal parts included).
SQL = re.compile(
    r"\b(SELECT\s.*?\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM"
    r"|CREATE\s+(TABLE|(UNIQUE\s+)?INDEX|SCHEMA)|ALTER\s+TABLE|DROP\s+(TABLE|INDEX|SCHEMA)"
    r"|PRAGMA\s+\w+|BEGIN\s+IMMEDIATE)\b",
    re.S,
)


def sql_literals(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = SQL.search(node.value)
            if match:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {match.group(0)[:40]!r}")
    return found


def test_only_the_queue_holds_sql() -> None:
    queue = ROOT / "actors" / "queue"
    outside: list[str] = []
    inside: list[str] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            if path.suffix == ".sql":
                (inside if queue in path.parents else outside).append(str(path.relative_to(ROOT)))
            elif path.suffix == ".py":
                (inside if queue in path.parents else outside).extend(sql_literals(path))
    assert inside, "the SQL pattern finds nothing in actors/queue: it no longer matches our SQL"
    assert outside == []
