"""A one-line progress bar on stderr (no dependency; redraws at most 5 times a second)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int | None, label: str, stream=None, every: float = 0.2):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.every = every
        self.start = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self.start
        if self.total:
            frac = min(1.0, done / self.total)
            bar = "#" * int(frac * 24)
            eta = elapsed / frac - elapsed if frac > 0 else 0.0
            line = (f"{self.label} [{bar:<24}] {done}/{self.total} {frac:4.0%} "
                    f"{_clock(elapsed)} eta {_clock(eta)} {extra}")
        else:
            line = f"{self.label} {done} {_clock(elapsed)} {extra}"
        if self.stream.isatty():
            self.stream.write("\r" + line[:160].ljust(100))
        else:
            # Logs and CI get whole lines, not carriage returns, and fewer of them.
            if now - getattr(self, "_last_line", 0.0) < 10 and not force:
                return
            self._last_line = now
            self.stream.write(line + "\n")
        self.stream.flush()
        self._shown = True

    def close(self, done: int, extra: str = "") -> None:
        self.update(done, extra, force=True)
        if self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
