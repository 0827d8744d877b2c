"""What a knob can drive: each parameter's kind, range, curve, default and how it is shown;
the physical controls and bindings; what a binding entry in a file allows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.settings.choices import MODES, TAKEOVERS, Invalid, choice, number, whole

KNOB, TOGGLE, MOMENTARY = "knob", "toggle", "momentary"


CENTRE = 64  # the CC value of a knob's centre


TOP = 127


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
            return number(float(self.curve.lo), float(self.curve.hi))(value)
        return choice(*self.choices)(value)

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
    Param("density", KNOB, 10.0,
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
          "your phrases)", choices=MODES),
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


# What can be changed from elsewhere than a knob (the stage view): the settings a knob drives,
# and the momentary actions that make sense without a controller in hand.
SETTABLE = tuple(n for n, p in PARAMS.items() if p.kind in (KNOB, TOGGLE))


PRESSABLE = ("panic", "end_of_call")


def checked_setting(name, value) -> tuple[str, Any]:
    """(parameter name, ``value`` converted) for one of ``SETTABLE``, else a one-line
    ``LivepianoError`` saying what is wrong (unknown name, not knob-driven, wrong type, out of
    range) and what is allowed."""
    p = _known(name, SETTABLE, "set")
    try:
        return p.name, p.check(value)
    except ValueError as e:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise LivepianoError(f"{p.name} is {shown} but must be {e}.") from None


def checked_action(name) -> str:
    """The name of one of ``PRESSABLE``, else a one-line ``LivepianoError``."""
    return _known(name, PRESSABLE, "press").name


def _known(name, allowed: tuple, verb: str) -> Param:
    listed = ", ".join(allowed)
    if not isinstance(name, str):
        raise LivepianoError(f"the name must be a text, one of {listed}.")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in allowed:
        raise LivepianoError(f"'{name[:40]}' is not something the view can {verb}; it can "
                             f"{verb} {listed}.")
    return PARAMS[key]


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


def knob_control(density: float, key: str, heard: Iterable[int] = ()) -> list[float]:
    """The control vector (``codec.CONTROL_LAYOUT``) the density and key knobs ask for, for
    ``Engine.control``; ``codec.control_vector`` is the one measured from tokens."""
    return codec.conditioning(density, key_histogram(key, heard))


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


def _param_name(v):
    if not isinstance(v, str) or v.strip().lower().replace("-", "_") not in PARAMS:
        raise ValueError("one of " + ", ".join(PARAMS))
    return v.strip().lower().replace("-", "_")


# The schema of one binding entry: key -> check (the takeover key may be left out).
BINDING_KEYS: dict[str, Callable[[Any], Any]] = {
    "param": _param_name,
    "cc": whole(0, 119),
    "note": whole(0, 127),
    "channel": whole(1, 16),
    "takeover": choice(*TAKEOVERS),
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

