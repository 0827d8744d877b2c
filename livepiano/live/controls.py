"""Knobs, faders, pedals and pads: MIDI-learn bindings, takeover, and the bindings in a file.

    CC / note ──▶ Controls.handle ──▶ [Change(param, value, text), ...] ──▶ engine, duet, status

``PARAMS`` is the one table of what a control can drive: each parameter's kind (a continuous
``knob``, a ``toggle`` button or a ``momentary`` button), its range and curve, its default and
how the status line shows it. A *binding* ties one control -- (channel, CC number), or
(channel, note) for a pad -- to one parameter; a control drives one parameter, a parameter
may have several controls.

``Controls`` is plain state owned by ONE thread (it has no locks, threads or ports): that
thread feeds it every CC and pad message and applies the ``Change`` objects it returns. Its
rules:

* **Knob position.** A 7-bit CC value 0..127 is a position; CC 64 is the exact centre (the
  lower half has 64 steps, the upper 63), so a knob's default sits at its detent.
* **Buttons.** On a CC, a value >= 64 is "pressed", < 64 "released"; a press is a message >= 64
  after a release, after nothing, or repeating the previous value (buttons that send only
  127 on each press; a turning knob never repeats a value). A pad is a note: note-on with
  velocity > 0 is a press, note-off (or velocity 0) a release. A toggle flips on each press;
  a momentary parameter acts on the press. Pads drive buttons only.
* **Learn.** ``start_learn(param)``, then the next *moved* control is bound: a CC whose value
  differs from the previous value seen from that control, or a pad press. The first message
  of a CC never seen before does not bind: controllers report the positions of all their
  knobs when they connect or change preset ("snapshot" / "send all"), and such a burst must
  not bind a random knob. A knob moves by sending a second, different value, so turning it
  binds within a step; a button binds on its release at the latest. The message that binds
  is consumed (not applied). CC 120..127 are MIDI channel-mode messages, never bound. While
  learning, the learn button steps to the next parameter and panic still works (each can be
  re-learned only for itself), and a pad acts as usual when a knob is being learned.
* **Takeover** (what a knob does when its position disagrees with the value, e.g. after a
  restart or after another control changed it): ``jump`` (default) sets the value to the
  knob's position at once; ``pickup`` ignores the knob until it reaches the value -- detected
  as a *crossing* between the previous and the new position, so a fast turn that skips the
  exact position in one message still engages; ``scale`` moves the value from where it is,
  proportionally toward the end the knob is turning to, so both reach the end together.
  Without a previous position (the knob's first message), ``pickup`` engages only when the
  knob is on the value and ``scale`` only notes the position.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from livepiano import LivepianoError
from livepiano.core import messages
from livepiano.settings import bindings, files, params
from livepiano.settings.bindings import save
from livepiano.settings.choices import TAKEOVERS
from livepiano.settings.params import (
    BUTTONS,
    KNOB,
    LEARN_ORDER,
    MOMENTARY,
    PARAMS,
    TOGGLE,
    TOP,
    Binding,
    Control,
    Param,
    param,
)

# --- curves ---------------------------------------------------------------------------------

# --- the parameters -------------------------------------------------------------------------

# --- what the engine is given ---------------------------------------------------------------

# --- bindings -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """What ``Controls.handle`` reports. ``param`` is a ``PARAMS`` name (value: the new value,
    or True for a momentary action), ``"learn"`` (value: the parameter now being learned, or
    None when learning ended without a binding) or ``"bound"`` (value: the new ``Binding``;
    ``replaced``: the parameter the control drove before, if any -- save the bindings now).
    ``text`` is what the status line says."""

    param: str
    value: Any
    text: str
    replaced: str | None = None


def _check_control(control: Control, param_name: str) -> None:
    p = PARAMS[param_name]
    if control.kind == "note" and p.kind == KNOB:
        raise LivepianoError(f"a pad ({control}) can drive only buttons "
                             f"({', '.join(BUTTONS)}), not the knob '{param_name}'; bind a CC.")


# --- the controls ---------------------------------------------------------------------------

class Controls:
    """Bindings, the current parameter values and the takeover state (see the module
    docstring). Owned by one thread; ``handle`` is cheap (microseconds)."""

    def __init__(self, bindings: Iterable[Binding] = (), *, takeover: str = "jump",
                 values: dict[str, Any] | None = None):
        if takeover not in TAKEOVERS:
            raise LivepianoError(f"takeover is '{takeover}' but must be one of "
                                 f"{', '.join(TAKEOVERS)}.")
        self.takeover = takeover
        self.learning: str | None = None
        self._last_learned: str | None = None
        self._last: dict[Control, int] = {}  # the last value seen from each CC
        self._caught: set[Control] = set()  # pickup knobs that have reached their value
        self._position: dict[str, tuple[float, Any]] = {}  # knob's exact position for a value
        # For the status line: what a pickup knob that is being ignored must do (None: none).
        self.hint: str | None = None
        self.bindings: dict[Control, Binding] = {}
        for b in bindings:
            self.bind(b.control, b.param, b.takeover)
        self.values = params.defaults()
        for name, value in (values or {}).items():
            self.values[param(name).name] = self._checked(name, value)

    # --- bindings -----------------------------------------------------------------------

    def bind(self, control: Control, param_name: str, takeover: str | None = None) -> str | None:
        """Bind ``control`` to a parameter; the parameter it drove before (None: it was free)."""
        control = Control(*control)
        name = param(param_name).name
        if takeover is not None and takeover not in TAKEOVERS:
            raise LivepianoError(f"takeover is '{takeover}' but must be one of "
                                 f"{', '.join(TAKEOVERS)}.")
        _check_control(control, name)
        old = self.bindings.get(control)
        self.bindings[control] = Binding(control, name, takeover)
        self._caught.discard(control)
        return old.param if old else None

    def unbind(self, control: Control) -> str | None:
        old = self.bindings.pop(Control(*control), None)
        return old.param if old else None

    def controls_of(self, param_name: str) -> list[Control]:
        name = param(param_name).name
        return [c for c, b in self.bindings.items() if b.param == name]

    def describe(self) -> list[str]:
        """One line per binding, in ``PARAMS`` order (for ``livepiano controls``)."""
        order = {n: i for i, n in enumerate(PARAMS)}
        lines = []
        for b in sorted(self.bindings.values(),
                        key=lambda b: (order[b.param], b.control.kind, b.control.channel,
                                       b.control.number)):
            how = "" if PARAMS[b.param].kind != KNOB else f" ({b.takeover or self.takeover})"
            lines.append(f"{b.param:<14} {b.control}{how}")
        return lines

    # --- learning -----------------------------------------------------------------------

    def start_learn(self, param_name: str) -> Change:
        self.learning = param(param_name).name
        self._last_learned = self.learning
        return self._learn_change()

    def cancel_learn(self) -> Change:
        self.learning = None
        return self._learn_change()

    def _learn_change(self) -> Change:
        if self.learning is None:
            return Change("learn", None, "learn: off")
        kind = "a knob or fader" if PARAMS[self.learning].kind == KNOB else "a button or pad"
        return Change("learn", self.learning,
                      f"learn {self.learning.replace('_', ' ')}: move {kind}")

    def _learn_button(self) -> Change:
        """The learn button: starts learning (the parameter learned last, else the first),
        then each press moves to the next parameter; after the last it stops."""
        if self.learning is None:
            self.learning = self._last_learned or LEARN_ORDER[0]
        else:
            i = LEARN_ORDER.index(self.learning) if self.learning in LEARN_ORDER else -1
            self.learning = LEARN_ORDER[i + 1] if i + 1 < len(LEARN_ORDER) else None
        if self.learning is not None:
            self._last_learned = self.learning
        return self._learn_change()

    def _bind_learned(self, control: Control) -> Change:
        target = self.learning
        assert target is not None
        replaced = self.bind(control, target)
        self.learning = None
        binding = self.bindings[control]
        text = f"{control} now drives {target.replace('_', ' ')}"
        if replaced and replaced != target:
            text += f" (instead of {replaced.replace('_', ' ')})"
        return Change("bound", binding, text, replaced)

    # --- values -------------------------------------------------------------------------

    def _checked(self, name: str, value):
        p = param(name)
        try:
            return p.check(value)
        except ValueError as e:
            raise LivepianoError(f"parameter '{p.name}' is {value!r} but must be {e}.") from None

    def set(self, param_name: str, value) -> Change:
        """Set a value from elsewhere (a terminal key, the settings): knobs in pickup mode
        must reach it again before they take over."""
        p = param(param_name)
        self.values[p.name] = self._checked(p.name, value)
        self._moved_elsewhere(p.name, None)
        return Change(p.name, self.values[p.name], p.text(self.values[p.name]))

    def _moved_elsewhere(self, name: str, by: Control | None) -> None:
        self._position.pop(name, None)
        for c in self.controls_of(name):
            if c != by:
                self._caught.discard(c)

    def _here(self, p: Param) -> float:
        """The current value's position on a knob (CC units)."""
        value = self.values[p.name]
        known = self._position.get(p.name)
        if known is not None and known[1] == value:
            return known[0]
        return p.position(value)

    # --- messages -----------------------------------------------------------------------

    def handle(self, msg) -> list[Change]:
        """A mido message (or raw bytes ``[status, data1, data2]``) -> the changes it makes."""
        if isinstance(msg, (list, tuple, bytes, bytearray)):
            if len(msg) < 3:
                return []
            channel, kind = msg[0] & 0x0F, messages.kind(msg)
            if msg[0] & 0xF0 == messages.CONTROL:
                return self.handle_cc(channel, msg[1], msg[2])
            if kind is not None:
                return self.handle_note(channel, msg[1], msg[2] if kind == "on" else 0)
            return []
        kind = getattr(msg, "type", None)
        if kind == "control_change":
            return self.handle_cc(msg.channel, msg.control, msg.value)
        if kind == "note_on":
            return self.handle_note(msg.channel, msg.note, msg.velocity)
        if kind == "note_off":
            return self.handle_note(msg.channel, msg.note, 0)
        return []

    def handle_cc(self, channel: int, number: int, value: int) -> list[Change]:
        """A control change; ``channel`` 0..15 as on the wire (mido's numbering)."""
        if number >= 120:  # channel-mode messages (all notes off, reset, ...)
            return []
        control = Control("cc", channel + 1, number)
        prev = self._last.get(control)
        self._last[control] = value
        binding = self.bindings.get(control)
        if self.learning is not None and not _keeps(binding, self.learning):
            if prev is not None and value != prev:
                return [self._bind_learned(control)]
            return []
        if binding is None:
            return []
        p = PARAMS[binding.param]
        if p.kind != KNOB:
            return self._press(p) if _pressed(prev, value) else []
        return self._turn(control, binding, p, prev, value)

    def handle_note(self, channel: int, note: int, velocity: int) -> list[Change]:
        """A pad: note-on with velocity > 0 presses it, anything else releases it."""
        if velocity <= 0:
            return []
        control = Control("note", channel + 1, note)
        binding = self.bindings.get(control)
        if self.learning is not None and not _keeps(binding, self.learning):
            if PARAMS[self.learning].kind != KNOB:
                return [self._bind_learned(control)]
            # a pad cannot drive a knob: learning waits for a CC; the pad acts as usual
        if binding is None:
            return []
        return self._press(PARAMS[binding.param])

    def _press(self, p: Param) -> list[Change]:
        if p.name == "learn":
            return [self._learn_button()]
        if p.kind == MOMENTARY:
            return [Change(p.name, True, p.text(True))]
        if p.kind == TOGGLE:
            now = self.values[p.name]
            value = p.choices[(p.choices.index(now) + 1) % len(p.choices)]
            self.values[p.name] = value
            self._moved_elsewhere(p.name, None)
            return [Change(p.name, value, p.text(value))]
        return []

    def _turn(self, control: Control, binding: Binding, p: Param, prev: int | None,
              value: int) -> list[Change]:
        mode = binding.takeover or self.takeover
        if mode == "jump":
            q = float(value)
        elif mode == "pickup":
            if control not in self._caught:
                here = self._here(p)
                if not _reaches(p, here, self.values[p.name], prev, value):
                    way = "up" if value < here else "down"
                    self.hint = (f"{p.text(self.values[p.name])}: turn {control} {way} to "
                                 f"pick it up")
                    return []
                self._caught.add(control)
                self.hint = None
            q = float(value)
        else:  # scale
            if prev is None or prev == value:
                return []
            here = self._here(p)
            if value > prev:  # the room left above shrinks in proportion
                q = TOP - (TOP - here) * (TOP - value) / (TOP - prev)
            else:  # the room left below shrinks in proportion
                q = here * value / prev
            q = min(max(q, 0.0), float(TOP))
        new = p.value_at(q)
        self._position[p.name] = (q, new)
        if new == self.values[p.name]:
            return []
        self.values[p.name] = new
        self._moved_elsewhere(p.name, control)
        self._position[p.name] = (q, new)
        return [Change(p.name, new, p.text(new))]

    # --- the file -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        return save(path, self.bindings.values(), self.takeover)


