"""The dependency layering of ``src/ppokit``, read from the import statements of every module (ast, so
imports inside functions count too): ``cli`` -> {``rl``, ``llm``} -> the shared machinery; ``rl`` and
``llm`` never import each other; nothing imports ``cli``; ``functional`` imports only torch; and no
module imports itself through others, not even through an import inside a function."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ppokit"

# What both sides build on. A top-level module of ppokit not named in any layer below fails the test,
# so a new module is placed deliberately.
SHARED = {
    "train",
    "functional",
    "config",
    "config_aliases",
    "errors",
    "tracking",
    "tracking_wandb",  # the wandb sink Tracker opens for report_to: [wandb]
    "plotting",
    "seeding",
    "distributed",
    "checkpoint",
}
SIDES = {"rl", "llm"}
ENTRY = {"cli", "__main__", "readme", "__init__"}  # the command line, `python -m ppokit`, dev tools


def _component(module: str) -> str:
    """``ppokit.cli.lm`` -> ``cli``; ``ppokit.config`` -> ``config``; ``ppokit`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """The nodes inside ``if TYPE_CHECKING:`` blocks: imports a type checker reads and Python never runs."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(ast.walk(child))
    return skipped


def import_graph(runtime_only: bool = False) -> dict[str, set[str]]:
    """Module name -> the modules it imports (absolute names; ``from ppokit import x`` -> ``ppokit.x``
    when ``x`` is a submodule). ``runtime_only``: leave out the imports under ``if TYPE_CHECKING:``,
    which never run and so cannot take part in an import cycle."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        skipped = _type_checking_only(tree) if runtime_only else set()
        for node in ast.walk(tree):
            if node in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    is_module = (SRC.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                        SRC.parent / Path(*sub.split("."))
                    ).is_dir()
                    targets.add(sub if is_module else base)
        graph[name] = targets
    return graph


def _ppokit_edges() -> list[tuple[str, str, str, str]]:
    """``(module, imported module, its component, the imported one's component)`` inside ppokit."""
    edges = []
    for module, targets in import_graph().items():
        for target in targets:
            if target == "ppokit" or target.startswith("ppokit."):
                edges.append((module, target, _component(module), _component(target)))
    return edges


def test_every_top_level_module_has_a_layer():
    components = {_component(m) for m in import_graph()}
    unplaced = components - SHARED - SIDES - ENTRY
    assert not unplaced, f"place these in a layer in tests/test_layering.py: {sorted(unplaced)}"


def test_nothing_imports_the_cli():
    bad = [(m, t) for m, t, a, b in _ppokit_edges() if b == "cli" and a not in ("cli", "__main__")]
    assert not bad, bad


def test_rl_and_llm_never_import_each_other():
    bad = [(m, t) for m, t, a, b in _ppokit_edges() if {a, b} == SIDES]
    assert not bad, bad


def test_the_sides_import_only_the_shared_machinery():
    bad = [(m, t) for m, t, a, b in _ppokit_edges() if a in SIDES and b != a and b not in SHARED]
    assert not bad, bad


def test_the_shared_machinery_imports_neither_side_nor_the_cli():
    bad = [(m, t) for m, t, a, b in _ppokit_edges() if a in SHARED and b not in SHARED]
    assert not bad, bad


def test_functional_imports_only_torch_and_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"torch"}
    bad = [
        (m, t)
        for m, targets in import_graph().items()
        if _component(m) == "functional"
        for t in targets
        if not t.startswith("ppokit.functional") and t.split(".")[0] not in allowed
    ]
    assert not bad, bad


def test_the_graph_sees_lazy_imports_inside_functions():
    graph = import_graph()
    # cli/lm.py imports the trainers inside its command functions only
    assert "ppokit.llm.grpo" in graph["ppokit.cli.lm"]
    assert "ppokit.cli" in graph["ppokit.__main__"]


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected part of ``graph`` (Tarjan's algorithm, iterative), each as the
    path ``[a, b, ..., a]`` of modules that import the next one. A package is not counted as importing
    itself through its submodules (Python loads ``ppokit.llm`` before ``ppokit.llm.x``; only an
    explicit import of the package from its own submodule is an edge)."""
    graph = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    part = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        part.append(top)
                        if top == node:
                            break
                    if len(part) > 1:
                        parts.append(sorted(part))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return [_cycle_path(graph, set(part)) for part in parts]


def _cycle_path(graph: dict[str, set[str]], part: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected ``part`` (breadth first)."""
    start = min(part)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & part):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{sorted(part)} is not strongly connected")


def test_no_import_cycles_counting_imports_inside_functions():
    cycles = import_cycles(import_graph(runtime_only=True))
    assert not cycles, "import cycles (a function-local import counts): " + "; ".join(
        " -> ".join(cycle) for cycle in cycles
    )


def test_the_cycle_check_finds_a_cycle_through_a_function_local_import():
    # the knot issue 29 untied: config -> trl_compat -> inputs -> trl_compat, two of them inside functions
    graph = {"a": {"b"}, "b": {"c"}, "c": {"b", "d"}, "d": set(), "e": {"e"}}
    assert import_cycles(graph) == [["b", "c", "b"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
