"""Note-on/note-off pairing, once for the whole package: which voices are sounding, and which
of them a note-off ends (pure: no clock, no port).

A voice is one note-on: striking a pitch that is already sounding starts a second voice of
it. What a note-off ends is the caller's rule, named in one word:

- ``"oldest"``: the oldest sounding voice of its pitch (first in, first out; Magenta's
  ``Performance.to_sequence``, a synth, the scheduler's sounding notes);
- ``"all"``: every sounding voice of its pitch (a key that goes up releases the pitch).

(Reading a MIDI file as pretty_midi does is a rule of its own, with a quirk that Magenta's
data depends on; it stays in ``codec.read_midi``.)

A note-off of a silent pitch ends nothing. A note-on of velocity 0 is a note-off
(``message``). Voices never released are ended by the caller with ``end``, at a moment of its
choosing (``last``, the latest moment seen, is at hand).

Keys are whatever identifies a pitch for the caller: a pitch, or ``(channel, pitch)``.
"""

from __future__ import annotations

from typing import Any, Hashable, NamedTuple

from livepiano.core import messages

RULES = ("oldest", "all")


class Voice(NamedTuple):
    """One sounding voice: its key, when it started and what the caller keeps with it (the
    velocity, say)."""

    key: Hashable
    start: float
    data: Any = None


class Voices:
    """The sounding voices, oldest first per key, and the rule that pairs a note-off with
    them. Falsy when nothing sounds; ``len`` counts voices."""

    def __init__(self, rule: str = "oldest"):
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
        self.rule = rule
        self._open: dict[Hashable, list[Voice]] = {}
        self._count = 0
        self.last: float | None = None  # the latest moment passed to on/off/message

    # --- events -------------------------------------------------------------------------

    def on(self, key: Hashable, start: float = 0.0, data: Any = None) -> Voice:
        """A note-on: a new voice of ``key`` from ``start``."""
        self._seen(start)
        voice = Voice(key, start, data)
        self._open.setdefault(key, []).append(voice)
        self._count += 1
        return voice

    def off(self, key: Hashable, at: float = 0.0) -> list[Voice]:
        """A note-off at ``at``: the voices it ends, by the rule (oldest first; none when the
        key is silent)."""
        self._seen(at)
        voices = self._open.get(key)
        if not voices:
            return []
        if self.rule == "oldest":
            ended = [voices.pop(0)]
        else:  # "all"
            ended, voices[:] = voices[:], []
        self._count -= len(ended)
        return ended

    def message(self, message, at: float = 0.0, *, by_channel: bool = False) -> list[Voice]:
        """A MIDI message (``[status, data1, data2]``) at ``at``: a note-on starts a voice
        (its velocity as ``data``), a note-off or a note-on of velocity 0 ends voices (they
        are returned), anything else is ignored. Keys are pitches, or ``(channel, pitch)``
        with ``by_channel``."""
        kind = messages.kind(message)
        if kind is None:
            return []
        key = (message[0] & 0x0F, message[1]) if by_channel else message[1]
        if kind == "on":
            self.on(key, at, message[2])
            return []
        return self.off(key, at)

    def end(self) -> list[Voice]:
        """Every voice still sounding (by key in order of first note-on, oldest first), and
        nothing sounds any more: the caller ends them where its rule says."""
        voices = [v for vs in self._open.values() for v in vs]
        self.clear()
        return voices

    def clear(self) -> None:
        """Forget every voice (All Notes Off, a panic)."""
        self._open.clear()
        self._count = 0

    # --- questions ----------------------------------------------------------------------

    def count(self, key: Hashable) -> int:
        return len(self._open.get(key, ()))

    def keys(self) -> list:
        """The key of each sounding voice (a key twice for two voices)."""
        return [v.key for vs in self._open.values() for v in vs]

    def voices(self) -> list[Voice]:
        return [v for vs in self._open.values() for v in vs]

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def _seen(self, t: float) -> None:
        if self.last is None or t > self.last:
            self.last = t
