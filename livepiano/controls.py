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

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from livepiano import LivepianoError, config
from livepiano.config import MODES as MODE_CHOICES
from livepiano.config import TAKEOVERS, Invalid

KNOB, TOGGLE, MOMENTARY = "knob", "toggle", "momentary"
CENTRE = 64  # the CC value of a knob's centre
TOP = 127


# --- curves ---------------------------------------------------------------------------------

def cc_to_x(q: float) -> float:
    """A knob position in CC units (0..127) -> 0..1, with CC 64 exactly at 0.5."""
    q = min(max(float(q), 0.0), float(TOP))
    if q <= CENTRE:
        return q / (2 * CENTRE)
    return 0.5 + (q - CENTRE) / (2 * (TOP - CENTRE))


def x_to_cc(x: float) -> float:
    x = min(max(float(x), 0.0), 1.0)
    if x <= 0.5:
        return x * 2 * CENTRE
    return CENTRE + (x - 0.5) * 2 * (TOP - CENTRE)


@dataclass(frozen=True)
class Curve:
    """A knob's travel 0..1 -> a value from ``lo`` to ``hi`` with ``mid`` exactly at the centre.

    Each half is mapped on its own (so the centre can sit anywhere in the range); in a half,
    ``u`` (0 at the centre, 1 at that end) is eased to ``u ** ease`` and then placed
    geometrically (equal turns give equal *ratios*) or linearly between ``mid`` and the end."""

    lo: float
    mid: float
    hi: float
    geometric: bool = True
    ease: float = 1.0

    def __post_init__(self):
        if not self.lo < self.mid < self.hi or (self.geometric and self.lo <= 0):
            raise ValueError(f"bad curve {self}")

    def value(self, x: float) -> float:
        x = min(max(float(x), 0.0), 1.0)
        end = self.lo if x < 0.5 else self.hi
        u = abs(2.0 * x - 1.0)
        if u >= 1.0:
            return end  # exact ends, free of rounding
        g = u ** self.ease
        if self.geometric:
            return self.mid * (end / self.mid) ** g
        return self.mid + (end - self.mid) * g

    def x(self, value: float) -> float:
        """The inverse of ``value``: where on the travel ``value`` lies (clamped to the range)."""
        v = min(max(float(value), self.lo), self.hi)
        if v == self.mid:
            return 0.5
        end = self.lo if v < self.mid else self.hi
        if self.geometric:
            g = math.log(v / self.mid) / math.log(end / self.mid)
        else:
            g = (v - self.mid) / (end - self.mid)
        u = min(max(g, 0.0), 1.0) ** (1.0 / self.ease)
        return 0.5 - u / 2 if v < self.mid else 0.5 + u / 2


# Temperature divides the logits, so its effect is a ratio: 0.5 sharpens the distribution as
# much as 2.0 flattens it. Each half of the knob is therefore exponential (0.1 -> 1.0 below
# the centre, a factor of 10; 1.0 -> 2.0 above, a factor of 2), with the trained model's own
# distribution, 1.0, exactly at CC 64. Plain exponential halves would still put only ~27 % of
# the travel on the musically useful 0.7..1.3 (and the lower half moves 3.7 % per CC step right
# next to 1.0); easing each half with u**2 makes the centre broad -- CC 59..69 all stay within
# 1.5 % of 1.0, so it is found by hand without looking -- and gives 0.7..1.3 half of the
# travel, while the extremes (0.1: nearly greedy, 2.0: near noise) stay at the ends.
TEMPERATURE_CURVE = Curve(0.1, 1.0, 2.0, geometric=True, ease=2.0)


# --- the parameters -------------------------------------------------------------------------

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
FOLLOW = "follow"
KEYS = (FOLLOW,) + tuple(f"{n} major" for n in NOTE_NAMES) + tuple(f"{n} minor"
                                                                  for n in NOTE_NAMES)
