"""The choices a setting can take and the checks that convert a value or say what is
allowed: the one copy every schema (settings, knob bindings, duet) builds on."""

from __future__ import annotations

MODES = ("continuous", "duet")


REALTIME = ("auto", "fifo", "switch", "off")


TAKEOVERS = ("jump", "pickup", "scale")


MIDI_APIS = ("alsa", "jack", "coremidi", "winmm")  # python-rtmidi's systems, by our names


BARGE_IN = ("stop", "finish", "overlap")  # what the duet does when you play during an answer


class Invalid(ValueError):
    """A check's complaint about one part of a value (one binding in the list), so that a
    file's error names that part's line: ``at`` is the path to it below the key (list
    indices, mapping keys). The message is the whole complaint; ``{also}`` in it names the
    place of the part at path ``also`` (another line of the same file)."""

    def __init__(self, message: str, at: tuple = (), also: tuple | None = None):
        super().__init__(message)
        self.at = tuple(at)
        self.also = also


def _shown(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def number(lo: float, hi: float, kind=float, what: str = "a number"):
    """A number from ``lo`` to ``hi`` (a bool is not one), converted by ``kind``."""
    allowed = f"{what} from {_shown(lo)} to {_shown(hi)}"

    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(allowed)
        v = kind(v)
        if not lo <= v <= hi:
            raise ValueError(allowed)
        return v
    return check


def seconds(lo: float, hi: float):
    """A time in seconds from ``lo`` to ``hi``, as a float."""
    return number(lo, hi, float, "a number of seconds")


def whole(lo: int, hi: int, *, integral_floats: bool = False):
    """A whole number from ``lo`` to ``hi``; ``integral_floats``: 3.0 counts as 3."""
    allowed = f"a whole number from {lo} to {hi}"

    def check(v):
        if isinstance(v, float) and integral_floats and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(allowed)
        return v
    return check


def finite(text: str) -> float:
    """A command line's number: a finite float (``inf`` and ``nan`` parse as floats but no
    length, rate or temperature can be one)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def choice(*choices):
    """One of ``choices`` (the check's ``choices``, for a command line's options)."""
    def check(v):
        if v not in choices:
            raise ValueError("one of " + ", ".join(map(str, choices)))
        return v
    check.choices = choices
    return check


def text_or_none(v):
    if v is None or isinstance(v, str):
        return v
    raise ValueError("a text (or nothing)")


def flag(v):
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v

