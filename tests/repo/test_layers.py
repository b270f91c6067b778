"""The house's layering, read from the code's imports (ast), not from a drawing:

- nothing below the top floor (mesh_config/, bus/, policy/, workers/, gateway/, observe/)
  imports agent_mesh;
- mesh_config/ (the config the CLI hands each role) stands on bus/ and policy/ only;
- the front-ends (gateway/) and the workers talk over the bus, never by importing each other;
- policy/ imports nothing of the project but itself (pure);
- autoresolve/ never talks to the bus (it is an HTTP client of the mesh; of bus/ it reads only
  the state directory's paths, bus/state_dir.py, to see whether the mesh it started runs);
- no two modules import each other, directly or through others (no import cycles).

Imports inside functions and under `if TYPE_CHECKING:` count too: a cycle hidden in a function is
still a cycle for the reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = [
    "agent_mesh",
    "mesh_config",
    "bus",
    "policy",
    "workers",
    "gateway",
    "observe",
    "autoresolve",
]

# package -> top-level packages of the project it must not import
FORBIDDEN = {
    "mesh_config": {"agent_mesh", "workers", "gateway", "observe", "autoresolve"},
    "bus": {"agent_mesh", "mesh_config", "policy", "workers", "gateway", "observe", "autoresolve"},
    "policy": {"agent_mesh", "mesh_config", "bus", "workers", "gateway", "observe", "autoresolve"},
    "workers": {"agent_mesh", "gateway", "autoresolve"},
    "gateway": {"agent_mesh", "workers", "autoresolve"},
    "observe": {"agent_mesh", "mesh_config", "gateway", "workers", "autoresolve"},
    "autoresolve": {"bus", "workers", "gateway"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The project modules that `name` imports (`from a import b` is a.b when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports(name, path, known)) for name, path in known.items()}


def test_no_floor_imports_a_floor_above_it() -> None:
    wrong = sorted(
        (module, target)
        for module, targets in graph().items()
        for target in targets
        if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], set())
        and target != "bus.state_dir"  # a leaf: every floor may name the state directory's paths
    )
    assert not wrong, "\n".join(f"{m} imports {t}" for m, t in wrong)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(
    edges: dict[str, set[str]], expected: list[list[str]]
) -> None:
    assert cycles(edges) == expected


def test_the_import_reader_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    path = tmp_path / "pkg" / "mod.py"
    path.write_text("def f():\n    from mesh_config.model import X\nfrom . import other\n")
    known = {"pkg.mod": path, "pkg.other": tmp_path, "mesh_config.model": tmp_path}
    assert set(imports("pkg.mod", path, known)) == {"mesh_config.model", "pkg.other"}