# Scale degrees of a key, the tonic and fifth counted twice (they are the most frequent
# pitch classes of tonal music; the pitch-class histograms the model was trained with are
# note counts, never flat over the scale).
_MAJOR = (2, 0, 1, 0, 1, 1, 0, 2, 0, 1, 0, 1)
_MINOR = (2, 0, 1, 1, 0, 1, 0, 2, 1, 0, 1, 0)  # natural minor


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # KNOB, TOGGLE or MOMENTARY
    default: Any
    help: str
    curve: Curve | None = None  # numeric knobs
    choices: tuple = ()  # stepped knobs and toggles
    unit: str = ""
    digits: int = 2

    @property
    def stepped(self) -> bool:
        return self.kind == KNOB and self.curve is None

    # knob position (CC units, 0..127, float) <-> value
    def value_at(self, q: float):
        if self.curve is not None:
            return self.curve.value(cc_to_x(q))
        return self.choices[self.index_at(q)]

    def index_at(self, q: float) -> int:
        n = len(self.choices)
        return min(n - 1, max(0, int(float(q) * n / (TOP + 1))))

    def position(self, value) -> float:
        """Where the knob would be for ``value`` (CC units); a choice sits mid-bin."""
        if self.curve is not None:
            return x_to_cc(self.curve.x(value))
        n = len(self.choices)
        return (self.choices.index(value) + 0.5) * (TOP + 1) / n - 0.5

    def check(self, value):
        """``value`` converted, or ValueError saying what is allowed."""
        if self.kind == MOMENTARY:
            raise ValueError("nothing: it is a momentary action, triggered, not set")
        if self.curve is not None:
            c = self.curve
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not c.lo <= value <= c.hi:
                raise ValueError(f"a number from {c.lo:g} to {c.hi:g}")
            return float(value)
        if value not in self.choices:
            raise ValueError("one of " + ", ".join(map(str, self.choices)))
        return value

    def allowed(self) -> str:
        if self.curve is not None:
            return f"{self.curve.lo:g}-{self.curve.hi:g}{self.unit}"
        return "/".join(map(str, self.choices)) if self.choices else "trigger"

    def text(self, value) -> str:
        label = self.name.replace("_", " ")
        if self.kind == MOMENTARY:
            return label
        if isinstance(value, float):
            return f"{label} {value:.{self.digits}f}{self.unit}"
        return f"{label} {value}"


def _params(*ps: Param) -> dict[str, Param]:
    return {p.name: p for p in ps}


PARAMS: dict[str, Param] = _params(
    Param("temperature", KNOB, 1.0, "sampling temperature: low = safe and repetitive, "
          "high = adventurous", curve=TEMPERATURE_CURVE),
    # Density is what a conditioned model reads as control[0] (notes per second / 10, see
    # codec.CONTROL_LAYOUT); ratios again, with MAESTRO's typical 5 notes/s at the centre.
    Param("density", KNOB, config.SCHEMA["density"].default,
          "notes per second the model aims for (alone; the most it plays beside you)",
          curve=Curve(0.5, 5.0, 30.0), unit=" notes/s", digits=1),
    Param("key", KNOB, FOLLOW, "pitch-class histogram for a conditioned model: a key, or "
          "follow what you play", choices=KEYS),
    Param("dynamics", KNOB, 1.0, "scale of the model's velocities",
          curve=Curve(0.5, 1.0, 1.5, geometric=False)),
    Param("duet_wait", KNOB, 0.6, "silence that ends your phrase in duet mode",
          curve=Curve(0.2, 0.6, 3.0), unit=" s"),
    Param("answer_length", KNOB, 16.0, "longest answer in duet mode (answers follow your "
          "phrase's length up to this)", curve=Curve(2.0, 6.0, 16.0), unit=" s", digits=1),
    Param("mode", TOGGLE, "continuous", "continuous (plays all the time) or duet (answers "
          "your phrases)", choices=MODE_CHOICES),
    Param("end_of_call", MOMENTARY, None, "end your phrase now: the duet answers at once"),
    Param("panic", MOMENTARY, None, "release every note the model is sounding"),
    Param("learn", MOMENTARY, None, "learn: press, then move a control to bind it; press "
          "again for the next parameter"),
)
BUTTONS = tuple(n for n, p in PARAMS.items() if p.kind != KNOB)
LEARN_ORDER = tuple(n for n in PARAMS if n != "learn")


