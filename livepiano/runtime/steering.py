"""Sampling policies that keep the model's playing in shape over minutes: density steering
(a PI controller on the note-on and velocity logits toward a target of notes per second,
which may follow the player's recent density) with human note lengths, a truncated tail
(nucleus / min-p), and the model's own conditioning. Pure numpy; ``Engine`` calls them
through its ``steering`` seam and its ``top_p``.

Why a controller and not just a lower temperature or the conditioning: left alone, the
model feeds on its own notes and gets busier and busier (`livepiano bench music` measures
it); a temperature or a control vector shifts where it starts, not where it drifts to.
The controller counts the engine's own note-ons over the last few seconds of the stream
and lowers (or raises a little) the logits of the note-on and velocity events -- both,
because a velocity event is how the model sets up its next note -- until the step's first
note-on: it decides how often something begins; a chord, once begun, is the model's own.
Held back, the model shortens its notes, so the release of a young note costs and that
of an old one gains; where the player has just struck, a note-on gains (a second hand
strikes with the first). Timing and which pitch stay the model's. The controller's state
travels with the engine's snapshots, so a take-back restores it too.

The nucleus is off by default (``top_p`` 1): each of the 100 time-shifts is unlikely on
its own, so a nucleus cuts the long ones first, and the notes shrank to blips with it.

Listening: what the model heard sets its aim unless the user set one. `generate --primer`
aims at the primer's density and gives a conditioned model the primer's density and
pitch classes (``configure(primer=...)``); in continuous mode ``Listening`` keeps the
player's recent note-ons, note by note, for the mode to lean the model's note-ons toward
their pitch classes (``Engine.key_bias``, as a duet answer leans toward its call) and to
give a conditioned model their density and pitch classes."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from livepiano.core import codec
from livepiano.settings.params import PARAMS

STEPS = codec.STEPS_PER_SECOND
# Every figure below was chosen with `livepiano bench music` on the shipped model (README,
# "Music that holds up"). The controller: the engine's rate over WINDOW_S of the stream,
# its error relative to the target, a PI law, the bias clamped.
WINDOW_S = 3.0
GAIN_P = 3.0
GAIN_I = 1.5
INTEGRAL_LIMITS = (-2.0, 8.0)
BIAS_LIMITS = (-16.0, 2.0)
# Following the player: their note-ons over this much of the stream set the target.
FOLLOW_WINDOW_S = 5.0
FOLLOW_FLOOR = 1.0  # notes/s: an accompanist that follows a sparse player still plays
# Notes a step may begin before the bias applies again (a chord is the model's own), and
# the share of the bias on re-striking a pitch released in the same step.
CHORD_NOTES = 4
RESTRIKE_SHARE = 0.5
# Note lengths: held back, the model fell into a dry staccato (median 0.08 s); its release
# of a note younger than MIN_NOTE_S costs YOUNG_PENALTY, and the release of one older than
# OLD_S gains OLD_GAIN per second past it (else more notes ran to the engine's 5-s cap).
MIN_NOTE_S = 0.3
YOUNG_PENALTY = -4.0
# Beside a pianist the model released most of its notes within a few steps (median note
# 0.04 s): a release younger than BLIP_S costs BLIP_PENALTY instead.
BLIP_S = 0.1
BLIP_PENALTY = -8.0
OLD_S = 2.0
OLD_GAIN = 4.0
# Striking with the player: just after the player has struck, while the engine has not,
# its note-ons and velocity events gain SYNC_GAIN. Without it the model began its notes
# with the pianist's hardly more often than chance, where a pianist's two hands often
# strike together; a gain of 3 had it strike with the pianist more often than a pianist's
# own hands do (docs/music.md).
SYNC_GAIN = 2.0
SYNC_STEPS = 2  # "just": the engine's loop strikes a step or two after the player's note


@dataclass(frozen=True)
class SteeringState:
    own: tuple
    player: tuple
    integral: float
    last_step: int | None
    sounding: dict
    step_ons: int
    released: tuple


class DensitySteering:
    """Holds the engine's note-on rate near ``target`` notes/s (``follow``: the player's
    recent rate times ``follow``, at most ``target``, while the player plays; ``target``
    alone after FOLLOW_WINDOW_S of the player's silence). Owned by the engine's thread, as
    the engine is; ``target`` and ``follow`` may be swapped from a knob between samples."""

    def __init__(self, target: float, follow: float | None = None):
        self.target = float(target)
        self.follow = None if follow is None else float(follow)
        on_vel = np.zeros(codec.VOCAB_SIZE, np.float32)
        on_vel[codec.NOTE_ON:codec.NOTE_OFF] = 1.0
        on_vel[codec.VELOCITY:] = 1.0
        self._on_vel = on_vel
        self._zero = np.zeros(codec.VOCAB_SIZE, np.float32)
        self._out = np.zeros(codec.VOCAB_SIZE, np.float32)  # reused: read it before the next call
        self.reset()

    def reset(self) -> None:
        self._own: deque = deque()  # stream steps of the engine's note-ons
        self._player: deque = deque()
        self._integral = 0.0
        # The controller integrates from its first step on: a primer heard before it is
        # counted in the rate but never wound up into the integral.
        self._last_step: int | None = None
        # pitch -> start step of the engine's latest voice of it (a re-struck pitch's
        # release ends the entry: its older voice is the engine's 5-s cap's business)
        self._sounding: dict[int, int] = {}
        self._step_ons = 0  # note-ons in the current step so far
        self._released: tuple = ()  # pitches the engine released in the current step

    def heard(self, token: int, step: int, own: bool) -> None:
        """An event fed to the model at stream ``step`` (``own``: sampled by the engine)."""
        if token < codec.NOTE_OFF:
            (self._own if own else self._player).append(step)
            self._step_ons += 1
            if own:
                self._sounding[token] = step
        elif token < codec.TIME_SHIFT:
            if own:
                self._sounding.pop(token - codec.NOTE_OFF, None)
                self._released += (token - codec.NOTE_OFF,)
        elif token < codec.VELOCITY:
            self._step_ons = 0
            self._released = ()

    def goal(self, step: int) -> float:
        """The target in notes/s at ``step``."""
        if self.follow is None:
            return self.target
        horizon = step - int(FOLLOW_WINDOW_S * STEPS)
        player = self._player
        while player and player[0] < horizon:
            player.popleft()
        if not player:
            return self.target
        elapsed = min(FOLLOW_WINDOW_S, max(step / STEPS, 1.0))
        return min(self.target, max(FOLLOW_FLOOR, self.follow * len(player) / elapsed))

    def rate(self, step: int) -> float:
        """The engine's note-ons per second over the last WINDOW_S of the stream."""
        horizon = step - int(WINDOW_S * STEPS)
        own = self._own
        while own and own[0] < horizon:
            own.popleft()
        return len(own) / min(WINDOW_S, max(step / STEPS, 1.0))

    def bias(self, step: int, update: bool = True) -> float:
        """The logit offset of note-ons and velocity events at ``step`` (``update``: the
        controller's step; False only looks)."""
        goal = max(self.goal(step), 0.1)
        error = self.rate(step) / goal - 1.0
        dt = 0.0 if self._last_step is None else (step - self._last_step) / STEPS
        lo, hi = INTEGRAL_LIMITS
        integral = min(max(self._integral + error * dt, lo), hi)
        if update:
            self._last_step, self._integral = step, integral
        b = -(GAIN_P * error + GAIN_I * integral)
        return min(max(b, BIAS_LIMITS[0]), BIAS_LIMITS[1])

    def joining(self, step: int) -> bool:
        """Whether the player struck within SYNC_STEPS before ``step`` and the engine has
        not struck since (the latest note-ons of each are the ends of their windows)."""
        if not self._player or step - self._player[-1] > SYNC_STEPS:
            return False
        return not self._own or self._own[-1] < self._player[-1]

    def logits_offset(self, step: int, update: bool = True) -> np.ndarray:
        """The offset of the 388 logits at ``step``: ``bias`` on note-ons and velocity
        events until the step's first note-on, and again from its CHORD_NOTES-th (a
        re-strike of a pitch just released gets RESTRIKE_SHARE of it), plus SYNC_GAIN while
        ``joining``; the note lengths' costs on the release (or re-strike) of the engine's
        notes."""
        b = self.bias(step, update)
        ons = self._step_ons
        out = self._out
        joining = self.joining(step)
        if ons >= CHORD_NOTES or ons == 0:
            np.multiply(self._on_vel, np.float32(b), out=out)
            if ons == 0 and self._released:
                out[codec.VELOCITY:] = b * RESTRIKE_SHARE
                for pitch in self._released:
                    out[codec.NOTE_ON + pitch] = b * RESTRIKE_SHARE
        elif self._sounding or joining:
            out.fill(0.0)
        else:
            return self._zero
        if joining:
            out += self._on_vel * np.float32(SYNC_GAIN)
        young = step - int(MIN_NOTE_S * STEPS)
        blip = step - int(BLIP_S * STEPS)
        old = step - int(OLD_S * STEPS)
        for pitch, start in self._sounding.items():
            if start > blip:  # striking it again would end it too
                out[codec.NOTE_OFF + pitch] = BLIP_PENALTY
                out[codec.NOTE_ON + pitch] += BLIP_PENALTY
            elif start > young:
                out[codec.NOTE_OFF + pitch] = YOUNG_PENALTY
            elif start < old:
                out[codec.NOTE_OFF + pitch] = OLD_GAIN * (old - start) / STEPS
        return out

    def snapshot(self) -> SteeringState:
        return SteeringState(tuple(self._own), tuple(self._player), self._integral,
                             self._last_step, dict(self._sounding), self._step_ons,
                             self._released)

    def restore(self, state: SteeringState) -> None:
        self._own, self._player = deque(state.own), deque(state.player)
        self._integral, self._last_step = state.integral, state.last_step
        self._sounding = dict(state.sounding)
        self._step_ons, self._released = state.step_ons, state.released


