"""The package's shape: imports point one way (core <- settings <- runtime <- live <- tools and
the command line; learn beside runtime), torch only inside learn/, no import circle, and every
module opens with a docstring saying its job."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "livepiano"
# A module may import from its own layer and the layers below it.
LAYER = {"core": 0, "settings": 1, "runtime": 2, "learn": 3, "live": 3, "tools": 4, "cli": 5,
         "__main__": 5, "__init__": -1}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "livepiano":
                found.update(f"livepiano.{a.name}" for a in node.names)
            else:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYER["__init__"] if len(parts) == 1 else LAYER[parts[1]]


def test_imports_point_down_the_layers():
    mods = modules()
    wrong = []
    for name, path in mods.items():
        for target in imports(path):
            if target in mods and target != name and layer(target) > layer(name):
                wrong.append(f"{name} imports {target}")
            below_learn = name.split(".")[1:2] in (["live"], ["runtime"])
            if below_learn and target.startswith("livepiano.learn"):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_torch_only_inside_learn():
    wrong = [name for name, path in modules().items()
             if any(t == "torch" or t.startswith("torch.") for t in imports(path))
             and not name.startswith(("livepiano.learn.", "livepiano.cli"))]
    assert not wrong


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    seen, stack, circle = set(), [], []

    def visit(n):
        if n in stack:
            circle.append(stack[stack.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for m in graph[n]:
            visit(m)
        stack.pop()

    for n in graph:
        visit(n)
    return circle


def test_no_import_circle_at_module_level():
    mods = modules()
    graph = {n: {t for t in imports(p, top_level_only=True) if t in mods and t != n}
             for n, p in mods.items()}
    assert not _circles(graph)


def test_no_two_modules_reach_each_other_even_inside_functions():
    """An import inside a function that closes a circle hides a dependency the wrong way
    (a package's own ``__init__``, which its modules import by being in it, aside)."""
    mods = modules()
    graph = {n: {t for t in imports(p) if t in mods and t != n and not n.startswith(t + ".")}
             for n, p in mods.items()}
    assert not _circles(graph)


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_imports_alone_and_says_its_job(name):
    path = modules()[name]
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no docstring"
    if name == "livepiano.__main__":
        return
    result = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                            text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr


def test_the_play_path_never_imports_torch():
    code = ("import sys, livepiano.cli, livepiano.live.session, livepiano.tools.demo; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, check=True)
    assert result.stdout.strip() == "False"
