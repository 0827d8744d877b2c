"""Settings and knob bindings: one schema, the defaults in one place, one YAML reader whose
errors name the file, the line, the key and what is allowed, and one writer that rewrites
only the keys it is given. A setting that a knob also drives (temperature, density, mode,
the duet's wait and longest answer) takes the knob's default from ``params``, so the two
never disagree.

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
    BARGE_IN,
    MIDI_APIS,
    MODES,
    REALTIME,
    TAKEOVERS,
    Invalid,
    choice,
    flag,
    number,
    seconds,
    text_or_none,
    whole,
)
from livepiano.settings.params import PARAMS, check_bindings


@dataclass(frozen=True)
class Setting:
    default: Any
    check: Callable[[Any], Any]  # returns the value (converted) or raises ValueError(allowed)
    help: str
    shown: str | None = None  # how the default reads in a help text, when not as itself


def help_text(setting: Setting) -> str:
    """A setting's help with its default, as the command line shows it: "... (default: X)";
    a flag that is off, or a setting without a default, says none."""
    shown = setting.shown
    if shown is None and setting.default is not None and not isinstance(setting.default, bool):
        value = setting.default
        shown = "-".join(f"{v:g}" for v in value) if isinstance(value, tuple) else str(value)
    return f"{setting.help} (default: {shown})" if shown else setting.help


# --- duet: call and response ------------------------------------------------------------------
# The fields of ``live.duet.DuetSettings``: their defaults, checks and meanings. The play
# settings below (wait, min_call, answer, barge_in, follow) are made from these.

ANSWER_S = (0.5, 120.0)  # the range of an answer's target length


DUET: dict[str, Setting] = {
    "wait": Setting(PARAMS["duet_wait"].default, seconds(0.05, 10.0),
                    "silence (no key, no pedal, no event) that ends a call"),
    "min_call_notes": Setting(2, whole(1, 100, integral_floats=True),
                              "fewest note-ons a call needs to be answered"),
    "min_call_s": Setting(0.3, seconds(0.0, 10.0),
                          "shortest call answered (first note-on to phrase end)"),
    "min_answer": Setting(2.0, seconds(*ANSWER_S), "shortest answer (target length)"),
    "max_answer": Setting(PARAMS["answer_length"].default, seconds(*ANSWER_S),
                          "longest answer (target length)"),
    "grace": Setting(2.0, seconds(0.0, 10.0),
                     "after the target, how long an answer may go on looking for a pause "
                     "before it is cut"),
    "barge_in": Setting("stop", choice(*BARGE_IN),
                        "when you play during an answer: stop it at once, let it finish its "
                        "phrase, or let it overlap you"),
    "follow": Setting(True, flag, "steer the answer toward the call's pitch classes (and a "
                                  "conditioned model's toward its density)"),
}


# --- the settings of a play session -------------------------------------------------------------

SCHEMA: dict[str, Setting] = {
    "api": Setting(None, choice(None, *MIDI_APIS), "MIDI system",
                   "$LIVEPIANO_MIDI_API, else the platform's own"),
    "in": Setting(None, text_or_none, "input port, by any part of its name",
                  "a virtual port named livepiano"),
    "out": Setting(None, text_or_none, "output port, by any part of its name, e.g. "
                                       "\"FluidSynth\", or builtin: livepiano's own synth on "
                                       "the default sound device",
                   "a virtual port named livepiano"),
    "channel": Setting(1, number(1, 16, int), "MIDI channel of the model's notes, 1-16"),
    "mode": Setting(PARAMS["mode"].default, choice(*MODES), "how the model takes turns with you"),
    "temperature": Setting(PARAMS["temperature"].default, number(0.05, 5.0),
                           "sampling temperature"),
    "lookahead_ms": Setting(100, number(10, 1000, int),
                            "how far ahead of the clock the model may generate, in ms"),
    "echo": Setting(False, flag, "send your notes to the output too"),
    "realtime": Setting("auto", choice(*REALTIME),
                        "scheduler timing: fifo (real-time priority), switch (short GIL "
                        "switch interval), auto (both where allowed), off"),
    "model": Setting(None, text_or_none, "ONNX model",
                     "$LIVEPIANO_MODEL, else the shipped one"),
    "record": Setting(None, text_or_none, "MIDI file to save the session to",
                      "a new file in the user's data folder"),
    "seed": Setting(None, lambda v: v if v is None else number(0, 2**32 - 1, int)(v),
                    "random seed", "a fresh one"),
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
    lo, hi = ANSWER_S
    example = "-".join(f"{DUET[k].default:g}" for k in ("min_answer", "max_answer"))
    allowed = f"MIN-MAX seconds, e.g. {example} (each {lo:g} to {hi:g}, MIN <= MAX)"
    if isinstance(v, str):
        parts = v.replace(" ", "").split("-")
    elif isinstance(v, (list, tuple)):
        parts = list(v)
    else:
        raise ValueError(allowed)
    try:
        lo_v, hi_v = (float(x) for x in parts)
    except (TypeError, ValueError):
        raise ValueError(allowed) from None
    if not lo <= lo_v <= hi_v <= hi:
        raise ValueError(allowed)
    return (lo_v, hi_v)


def _follow(v):
    if v is None or isinstance(v, bool):
        return v
    raise ValueError("true, false (or nothing: on when the model is conditioned)")


def _cc_or_none(v):
    return v if v is None else number(0, 119, int)(v)


SCHEMA.update({  # the duet (--mode duet)
    "wait": Setting(DUET["wait"].default, DUET["wait"].check,
                    "silence (no key down, pedal up) that ends your phrase, in seconds"),
    "min_call": Setting(DUET["min_call_s"].default, DUET["min_call_s"].check,
                        "shortest phrase answered, in seconds from its first note-on "
                        "to its end; it also needs two notes, so a stray key or a slip is "
                        "ignored"),
    "answer": Setting((DUET["min_answer"].default, DUET["max_answer"].default), _answer_range,
                      "the answer lasts about as long as your phrase, clamped to MIN-MAX "
                      "seconds"),
    "barge_in": Setting(DUET["barge_in"].default, DUET["barge_in"].check,
                        DUET["barge_in"].help),
    "follow": Setting(None, _follow,
                      "steer a conditioned model's answer by your phrase's pitch classes "
                      "and density", "on when the model is conditioned"),
    "end_of_call_cc": Setting(None, _cc_or_none,
                              "a CC number (e.g. a foot switch) whose press ends your "
                              "phrase at once (a learned end_of_call knob works too)"),
})


def duet_settings(s: Mapping[str, Any]) -> dict[str, Any]:
    """The ``DUET`` fields a play session's settings give (``wait``, ``min_call``,
    ``answer``, ``barge_in``, ``follow``; the schema's defaults where they are missing)."""
    def get(key):
        return s.get(key, SCHEMA[key].default)

    lo, hi = get("answer")
    return {"wait": get("wait"), "min_call_s": get("min_call"), "min_answer": lo,
            "max_answer": hi, "barge_in": get("barge_in"), "follow": get("follow") is not False}


