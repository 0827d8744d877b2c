"""The choices a setting can take and the checks that convert a value or say what is
allowed: the one copy every schema (settings, knob bindings, duet) builds on."""

from __future__ import annotations

MODES = ("continuous", "duet")


REALTIME = ("auto", "fifo", "switch", "off")


TAKEOVERS = ("jump", "pickup", "scale")


class Invalid(ValueError):
    """A check's complaint about one part of a value (one binding in the list), so that a
    file's error names that part's line: ``at`` is the path to it below the key (list
    indices, mapping keys). The message is the whole complaint; ``{also}`` in it names the
    place of the part at path ``also`` (another line of the same file)."""

    def __init__(self, message: str, at: tuple = (), also: tuple | None = None):
        super().__init__(message)
        self.at = tuple(at)
        self.also = also


def number(lo: float, hi: float, kind=float):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"a number from {lo} to {hi}")
        v = kind(v)
        if not lo <= v <= hi:
            raise ValueError(f"a number from {lo} to {hi}")
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
    def check(v):
        if v not in choices:
            raise ValueError("one of " + ", ".join(map(str, choices)))
        return v
    return check


def text_or_none(v):
    if v is None or isinstance(v, str):
        return v
    raise ValueError("a text (or nothing)")


def flag(v):
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v

