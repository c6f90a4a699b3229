"""The code's shape, checked: import cycles in src/reidnet and the size limits of issue 24.

    python tools/code_shape.py            # a table of what breaks a limit; exit 1 if anything does
    python tools/code_shape.py --report   # also the largest files, classes and functions

Limits: no source file over 800 lines, no class over 300, no function over 90, and no import cycle
between modules (imports inside functions count, `if TYPE_CHECKING:` ones do not). The import graph
is grimp's, the one import-linter checks the layer contracts of pyproject.toml with.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "src" / "reidnet"
MAX_FILE_LINES = 800
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 90


@dataclass(frozen=True)
class Measure:
    kind: str  # "file", "class" or "function"
    where: str  # path[:line qualified.name]
    lines: int
    limit: int


def measure_sources(package_dir: Path) -> list[Measure]:
    found: list[Measure] = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).as_posix()
        text = path.read_text(encoding="utf-8")
        found.append(Measure("file", rel, len(text.splitlines()), MAX_FILE_LINES))
        found.extend(_measure_definitions(ast.parse(text, filename=rel), rel))
    return found


def _measure_definitions(tree: ast.Module, rel: str) -> list[Measure]:
    found: list[Measure] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                size = (child.end_lineno or child.lineno) - first + 1
                if isinstance(child, ast.ClassDef):
                    found.append(Measure("class", f"{rel}:{first} {name}", size, MAX_CLASS_LINES))
                else:
                    found.append(
                        Measure("function", f"{rel}:{first} {name}", size, MAX_FUNCTION_LINES)
                    )
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def import_cycles(package: str = "reidnet") -> list[list[str]]:
    """Strongly connected groups of more than one module in the package's import graph."""
    import grimp

    sys.path.insert(0, str(PACKAGE_DIR.parent))
    graph = grimp.build_graph(package, exclude_type_checking_imports=True)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    return [sorted(group) for group in _strongly_connected(edges) if len(group) > 1]


def _strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    groups.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(edges.get(child, []))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="also list the largest of each kind")
    args = parser.parse_args(argv)

    measures = measure_sources(PACKAGE_DIR)
    over = [m for m in measures if m.lines > m.limit]
    cycles = import_cycles()

    if args.report:
        for kind, plural in (("file", "files"), ("class", "classes"), ("function", "functions")):
            largest = sorted((m for m in measures if m.kind == kind), key=lambda m: -m.lines)[:5]
            print(f"largest {plural}:")
            for m in largest:
                print(f"  {m.lines:5d}  {m.where}")
    for m in over:
        print(f"{m.kind} over {m.limit} lines: {m.where} ({m.lines} lines)")
    for group in cycles:
        print(f"import cycle of {len(group)} modules: {' -> '.join(group)}")
    counts = {kind: sum(1 for m in measures if m.kind == kind) for kind in ("file", "class")}
    print(
        f"{counts['file']} files, {counts['class']} classes: {len(over)} over a size limit, "
        f"{len(cycles)} import cycles"
    )
    return 1 if over or cycles else 0


if __name__ == "__main__":
    sys.exit(main())
