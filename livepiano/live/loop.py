"""The engine loop: the engine thread's body, between the listener's events and the
scheduler's deadlines, with the look-ahead and the take-back.

The engine thread owns the ``Engine`` and everything here; other threads reach it only through
``hear``, ``hear_pedal``, ``hear_end_of_call``, ``call`` and ``stop``, which post to its inbox.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import time
from collections import deque
from typing import Callable

from livepiano.core import codec
from livepiano.core.messages import NOTE_OFF, NOTE_ON
from livepiano.live.listener import PlayerEvent, StreamPosition, player_tokens
from livepiano.live.mode import Continuous, Mode
from livepiano.live.scheduler import Scheduler

log = logging.getLogger(__name__)


class EngineLoop:
    """The engine's thread: primes the player's events as they come, samples the model's
    while its stream is less than ``lookahead`` ahead of the clock, and hands each of its
    note events to the scheduler with the deadline of its step.

    Taking back: the model's stream runs ahead of the clock, by up to ``lookahead`` for its
    notes and by up to a whole sampled silence (a time-shift of up to 1 s) beyond that. When
    the player plays, the events the model sampled for after that moment (plus a small
    margin) are taken back -- the engine is restored to its snapshot from before them and the
    scheduler cancels their messages -- so that the model hears the player at the right time
    and answers from there, instead of after its own look-ahead."""

    def __init__(self, engine, scheduler: Scheduler, *, origin: float, lookahead: float = 0.1,
                 channel: int = 0, mode: Mode | None = None,
                 clock: Callable[[], float] = time.monotonic, step_s: float | None = None,
                 on_sampled: Callable[[int, float], None] | None = None):
        """``step_s``: clock seconds per step of the stream (a benchmark plays it faster than
        real time); ``on_sampled(token, begins)``: called on the engine thread after each
        sampled event, with the stream time at which it begins (a benchmark times them)."""
        self.engine = engine
        self.scheduler = scheduler
        self.origin = origin
        self.lookahead = lookahead
        self.channel = channel
        self.mode = mode or Continuous()
        self.clock = clock
        self.step_s = STEP_S if step_s is None else step_s
        self.on_sampled = on_sampled
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.taken_back = 0  # model events taken back because the player played
        # (stream time after the event, engine snapshot from before it, scheduler tags) of
        # the model's events that are not yet in the past
        self._pending: deque = deque()
        self._tags = itertools.count()
        self.caught_up_steps = 0  # silence inserted because the model fell behind the clock
        self._own_lookahead: float | None = None  # set while a mode has lengthened it
        self.mode.attach(self)
        self.velocity_scale = 1.0  # the dynamics knob: scales the model's output velocities
        # After the player's event, keep the silence the model had chosen (_keep_silence)
        self.keep_silence = True
        # ... and strike with the player's note-ons inside it (_join)
        self.join_onsets = True

    # --- any thread ---------------------------------------------------------------------

    def hear(self, events: list[PlayerEvent]) -> None:
        self.inbox.put(events)

    def call(self, fn: Callable) -> None:
        """Run ``fn(engine)`` on the engine thread (e.g. ``lambda e: setattr(e, 'temperature',
        0.8)`` from a knob); it takes effect from the next sampled event."""
        self.inbox.put(fn)

    def stop(self) -> None:
        self.inbox.put(_STOP)

    def hear_pedal(self, down: bool, t: float) -> None:
        """The player's sustain pedal (the listener folds it into the notes; a mode that
        takes turns needs it too: a pedal held in silence keeps the phrase open)."""
        self.inbox.put(lambda _engine: self.mode.pedal(down, t))

    def hear_end_of_call(self, t: float) -> None:
        self.inbox.put(lambda _engine: self.mode.end_of_call(t))  # as the knob does

    # --- the engine thread --------------------------------------------------------------

    def stream_time(self) -> float:
        return self.origin + self.engine.steps * self.step_s

    def extend_lookahead(self, seconds: float) -> None:
        """Let the model run up to ``seconds`` ahead of the clock (a duet answer's opening is
        sampled ahead) until ``restore_lookahead``."""
        if self._own_lookahead is None:
            self._own_lookahead = self.lookahead
        self.lookahead = max(seconds, self._own_lookahead)

    def restore_lookahead(self) -> None:
        """The loop's own look-ahead back (also when another mode is attached meanwhile)."""
        if self._own_lookahead is not None:
            self.lookahead = self._own_lookahead
            self._own_lookahead = None

    def forget_pending(self) -> None:
        """Nothing sampled so far can be taken back any more (its messages stay scheduled)."""
        self._pending.clear()

    def run(self, prepare: Callable | None = None) -> None:
        """The engine thread's body (``prepare`` runs first, e.g. to set its priority)."""
        try:
            if prepare is not None:
                prepare()
            self._loop()
        except BaseException as e:  # noqa: BLE001 - the main thread reports it
            log.debug("the engine thread failed", exc_info=True)
            self.error = e

    def _take(self, item) -> bool:
        if item is _STOP:
            return False
        if callable(item):
            item(self.engine)
            return True
        now = self.clock()
        self.mode.heard(item, now)
        silence_until = None
        if self.mode.takes_back:
            silence_until = self.take_back(now + TAKE_BACK_MARGIN_S)
        tokens = player_tokens(item, StreamPosition.of(self.engine), self.origin)
        self.engine.prime(tokens)
        if silence_until is not None and self.keep_silence:
            if self.join_onsets and any(ev.on for ev in item):
                self._join(silence_until)
            self._keep_silence(silence_until)
        return True

    def _join(self, silence_until: float) -> None:
        """The player struck a note inside a silence the model had chosen (until
        ``silence_until``): the model may strike with it -- its note-ons (and their
        velocities) sampled there are kept, and the first event of any other kind is dropped,
        so the silence it had chosen goes on (``_keep_silence``). Only note-ons may join:
        letting a release or a shorter silence through as well cut the model's notes to
        blips.

        The player's step is already past by the time it gets here: the model's stream is
        first moved on to the first step at least JOIN_MARGIN_S ahead of the clock (as its
        own silence), so that its notes are neither sent late nor taken back once sent;
        nothing joins where that step is already the silence's end."""
        engine, pending = self.engine, self._pending
        step = math.ceil((self.clock() + JOIN_MARGIN_S - self.origin) / STEP_S)
        if self.origin + step * STEP_S >= silence_until:
            return
        self._feed_silence(step - engine.steps)
        trailing = 0  # velocity events after the last note-on kept
        for _ in range(JOIN_EVENTS):
            before = engine.snapshot()
            begins = self.stream_time()
            tok = engine.sample()
            if self.on_sampled is not None:
                self.on_sampled(tok, begins)
            if self.clock() >= begins or codec.NOTE_OFF <= tok < codec.VELOCITY:
                engine.restore(before)  # too late to send, or not a note-on
                break
            trailing = trailing + 1 if tok >= codec.VELOCITY else 0
            if not self._emit(tok, before):
                return
        while trailing:  # a velocity for no note joined: the model never chose it
            engine.restore(pending.pop()[1])
            trailing -= 1

    def _keep_silence(self, until: float) -> None:
        """The model had chosen to be silent until ``until`` when the player's event came:
        it hears the player, then keeps that silence (fed as its own time-shifts) instead of
        choosing again. Choosing again after every event of the player cut every long
        silence it chose and kept every immediate note: it played more and more notes."""
        self._feed_silence(round((until - self.stream_time()) / STEP_S))

    def _feed_silence(self, steps: int) -> None:
        """``steps`` of silence fed as the model's own time-shifts, each kept where it can
        be taken back."""
        for tok in codec.shifts(steps):
            before = self.engine.snapshot()
            self.engine.feed(tok)
            self._pending.append((self.stream_time(), before, ()))

    def _loop(self) -> None:
        inbox = self.inbox
        while True:
            wait = self.turn()
            if wait is None:
                return
            if wait > 0:
                try:
                    if not self._take(inbox.get(timeout=wait)):
                        return
                except queue.Empty:
                    pass

    def turn(self) -> float | None:
        """One pass of the engine thread at ``clock()``: take everything in the inbox, tell
        the mode the time, sample at most one event. Returns how long to wait for the inbox
        before the next pass (0: go on at once), or None once stopped. ``run`` loops on it;
        a benchmark on a simulated clock calls it directly, so both run the same code."""
        inbox, engine = self.inbox, self.engine
        try:
            while True:
                if not self._take(inbox.get_nowait()):
                    return None
        except queue.Empty:
            pass
        now = self.clock()
        self.mode.tick(now)
        if not self.mode.may_generate(now):
            return self.mode.idle_wait(now)
        ahead = self.stream_time() - now
        if ahead >= self.lookahead:
            return ahead - self.lookahead + 0.001
        if ahead < 0:
            # The model fell behind the clock (start-up, a stall): it hears the silence
            # that really passed, so that its next events are not already late.
            behind = int(-ahead / STEP_S + 1)
            self.caught_up_steps += behind
            self.forget_pending()
            engine.prime(codec.shifts(behind))
        self._step(now)
        return 0.0

    def _step(self, now: float) -> None:
        engine, pending = self.engine, self._pending
        while pending and pending[0][0] <= now:  # in the past: never taken back
            pending.popleft()
        before = engine.snapshot()
        if self.on_sampled is None:
            tok = engine.sample()
        else:
            begins = self.stream_time()
            tok = engine.sample()
            self.on_sampled(tok, begins)
        self._emit(tok, before)

    def _emit(self, tok: int, before) -> bool:
        """The model's ``tok``, just sampled (``before``: the engine's snapshot from before
        it): scheduled at its step's deadline and kept where it can be taken back. False
        when the mode dropped it."""
        engine = self.engine
        deadline = self.stream_time()
        if not self.mode.sampled(tok, deadline, before):
            return False
        tags = ()
        if tok < codec.TIME_SHIFT:
            tag = next(self._tags)
            tags = (tag,)
            if tok < codec.NOTE_OFF:
                velocity = codec.bin_to_velocity(engine.velocity_bin or 16)
                if self.velocity_scale != 1.0:
                    velocity = min(127, max(1, round(velocity * self.velocity_scale)))
                message = [NOTE_ON | self.channel, tok, velocity]
            else:
                message = [NOTE_OFF | self.channel, tok - codec.NOTE_OFF, 0]
            self.scheduler.schedule(deadline, message, tag)
        self._pending.append((deadline, before, tags))
        return True

    def take_back(self, cutoff: float) -> float | None:
        """Take back the model's events that lie after ``cutoff`` on the clock. Returns the
        time the silence the model had chosen at ``cutoff`` would have ended (the end of
        the time-shifts that open what is taken back), None when it had chosen none."""
        pending = self._pending
        first = next((i for i, item in enumerate(pending) if item[0] > cutoff), None)
        if first is None:
            return None
        silence_until = None
        for deadline, before, _tags in itertools.islice(pending, first, None):
            if deadline <= self.origin + before.steps * STEP_S:
                break  # not a time-shift: the silence ends here
            silence_until = deadline
        self.engine.restore(pending[first][1])
        tags = [tag for i in range(first, len(pending)) for tag in pending[i][2]]
        self.taken_back += len(pending) - first
        while len(pending) > first:
            pending.pop()
        if tags:
            self.scheduler.take_back(tags)
        return silence_until


STEP_S = 1.0 / codec.STEPS_PER_SECOND


# The most events the model may sample at the player's note-on (_join): a chord of
# velocity + note-on pairs, with room for a few more.
JOIN_EVENTS = 12
# Time for the engine to sample them and the scheduler to take them: a note sent as soon
# as it was sampled went out up to a GIL switch late.
JOIN_MARGIN_S = 0.005


TAKE_BACK_MARGIN_S = 0.003  # model events due sooner than this after the player's stay


_STOP = object()

