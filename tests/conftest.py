"""Shared test helpers. Fixtures live in tests/data (see its README); nothing here needs
../shared or a network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def golden():
    """golden(midi_path) -> the note_seq token ids stored beside it (NAME.tokens)."""
    def read(midi_path) -> list[int]:
        return [int(t) for t in Path(midi_path).with_suffix(".tokens").read_text().split()]
    return read


@pytest.fixture(scope="session")
def run_livepiano():
    """run_livepiano(*args) runs the real `livepiano` command line of this checkout in a
    subprocess and returns the CompletedProcess (text stdout/stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    def run(*args, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "livepiano.cli", *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    return run
