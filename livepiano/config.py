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
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from livepiano import LivepianoError

MODES = ("continuous", "duet")
REALTIME = ("auto", "fifo", "switch", "off")
TAKEOVERS = ("jump", "pickup", "scale")
FILE_NAME = "livepiano.yaml"
CONFIG_ENV = "LIVEPIANO_CONFIG"
CONTROLS_ENV = "LIVEPIANO_CONTROLS"
KNOB_KEYS = ("takeover", "bindings")  # what a controls file holds, and all a save rewrites


@dataclass(frozen=True)
class Setting:
    default: Any
    check: Callable[[Any], Any]  # returns the value (converted) or raises ValueError(allowed)
    help: str


class Invalid(ValueError):
    """A check's complaint about one part of a value (one binding in the list), so that a
    file's error names that part's line: ``at`` is the path to it below the key (list
    indices, mapping keys). The message is the whole complaint; ``{also}`` in it names the
    place of the part at path ``also`` (another line of the same file)."""

    def __init__(self, message: str, at: tuple = (), also: tuple | None = None):
        super().__init__(message)
        self.at = tuple(at)
        self.also = also


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


def _bindings(v):
    # The entries are checked against the parameters, which live with the knobs (controls
    # imports config, so not the other way round at import time).
    from livepiano.controls import check_bindings

    return check_bindings(v)


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
    # knobs (issue 6)
    "control_in": Setting(None, _text_or_none, "a second input port for knobs and pads (the "
                                               "piano's own CCs work too)"),
    "takeover": Setting("jump", _choice(*TAKEOVERS),
                        "what a knob does when it disagrees with the value: jump (to the "
                        "knob), pickup (when the knob reaches it) or scale (meet at the end)"),
    "bindings": Setting((), _bindings,
                        "the knob bindings, one entry each: {param: NAME, cc: 0-119 | note: "
                        "0-127, channel: 1-16[, takeover: ...]} (written by `livepiano learn`)"),
    "controls": Setting(None, _text_or_none,
                        "read the takeover and bindings from this file, and save learned "
                        "bindings there, instead of this one (relative to this file)"),
}


# --- sampling that holds up for minutes (runtime.steering) -----------------------------------

SCHEMA.update({
    "steer": Setting(True, _flag, "keep the model's note density near `density` (and, in "
                                  "continuous mode, near yours); false: the model's own"),
    "density": Setting(10.0, _number(0.5, 30.0),
                       "notes per second the model aims for when it plays alone, and the "
                       "most it plays when it accompanies you"),
    "accompany_ratio": Setting(0.8, _number(0.1, 2.0),
                               "continuous mode: the model's notes per second as a share of "
                               "yours over the last few seconds"),
    "top_p": Setting(1.0, _number(0.5, 1.0),
                     "sample from the smallest set of events holding this much probability "
                     "(1: all of them)"),
})


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


Locate = Callable[[str, tuple], "int | None"]  # (key, path below it) -> line, or None


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

def config_dir(env: Mapping[str, str] | None = None, platform: str | None = None,
               home: Path | None = None) -> Path:
    """The user's config folder for livepiano."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    home = Path.home() if home is None else Path(home)
    if platform.startswith("win"):
        base = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return base / "livepiano"


def default_path(env: Mapping[str, str] | None = None, platform: str | None = None,
                 home: Path | None = None) -> Path:
    """The settings file `play` reads without --config: $LIVEPIANO_CONFIG, else
    livepiano.yaml in the user's config folder."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    return config_dir(env, platform, home) / FILE_NAME


# --- reading -----------------------------------------------------------------------------------

