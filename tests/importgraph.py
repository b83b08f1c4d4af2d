"""The import graph of Plaza's own packages, read from the code with `ast`.

Two users: tests/unit/test_imports.py holds the import rules (who may import whom, no circles)
against it, and docs/architecture.md carries the room-level graph it renders, kept in step by
the same test. `python -m tests.importgraph` prints the rendered section to paste.

Every import counts, at module level or inside a function (a lazy import is still a
dependency: it fails at run time instead of at start), except those under
`if TYPE_CHECKING:`, which never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("plaza", "gateway", "portal", "cloud", "provisioning", "lab")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of Plaza's packages, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[tuple[str, list[str]]]:
    """(module, names) per import statement, skipping `if TYPE_CHECKING:` bodies."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (item for child in node.orelse for item in _imports_of(child))
            continue
        yield from _imports_of(node)


def _imports_of(node: ast.AST) -> Iterator[tuple[str, list[str]]]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, []
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        yield node.module, [alias.name for alias in node.names]
    else:
        yield from _imports(node)


def edges() -> dict[str, set[str]]:
    """Module -> the Plaza modules it imports. `from pkg import mod` counts as importing
    `pkg.mod` when that is a module, else `pkg`."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        for module, names in _imports(ast.parse(path.read_text(), str(path))):
            if module.split(".")[0] not in PACKAGES:
                continue
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
            targets |= set(subs) if subs else {module}
            if subs and len(subs) < len(names):  # some names are attributes of the package
                targets.add(module)
        graph[name] = {t for t in targets if t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# A room is a package one level below gateway/ or cloud/ (gateway.stations, cloud.push), or
# the top-level package itself for the rest; gateway's top modules (config, control_client,
# files, gateway, daemon) are each their own room: they are the seams the others meet at.
def room(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "gateway" and len(parts) > 1:
        return ".".join(parts[:2])
    if parts[0] == "cloud" and len(parts) > 2:
        return ".".join(parts[:2])
    return parts[0]


def room_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], int]:
    """(room, room) -> how many module-level import links run between them."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for source, targets in graph.items():
        for target in targets:
            if room(source) != room(target):
                counts[room(source), room(target)] += 1
    return dict(counts)


def render() -> str:
    """The docs/architecture.md section: a Mermaid graph of rooms, and the same as a table."""
    counts = room_edges(edges())
    rooms = sorted({r for pair in counts for r in pair} | {room(m) for m in modules()})
    ident = {r: r.replace(".", "_") for r in rooms}
    lines = ["```mermaid", "flowchart TD"]
    lines += [f'  {ident[r]}["{r}"]' for r in rooms]
    for (source, target), n in sorted(counts.items()):
        lines.append(f"  {ident[source]} -->|{n}| {ident[target]}")
    lines += ["```", "", "| room | imports (links) |", "|---|---|"]
    for r in rooms:
        out = sorted((t, n) for (s, t), n in counts.items() if s == r)
        lines.append(f"| `{r}` | " + (", ".join(f"`{t}` ({n})" for t, n in out) or "—") + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
