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

``pair_oldest`` is the "oldest" rule over whole numpy arrays of events at once, for the
hundreds of thousands of events of a long session that must be saved in well under a second.
"""

from __future__ import annotations

from typing import Any, Hashable, NamedTuple

import numpy as np

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


def pair_oldest(keys, is_on) -> np.ndarray:
    """The "oldest" rule over a whole stream of events in order: ``keys`` (integers) and
    ``is_on`` (note-on or note-off) are arrays of equal length; the result holds, for each
    note-on, the index of the note-off that ends it (-1 when nothing does), and -1 for every
    note-off. Equal to feeding the events one by one to ``Voices("oldest")``."""
    keys = np.asarray(keys, dtype=np.int64)
    is_on = np.asarray(is_on, dtype=bool)
    n = len(keys)
    ends = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return ends
    order = np.argsort(keys, kind="stable")  # grouped by key, in stream order within one
    key, on = keys[order], is_on[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(key[1:], key[:-1], out=first[1:])
    group = np.cumsum(first) - 1
    start = np.flatnonzero(first)[group]  # where each position's group begins
    step = np.where(on, 1, -1)
    total = np.cumsum(step)
    height = total - (total - step)[start]  # ons minus offs of the key so far
    # A note-off of a silent key ends nothing, so the count of sounding voices is the height
    # reflected at zero: the height minus the lowest it has been (never above 0). Lowering
    # each key's heights below every earlier key's keeps the running minimum to its key.
    apart = (2 * n + 2) * group
    lowest = np.minimum(np.minimum.accumulate(height - apart) + apart, 0)
    sounding = height - lowest
    before = np.where(first, 0, np.roll(sounding, 1))
    ending = ~on & (before > 0)
    # First in, first out: the r-th note-on of a key is ended by its r-th ending note-off
    # (which comes after it, the count never being negative).
    code_on = group[on] * (n + 1) + _rank(on, start)[on]
    code_off = group[ending] * (n + 1) + _rank(ending, start)[ending]  # ascending
    at = np.minimum(np.searchsorted(code_off, code_on), max(len(code_off) - 1, 0))
    found = (code_off[at] == code_on) if len(code_off) else np.zeros(len(code_on), bool)
    ends[order[on][found]] = order[ending][at[found]]
    return ends


def _rank(mask, start) -> np.ndarray:
    """For each position, how many ``mask`` positions of its group come before it."""
    count = np.cumsum(mask)
    return count - mask - np.concatenate(([0], count))[start]
