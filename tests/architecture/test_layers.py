"""Guards that keep the layout honest (issue 7): no import cycles, dependencies one way
(discovery uses meshwg, never the reverse), each engine layer imports only the layers
below it, and the WireGuard core stays free of I/O, threads and the clock.

The import graph is read statically (ast) from every module, imports inside functions
included (a lazy import is still a dependency); imports under `if TYPE_CHECKING:` are
annotations only and left out. A second test imports every module in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO

PACKAGES = ("meshwg", "discovery")

# What each part of the engine may import from the project (besides itself). The device is
# the only I/O layer that sees the others; the CLI sits on top.
ENGINE_LAYERS = {
    "meshwg.util": set(),
    "meshwg.accel": {"meshwg.util"},          # the compiled data path and its selection
    "meshwg.core": {"meshwg.util"},
    "meshwg.tun": {"meshwg.util", "meshwg.accel"},     # checksums: accel piece_sums
    "meshwg.conn": {"meshwg.util"},
    "meshwg.netlink": {"meshwg.util"},
    "meshwg.config": {"meshwg.util", "meshwg.core"},
    "meshwg.uapi": {"meshwg.util", "meshwg.core", "meshwg.device.api"},
    "meshwg.device": {"meshwg.util", "meshwg.core", "meshwg.tun", "meshwg.conn",
                      "meshwg.netlink", "meshwg.uapi", "meshwg.config", "meshwg.accel"},
    "meshwg.cli": {"meshwg"},
}

# The protocol core takes bytes and the time and gives bytes, events and deadlines:
# it owns no socket, clock, thread or lock and reads no environment.
CORE_FORBIDDEN_MODULES = {"socket", "select", "selectors", "threading", "time", "asyncio",
                          "subprocess", "multiprocessing", "signal", "queue"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            out[module_name(path)] = path
    return out


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names of everything `name` imports (modules, or module.attribute)."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if not _in_type_checking(node, parents):
                out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if _in_type_checking(node, parents):
                continue
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            out.add(source)
            out.update(f"{source}.{alias.name}" for alias in node.names)
    return out


def project_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (names resolved to existing modules)."""
    modules = all_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(name, path):
            # "a.b.c" may be module a.b.c or attribute c of module a.b
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}          # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # a package's __init__ is imported with its submodules: not an edge back
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(project_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle() -> None:
    """The guard itself works: a three-module cycle is reported."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_meshwg_never_imports_discovery() -> None:
    bad = [f"{m} imports {t}" for m, ts in project_graph().items() if m.startswith("meshwg")
           for t in ts if t.startswith("discovery")]
    assert not bad, bad


def _layer_of(module: str) -> str | None:
    best = None
    for layer in ENGINE_LAYERS:
        if (module == layer or module.startswith(layer + ".")) and (best is None or len(layer) > len(best)):
            best = layer
    return best


def test_engine_layers_import_only_layers_below() -> None:
    bad = []
    for module, targets in project_graph().items():
        layer = _layer_of(module)
        if layer is None:
            continue
        allowed = ENGINE_LAYERS[layer] | {layer}
        for target in targets:
            if target in ("meshwg",):          # the package itself (__version__)
                continue
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                bad.append(f"{module} ({layer}) imports {target}")
    assert not bad, "\n".join(bad)


def test_core_does_no_io_and_owns_no_thread_or_clock() -> None:
    bad = []
    for name, path in all_modules().items():
        if not name.startswith("meshwg.core"):
            continue
        for imported in imports_of(name, path):
            root = imported.split(".")[0]
            if root in CORE_FORBIDDEN_MODULES:
                bad.append(f"{name} imports {imported}")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") \
                    and isinstance(node.value, ast.Name) and node.value.id == "os":
                bad.append(f"{name}:{node.lineno} reads os.{node.attr}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(m for m in all_modules() if not m.endswith("__main__")))
def test_module_imports_in_a_fresh_interpreter(module: str) -> None:
    """Each module imports on its own (no order dependence, no cycle that breaks at import)."""
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                            text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