def truncate(weights: np.ndarray, top_p: float = 1.0, min_p: float = 0.0) -> None:
    """Zero, in place, the unlikely tail of unnormalized probabilities ``weights`` (the most
    likely event has weight 1): events under ``min_p`` of the most likely, then those
    outside the smallest set holding ``top_p`` of the mass."""
    if min_p > 0.0:
        weights[weights < min_p * weights.max()] = 0.0
    if top_p < 1.0:
        order = np.argsort(weights)[::-1]
        cdf = np.cumsum(weights[order])
        keep = int(np.searchsorted(cdf, top_p * cdf[-1], side="left")) + 1
        weights[order[keep:]] = 0.0


# Listening to the player in continuous mode (clock seconds): the note-ons whose pitch
# classes the model leans toward (with the notes still sounding), and those that make the
# density and pitch classes a conditioned model hears. Chosen with `livepiano bench music`'s
# ensemble (docs/music.md): a longer lean window let more semitone clashes through.
LEAN_WINDOW_S = 1.0
HEARD_WINDOW_S = 5.0


class Listening:
    """The player's recent playing, kept up to date as it comes (each note counted in and
    out once, nothing per sampled event): the pitch classes of the note-ons over
    LEAN_WINDOW_S and of the notes still sounding (the lean), and the note-ons over
    HEARD_WINDOW_S (a conditioned model's control). ``density`` and ``key``: what the user
    set (notes/s; a 12-bin histogram), None where the player's playing decides."""

    def __init__(self, density: float | None = None, lean_window: float = LEAN_WINDOW_S,
                 heard_window: float = HEARD_WINDOW_S):
        self.density = None if density is None else float(density)
        self.key: np.ndarray | None = None
        self.lean_window = float(lean_window)
        self.heard_window = float(heard_window)
        self._recent: deque = deque()  # (time, pitch class) over the lean window
        self._recent_counts = np.zeros(12)
        self._heard: deque = deque()  # (time, pitch class) over the heard window
        self._heard_counts = np.zeros(12)
        self._sounding: dict[int, int] = {}  # pitch -> voices sounding
        self._sounding_counts = np.zeros(12)
        self._since: float | None = None  # the first note-on heard

    def hear(self, t: float, pitch: int, on: bool = True) -> None:
        """The player's note-on (``on``) or note-off of ``pitch`` at clock time ``t``."""
        pitch = int(pitch)
        pc = pitch % 12
        if not on:
            if self._sounding.get(pitch):
                self._sounding[pitch] -= 1
                self._sounding_counts[pc] -= 1
            return
        self._recent.append((t, pc))
        self._recent_counts[pc] += 1
        self._heard.append((t, pc))
        self._heard_counts[pc] += 1
        self._sounding[pitch] = self._sounding.get(pitch, 0) + 1
        self._sounding_counts[pc] += 1
        if self._since is None:
            self._since = t

    def forget(self, now: float) -> int:
        """Let go of the note-ons older than the windows at ``now``; how many went."""
        gone = 0
        for notes, counts, window in ((self._recent, self._recent_counts, self.lean_window),
                                      (self._heard, self._heard_counts, self.heard_window)):
            horizon = now - window
            while notes and notes[0][0] < horizon:
                counts[notes.popleft()[1]] -= 1
                gone += 1
        return gone

    def rate(self, now: float) -> float:
        """The player's note-ons per second over the heard window (over the time since the
        first note-on, early on)."""
        if self._since is None:
            return 0.0
        return len(self._heard) / min(self.heard_window, max(now - self._since, 1.0))

    def lean(self) -> np.ndarray | None:
        """The histogram (sums to 1) the model's note-ons lean toward: the key set, else the
        pitch classes of the player's latest note-ons and of their notes still sounding;
        None when there are none."""
        if self.key is not None:
            return self.key
        counts = self._recent_counts + self._sounding_counts
        total = counts.sum()
        return counts / total if total > 0 else None

    def control(self, now: float, alone: float) -> list[float]:
        """A conditioned model's control: the density set, else the player's over the heard
        window (``alone`` after their silence); the key set, else the player's pitch
        classes over the heard window (flat without any)."""
        density = self.density
        if density is None:
            density = self.rate(now) if self._heard else alone
        if self.key is not None:
            hist = self.key
        elif self._heard:
            hist = self._heard_counts / self._heard_counts.sum()
        else:
            hist = np.full(12, 1.0 / 12)
        return codec.conditioning(density, hist)


