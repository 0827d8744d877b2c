"""The package's shape: imports point one way (core <- settings <- runtime <- live <- tools and
the command line; learn beside live, on runtime and below), no import circle among the
statements that run at import, every module opens with a docstring saying its job; torch only
inside learn/, and `play` and `demo`, run for real, never import it."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jackserver import Capture, JackServer, die_with_parent, jackd_available, livepiano_env, need

PACKAGE = Path(__file__).resolve().parents[1] / "livepiano"
# What each part may import (the README's design): core <- settings <- runtime <- live <- tools
# and the command line; learn beside live, on core, settings and runtime only; torch only in
# learn. Every part may import the package's own __init__ (LivepianoError), which imports none.
_BASE = {"__init__", "core", "settings", "runtime"}
MAY_IMPORT = {
    "core": {"__init__", "core"},
    "settings": {"__init__", "core", "settings"},
    "runtime": _BASE,
    "learn": _BASE | {"learn"},
    "live": _BASE | {"live"},
    "tools": _BASE | {"learn", "live", "tools"},
    "cli": _BASE | {"learn", "live", "tools", "cli"},
    "__main__": {"__init__", "cli"},
    "__init__": set(),
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


class _AtImport(ast.NodeVisitor):
    """The import statements that run when a module is imported: every statement at module
    level, inside ``try``/``if``/``with``/loops and class bodies too; not function bodies, and
    not an ``if TYPE_CHECKING:`` block (which never runs)."""

    def __init__(self):
        self.found: list[ast.stmt] = []

    def visit_Import(self, node):
        self.found.append(node)

    visit_ImportFrom = visit_Import

    def visit_FunctionDef(self, node):
        pass

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        pass

    def visit_If(self, node):
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)


def imports(path: Path, at_import_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    if at_import_only:
        seen = _AtImport()
        seen.visit(tree)
        nodes = seen.found
    else:
        nodes = list(ast.walk(tree))
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


def part(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_imports_point_down_the_layers():
    mods = modules()
    wrong = [f"{name} imports {target}"
             for name, path in mods.items() for target in sorted(imports(path))
             if target in mods and target != name
             and part(target) not in MAY_IMPORT[part(name)]]
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
    graph = {n: {t for t in imports(p, at_import_only=True) if t in mods and t != n}
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


# --- torch never imported while playing, checked by running the commands ---------------------

# Loaded by every Python process started with this folder on PYTHONPATH (the session's guardian
# too): an audit hook that writes down each attempt to import torch, with where it came from.
# An attempt counts even where torch is not installed.
_WATCH_TORCH = """
import os, sys, traceback

def _watch(event, args):
    if event == "import" and (args[0] == "torch" or args[0].startswith("torch.")):
        with open(os.environ["LIVEPIANO_TEST_TORCH_LOG"], "a") as log:
            log.write(f"pid {os.getpid()} {sys.argv} imports {args[0]}:\\n")
            log.write("".join(traceback.format_stack(limit=15)))

sys.addaudithook(_watch)
"""


def _watching_torch(env: dict, folder: Path) -> tuple[dict, Path]:
    hook = folder / "torch-watch"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_WATCH_TORCH)
    log = folder / "torch-imports.txt"
    env = livepiano_env(env)
    env["PYTHONPATH"] = os.pathsep.join([str(hook), env["PYTHONPATH"]])
    env["LIVEPIANO_TEST_TORCH_LOG"] = str(log)
    return env, log


def _torch_imports(log: Path) -> str:
    return log.read_text() if log.exists() else ""


@pytest.mark.jack
def test_playing_never_imports_torch(tmp_path):
    """A real ``livepiano play`` (the shipped model, a guardian, a private JACK server), played
    until the synth has heard the model, then Ctrl-C."""
    need(jackd_available(), "jackd is not installed")
    with JackServer() as jack:
        cap = Capture("synth", jack.env)
        env, log = _watching_torch(jack.env, tmp_path)
        proc = subprocess.Popen([sys.executable, "-m", "livepiano.cli", "play", "--api", "jack",
                                 "--out", "synth", "--record", str(tmp_path / "s.mid"),
                                 "--seed", "1"],
                                env=env, cwd=PACKAGE.parent, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent())
        try:
            deadline = time.monotonic() + 60
            while len(cap.notes_on()) < 5 and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
            assert len(cap.notes_on()) >= 5, "the model did not play"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            cap.close()
    assert proc.returncode == 0, err
    assert "every note released" in err, err
    assert _torch_imports(log) == ""


def test_the_demo_never_imports_torch(tmp_path):
    """``livepiano demo --seconds 2`` as it runs here (a private JACK server where jackd is
    installed, else in-process ports), demo.wav included."""
    env, log = _watching_torch(os.environ, tmp_path)
    env.pop("JACK_DEFAULT_SERVER", None)  # the demo starts its own
    done = subprocess.run([sys.executable, "-m", "livepiano.cli", "demo", "--seconds", "2",
                           "-o", tmp_path / "out"], env=env, cwd=PACKAGE.parent,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr + done.stdout
    assert (tmp_path / "out" / "demo.mid").is_file() and (tmp_path / "out" / "demo.wav").is_file()
    assert _torch_imports(log) == ""
