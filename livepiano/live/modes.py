"""The play modes by name (``--mode``, the mode knob) and building one from a session's
settings."""

from __future__ import annotations

from typing import Callable

from livepiano.live.duet_mode import DuetMode
from livepiano.live.mode import Continuous, Mode


def make_mode(settings: dict, say: Callable[[str], None] | None = None) -> Mode:
    """The session's mode from its settings (a mode with ``from_settings`` reads them)."""
    build = MODES[settings["mode"]]
    from_settings = getattr(build, "from_settings", None)
    return from_settings(settings, say) if from_settings is not None else build()


MODES: dict[str, Callable[[], Mode]] = {"continuous": Continuous, "duet": DuetMode}

