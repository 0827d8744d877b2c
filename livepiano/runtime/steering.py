"""Sampling policies that keep the model's playing in shape over minutes: density steering
(a PI controller on the note-on and velocity logits toward a target of notes per second,
which may follow the player's recent density), a truncated tail (nucleus / min-p), and the
model's own conditioning. Pure numpy; ``Engine`` calls them through its ``steering`` seam.

Why a controller and not just a lower temperature or the conditioning: left alone, the
model feeds on its own notes and gets busier and busier (`livepiano bench music` measures
it); a temperature or a control vector shifts where it starts, not where it drifts to.
The controller counts the engine's own note-ons over the last few seconds of the stream
and lowers (or raises a little) the logits of every note-on and velocity event -- both,
because a velocity event is how the model sets up its next note -- until the rate meets
the target. Everything else (timing, note-offs, which pitch) stays the model's, and the
controller's state travels with the engine's snapshots, so a take-back restores it too.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from livepiano import codec

STEPS = codec.STEPS_PER_SECOND
# The controller's gains, chosen with `livepiano bench music` (README, "Music that holds up"):
# the rate is measured over WINDOW_S of the stream, the error is relative to the target.
WINDOW_S = 3.0
GAIN_P = 3.0
GAIN_I = 1.5
INTEGRAL_LIMITS = (-2.0, 8.0)
BIAS_LIMITS = (-16.0, 2.0)
# Following the player: their note-ons over this much of the stream set the target.
FOLLOW_WINDOW_S = 5.0
OFF_SHARE = 0.0
NOTE_SHARE = 1.0
TEMPO_SHARE = 0.0
MIN_NOTE_S = 0.3
YOUNG_SHARE = 1.0
GATE = True
GATE_OFFS = True
FOLLOW_FLOOR = 1.0  # notes/s: an accompanist that follows a sparse player still plays


@dataclass(frozen=True)
class SteeringState:
    own: tuple
    player: tuple
    integral: float
    last_step: int
    young: dict
    onset: bool


class DensitySteering:
    """Holds the engine's note-on rate near ``target`` notes/s (``follow``: the player's
    recent rate times ``follow``, at most ``target``, while the player plays; ``target``
    alone after FOLLOW_WINDOW_S of the player's silence). Owned by the engine's thread, as
    the engine is; ``target`` and ``follow`` may be swapped from a knob between samples."""

    def __init__(self, target: float, follow: float | None = None, offs: float = OFF_SHARE,
                 notes: float = NOTE_SHARE, tempo: float = TEMPO_SHARE):
        self.target = float(target)
        self.follow = None if follow is None else float(follow)
        on_vel = np.zeros(codec.VOCAB_SIZE, np.float32)
        on_vel[codec.NOTE_ON:codec.NOTE_OFF] = notes
        on_vel[codec.NOTE_OFF:codec.TIME_SHIFT] = offs
        on_vel[codec.VELOCITY:] = notes
        # a negative bias favours the long time-shifts: the model's own tempo slows down
        on_vel[codec.TIME_SHIFT:codec.VELOCITY] = -tempo * np.log(
            np.arange(1, codec.MAX_SHIFT_STEPS + 1))
        self._on_vel = on_vel
        self._gate = np.ones(codec.VOCAB_SIZE, np.float32)
        self._gate[codec.TIME_SHIFT:codec.VELOCITY] = 0.0
        self._zero = np.zeros(codec.VOCAB_SIZE, np.float32)
        self.reset()

    def reset(self) -> None:
        self._own: deque = deque()  # stream steps of the engine's note-ons
        self._player: deque = deque()
        self._integral = 0.0
        self._last_step = 0
        self._young: dict[int, int] = {}  # pitch -> start step of the engine's latest voice
        self._onset = True  # the next event is the first of its step

    def heard(self, token: int, step: int, own: bool) -> None:
        """An event fed to the model at stream ``step`` (``own``: sampled by the engine)."""
        if token < codec.NOTE_OFF:
            (self._own if own else self._player).append(step)
            if own:
                self._young[token] = step
        elif token < codec.TIME_SHIFT and own:
            self._young.pop(token - codec.NOTE_OFF, None)
        self._onset = codec.TIME_SHIFT <= token < codec.VELOCITY

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
        dt = (step - self._last_step) / STEPS
        lo, hi = INTEGRAL_LIMITS
        integral = min(max(self._integral + error * dt, lo), hi)
        if update:
            self._last_step, self._integral = step, integral
        b = -(GAIN_P * error + GAIN_I * integral)
        return min(max(b, BIAS_LIMITS[0]), BIAS_LIMITS[1])

    def logits_offset(self, step: int, update: bool = True) -> np.ndarray:
        """``bias`` as an offset of the 388 logits."""
        b = self.bias(step, update)
        if not self._onset:
            return self._zero
        out = self._on_vel * np.float32(b)
        if b < 0.0 and self._young:
            # while it holds the notes back, it holds back cutting its young notes short
            # too: the model's way to make room for a note is to release one
            horizon = step - int(MIN_NOTE_S * STEPS)
            for pitch, start in self._young.items():
                if start > horizon:
                    out[codec.NOTE_OFF + pitch] = b * YOUNG_SHARE
        return out

    def snapshot(self) -> SteeringState:
        return SteeringState(tuple(self._own), tuple(self._player), self._integral,
                             self._last_step, dict(self._young), self._onset)

    def restore(self, state: SteeringState) -> None:
        self._own, self._player = deque(state.own), deque(state.player)
        self._integral, self._last_step = state.integral, state.last_step
        self._young = dict(state.young)
        self._onset = state.onset


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


def conditioning(density: float) -> list[float]:
    """The control vector a conditioned model gets when nothing else sets one: ``density``
    notes/s and a flat pitch-class histogram (an all-zero histogram is "unconditioned" to
    it, and then the density means nothing to it either)."""
    return [min(density / codec.DENSITY_SCALE, 3.0)] + [1.0 / 12] * 12


def configure(engine, settings: Mapping, *, accompany: bool = False) -> None:
    """The stability defaults of ``settings`` on ``engine``: density steering toward
    ``density`` notes/s (``accompany``: following the player's density times
    ``accompany_ratio``), the truncated tail, and a conditioned model's control."""
    density = float(settings["density"])
    follow = float(settings["accompany_ratio"]) if accompany else None
    engine.steering = DensitySteering(density, follow) if settings["steer"] else None
    engine.top_p = float(settings["top_p"])
    if engine.conditioned and engine.control is None and settings["steer"]:
        engine.control = conditioning(density)
