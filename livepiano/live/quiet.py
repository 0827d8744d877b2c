"""Keeping C libraries quiet: ALSA, libjack and the audio device print on the process's
stderr when they fail to open something; the MIDI ports and the built-in synth's device both
open under ``quiet_stderr`` and turn what was said into their own one-line errors."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def quiet_stderr():
    """Keep C libraries from printing on our stderr inside the block; what they said is
    handed back (``captured[0]``, once the block is left) for error messages."""
    captured = [""]
    fd = 2  # where C libraries write, whatever sys.stderr is
    try:
        sys.stderr.flush()
        saved = os.dup(fd)
    except (AttributeError, OSError, ValueError):
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield captured
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            captured[0] = tmp.read().decode("utf-8", "replace")
