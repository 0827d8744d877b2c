"""Settings of a play session: one schema, the defaults in one place, validation that names
the key and what it allows.

A setting comes from (last wins) the defaults below, a YAML file, then the command line.
The YAML file is a flat mapping of the keys of ``SCHEMA``; an unknown key or a bad value is a
``LivepianoError`` naming the key (and the file's line) and what is allowed. Later issues add
their keys (knobs, duet) to ``SCHEMA``; nothing else needs to change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from livepiano import LivepianoError

MODES = ("continuous", "duet")
REALTIME = ("auto", "fifo", "switch", "off")


@dataclass(frozen=True)
class Setting:
    default: Any
    check: Callable[[Any], Any]  # returns the value (converted) or raises ValueError(allowed)
    help: str


def _number(lo: float, hi: float, kind=float):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"a number from {lo} to {hi}")
        v = kind(v)
        if not lo <= v <= hi:
            raise ValueError(f"a number from {lo} to {hi}")
        return v
    return check


def _choice(*choices):
    def check(v):
        if v not in choices:
            raise ValueError("one of " + ", ".join(map(str, choices)))
        return v
    return check


def _text_or_none(v):
    if v is None or isinstance(v, str):
        return v
    raise ValueError("a text (or nothing)")


def _flag(v):
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


SCHEMA: dict[str, Setting] = {
    "api": Setting(None, _choice(None, "alsa", "jack", "coremidi", "winmm"),
                   "MIDI system (default: LIVEPIANO_MIDI_API, else the platform's own)"),
    "in": Setting(None, _text_or_none, "input port (default: a virtual port named livepiano)"),
    "out": Setting(None, _text_or_none, "output port (default: a virtual port named livepiano)"),
    "channel": Setting(1, _number(1, 16, int), "MIDI channel of the model's notes"),
    "mode": Setting("continuous", _choice(*MODES), "how the model takes turns with you"),
    "temperature": Setting(1.0, _number(0.05, 5.0), "sampling temperature"),
    "lookahead_ms": Setting(100, _number(10, 1000, int),
                            "how far ahead of the clock the model may generate"),
    "echo": Setting(False, _flag, "send the player's notes to the output too"),
    "realtime": Setting("auto", _choice(*REALTIME),
                        "scheduler timing: fifo (real-time priority), switch (short GIL "
                        "switch interval), auto (both where allowed), off"),
    "model": Setting(None, _text_or_none, "ONNX model (default: LIVEPIANO_MODEL, else the "
                                          "shipped one)"),
    "record": Setting(None, _text_or_none, "MIDI file to save the session to"),
    "seed": Setting(None, lambda v: v if v is None else _number(0, 2**32 - 1, int)(v),
                    "random seed (default: a fresh one)"),
    # knobs (issue 6): the bindings live in their own file, written by `livepiano learn`
    "controls": Setting(None, _text_or_none, "controls file with the knob bindings (default: "
                                             "$LIVEPIANO_CONTROLS, else controls.yaml in the "
                                             "user's config folder)"),
    "control_in": Setting(None, _text_or_none, "a second input port for knobs and pads (the "
                                               "piano's own CCs work too)"),
    "takeover": Setting(None, _choice(None, "jump", "pickup", "scale"),
                        "what a knob does when it disagrees with the value: jump, pickup or "
                        "scale (default: the controls file's, else jump)"),
}


# --- duet (issue 5): call and response, `--mode duet` --------------------------------------

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
    return v if v is None else _number(0, 119, int)(v)


SCHEMA.update({
    "wait": Setting(0.6, _number(0.05, 10.0),
                    "duet: seconds of silence (no key down, pedal up) that end your phrase"),
    "min_call": Setting(0.3, _number(0.0, 10.0),
                        "duet: shortest phrase answered, in seconds from its first note-on to "
                        "its end (it also needs 2 notes)"),
    "answer": Setting((2.0, 16.0), _answer_range,
                      "duet: the answer follows your phrase's length, clamped to MIN-MAX s"),
    "barge_in": Setting("stop", _choice("stop", "finish", "overlap"),
                        "duet: when you play during an answer: stop it at once, let it finish "
                        "its phrase, or let it overlap you"),
    "follow": Setting(None, _follow,
                      "duet: steer a conditioned model's answer by your phrase's pitch classes "
                      "and density (default: on when the model is conditioned)"),
    "end_of_call_cc": Setting(None, _cc_or_none,
                              "duet: a CC number (e.g. a foot switch) that ends your phrase at "
                              "once: the answer starts on its press"),
})


def defaults() -> dict[str, Any]:
    return {k: s.default for k, s in SCHEMA.items()}


def validate(values: dict[str, Any], where: Callable[[str], str] = lambda key: "") -> dict:
    """``values`` checked against SCHEMA and merged onto the defaults."""
    out = defaults()
    for key, value in values.items():
        setting = SCHEMA.get(key)
        if setting is None:
            raise LivepianoError(f"{where(key)}unknown setting '{key}'; known settings are "
                                 f"{', '.join(SCHEMA)}.")
        try:
            out[key] = setting.check(value)
        except ValueError as e:
            raise LivepianoError(f"{where(key)}setting '{key}' is {value!r} but must be {e}.") \
                from None
    return out


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Settings from a YAML file: a mapping of SCHEMA keys."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise LivepianoError(f"{path}: cannot read the settings file ({e.strerror}).") from None
    try:
        node = yaml.compose(text)
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise LivepianoError(f"{path}{line}: not valid YAML; fix the syntax there.") from None
    if values is None:
        return defaults()
    if not isinstance(values, dict):
        line = f" line {node.start_mark.line + 1}" if node is not None else ""
        raise LivepianoError(f"{path}{line}: a settings file is a mapping of 'key: value' "
                             f"lines.")
    lines = {}
    if node is not None and hasattr(node, "value"):
        for key_node, _ in node.value:
            lines[key_node.value] = key_node.start_mark.line + 1
    return validate(values, lambda key: f"{path} line {lines.get(key, '?')}: ")


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the overrides that were given (None means "not given"), each checked."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is not None:
            merged[key] = validate({key: value})[key]
    return merged