@dataclass
class File:
    """A settings (or controls) file as read: ``values`` holds the keys it gives, checked."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    exists: bool = True


def _parse(text: str, path, what: str):
    """(root node, data) of a YAML text, or a one-line error naming the line."""
    import yaml

    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "bad syntax"
        start = getattr(e, "context_mark", None)
        if start is not None and mark is not None and start.line != mark.line:
            problem += f", in what starts on line {start.line + 1}"
        raise LivepianoError(f"{path}{line}: not valid YAML ({problem}); fix the syntax "
                             f"there.") from None
    if data is not None and not isinstance(data, dict):
        raise LivepianoError(f"{path} line {node.start_mark.line + 1}: a {what} is a mapping "
                             f"of 'key: value' lines.")
    return node, data


def _top(node) -> dict[str, tuple]:
    """key -> (key node, value node) of a root mapping node."""
    return {str(k.value): (k, v) for k, v in node.value} if node is not None else {}


def _locator(node) -> Locate:
    import yaml

    top = _top(node)

    def locate(key: str, path: tuple) -> int | None:
        if key not in top:
            return None
        key_node, at = top[key]
        if not path:
            return key_node.start_mark.line + 1
        for step in path:
            if isinstance(at, yaml.SequenceNode) and isinstance(step, int) \
                    and 0 <= step < len(at.value):
                at = at.value[step]
            elif isinstance(at, yaml.MappingNode):
                found = [v for k, v in at.value if k.value == step]
                if not found:
                    break
                at = found[0]
            else:
                break
        return at.start_mark.line + 1
    return locate


def _check_text(text: str, path, what: str, keys=None) -> tuple:
    """(root node, checked values) of a file's text; ``keys``: check only these keys."""
    node, data = _parse(text, path, what)
    if data is None:
        return node, {}
    seen: dict[str, int] = {}
    for k, _ in node.value:
        line = k.start_mark.line + 1
        if str(k.value) in seen:
            raise LivepianoError(f"{path} line {line}: '{k.value}' is given twice (also on "
                                 f"line {seen[str(k.value)]}); keep one.")
        seen[str(k.value)] = line
    given = data if keys is None else {k: v for k, v in data.items() if k in keys}
    return node, check(given, path, _locator(node))


def read(path: str | os.PathLike, *, missing_ok: bool = False,
         what: str = "settings file") -> File:
    """The keys a YAML file gives, checked. A missing file is empty when ``missing_ok``."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return File(path, exists=False)
        raise LivepianoError(f"{path}: there is no such {what}; check the name.") from None
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or "not UTF-8 text"
        raise LivepianoError(f"{path}: cannot read the {what} ({why}).") from None
    return File(path, _check_text(text, path, what)[1])


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Settings from a YAML file, onto the defaults."""
    out = defaults()
    out.update(read(path).values)
    return out


def bindings_path(controls: str | os.PathLike | None = None, settings: File | None = None,
                  env: Mapping[str, str] | None = None) -> Path:
    """The file the knob bindings are read from and learned ones saved into: ``controls``
    (--controls), else $LIVEPIANO_CONTROLS, else the settings file's ``controls`` key
    (relative to that file), else the settings file itself (``settings``; default: the
    default one)."""
    env = os.environ if env is None else env
    if controls:
        return Path(controls).expanduser()
    if env.get(CONTROLS_ENV):
        return Path(env[CONTROLS_ENV]).expanduser()
    if settings is None:
        settings = read(default_path(env), missing_ok=True)
    if settings.values.get("controls"):
        return settings.path.parent / Path(settings.values["controls"]).expanduser()
    return settings.path


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def for_play(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None,
             env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings of a play session: the defaults; the settings file (``path``, else the
    default one when it is there); the bindings file's bindings (and its takeover, when it
    gives one) when that is another file; the ``overrides`` that were given (None: not
    given). In the result ``controls`` is the bindings file, where learned bindings are
    saved."""
    env = os.environ if env is None else env
    overrides = dict(overrides or {})
    own = read(path, what="settings file") if path is not None else \
        read(default_path(env), missing_ok=True)
    settings = defaults()
    settings.update(own.values)
    where = bindings_path(overrides.pop("controls", None), own, env)
    if not _same(where, own.path):
        # "instead": the bindings are that file's alone; its takeover, when it has one
        knobs = read(where, missing_ok=True, what="controls file")
        settings["bindings"] = knobs.values.get("bindings", SCHEMA["bindings"].default)
        settings.update({k: knobs.values[k] for k in KNOB_KEYS if k in knobs.values})
    settings["controls"] = str(where)
    return merge(settings, overrides)


# --- writing -------------------------------------------------------------------------------

@dataclass
class Entry:
    """One top-level 'key: value' of a file being rewritten: ``first`` and ``last`` are the
    0-based lines of its key and of its value's last character; ``value`` is checked."""

    key: str
    key_node: Any
    value_node: Any
    first: int
    last: int
    value: Any


