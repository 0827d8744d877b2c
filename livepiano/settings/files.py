"""Settings files: where they live, one YAML reader whose errors name the file, the line, the
key and what is allowed, and one writer that rewrites only the keys it is given."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from livepiano import LivepianoError
from livepiano.settings.schema import SCHEMA, Locate, check, defaults, merge

FILE_NAME = "livepiano.yaml"


CONFIG_ENV = "LIVEPIANO_CONFIG"


CONTROLS_ENV = "LIVEPIANO_CONTROLS"


KNOB_KEYS = ("takeover", "bindings")  # what a controls file holds, and all a save rewrites


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


# An edit makes the new lines of one entry from the file's lines and the entry (None: the
# key is not in the file; the lines returned are appended).
Edit = Callable[[list, "Entry | None"], list]

