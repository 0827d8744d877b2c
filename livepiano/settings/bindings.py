"""The knob bindings in a settings (or controls) file: read, and written back in place."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from livepiano import LivepianoError
from livepiano.settings import files, schema
from livepiano.settings.choices import TAKEOVERS
from livepiano.settings.params import PARAMS, Binding, Control


def default_path(env: dict | None = None, platform: str | None = None,
                 home: Path | None = None) -> Path:
    """$LIVEPIANO_CONTROLS, else the default settings file (livepiano.yaml in the user's
    config folder, or $LIVEPIANO_CONFIG): where the bindings are without a settings file
    that sends them elsewhere (``files.bindings_path`` reads that)."""
    env = os.environ if env is None else env
    if env.get(files.CONTROLS_ENV):
        return Path(env[files.CONTROLS_ENV]).expanduser()
    return files.default_path(env, platform, home)


@dataclass
class ControlsFile:
    path: Path
    takeover: str = schema.SCHEMA["takeover"].default
    bindings: list[Binding] = field(default_factory=list)
    exists: bool = True


def read(path: str | os.PathLike, *, missing_ok: bool = True) -> ControlsFile:
    """The takeover and bindings in a file of the settings schema (a controls file holds only
    these; a settings file may hold them too). A file that is not there is empty (when
    ``missing_ok``: the first ``learn`` makes it); anything wrong in it is a
    ``LivepianoError`` naming the line, the key and what is allowed."""
    found = files.read(path, missing_ok=True, what="controls file")
    if not found.exists and not missing_ok:
        raise LivepianoError(f"{found.path}: no such controls file; make one with "
                             f"`livepiano learn PARAM`.")
    values = found.values
    return ControlsFile(found.path, values.get("takeover", ControlsFile.takeover),
                        list(values.get("bindings", ())), found.exists)


HEADER = """\
# livepiano: settings and knob bindings (every key is optional; see examples/settings.yaml).
# `livepiano learn` (and learning during play) rewrites only 'bindings' here and keeps
# everything else; `livepiano controls` lists them. Edit freely:
#   takeover: jump | pickup | scale   (what a knob does when it disagrees with the value)
#   bindings: one line each: {param: NAME, cc: 0-119 | note: 0-127, channel: 1-16[, takeover: ...]}
#   parameters: PARAMS
""".replace("PARAMS", ", ".join(PARAMS))


def entry(b: Binding) -> str:
    extra = f", takeover: {b.takeover}" if b.takeover else ""
    return (f"- {{param: {b.param}, {b.control.kind}: {b.control.number}, "
            f"channel: {b.control.channel}{extra}}}")


def _ordered(bindings: Iterable[Binding]) -> list[Binding]:
    order = {n: i for i, n in enumerate(PARAMS)}
    return sorted(bindings, key=lambda b: (order[b.param], b.control))


_BLANK_OR_COMMENT = re.compile(r"\s*(#.*)?$")


def _bindings_edit(bindings: Iterable[Binding]) -> files.Edit:
    """The edit that writes ``bindings`` over the file's: an entry the file already has, as it
    is, keeps its line and comment; a control now bound to something else gets a new line in
    its place; new ones follow the last; comments between entries stay."""
    wanted = {b.control: b for b in bindings}

    def edit(lines: list, old: files.Entry | None) -> list:
        import yaml

        v = old.value_node if old is not None else None
        items = v.value if isinstance(v, yaml.SequenceNode) and not v.flow_style else []
        if items and items[0].start_mark.line <= old.first:  # an alias: the list is elsewhere
            items = []
        if not items or not wanted:
            # nothing line by line to keep (no entry yet, a [...] list, no bindings left):
            # the whole entry anew
            rows = _ordered(wanted.values())
            if not rows:
                return ["bindings: []\n"]
            return ["bindings:\n"] + [f"  {entry(b)}\n" for b in rows]
        out = [lines[old.first]]
        indent = "  "
        done: set[Control] = set()
        end = old.first
        for n, (item, b) in enumerate(zip(items, old.value)):
            start = end + 1
            end = files.last_line(item)
            own = start
            while own <= end and _BLANK_OR_COMMENT.match(lines[own]):
                own += 1
            out += lines[start:own]  # the comments above an entry stay, whatever happens to it
            if n == 0:
                indent = re.match(r"\s*", lines[own]).group(0)
            now = wanted.get(b.control)
            if now == b:
                out += lines[own:end + 1]
            elif now is not None:
                out.append(f"{indent}{entry(now)}\n")
            done.add(b.control)
        out += [f"{indent}{entry(b)}\n" for b in _ordered(wanted.values())
                if b.control not in done]
        return out
    return edit


def save(path: str | os.PathLike, bindings: Iterable[Binding],
         takeover: str | None = None) -> Path:
    """Write the bindings (and, when given, the takeover) into the file, keeping its other
    keys and its comments; a missing file is made."""
    edits = {}
    if takeover is not None:
        if takeover not in TAKEOVERS:
            raise LivepianoError(f"takeover is '{takeover}' but must be one of "
                                 f"{', '.join(TAKEOVERS)}.")
        edits["takeover"] = files.scalar_edit("takeover", takeover)
    edits["bindings"] = _bindings_edit(list(bindings))
    return files.rewrite(path, edits, header=HEADER, what="knob bindings")