def last_line(node) -> int:
    """The 0-based line of a node's last character. A block collection's end mark is where
    the next token starts, which can be lines further down, past comments; its children know."""
    import yaml

    if isinstance(node, yaml.ScalarNode) or getattr(node, "flow_style", False):
        end = node.end_mark
        return end.line if end.column > 0 or end.line == node.start_mark.line else end.line - 1
    children = [c for pair in node.value for c in pair] \
        if isinstance(node, yaml.MappingNode) else list(node.value)
    return max((last_line(c) for c in children), default=node.start_mark.line)


# An edit makes the new lines of one entry from the file's lines and the entry (None: the
# key is not in the file; the lines returned are appended).
Edit = Callable[[list, "Entry | None"], list]


def scalar_edit(key: str, text: str) -> Edit:
    """Set ``key`` to the scalar ``text``, in place: whatever else is on its line (a
    comment) stays."""
    def edit(lines: list, entry: Entry | None) -> list:
        import yaml

        v = entry.value_node if entry is not None else None
        if isinstance(v, yaml.ScalarNode) and v.start_mark.line == v.end_mark.line \
                and v.end_mark.column > v.start_mark.column:
            out = lines[entry.first:entry.last + 1]
            i = v.start_mark.line - entry.first
            out[i] = out[i][:v.start_mark.column] + text + out[i][v.end_mark.column:]
            return out
        return [f"{key}: {text}\n"]
    return edit


def rewrite(path: str | os.PathLike, edits: dict[str, Edit], *, header: str = "",
            what: str = "settings") -> Path:
    """Rewrite the top-level entries ``edits`` names and keep every other line of the file
    -- its other keys, its comments -- as it is; keys it lacks are appended (a new file
    begins with ``header``). The file is read now (it may have been edited since it was
    loaded) and replaced atomically: a crash never leaves half a file. A file that cannot be
    read back as this schema is left alone, with an error naming its line."""
    path = Path(path).expanduser()
    path = Path(os.path.realpath(path)) if path.is_symlink() else path  # keep the link
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or "not UTF-8 text"
        raise LivepianoError(f"{path}: cannot save the {what} ({why}).") from None
    node, values = _check_text(text, path, "settings file", keys=set(edits))
    if node is not None and getattr(node, "flow_style", False):
        raise LivepianoError(f"{path}: cannot save the {what} into a one-line {{...}} "
                             f"mapping; write it as 'key: value' lines.")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    original = list(lines)
    entries = []
    for key, (k, v) in _top(node).items():
        if key in edits:
            entries.append(Entry(key, k, v, k.start_mark.line,
                                 max(k.start_mark.line, last_line(v)), values.get(key)))
    for e in sorted(entries, key=lambda e: e.first, reverse=True):  # bottom up: lines stay put
        lines[e.first:e.last + 1] = edits[e.key](original, e)
    added = [line for key, edit in edits.items() if key not in {e.key for e in entries}
             for line in edit(original, None)]
    if added:
        if not text.strip():
            lines = [header] + lines if header else lines
        elif lines[-1].strip():
            lines.append("\n")
        lines += added
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise LivepianoError(f"{path}: cannot save the {what} ({e.strerror}).") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path
