"""The import graph of raytrace/, nerf/ and viewer/ (every import, function-level ones included, read with ``ast``):
no cycle, and nothing imports upward (``raytrace`` <- ``nerf`` <- ``viewer``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("raytrace", "nerf", "viewer")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def known_modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that the file ``path`` (module ``name``) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a package: the deepest module known
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = known_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    assert "nerf.model" in graph["nerf.cli"]  # imported inside train_main
    assert "nerf.model" in graph["nerf.train"] and "raytrace.camera" in graph["nerf.render"]


def test_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None, f"import cycle: {' -> '.join(find_cycle(import_graph()) or [])}"


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("layer", LAYERS)
def test_no_upward_import(layer: str) -> None:
    above = LAYERS[LAYERS.index(layer) + 1 :]
    upward = sorted(
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        if name.split(".")[0] == layer
        for target in targets
        if target.split(".")[0] in above
    )
    assert not upward, "; ".join(upward)


def imports_qt(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n.split(".")[0] == "PyQt5" for n in names):
            return True
    return False


@pytest.mark.parametrize("core", ["viewer.core", "viewer.camera", "viewer.recorder"])
def test_the_viewer_core_reaches_no_qt(core: str) -> None:
    """The camera, the resolution control and the view renderer run (and are tested) without Qt."""
    graph, modules = import_graph(), known_modules()
    reached, todo = set(), [core]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(graph[name])
    assert not sorted(n for n in reached if imports_qt(modules[n]))
    assert imports_qt(modules["viewer.worker"])  # the check sees a Qt import where there is one


NERF_WORD = re.compile(r"(?<![A-Za-z0-9-])nerf(?![a-z0-9-])")  # nerf, nerf.x, nerf_native; not nerfkit, nerf-train


def names_of_nerf(path: Path) -> list[str]:
    """Where the Python file ``path`` names the ``nerf`` package in code (not in docstrings): an identifier, an
    attribute (``torch.ops.nerf_native``) or a string (``find_spec("nerf")``, ``"nerf/_native"``)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
        elif isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, ast.alias):
            text = node.name
        else:
            continue
        if NERF_WORD.search(text):
            found.append(f"{path.name}:{getattr(node, 'lineno', '?')}: {text!r}")
    return found


def test_raytrace_never_names_nerf() -> None:
    """The bottom layer finds nothing of the one above, not even without importing it: no name or string of
    ``nerf`` in its code, and none in its native sources (its kernels are its own, in raytrace/csrc)."""
    found = [hit for path in sorted((ROOT / "raytrace").rglob("*.py")) for hit in names_of_nerf(path)]
    found += [f"{path.name}: {line.strip()}" for path in sorted((ROOT / "raytrace" / "csrc").iterdir())
              for line in path.read_text().splitlines() if NERF_WORD.search(line)]
    assert not found, "; ".join(found)


def test_the_nerf_finder_sees_a_lookup_by_name(tmp_path: Path) -> None:
    """It catches the ways the raytracer once found nerf's library, and lets a docstring say NeRF or nerf."""
    (tmp_path / "x.py").write_text(
        '"""Writes NeRF datasets that nerf reads."""\nimport importlib.util\n\nimport torch\n\n'
        'SPEC = importlib.util.find_spec("nerf")\nOPS = torch.ops.nerf_native\nNAME = "nerfkit"\n'
    )
    assert sorted(hit.split(": ")[1] for hit in names_of_nerf(tmp_path / "x.py")) == ["'nerf'", "'nerf_native'"]
