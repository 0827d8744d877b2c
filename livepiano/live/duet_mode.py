"""The duet as a mode of the engine loop: feeds the pure ``Duet`` the player's events and
the model's tokens, and acts on its decisions (sample an answer's opening ahead, stop an
answer, hand the turn back). Runs on the engine thread."""

from __future__ import annotations

import math
from typing import Callable

from livepiano.core import codec
from livepiano.core.messages import NOTE_OFF
from livepiano.live.duet import (
    ANSWER,
    LISTEN,
    Duet,
    DuetSettings,
    IgnoreCall,
    Listen,
    StartAnswer,
    StopAnswer,
    pitch_classes,
)
from livepiano.live.loop import STEP_S, TAKE_BACK_MARGIN_S
from livepiano.live.mode import Mode
from livepiano.settings import schema


class DuetMode(Mode):
    """The duet as a mode of ``live.EngineLoop`` (the same hooks as ``live.Mode``): it runs
    on the engine thread, feeds the ``Duet`` the player's events, the pedal, the end-of-call
    control, the clock and every sampled token, and carries out what it answers:

    - ``StartAnswer``: the model hears the silence after the call up to the answer's start,
      its time-shifts are masked until its first note (the answer opens with a note), and a
      conditioned model gets the call's control vector (follow).
    - ``StopAnswer`` for a barge-in: everything not yet sent is taken back and the engine's
      own sounding voices get their note-offs at once (the model hears them too); for the
      answer's end (natural, cap, done): what lies after ``at`` is taken back and what
      sounds at ``at`` is released there. The token that caused the stop is not played.
    - ``Listen``: the control in force before the answer is back.
    - Past the answer's target length the engine may start no new note (``notes_allowed``)
      until the answer ends: it winds down to a natural pause.

    The opening is sampled ahead. The model needs time for its first events (a chord is
    several steps of the model), and an answer sampled only from its start would leave late.
    So once the call is over but for the wait (no key down, pedal up, a call long enough)
    and the answer's start is less than ``OPENING_LEAD_S`` away, the model hears the silence
    up to that start and samples the opening into the scheduler (the loop's look-ahead is
    that long until the start). The duet is told about those tokens at the start. If the player
    plays, presses the pedal or the end-of-call control before then, the opening is taken back (the
    engine is restored to before the silence) and nothing of it has sounded.

    Unlike continuous mode, the loop does not take back the look-ahead on every player event:
    an answer's tail (ENDING) keeps its note-offs; while an answer plays on under the player
    (``finish``, ``overlap``) the look-ahead is taken back so that the model hears the player
    on time, and the duet is told (``on_take_back``)."""

    name = "duet"
    takes_back = False

    def __init__(self, settings: DuetSettings | None = None, *, follow: bool | None = None,
                 say: Callable[[str], None] | None = None):
        self.settings = settings or DuetSettings()
        self.follow_asked = follow
        self.say = say
        self.duet = Duet(self.settings)
        self.loop = None
        self.log: list[tuple[float, object]] = []  # (clock time, action) of every action
        self._listen_control = None
        # the key bias in force before an answer steered it, while one does: (bias,) or None
        self._listen_key: tuple | None = None
        # the opening sampled ahead: (its start, engine snapshot from before the silence,
        # the control before it, [(token, stream time)], the loop's look-ahead), or None
        self._ahead: tuple | None = None

    @classmethod
    def from_settings(cls, s: dict, say: Callable[[str], None] | None = None) -> "DuetMode":
        """From a play session's settings (``schema.SCHEMA``)."""
        return cls(DuetSettings(**schema.duet_settings(s)), follow=s.get("follow"), say=say)

    # --- live.Mode ------------------------------------------------------------------------

    def attach(self, loop) -> None:
        """Called by the loop's constructor, or by the mode knob on the engine thread while the
        model plays: then what it has sounding is released at once (the duet listens first)."""
        self.loop = loop
        conditioned = bool(getattr(loop.engine, "conditioned", False))
        # (the duet's settings: the knobs may have changed them since construction)
        self.duet = Duet(self.duet.settings, conditioned=conditioned)
        self._ahead = None
        loop.restore_lookahead()
        loop.engine.shift_limit = None
        loop.engine.notes_allowed = True
        if any(who == "engine" for _p, _s, who in loop.engine.voices()):
            self._stop(StopAnswer("done", loop.clock()), loop.clock())
        self._listen_key = None
        if self.follow_asked and not conditioned and self.say is not None:
            name = getattr(getattr(loop.engine, "model_path", None), "name", "the model")
            self.say(f"{name} is not a conditioned model: --follow steers its answers by the "
                     f"call's pitch classes only, not by its density.")

    def may_generate(self, now: float) -> bool:
        return self._ahead is not None or self.duet.may_generate(now)

    def idle_wait(self, now: float) -> float:
        d = self._upcoming()
        if d is not None:
            d -= max(OPENING_LEAD_S, self.loop.lookahead)
        else:
            d = self.duet.deadline()
        return 0.05 if d is None else min(max(d - now, 0.0005), 0.05)

    def tick(self, now: float) -> None:
        self.apply(self.duet.tick(now), now)
        if self._ahead is None:
            start = self._upcoming()
            if start is not None and now >= start - max(OPENING_LEAD_S, self.loop.lookahead):
                self._open(start, now)

    def heard(self, events, now: float) -> None:
        """The player's events, before the model hears them."""
        self._interrupt(now)
        self.apply(self.duet.on_player_events(events), now)
        if self.duet.state == ANSWER:  # finish / overlap: the answer plays on under the player
            loop = self.loop
            loop.take_back(now + TAKE_BACK_MARGIN_S)
            self.duet.on_take_back(loop.stream_time())
            loop.engine.shift_limit = 0 if self.duet.awaiting_first_note else None
            loop.engine.notes_allowed = not self.duet.winding_down(loop.stream_time())

    def pedal(self, down: bool, t: float) -> None:
        now = self.loop.clock()
        if down:
            self._interrupt(now)
        self.apply(self.duet.on_player_event("pedal", bool(down), t), now)

    def end_of_call(self, t: float) -> None:
        now = self.loop.clock()
        self._interrupt(now)
        self.apply(self.duet.on_end_of_call_control(t), now)

    def sampled(self, token: int, deadline: float, before) -> bool:
        engine = self.loop.engine
        if self._ahead is not None:  # the opening, before the answer's start
            self._ahead[3].append((token, deadline))
            if engine.shift_limit == 0 and token < codec.NOTE_OFF:
                engine.shift_limit = None
            return True
        actions = self.duet.on_model_event(token, deadline)
        if not actions:
            if engine.shift_limit == 0 and not self.duet.awaiting_first_note:
                engine.shift_limit = None
            engine.notes_allowed = not self.duet.winding_down(deadline)
            return True
        engine.restore(before)  # the token that ended the answer is not part of it
        self.apply(actions, self.loop.clock())
        return False

    def shown(self, now: float) -> dict:
        """The turn as the stage view names it -- ``listening``, ``waiting`` (the call is over
        but for the wait), ``answering``, ``winding down`` (past the answer's target, or its
        end decided) -- and the last answer's latency: the call's last key or pedal up to the
        answer's first note, in ms (None before the first)."""
        duet = self.duet
        if duet.state == ANSWER:
            turn = "winding down" if duet.winding_down(self.loop.stream_time()) else "answering"
        elif duet.state == LISTEN:
            turn = "waiting" if self._ahead is not None or self._upcoming() is not None \
                else "listening"
        else:
            turn = "winding down"
        latency = None
        for t in reversed(duet.turns):
            if t.first_note is not None:
                latency = round((t.first_note - t.call_end) * 1000)
                break
        return {"turn": turn, "answer_latency_ms": latency}

    # --- the opening, sampled ahead -------------------------------------------------------

    def _upcoming(self) -> float | None:
        """When the answer will start if nothing more happens (a call ended but for the wait,
        long enough to be answered), else None."""
        duet = self.duet
        call, s = duet.call, duet.settings
        if duet.state != LISTEN or call is None or call.by_control is not None \
                or not duet.quiet or call.notes < s.min_call_notes \
                or duet.last_event - call.start < s.min_call_s:
            return None
        return duet.deadline()

    def _open(self, start: float, now: float) -> None:
        loop, engine = self.loop, self.loop.engine
        self._ahead = (start, engine.snapshot(), engine.control, [], loop.lookahead)
        loop.extend_lookahead(OPENING_LEAD_S)
        if self.duet.settings.follow:
            tokens = self.duet.call.tokens()
            self._steer_key(pitch_classes(tokens))
            if self.duet.conditioned:
                engine.control = codec.control_vector(tokens)
        engine.shift_limit = 0
        behind = math.ceil((max(start, now) - loop.stream_time()) / STEP_S - 1e-6)
        if behind > 0:
            engine.prime(codec.shifts(behind))

    def _interrupt(self, now: float) -> None:
        """The player acts: an opening sampled ahead is taken back, unless its start has come
        (part of it may have sounded): then the answer starts, and the duet decides (a note
        stamped before the start still barges in)."""
        if self._ahead is not None and now >= self._ahead[0]:
            self.apply(self.duet.tick(now), now)
        self._cancel(now)

    def _cancel(self, now: float) -> None:
        """Take back the opening sampled ahead (none of it has sounded: it lies after now)."""
        if self._ahead is None:
            return
        _start, before, control, _tokens, _lookahead = self._ahead
        self._ahead = None
        loop, engine = self.loop, self.loop.engine
        loop.restore_lookahead()
        loop.take_back(now)
        engine.restore(before)
        engine.control = control
        self._unsteer_key()
        engine.shift_limit = None
        engine.notes_allowed = True

    # --- carrying out the duet's actions ------------------------------------------------------

    def apply(self, actions: list, now: float) -> None:
        for a in actions:
            self.log.append((now, a))
            if isinstance(a, StartAnswer):
                self._start(a, now)
            elif isinstance(a, StopAnswer):
                self._stop(a, now)
            elif isinstance(a, Listen):
                self._listen()
            elif isinstance(a, IgnoreCall):
                self._cancel(now)

    def _start(self, a: StartAnswer, now: float) -> None:
        loop, engine = self.loop, self.loop.engine
        ahead, self._ahead = self._ahead, None
        if ahead is not None and (ahead[0] == a.at or now >= ahead[0]):  # already on its way
            loop.restore_lookahead()
            self._listen_control = ahead[2]
            if a.control is not None:
                engine.control = a.control
            if a.key is not None:
                self._steer_key(a.key)
            for token, t in ahead[3]:
                actions = self.duet.on_model_event(token, t)
                if actions:  # (an answer shorter than its opening)
                    self.apply(actions, now)
                    return
            if engine.shift_limit == 0 and not self.duet.awaiting_first_note:
                engine.shift_limit = None
            return
        if ahead is not None:
            self._ahead = ahead
            self._cancel(now)
        self._listen_control = engine.control
        if a.control is not None:
            engine.control = a.control
        if a.key is not None:
            self._steer_key(a.key)
        engine.shift_limit = 0
        # The model hears the silence after the call, up to the answer's first step (on the
        # 10 ms grid, not before now: the loop would count a stream behind the clock as a
        # stall).
        behind = math.ceil((max(a.at, now) - loop.stream_time()) / STEP_S - 1e-6)
        if behind > 0:
            engine.prime(codec.shifts(behind))

    def _stop(self, a: StopAnswer, now: float) -> None:
        loop, engine = self.loop, self.loop.engine
        at = now if a.reason == "barge-in" else a.at
        loop.take_back(at)
        own = [p for p, _start, who in engine.voices() if who == "engine"]
        if own:
            if a.reason != "barge-in":  # released at the answer's end, where the stream is
                steps = round((at - loop.stream_time()) / STEP_S)
                if steps > 0:
                    engine.prime(codec.shifts(steps))
            for pitch in own:  # first out, then the model hears them (a step per voice)
                loop.scheduler.schedule(at, [NOTE_OFF | loop.channel, pitch, 0])
            engine.release_all()
        engine.shift_limit = None
        engine.notes_allowed = True

    def _listen(self) -> None:
        engine = self.loop.engine
        engine.shift_limit = None
        engine.notes_allowed = True
        if engine.control is not None or self._listen_control is not None:
            engine.control = self._listen_control
        self._listen_control = None
        self._unsteer_key()
        # Each call is heard from a fresh state (what the answer played can no longer be
        # taken back, nor the state before it restored).
        self.loop.forget_pending()
        engine.forget()

    def _steer_key(self, key) -> None:
        """The answer's note-ons lean toward the call's pitch classes (``Engine.key_bias``);
        what was there before comes back when the turn is the player's again."""
        engine = self.loop.engine
        if not hasattr(engine, "key_bias"):
            return
        if self._listen_key is None:
            self._listen_key = (engine.key_bias,)
        engine.key_bias = key

    def _unsteer_key(self) -> None:
        if self._listen_key is not None:
            self.loop.engine.key_bias = self._listen_key[0]
            self._listen_key = None


# How long before the answer's start its opening is sampled (at least the loop's look-ahead):
# enough to ride out a stall of the engine thread on a busy machine.
OPENING_LEAD_S = 0.3