def heard_density(tokens: Sequence[int]) -> float | None:
    """The note-ons per second of a stretch of tokens (None without any), within the
    ``density`` setting's range."""
    vector = codec.control_vector(tokens)
    if not vector.any():
        return None
    lo, hi = PARAMS["density"].curve.lo, PARAMS["density"].curve.hi
    return min(max(float(vector[0]) * codec.DENSITY_SCALE, lo), hi)


def conditioning(density: float) -> list[float]:
    """The control vector a conditioned model gets when nothing else sets one: ``density``
    notes/s and a flat pitch-class histogram (an all-zero histogram is "unconditioned" to
    it, and then the density means nothing to it either)."""
    return codec.conditioning(density, [1.0 / 12] * 12)


def alone_density(settings: Mapping) -> float:
    """Notes/s the model aims for alone: the ``density`` set, else the knob's default."""
    density = settings.get("density")
    return float(PARAMS["density"].default if density is None else density)


def configure(engine, settings: Mapping, *, accompany: bool = False,
              primer: Sequence[int] = ()) -> None:
    """The stability defaults of ``settings`` on ``engine``: density steering toward
    ``density`` notes/s (not set: the ``primer``'s density when it has notes, else the
    knob's default; ``accompany``: following the player's density times
    ``accompany_ratio``), the truncated tail, and a conditioned model's control: that
    density with the primer's pitch classes (flat without a primer). With ``listen`` on, the
    note-ons lean toward the primer's pitch classes (``Engine.key_bias``), as a duet answer
    leans toward its call."""
    heard = codec.control_vector(primer) if len(primer) else np.zeros(codec.CONTROL_DIM)
    density = alone_density(settings)
    if settings.get("density") is None and heard.any():
        density = heard_density(primer)
    follow = float(settings["accompany_ratio"]) if accompany else None
    engine.steering = DensitySteering(density, follow) if settings["steer"] else None
    engine.top_p = float(settings["top_p"])
    if engine.conditioned and engine.control is None and settings["steer"]:
        engine.control = (codec.conditioning(density, heard[1:]) if heard.any()
                          else conditioning(density))
    if heard.any() and settings.get("listen", True):
        engine.key_bias = heard[1:]
