"""Call and response: the duet owns the turn, and nothing else.

The player plays a phrase (the *call*); when it has ended, the model *answers*; then the player
has the turn again. ``Duet`` decides when each of these happens. It is pure: no threads, no
ports, no clock of its own. One thread (the engine thread) drives it with plain calls that
carry explicit times in seconds on the session's monotonic clock, and acts on what they return:

    duet.on_player_event("on" | "off" | "pedal", pitch_or_value, t)   # the player's events
    duet.on_end_of_call_control(t)                                     # "answer now"
    duet.tick(t)                                                       # time passes
    duet.on_model_event(token, t)                                      # each answer token
    duet.on_take_back(t)                                               # ...some taken back
    duet.answer_done(t)                                                # the loop ends an answer

Each returns a list of actions, usually empty: ``StartAnswer`` (the model may play from
``at``; ``length_s``, with ``follow`` the call's pitch classes as a ``key`` and, for a
conditioned model, a ``control`` vector),
``StopAnswer`` (the answer's stream ends at ``at``: nothing after it may sound, and the voices in
``release`` get their note-offs there), ``Listen`` (the answer is over, the turn is the
player's) and ``IgnoreCall`` (a call too short to answer). ``deadline()`` says when ``tick``
next has something to do, so that the engine thread can sleep on its inbox until then.

The rules, precisely (``DuetSettings`` holds the numbers):

Phrase end. A call starts with the player's first note-on while the duet listens. It has ended
when no key is down, the pedal is up and no player event (note-on, note-off, pedal) came for
``wait`` seconds: the answer starts at ``phrase_end + wait``, where the phrase end is the time of
the player's last event, i.e. the moment the last key or the pedal was released. A key held
down (or the pedal) keeps the call open for any length of silence. Fed the listener's
pedal-folded events (a key released under the pedal sends its note-off at pedal-up), the
notes the pedal holds count as keys down; fed raw keys plus pedal messages, both count.
The end-of-call control (a learnable CC, e.g. a foot switch) ends the call at once, keys held
or not: the answer starts at the control's time.

Minimum call. A call is answered only if it has at least ``min_call_notes`` note-ons (default
2) and lasts at least ``min_call_s`` (default 0.3 s) from its first note-on to its phrase end;
otherwise it is ignored (``IgnoreCall``), forgotten, and the duet listens for the next one.
Why: the common accidents at a keyboard are one stray note (a brushed key, testing the
sound) and a slip of two keys struck and let go together (a few tens of ms). Two notes are the
smallest musical gesture (an interval, a repeated note); played on purpose, even briskly (two
eighth notes at 200 bpm), they span about 0.3 s from the first key down to the last key up,
while a slip is over in tens of milliseconds. A chord held for 0.3 s is a call. The model
still hears an ignored call: only the answer is skipped. The end-of-call control is
deliberate, so it answers any call with at least one note.

Answer length. The target is the call's length (first note-on to phrase end; with the
control and keys still down, to the control) clamped to ``[min_answer, max_answer]``
(default 2-16 s), counted from the answer's start. The answer ends at a natural pause: the
first moment at or after the target at which the model has none of its notes sounding and is
in a time-shift, i.e. a silent time-shift token reaching past the target ends the answer at
``max(start of the shift, target)``. From the target on, the answer winds down: the model
starts no new note (``winding_down``; the engine's ``notes_allowed``), it only lets its voices
go, so that pause comes (``bench duet``, 30 calls: 19 natural ends and 2 at the cap, against 7
and 14 with notes still allowed). It never ends mid-note, except at the hard cap
``target + grace`` (default 2 s): there, or at the first token past it, the answer stops and
its sounding voices (``release``) get their note-offs at the cap. ``tick`` enforces the cap
as well, so an answer ends even if the model's stream stalls. The turn goes back to the
player (``Listen``) when the clock reaches the answer's end, i.e. once its last note-off has
sounded (the model's stream runs a look-ahead ahead of the clock).

Barge-in (the player's note-on while the model has the turn; the pedal alone is no barge-in):
- ``stop`` (default): the answer stops at once: ``StopAnswer("barge-in", at=t)`` with the
  voices sounding at ``t``, then ``Listen(t)``; the note starts the next call.
- ``finish``: the answer finishes what it is saying: its target moves to the barge-in time,
  so it ends at its first natural pause from then on (never mid-note; a pause the stream has
  already played, since it runs ahead of the clock, counts), capped at ``grace`` after the
  barge-in.
- ``overlap``: the answer plays on under the player to its planned end.
With ``finish`` and ``overlap`` the player's notes during the answer start the next call;
it is answered after the current answer is over (at ``max(phrase end + wait, answer end)``).
In every mode the player's notes prime the model as usual (that is the engine loop's job).

Follow. With ``follow``, ``StartAnswer.key`` holds the call's 12 pitch-class counts (its
note-ons) for ``Engine.key_bias``, and for a conditioned model ``StartAnswer.control`` is
``codec.control_vector`` of the call's tokens: its notes (the pedal applied as the codec does)
encoded from the call's first note-on, notes still down ending at the call's end. The control
alone moved the answers' pitch classes little with the shipped model (see README, Duet); the
key bias acts on what is sampled, so it steers any model.

Times: ``t`` of the player's events and of ``tick`` is the session clock; ``t`` of
``on_model_event`` is the token's place in the model's stream on the same clock (the stream
time *after* the token: a note's deadline; the end of a time-shift). Player events may arrive
a little after a ``tick`` with a later time (the listener stamps on arrival, the engine thread
ticks between drains): a note-on stamped before an answer's start still barges in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable

import numpy as np

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.core.voices import Voices

LISTEN, ANSWER, ENDING = "listen", "answer", "ending"
BARGE_IN = ("stop", "finish", "overlap")
PLAYER_KINDS = ("on", "off", "pedal")
STOP_REASONS = ("natural", "cap", "barge-in", "done")


# --- settings --------------------------------------------------------------------------------
# Each check returns the value (converted) or raises ValueError(what is allowed), the contract
# of ``config.Setting.check``, so that config's schema can take them as they are.

def pitch_classes(tokens) -> tuple[int, ...]:
    """How many note-ons of each pitch class (C first) the tokens hold."""
    counts = [0] * 12
    for tok in tokens:
        if tok < codec.NOTE_OFF:
            counts[tok % 12] += 1
    return tuple(counts)


def _seconds(lo: float, hi: float) -> Callable[[Any], float]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise ValueError(f"a number of seconds from {lo:g} to {hi:g}")
        return float(v)
    return check


def _count(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) \
                or not lo <= v <= hi:
            raise ValueError(f"a whole number from {lo} to {hi}")
        return int(v)
    return check


def _choice(*choices) -> Callable[[Any], Any]:
    def check(v):
        if v not in choices:
            raise ValueError("one of " + ", ".join(map(str, choices)))
        return v
    return check


def _flag(v) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


# field -> (check, help); the order is the order of DuetSettings' fields.
CHECKS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "wait": (_seconds(0.05, 10.0), "silence (no key, no pedal, no event) that ends a call"),
    "min_call_notes": (_count(1, 100), "fewest note-ons a call needs to be answered"),
    "min_call_s": (_seconds(0.0, 10.0), "shortest call answered (first note-on to phrase end)"),
    "min_answer": (_seconds(0.5, 120.0), "shortest answer (target length)"),
    "max_answer": (_seconds(0.5, 120.0), "longest answer (target length)"),
    "grace": (_seconds(0.0, 10.0), "after the target, how long an answer may go on looking "
                                   "for a pause before it is cut"),
    "barge_in": (_choice(*BARGE_IN), "when you play during an answer: stop it at once, let it "
                                     "finish its phrase, or let it overlap you"),
    "follow": (_flag, "steer the answer toward the call's pitch classes (and a conditioned "
                      "model's toward its density)"),
}


@dataclass(frozen=True)
class DuetSettings:
    """The duet's times and modes; validated on construction (a ``LivepianoError`` names the
    field, the value and what is allowed)."""

    wait: float = 0.6
    min_call_notes: int = 2
    min_call_s: float = 0.3
    min_answer: float = 2.0
    max_answer: float = 16.0
    grace: float = 2.0
    barge_in: str = "stop"
    follow: bool = True

    def __post_init__(self):
        for f in fields(self):
            check, _ = CHECKS[f.name]
            value = getattr(self, f.name)
            try:
                object.__setattr__(self, f.name, check(value))
            except ValueError as e:
                raise LivepianoError(f"duet setting '{f.name}' is {value!r} but must be {e}.") \
                    from None
        if self.min_answer > self.max_answer:
            raise LivepianoError(f"duet setting 'min_answer' is {self.min_answer:g} but must be "
                                 f"at most max_answer ({self.max_answer:g}).")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "DuetSettings":
        """Settings from a mapping of field names (unknown names are an error that lists the
        known ones)."""
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                raise LivepianoError(f"unknown duet setting '{key}'; known duet settings are "
                                     f"{', '.join(known)}.")
        return cls(**values)

    def answer_length(self, call_s: float) -> float:
        """The target length of the answer to a call lasting ``call_s`` seconds."""
        return min(max(call_s, self.min_answer), self.max_answer)


# --- what the duet tells the engine loop -------------------------------------------------------

@dataclass
class Call:
    """The player's phrase being listened to (times on the session clock)."""

    start: float  # its first note-on
    end: float | None = None  # the phrase end, once decided
    notes: int = 0  # note-ons
    by_control: float | None = None  # time of the end-of-call control that closed it
    events: list = field(default_factory=list, repr=False)  # (t, kind, value, velocity)
    pedal_at_start: bool = field(default=False, repr=False)

    @property
    def length(self) -> float:
        return (self.end if self.end is not None else self.start) - self.start

    def tokens(self) -> list[int]:
        """The call as the codec encodes notes (pedal applied), from its first note-on."""
        end = self.end if self.end is not None else (self.events[-1][0] if self.events
                                                     else self.start)
        voices = Voices("all")  # a key that goes up releases its pitch
        notes: list[codec.Note] = []
        controls = [codec.ControlChange(codec.SUSTAIN_CC, 127, 0.0)] if self.pedal_at_start \
            else []
        for t, kind, value, velocity in self.events:
            rel = t - self.start
            if kind == "on":
                voices.on(value, rel, velocity)
            elif kind == "off":
                for v in voices.off(value, rel):
                    notes.append(codec.Note(value, v.data, v.start, rel))
            else:
                controls.append(codec.ControlChange(codec.SUSTAIN_CC, 127 if value else 0, rel))
        for v in voices.end():
            notes.append(codec.Note(v.key, v.data, v.start, max(end - self.start, v.start)))
        return codec.notes_to_tokens(codec.apply_sustain(notes, controls))