# --- sampling that holds up for minutes (runtime.steering) -----------------------------------

SCHEMA.update({
    "steer": Setting(True, flag, "keep the model's note density near `density` (and, in "
                                 "play, near yours); false: the model's own"),
    # None: not set, so the model takes the density of what it hears (a primer, your
    # playing) and aims for the knob's default when it plays alone
    "density": Setting(None, lambda v: v if v is None else number(0.5, 30.0)(v),
                       "notes per second the model aims for when it plays alone, and the "
                       "most it plays when it accompanies you; set, it also replaces the "
                       "density a conditioned model would take from what it hears",
                       f"not set: what it hears; alone {PARAMS['density'].default:g}"),
    "accompany_ratio": Setting(0.8, number(0.1, 2.0),
                               "play: the model's notes per second as a share of yours over "
                               "the last few seconds"),
    "listen": Setting(True, flag, "continuous mode: lean the model's note-ons toward the "
                                  "pitch classes you played in the last second and still hold, "
                                  "and give a conditioned model your density and pitch classes "
                                  "of the last 5 s; false: neither"),
    "top_p": Setting(1.0, number(0.5, 1.0),
                     "sample from the smallest set of events holding this much probability "
                     "(1: all of them)"),
})


# --- the stage view (live.view): a page that shows the session and steers the knobs ----------

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")  # the view needs no token on these


def _host(v):
    allowed = "an address to listen on, e.g. 127.0.0.1 (this machine) or 0.0.0.0 (every network)"
    if not isinstance(v, str) or not v.strip() or any(c in v for c in " /?#@[]"):
        raise ValueError(allowed)
    return v.strip()


SCHEMA.update({
    "view": Setting(False, flag, "serve the stage view: a page with the piano roll, the duet's "
                                 "turn and the knobs, at the URL printed at start"),
    "view_port": Setting(8765, whole(0, 65535), "the view's TCP port (0: any free one)"),
    "view_host": Setting(LOCAL_HOSTS[0], _host,
                         "where the view listens; any address but this machine's own (e.g. "
                         "0.0.0.0, for a tablet on the stage's network) needs the random token "
                         "in the printed URL"),
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


def check_one(key: str, value: Any, name: str | None = None) -> Any:
    """``value`` as the setting ``key``'s check converts it, else a one-line
    ``LivepianoError``: "NAME is VALUE but must be ALLOWED." (NAME: ``setting 'KEY'``)."""
    try:
        return SCHEMA[key].check(value)
    except ValueError as e:
        raise LivepianoError(f"{name or f'setting {key!r}'} is {_short(value)} but must be "
                             f"{e}.") from None


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

