"""The package's import graph: layers that import only downward, no cycle, and function-level imports only where
they keep a heavy dependency out of a lighter module.

Read from the source (``ast``), so the graph holds every import: at the top of a module, inside a function, and
under ``TYPE_CHECKING``. A unit is a top-level module (``hmtbench/engine.py``) or a subpackage
(``hmtbench/methods/``); the README's layout section writes the same layers down (test_readme.py compares them).
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "hmtbench"

# Lowest first. A unit imports units of its own layer or of layers below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("hmtbench", "errors", "files", "tensorfiles", "stats", "progress", "distributed", "oom",
     "hostmemory"),  # foundation
    ("methods", "backbones", "data", "lora"),  # the models and the text
    ("config", "resolve", "checkpoints", "build", "results"),  # run configuration, checkpoints, records
    ("engine", "answer_layout", "fastpath", "generation"),  # the segment loop, answers' layout, decoding
    ("evaluation", "qa", "training", "benchmark"),  # the workloads
    ("analysis",),  # reading records: compare, plot, report
    ("commands", "lmeval"),  # what a command (or lm-eval) runs
    ("cli", "__main__"),  # the command line
]
# What an import must not drag into a module that does not already have it (hmtbench --help stays instant).
HEAVY = {"torch", "transformers", "peft", "pandas", "numpy", "matplotlib", "datasets", "lm_eval", "scipy", "pyarrow",
         "bm25s", "safetensors", "gguf"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module (a submodule where ``from package import name`` names one)
    where: str  # top | function | typing
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _placed(tree: ast.Module) -> dict[int, str]:
    """``id(node)`` of every import inside a function or an ``if TYPE_CHECKING:`` block, and where it is."""
    def imports(node: ast.AST) -> list[int]:
        return [id(sub) for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))]

    placed = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            placed.update(dict.fromkeys(imports(node), "function"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            placed.update(dict.fromkeys(imports(node), "typing"))
    return placed


def _imports(module: str, path: Path) -> tuple[list[Import], list[tuple[str, str]]]:
    """(the hmtbench imports of ``module``, its third-party (top-level package, where) imports)."""
    tree = ast.parse(path.read_text())
    placed = _placed(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    ours, theirs = [], []
    for node in ast.walk(tree):
        where = placed.get(id(node), "top")
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            if name == "hmtbench" or name.startswith("hmtbench."):
                ours.append(Import(module, name, where, node.lineno))
            else:
                theirs.append((name.split(".")[0], where))
    return ours, theirs


IMPORTS: list[Import] = []
THIRD_PARTY: dict[str, set[str]] = {}  # module -> third-party packages it imports at its top
for _module, _path in MODULES.items():
    _ours, _theirs = _imports(_module, _path)
    IMPORTS += _ours
    THIRD_PARTY[_module] = {name for name, where in _theirs if where == "top"}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer(name: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if name in units)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    counter = itertools.count()

    def visit(node: str) -> None:
        index[node] = low[node] = next(counter)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_unit_has_a_layer() -> None:
    units = {unit(m) for m in MODULES}
    placed = [u for units_ in LAYERS for u in units_]
    assert len(placed) == len(set(placed)), "a unit is in two layers"
    assert units == set(placed), f"units without a layer: {units - set(placed)}; layers naming no unit: " \
                                 f"{set(placed) - units}"


def test_no_unit_imports_a_layer_above_its_own() -> None:
    upward = sorted(f"{i.source}:{i.line} imports {i.target} ({unit(i.source)} sits below {unit(i.target)})"
                    for i in IMPORTS if layer(unit(i.target)) > layer(unit(i.source)))
    assert upward == []


def test_no_package_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for i in IMPORTS:
        if unit(i.source) != unit(i.target):
            graph[unit(i.source)].add(unit(i.target))
    assert cycles(graph) == []


def test_no_module_cycle() -> None:
    """Within a package too (a package's ``__init__`` importing its own modules aside: Python runs it first)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for i in IMPORTS:
        if i.where != "typing" and i.target != i.source and not i.source.startswith(f"{i.target}."):
            graph[i.source].add(i.target)
    assert cycles(graph) == []


def _top_closure(module: str, seen: set[str] | None = None) -> set[str]:
    """The third-party packages importing ``module`` pulls in: its own top-level imports, those of the hmtbench
    modules it imports at its top, and those of the packages above it (whose ``__init__`` runs first)."""
    seen = set() if seen is None else seen
    if module in seen or module not in MODULES:
        return set()
    seen.add(module)
    found = set(THIRD_PARTY[module])
    parents = [".".join(module.split(".")[:n]) for n in range(1, module.count(".") + 1)]
    for other in [*(i.target for i in IMPORTS if i.source == module and i.where == "top"), *parents]:
        found |= _top_closure(other, seen)
    return found


@pytest.mark.parametrize("module", sorted({i.source for i in IMPORTS if i.where == "function"}))
def test_function_level_imports_defer_a_heavy_dependency(module: str) -> None:
    """An hmtbench import inside a function is there to keep torch, pandas, ... out of an importer that lacks
    them; any other belongs at the top of the module, where a reader sees what the module depends on."""
    own = _top_closure(module) & HEAVY
    pointless = [f"{i.target} (line {i.line})" for i in IMPORTS
                 if i.source == module and i.where == "function" and not (_top_closure(i.target) & HEAVY) - own]
    assert pointless == [], f"{module} imports these inside functions though they add no heavy dependency"


def test_the_command_line_imports_no_heavy_package() -> None:
    """`hmtbench --help` stays instant: the CLI module and what it imports at its top pull in none of HEAVY."""
    import subprocess
    import sys

    heavy = sorted(HEAVY)
    code = f"import sys, hmtbench.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parent)
    assert result.stdout.strip() == "[]"


def test_every_module_stays_under_four_hundred_lines() -> None:
    """A module past 400 lines holds more than one job: split it along the layers above."""
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) >= 400}
    assert long == {}
