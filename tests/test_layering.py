"""The dependency layering of ``src/ppokit``, read from the import statements of every module (ast, so
imports inside functions count too): ``cli`` -> {``rl``, ``llm``} -> the shared machinery; ``rl`` and
``llm`` never import each other; nothing imports ``cli``; ``functional`` imports only torch."""

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


def import_graph() -> dict[str, set[str]]:
    """Module name -> the modules it imports (absolute names; ``from ppokit import x`` -> ``ppokit.x``
    when ``x`` is a submodule)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
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