def _keeps(binding: Binding | None, learning: str) -> bool:
    """While learning, the learn and panic controls keep their function (unless they are
    what is being learned): the learn button steps through the parameters, and panic must
    always work."""
    return binding is not None and binding.param in ("learn", "panic") and binding.param != learning


def _pressed(prev: int | None, value: int) -> bool:
    return value >= 64 and (prev is None or prev < 64 or prev == value)


def _reaches(p: Param, here: float, current, prev: int | None, value: int) -> bool:
    """Pickup: has the knob, moving from ``prev`` to ``value``, reached the current value
    (at ``here`` on the knob)? A crossing counts, not only landing on it."""
    if p.stepped:
        i = p.choices.index(current)
        a, b = p.index_at(value), (p.index_at(prev) if prev is not None else None)
        if b is None:
            return a == i
        return min(a, b) <= i <= max(a, b)
    if prev is None:
        return abs(value - here) <= 0.5
    return min(prev, value) <= here <= max(prev, value)


# --- the bindings in a file ---------------------------------------------------------------
# The file is config's: one schema for settings and bindings (config.SCHEMA's ``takeover``
# and ``bindings``), one reader, one writer. Here: what a binding entry allows, and how the
# bindings are written back.

def load(path: str | os.PathLike | None = None, *, values: dict[str, Any] | None = None,
         takeover: str | None = None, missing_ok: bool = True) -> Controls:
    """``Controls`` from a file (default: ``files.bindings_path()``)."""
    return from_file(bindings.read(path if path is not None else files.bindings_path(),
                                   missing_ok=missing_ok), values, takeover)


def from_file(found: bindings.ControlsFile, values: dict[str, Any] | None = None,
              takeover: str | None = None) -> Controls:
    """``Controls`` holding a file's bindings; ``takeover`` (a session's) over the file's."""
    return Controls(found.bindings, takeover=takeover or found.takeover, values=values)


