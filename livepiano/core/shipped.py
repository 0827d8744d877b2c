"""Files that ship with livepiano (the model, the demo's primer): at the repository root in a
checkout, else inside the installed package, where pyproject maps ``models/`` and
``examples/`` to the packages ``livepiano.models`` and ``livepiano.examples``."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def shipped_file(folder: str, name: str) -> Path | None:
    """``folder/name`` (``folder``: "models" or "examples"), or None where it is not there."""
    path = REPOSITORY / folder / name
    if path.is_file():
        return path
    try:
        found = importlib.resources.files(f"livepiano.{folder}") / name
    except ModuleNotFoundError:
        return None
    return Path(str(found)) if found.is_file() else None