def defaults() -> dict[str, Any]:
    return {name: p.default for name, p in PARAMS.items() if p.kind != MOMENTARY}


def param(name: str) -> Param:
    """The parameter called ``name`` (``-`` and ``_`` alike, any case)."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in PARAMS:
        raise LivepianoError(f"no parameter '{name}'; the parameters are "
                             f"{', '.join(PARAMS)}.")
    return PARAMS[key]


# --- what the engine is given ---------------------------------------------------------------

def key_histogram(key: str, heard: Iterable[int] = ()) -> list[float]:
    """The 12-bin pitch-class histogram (sums to 1) for a ``KEYS`` entry; ``follow`` counts the
    pitches ``heard`` (the player's recent notes), flat when there are none."""
    if key == FOLLOW:
        counts = [0.0] * 12
        for p in heard:
            counts[int(p) % 12] += 1.0
        if not any(counts):
            counts = [1.0] * 12
    else:
        name, quality = key.rsplit(" ", 1)
        tonic = NOTE_NAMES.index(name)
        profile = _MAJOR if quality == "major" else _MINOR
        counts = [float(profile[(pc - tonic) % 12]) for pc in range(12)]
    total = sum(counts)
    return [c / total for c in counts]


DENSITY_SCALE = 10.0  # codec.DENSITY_SCALE (not imported: controls depends on config only)
DENSITY_CAP = 3.0


def control_vector(density: float, key: str, heard: Iterable[int] = ()) -> list[float]:
    """[density, pc_0..pc_11] as in ``codec.CONTROL_LAYOUT``, for ``Engine.control``."""
    return [min(density / DENSITY_SCALE, DENSITY_CAP)] + key_histogram(key, heard)


# --- bindings -------------------------------------------------------------------------------

class Control(NamedTuple):
    """A physical control: ``kind`` "cc" or "note", MIDI channel 1..16 (as devices show it)."""

    kind: str
    channel: int
    number: int

    def __str__(self) -> str:
        what = "CC" if self.kind == "cc" else "note"
        return f"{what} {self.number} on channel {self.channel}"


@dataclass(frozen=True)
class Binding:
    control: Control
    param: str
    takeover: str | None = None  # None: the file's (or session's) takeover

    def __str__(self) -> str:
        extra = f" ({self.takeover})" if self.takeover else ""
        return f"{self.control} -> {self.param}{extra}"


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
        self.values = defaults()
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
            status, channel = msg[0] & 0xF0, msg[0] & 0x0F
            if status == 0xB0:
                return self.handle_cc(channel, msg[1], msg[2])
            if status in (0x80, 0x90):
                return self.handle_note(channel, msg[1], msg[2] if status == 0x90 else 0)
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

def default_path(env: dict | None = None, platform: str | None = None,
                 home: Path | None = None) -> Path:
    """$LIVEPIANO_CONTROLS, else the default settings file (livepiano.yaml in the user's
    config folder, or $LIVEPIANO_CONFIG): where the bindings are without a settings file
    that sends them elsewhere (``config.bindings_path`` reads that)."""
    env = os.environ if env is None else env
    if env.get(config.CONTROLS_ENV):
        return Path(env[config.CONTROLS_ENV]).expanduser()
    return config.default_path(env, platform, home)


def _whole(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"a whole number from {lo} to {hi}")
        return v
    return check


def _one_of(choices: Sequence[str]) -> Callable[[Any], str]:
    def check(v):
        if v not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return v
    return check


def _param_name(v):
    if not isinstance(v, str) or v.strip().lower().replace("-", "_") not in PARAMS:
        raise ValueError("one of " + ", ".join(PARAMS))
    return v.strip().lower().replace("-", "_")


# The schema of one binding entry: key -> check (the takeover key may be left out).
BINDING_KEYS: dict[str, Callable[[Any], Any]] = {
    "param": _param_name,
    "cc": _whole(0, 119),
    "note": _whole(0, 127),
    "channel": _whole(1, 16),
    "takeover": _one_of(TAKEOVERS),
}
EXAMPLE_ENTRY = "{param: temperature, cc: 21, channel: 1}"


def check_bindings(entries) -> tuple[Binding, ...]:
    """The check of config.SCHEMA's ``bindings``: a list of entries -> ``Binding`` objects in
    the same order. A wrong entry is a ``config.Invalid`` pointing at it (or its key), so a
    file's error names that line."""
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ValueError(f"a list of '- {EXAMPLE_ENTRY}' entries")
    seen: dict[Control, int] = {}
    out = []
    for i, item in enumerate(entries):
        if not isinstance(item, dict):
            raise Invalid(f"a binding is {item!r} but must be a mapping like {EXAMPLE_ENTRY}",
                          at=(i,))
        checked = {}
        for key, value in item.items():
            check = BINDING_KEYS.get(key)
            if check is None:
                raise Invalid(f"unknown key '{key}' in a binding; known keys are "
                              f"{', '.join(BINDING_KEYS)}", at=(i,))
            try:
                checked[key] = check(value)
            except ValueError as e:
                raise Invalid(f"'{key}' is {value!r} but must be {e}", at=(i, key)) from None
        if "param" not in checked:
            raise Invalid(f"a binding needs 'param' (one of {', '.join(PARAMS)})", at=(i,))
        if ("cc" in checked) == ("note" in checked):
            raise Invalid("a binding has exactly one of 'cc' (a knob, fader, pedal or "
                          "button) and 'note' (a pad)", at=(i,))
        kind = "cc" if "cc" in checked else "note"
        control = Control(kind, checked.get("channel", 1), checked[kind])
        if kind == "note" and PARAMS[checked["param"]].kind == KNOB:
            raise Invalid(f"'note' binds a pad, which drives only buttons "
                          f"({', '.join(BUTTONS)}), not the knob '{checked['param']}'; use "
                          f"'cc'", at=(i, "note"))
        if control in seen:
            raise Invalid(f"{control} is bound twice (here and on {{also}}); a control "
                          f"drives one parameter", at=(i,), also=(seen[control],))
        seen[control] = i
        out.append(Binding(control, checked["param"], checked.get("takeover")))
    return tuple(out)


@dataclass
class ControlsFile:
    path: Path
    takeover: str = config.SCHEMA["takeover"].default
    bindings: list[Binding] = field(default_factory=list)
    exists: bool = True

    def controls(self, values: dict[str, Any] | None = None,
                 takeover: str | None = None) -> Controls:
        return Controls(self.bindings, takeover=takeover or self.takeover, values=values)


def read(path: str | os.PathLike, *, missing_ok: bool = True) -> ControlsFile:
    """The takeover and bindings in a file of the settings schema (a controls file holds only
    these; a settings file may hold them too). A file that is not there is empty (when
    ``missing_ok``: the first ``learn`` makes it); anything wrong in it is a
    ``LivepianoError`` naming the line, the key and what is allowed."""
    found = config.read(path, missing_ok=True, what="controls file")
    if not found.exists and not missing_ok:
        raise LivepianoError(f"{found.path}: no such controls file; make one with "
                             f"`livepiano learn PARAM`.")
    values = found.values
    return ControlsFile(found.path, values.get("takeover", ControlsFile.takeover),
                        list(values.get("bindings", ())), found.exists)


def load(path: str | os.PathLike | None = None, *, values: dict[str, Any] | None = None,
         takeover: str | None = None, missing_ok: bool = True) -> Controls:
    """``Controls`` from a file (default: ``config.bindings_path()``)."""
    return read(path if path is not None else config.bindings_path(),
                missing_ok=missing_ok).controls(values, takeover)


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


def _bindings_edit(bindings: Iterable[Binding]) -> config.Edit:
    """The edit that writes ``bindings`` over the file's: an entry the file already has, as it
    is, keeps its line and comment; a control now bound to something else gets a new line in
    its place; new ones follow the last; comments between entries stay."""
    wanted = {b.control: b for b in bindings}

    def edit(lines: list, old: config.Entry | None) -> list:
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
            end = config.last_line(item)
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
        edits["takeover"] = config.scalar_edit("takeover", takeover)
    edits["bindings"] = _bindings_edit(list(bindings))
    return config.rewrite(path, edits, header=HEADER, what="knob bindings")