@dataclass(frozen=True)
class StartAnswer:
    """The model has the turn from ``at``: it answers ``call`` for about ``length_s``."""

    at: float
    length_s: float
    control: np.ndarray | None = field(compare=False, repr=False)
    call: Call = field(compare=False, repr=False)
    key: tuple | None = field(default=None, compare=False, repr=False)  # pitch-class counts


@dataclass(frozen=True)
class StopAnswer:
    """The answer's stream ends at ``at`` (stream time): the model stops sampling; every model
    event after ``at`` is cancelled (taken back), and the voices in ``release`` (the answer's
    voices sounding at ``at``, one entry per voice) get their note-offs at ``at``. A token
    passed to ``on_model_event`` that caused the stop is not part of the answer: a note past
    the cap is taken back; a time-shift schedules nothing (the model may keep it: it is the
    silence that follows)."""

    reason: str  # one of STOP_REASONS
    at: float
    release: tuple[int, ...] = ()


@dataclass(frozen=True)
class Listen:
    """The answer is over at ``at``; the turn is the player's."""

    at: float


@dataclass(frozen=True)
class IgnoreCall:
    """A call too short to answer (see ``DuetSettings.min_call_*``)."""

    call: Call = field(repr=False)
    reason: str


@dataclass
class Turn:
    """One call and its answer, for the status line, the recording and ``bench duet``."""

    call_start: float
    call_end: float
    call_notes: int
    answer_start: float
    target: float
    first_note: float | None = None  # stream time of the answer's first note-on
    notes: int = 0
    stop_reason: str | None = None
    end: float | None = None  # the answer's stream end (StopAnswer.at)
    over: float | None = None  # Listen.at


