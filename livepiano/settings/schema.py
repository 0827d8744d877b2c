"""Settings and knob bindings: one schema, the defaults in one place, one YAML reader whose
errors name the file, the line, the key and what is allowed, and one writer that rewrites
only the keys it is given.

One file can hold it all: `livepiano play` reads ``livepiano.yaml`` in the user's config
folder when it is there (``$LIVEPIANO_CONFIG`` names another; ``--config FILE`` too): a flat
mapping of the keys of ``SCHEMA``, the knob ``bindings`` among them. A controls file
(``--controls``, ``$LIVEPIANO_CONTROLS``, or a ``controls:`` key) is a file of the same
schema that holds only ``takeover`` and ``bindings``; learned bindings are saved into whichever
file the bindings come from, and saving rewrites only those two entries.

A setting of a play session comes from (last wins): the defaults below; the settings file;
the bindings file's ``takeover`` and ``bindings`` when that is another file; the command line.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from livepiano import LivepianoError
from livepiano.settings.choices import (
    MODES,
    REALTIME,
    TAKEOVERS,
    Invalid,
    choice,
    flag,
    number,
    text_or_none,
)
from livepiano.settings.params import PARAMS, check_bindings


@dataclass(frozen=True)
class Setting:
    default: Any
    check: Callable[[Any], Any]  # returns the value (converted) or raises ValueError(allowed)
    help: str


SCHEMA: dict[str, Setting] = {
    "api": Setting(None, choice(None, "alsa", "jack", "coremidi", "winmm"),
                   "MIDI system (default: LIVEPIANO_MIDI_API, else the platform's own)"),
    "in": Setting(None, text_or_none, "input port (default: a virtual port named livepiano)"),
    "out": Setting(None, text_or_none, "output port (default: a virtual port named livepiano)"),
    "channel": Setting(1, number(1, 16, int), "MIDI channel of the model's notes"),
    "mode": Setting("continuous", choice(*MODES), "how the model takes turns with you"),
    "temperature": Setting(1.0, number(0.05, 5.0), "sampling temperature"),
    "lookahead_ms": Setting(100, number(10, 1000, int),
                            "how far ahead of the clock the model may generate"),
    "echo": Setting(False, flag, "send the player's notes to the output too"),
    "realtime": Setting("auto", choice(*REALTIME),
                        "scheduler timing: fifo (real-time priority), switch (short GIL "
                        "switch interval), auto (both where allowed), off"),
    "model": Setting(None, text_or_none, "ONNX model (default: LIVEPIANO_MODEL, else the "
                                          "shipped one)"),
    "record": Setting(None, text_or_none, "MIDI file to save the session to"),
    "seed": Setting(None, lambda v: v if v is None else number(0, 2**32 - 1, int)(v),
                    "random seed (default: a fresh one)"),
    # knobs
    "control_in": Setting(None, text_or_none, "a second input port for knobs and pads (the "
                                               "piano's own CCs work too)"),
    "takeover": Setting("jump", choice(*TAKEOVERS),
                        "what a knob does when it disagrees with the value: jump (to the "
                        "knob), pickup (when the knob reaches it) or scale (meet at the end)"),
    "bindings": Setting((), check_bindings,
                        "the knob bindings, one entry each: {param: NAME, cc: 0-119 | note: "
                        "0-127, channel: 1-16[, takeover: ...]} (written by `livepiano learn`)"),
    "controls": Setting(None, text_or_none,
                        "read the takeover and bindings from this file, and save learned "
                        "bindings there, instead of this one (relative to this file)"),
}


# --- duet: call and response, `--mode duet` ------------------------------------------------

def _answer_range(v):
    """'MIN-MAX' seconds (or [MIN, MAX]) -> (min, max)."""
    allowed = "MIN-MAX seconds, e.g. 2-16 (each 0.5 to 120, MIN <= MAX)"
    if isinstance(v, str):
        parts = v.replace(" ", "").split("-")
    elif isinstance(v, (list, tuple)):
        parts = list(v)
    else:
        raise ValueError(allowed)
    try:
        lo, hi = (float(x) for x in parts)
    except (TypeError, ValueError):
        raise ValueError(allowed) from None
    if not 0.5 <= lo <= hi <= 120.0:
        raise ValueError(allowed)
    return (lo, hi)


def _follow(v):
    if v is None or isinstance(v, bool):
        return v
    raise ValueError("true, false (or nothing: on when the model is conditioned)")


def _cc_or_none(v):
    return v if v is None else number(0, 119, int)(v)


SCHEMA.update({
    "wait": Setting(0.6, number(0.05, 10.0),
                    "duet: seconds of silence (no key down, pedal up) that end your phrase"),
    "min_call": Setting(0.3, number(0.0, 10.0),
                        "duet: shortest phrase answered, in seconds from its first note-on to "
                        "its end (it also needs 2 notes)"),
    "answer": Setting((2.0, 16.0), _answer_range,
                      "duet: the answer follows your phrase's length, clamped to MIN-MAX s"),
    "barge_in": Setting("stop", choice("stop", "finish", "overlap"),
                        "duet: when you play during an answer: stop it at once, let it finish "
                        "its phrase, or let it overlap you"),
    "follow": Setting(None, _follow,
                      "duet: steer a conditioned model's answer by your phrase's pitch classes "
                      "and density (default: on when the model is conditioned)"),
    "end_of_call_cc": Setting(None, _cc_or_none,
                              "duet: a CC number (e.g. a foot switch) that ends your phrase at "
                              "once: the answer starts on its press"),
})


# --- sampling that holds up for minutes (runtime.steering) -----------------------------------

SCHEMA.update({
    "steer": Setting(True, flag, "keep the model's note density near `density` (and, in "
                                 "play, near yours); false: the model's own"),
    "density": Setting(PARAMS["density"].default, number(0.5, 30.0),  # the knob's own default
                       "notes per second the model aims for when it plays alone, and the "
                       "most it plays when it accompanies you"),
    "accompany_ratio": Setting(0.8, number(0.1, 2.0),
                               "play: the model's notes per second as a share of yours over "
                               "the last few seconds"),
    "top_p": Setting(1.0, number(0.5, 1.0),
                     "sample from the smallest set of events holding this much probability "
                     "(1: all of them)"),
})


def defaults() -> dict[str, Any]:
    return {k: s.default for k, s in SCHEMA.items()}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check(values: Mapping[str, Any], source: str | os.PathLike | None = None,
          locate: Locate | None = None) -> dict[str, Any]:
    """The given ``values`` checked against SCHEMA (converted); nothing is added. An error is
    a ``LivepianoError`` of one line: ``source`` (a file) and ``locate`` give it its line."""
    def prefix(key: str, path: tuple = ()) -> str:
        line = locate(key, path) if locate is not None else None
        if source is None:
            return ""
        return f"{source} line {line}: " if line else f"{source}: "

    out = {}
    for key, value in values.items():
        setting = SCHEMA.get(key) if isinstance(key, str) else None
        if setting is None:
            near = difflib.get_close_matches(str(key), SCHEMA, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise LivepianoError(f"{prefix(key)}unknown setting '{key}'{hint}; known settings "
                                 f"are {', '.join(SCHEMA)}.")
        try:
            out[key] = setting.check(value)
        except Invalid as e:
            text = str(e)
            if e.also is not None:
                line = locate(key, e.also) if locate is not None else None
                text = text.replace("{also}", f"line {line}" if line else
                                    f"entry {e.also[0] + 1}")
            raise LivepianoError(f"{prefix(key, e.at)}{text}.") from None
        except ValueError as e:
            raise LivepianoError(f"{prefix(key)}setting '{key}' is {_short(value)} but must "
                                 f"be {e}.") from None
    return out


def validate(values: Mapping[str, Any], source: str | os.PathLike | None = None,
             locate: Locate | None = None) -> dict[str, Any]:
    """``values`` checked against SCHEMA and merged onto the defaults."""
    out = defaults()
    out.update(check(values, source, locate))
    return out


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the overrides that were given (None means "not given"), each checked."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is not None:
            merged[key] = validate({key: value})[key]
    return merged


# --- where the files are ---------------------------------------------------------------------

# --- reading -----------------------------------------------------------------------------------

# --- writing -------------------------------------------------------------------------------


Locate = Callable[[str, tuple], "int | None"]  # (key, path below it) -> line, or None

