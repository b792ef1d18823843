"""The package's imports form the ladder that docs/architecture.md draws ("The ladder"): no module
imports one that imports it back (directly or round a circle), and no room imports a room on its
own rung or above. Every `import` counts, including the lazy ones inside functions.

The ladder is read from the doc's table, so the doc and this test cannot drift apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "loraocean"
DOC = ROOT / "docs" / "architecture.md"



def read_ladder(doc: Path = DOC) -> dict[str, int]:
    """room -> rung (1 = bottom) from the table under '## The ladder' in docs/architecture.md."""
    text = doc.read_text(encoding="utf-8")
    section = text.split("## The ladder", 1)[1].split("\n## ", 1)[0]
    ladder = {}
    for rung, rooms in re.findall(r"^\| (\d+) \| ([^|]+) \|", section, re.M):
        for room in re.findall(r"`([\w.]+)`", rooms):
            assert room not in ladder, f"{doc}: room {room!r} is on two rungs"
            ladder[room] = int(rung)
    assert ladder, f"{doc}: no ladder table under '## The ladder'"
    return ladder


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    """`loraocean.moe.methods.xlora` -> `moe`, `loraocean.errors` -> `errors`, the package's own
    `__init__` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(package: Path) -> dict[str, set[tuple[str, int]]]:
    """module -> {(imported module of the package, line)}, from every Import/ImportFrom node."""
    files = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    top = package.name
    out: dict[str, set[tuple[str, int]]] = {m: set() for m in files}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, up level - 1
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    where = ".".join(base + ([node.module] if node.module else []))
                else:
                    where = node.module or ""
                # `from pkg import sub` imports the submodule; `from mod import name`, the module
                names = [f"{where}.{a.name}" if f"{where}.{a.name}" in files else where for a in node.names]
            else:
                continue
            for name in names:
                if name != top and not name.startswith(top + "."):
                    continue
                while name not in files:  # `import a.b.c` where c is a name: its module
                    name = name.rsplit(".", 1)[0]
                if name != module:
                    out[module].add((name, node.lineno))
    return out


def circles(graph: dict[str, set[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward(graph: dict[str, set[tuple[str, int]]], ladder: dict[str, int]) -> list[tuple[str, str, int]]:
    """Imports of a room on the same rung or above: (module, imported module, line)."""
    bad = []
    for module, targets in sorted(graph.items()):
        here = room_of(module)
        for target, line in sorted(targets):
            there = room_of(target)
            if there != here and ladder[there] >= ladder[here]:
                bad.append((module, target, line))
    return bad


def test_every_room_is_on_the_ladder():
    ladder = read_ladder()
    rooms = {room_of(m) for m in imports(PACKAGE)}
    missing = sorted(rooms - set(ladder))
    assert not missing, f"rooms {missing} are not in the ladder table of {DOC}: add them to a rung"
    stale = sorted(set(ladder) - rooms)
    assert not stale, f"{DOC} lists rooms {stale} that src/loraocean does not have"


def test_no_import_circles():
    found = circles(imports(PACKAGE))
    assert not found, "modules that import each other (round a circle): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_imports_point_down_the_ladder():
    ladder = read_ladder()
    bad = upward(imports(PACKAGE), ladder)
    assert not bad, "imports that point up or sideways on the ladder of docs/architecture.md:\n" + \
        "\n".join(f"  {m} (line {line}) imports {t}: {room_of(m)} (rung {ladder[room_of(m)]}) -> "
                  f"{room_of(t)} (rung {ladder[room_of(t)]})" for m, t, line in bad)


def test_the_checks_find_what_they_look_for(tmp_path):
    """The walk sees lazy and relative imports, and the checks report a circle and an upward
    import in a small package made for the purpose."""
    pkg = tmp_path / "loraocean"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("from . import a\n")
    (pkg / "low" / "a.py").write_text("def f():\n    from loraocean.low.b import g\n")
    (pkg / "low" / "b.py").write_text("from .a import f\ndef g():\n    import loraocean.high\n")
    (pkg / "high.py").write_text("import os\n")
    graph = imports(pkg)
    assert graph["loraocean.low.a"] == {("loraocean.low.b", 2)}  # the lazy one, inside f
    assert graph["loraocean.low.b"] == {("loraocean.low.a", 1), ("loraocean.high", 3)}
    assert graph["loraocean.low"] == {("loraocean.low.a", 1)}
    assert circles(graph) == [["loraocean.low.a", "loraocean.low.b"]]
    doc = tmp_path / "ladder.md"
    doc.write_text("## The ladder\n\n| rung | rooms |\n| --- | --- |\n| 2 | `high` |\n| 1 | `low`, `__init__` |\n")
    ladder = read_ladder(doc)
    assert ladder == {"high": 2, "low": 1, "__init__": 1}
    assert upward(graph, ladder) == [("loraocean.low.b", "loraocean.high", 3)]