class _Answer:
    """The answer being played: its times, and its notes in stream order."""

    def __init__(self, start: float, target_end: float, cap: float, turn: Turn):
        self.start = start
        self.target_end = target_end
        self.cap = cap
        self.turn = turn
        self.end: float | None = None
        self.notes: list[list] = []  # [pitch, on time, off time or None]
        self.open = Voices("oldest")  # the open notes (as data) by pitch
        self.last_t = start  # stream time after the last model token

    def sounding(self) -> bool:
        return bool(self.open)

    def first_pause(self, t: float) -> float | None:
        """The first moment from ``t`` on, inside the stream played so far, with none of the
        answer's notes sounding (a note-off at the stream's very end is not yet a pause: a
        note-on may follow at the same step)."""
        live = [n for n in self.notes if n[2] is None or n[2] > t]  # may sound from t on
        for x in sorted({t} | {off for _, _, off in live if off is not None}):
            if x < self.last_t and not any(on <= x and (off is None or off > x)
                                           for _, on, off in live):
                return x
        return None

    def sounding_at(self, t: float) -> tuple[int, ...]:
        return tuple(sorted(p for p, on, off in self.notes
                            if on <= t and (off is None or off > t)))


# --- the duet ---------------------------------------------------------------------------------

class Duet:
    """The turn: LISTEN (the player plays; the model only listens), ANSWER (the model plays),
    ENDING (the model's answer has decided its end and plays out its last events)."""

    def __init__(self, settings: DuetSettings | None = None, *, conditioned: bool = False):
        self.settings = settings or DuetSettings()
        self.conditioned = conditioned
        self.state = LISTEN
        self.turns: list[Turn] = []
        self._down = Voices("all")  # the keys down; a key that goes up releases its pitch
        self._pedal = False
        self._last = -math.inf  # time of the player's last event
        self._call: Call | None = None
        self._answer: _Answer | None = None
        self._listen_since = -math.inf

    # --- what the engine loop asks ----------------------------------------------------------

    @property
    def quiet(self) -> bool:
        """No key down and the pedal up."""
        return not self._pedal and not self._down

    @property
    def keys_down(self) -> list[int]:
        return sorted(self._down.keys())

    @property
    def pedal(self) -> bool:
        return self._pedal

    @property
    def last_event(self) -> float:
        """When the player last played (a note or the pedal); -inf before anything."""
        return self._last

    @property
    def call(self) -> Call | None:
        return self._call

    def may_generate(self, t: float | None = None) -> bool:
        """Whether the model may sample now (the answer has not decided its end)."""
        return self.state == ANSWER

    @property
    def awaiting_first_note(self) -> bool:
        """An answer that has not played a note yet (the loop may forbid time-shifts until it
        does, so that the answer starts with a note, not with a silence)."""
        return self.state == ANSWER and self._answer.turn.first_note is None

    def winding_down(self, t: float) -> bool:
        """An answer whose stream has reached its target at ``t``: from there it should start
        no new note, only let its voices go, so that it ends at a natural pause rather than
        at the cap."""
        return (self.state == ANSWER and t >= self._answer.target_end
                and self._answer.turn.first_note is not None)

    def deadline(self) -> float | None:
        """When ``tick`` next has something to do (None: not before the next event)."""
        if self.state == ANSWER:
            return self._answer.cap
        if self.state == ENDING:
            return self._answer.end
        call = self._call
        if call is None:
            return None
        if call.by_control is not None:
            return max(call.by_control, self._listen_since)
        if self.quiet:
            return max(self._last + self.settings.wait, self._listen_since)
        return None

    # --- the player -------------------------------------------------------------------------

    def on_player_event(self, kind: str, value: int, t: float, velocity: int = 64) -> list:
        """A player's note-on (``value`` = pitch), note-off (pitch) or pedal (``value``: CC64
        value, >= 64 down, or a bool)."""
        if kind not in PLAYER_KINDS:
            raise ValueError(f"a player event is one of {', '.join(PLAYER_KINDS)}, not {kind!r}")
        actions = self._settle(t)
        if kind == "pedal":
            down = bool(value) if isinstance(value, bool) else int(value) >= 64
            if down == self._pedal:
                return actions
            self._pedal = down
            self._note(t, kind, down, 0)
        elif kind == "off":
            if not self._down.off(value, t):
                return actions  # a key that is not down: nothing changes
            self._note(t, kind, value, 0)
        else:
            if self.state != LISTEN:
                actions += self._barge_in(t)
            self._down.on(value, t)
            if self._call is None:
                self._call = Call(start=t, pedal_at_start=self._pedal)
            self._call.notes += 1
            self._call.by_control = None  # playing on after the control reopens the call
            self._note(t, kind, value, velocity)
        return actions

    def on_player_events(self, events: Iterable) -> list:
        """The listener's events (anything with ``time``, ``on``, ``pitch``, ``velocity``)."""
        actions = []
        for ev in events:
            actions += self.on_player_event("on" if ev.on else "off", ev.pitch, ev.time,
                                            getattr(ev, "velocity", 64) or 64)
        return actions

    def on_end_of_call_control(self, t: float) -> list:
        """The player says "your turn": the call ends now (ignored with no call)."""
        actions = self._settle(t)
        call = self._call
        if call is None or call.notes == 0:
            return actions
        call.by_control = max(t, call.start)
        if self.state == LISTEN:
            actions += self._maybe_start(t)
        return actions

    def _note(self, t: float, kind: str, value, velocity: int) -> None:
        self._last = max(self._last, t)
        if self._call is not None:
            self._call.events.append((max(t, self._call.start), kind, value, velocity))

    def _barge_in(self, t: float) -> list:
        ans, mode = self._answer, self.settings.barge_in
        at = max(t, ans.start)
        if mode == "stop":
            actions = []
            if self.state == ANSWER or at < ans.end:
                actions.append(self._stop("barge-in", at))
            return actions + self._listen(at)
        if mode == "finish" and self.state == ANSWER:
            ans.target_end = min(ans.target_end, at)
            ans.cap = min(ans.cap, at + self.settings.grace)
            # The model's stream runs ahead of the clock: a pause it has already played since
            # the barge-in ends the answer there.
            pause = ans.first_pause(at)
            if pause is not None:
                actions = [self._stop("natural", pause)]
                return actions + (self._listen(pause) if t >= pause else [])
        return []

    # --- time ---------------------------------------------------------------------------------

    def tick(self, t: float) -> list:
        """Time has reached ``t``: the answer may start, reach its cap, or be over."""
        actions = self._settle(t)
        if self.state == LISTEN:
            actions += self._maybe_start(t)
        return actions

    def _settle(self, t: float) -> list:
        actions = []
        if self.state == ANSWER and t >= self._answer.cap:
            actions.append(self._stop("cap", self._answer.cap))
        if self.state == ENDING and t >= self._answer.end:
            actions += self._listen(self._answer.end)
        return actions

    def _maybe_start(self, t: float) -> list:
        call, s = self._call, self.settings
        if call is None:
            return []
        if call.by_control is not None:
            if not self.quiet:
                call.end = call.by_control
            else:  # the silence before the control is not part of the call
                call.end = min(call.by_control, max(self._last, call.start))
            return [self._start(max(call.by_control, self._listen_since), call)]
        if not self.quiet or t < self._last + s.wait:
            return []
        call.end = self._last
        if call.notes < s.min_call_notes or call.length < s.min_call_s:
            self._call = None
            why = (f"{call.notes} note{'s' if call.notes != 1 else ''} (fewer than "
                   f"{s.min_call_notes})" if call.notes < s.min_call_notes else
                   f"{call.length:.2f} s (shorter than {s.min_call_s:g} s)")
            return [IgnoreCall(call, f"call too short: {why}")]
        return [self._start(max(self._last + s.wait, self._listen_since), call)]

    def _start(self, at: float, call: Call) -> StartAnswer:
        s = self.settings
        length = s.answer_length(call.length)
        control = key = None
        if s.follow:
            tokens = call.tokens()
            key = pitch_classes(tokens)
            if self.conditioned:
                control = codec.control_vector(tokens)
        turn = Turn(call.start, call.end, call.notes, at, length)
        self.turns.append(turn)
        self._answer = _Answer(at, at + length, at + length + s.grace, turn)
        self._call = None
        self.state = ANSWER
        return StartAnswer(at, length, control, call, key)

    # --- the model ------------------------------------------------------------------------

    def on_model_event(self, token: int, t: float) -> list:
        """The model's token, at stream time ``t`` (after the token). Returns
        ``[StopAnswer]`` when the answer ends with it (the token is then not part of it)."""
        if self.state != ANSWER:
            return []
        ans, token = self._answer, int(token)
        kind = codec.kind(token)
        before, ans.last_t = ans.last_t, max(ans.last_t, t)
        if kind == "shift":
            begins = t - codec.shift_steps(token) / codec.STEPS_PER_SECOND
            if begins < before + 1e-6:  # where the previous token left the stream (exactly)
                begins = before
            if not ans.sounding() and t > ans.target_end:
                return [self._stop("natural", max(begins, ans.target_end))]
            if t > ans.cap:
                return [self._stop("cap", ans.cap)]
            return []
        if t > ans.cap:
            return [self._stop("cap", ans.cap)]
        if kind == "on":
            note = [token, t, None]
            ans.notes.append(note)
            ans.open.on(token, t, note)
            ans.turn.notes += 1
            if ans.turn.first_note is None:
                ans.turn.first_note = t
        elif kind == "off":
            for voice in ans.open.off(token - codec.NOTE_OFF, t):
                voice.data[2] = t
        return []

    def on_take_back(self, t: float) -> None:
        """The engine loop took back the answer's events after stream time ``t`` and its
        stream stands at ``t`` again (the player played while the stream ran ahead, in
        ``finish`` or ``overlap``): forget them; the model samples again from there. Only
        while the answer has not decided its end (after a ``StopAnswer`` the loop takes back
        what lies after ``StopAnswer.at`` and nothing else)."""
        if self.state != ANSWER:
            return
        ans = self._answer
        ans.notes = [n for n in ans.notes if n[1] <= t]
        ans.open = Voices("oldest")
        for n in ans.notes:
            if n[2] is not None and n[2] > t:
                n[2] = None
            if n[2] is None:
                ans.open.on(n[0], n[1], n)
        ans.last_t = min(ans.last_t, t)
        ans.turn.notes = len(ans.notes)
        ans.turn.first_note = ans.notes[0][1] if ans.notes else None

    def answer_done(self, t: float) -> list:
        """The engine loop ends the answer at ``t`` for a reason of its own (e.g. the session
        stops); back to listening."""
        actions = []
        if self.state == ANSWER:
            actions.append(self._stop("done", max(t, self._answer.start)))
        if self.state == ENDING:
            actions += self._listen(min(max(t, self._answer.start), self._answer.end))
        return actions

    def _stop(self, reason: str, at: float) -> StopAnswer:
        ans = self._answer
        ans.end = at
        ans.turn.stop_reason = reason
        ans.turn.end = at
        self.state = ENDING
        return StopAnswer(reason, at, ans.sounding_at(at))

    def _listen(self, at: float) -> list:
        self.state = LISTEN
        self._answer.turn.over = at
        self._listen_since = at
        return [Listen(at)]
