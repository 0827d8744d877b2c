"""What leaves a play session for the stage view: a bounded, lossy hand-off from the real-time
threads, and the frames the view thread makes of it for the view's server process.

    listener thread:  heard(events)    -> one deque append per event (never blocks)
    scheduler thread: sent(t, message) -> one deque append per note message (never blocks)
    engine thread:    a snapshot of the mode, the turn and the knob values, every SNAPSHOT_S,
                      asked for through ``EngineLoop.call`` (the engine thread owns them)
    main thread:      input(state) when the input port goes or comes back
    the view thread:  every FRAME_S while a page is open: drain, make one small frame (the
                      new events and the status), hand it to ``sink`` (which never blocks)

Nothing here makes a real-time thread wait: the hand-off is a ``deque`` with a maximum length
(when nobody drains it, the oldest events go). Everything else -- the history, the pages,
HTTP, JSON for a page that (re)connects -- happens in the server's own process
(``process``, ``server``, ``pages``), which cannot hold this process's GIL.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from typing import Callable

from livepiano.core.messages import CONTROL, NOTE_OFF, NOTE_ON
from livepiano.live.scheduler import percentile

log = logging.getLogger(__name__)

PLAYER, MODEL = "p", "m"
FRAME_S = 0.05  # a frame every this often while a page is open
SNAPSHOT_S = 0.1  # the engine thread's state this often
FIGURES_S = 0.5  # the scheduler's lateness p99 this often
EVENTS_KEPT = 16384  # the hand-off's bound: about 20 s of two players at 200 notes/s each
ALL_NOTES_OFF = 123


class Stage:
    """The hand-off between a session's threads and the stage view (see the module docstring).
    ``heard``, ``sent`` and ``input`` may be called from any thread and never block; ``run`` is
    the view thread's body; ``pages`` (how many pages are open) is set by the server's
    reader."""

    def __init__(self, loop, scheduler, knobs=None, *, clock: Callable[[], float] = time.monotonic,
                 labels: dict | None = None):
        """``loop``: the session's ``EngineLoop``; ``scheduler``: its ``Scheduler`` (its
        ``lateness`` figures are read); ``knobs``: its ``Knobs`` (None: nothing to steer);
        ``labels``: what the ports are called (``in``, ``out``)."""
        self.loop = loop
        self.scheduler = scheduler
        self.knobs = knobs
        self.clock = clock
        self.labels = dict(labels or {})
        self.sink: Callable[[bytes], None] | None = None  # where the frames go (never blocks)
        self._events: deque = deque(maxlen=EVENTS_KEPT)
        self._snapshot: dict = {}  # replaced whole by the engine thread
        self._input = "ok"
        self._pages = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.frames = 0  # frames made (the view thread's)
        self.error: BaseException | None = None

    # --- any thread, never blocking ---------------------------------------------------------

    def heard(self, events) -> None:
        """The player's note events (``listener.PlayerEvent``), as the engine hears them."""
        add = self._events.append
        for e in events:
            add((PLAYER, e.time, e.pitch, e.velocity if e.on else 0))

    def sent(self, t: float, message) -> None:
        """A message the scheduler sent at ``t`` (its ``on_sent``)."""
        status = message[0] & 0xF0
        if status == NOTE_ON or status == NOTE_OFF:
            self._events.append((MODEL, t, message[1],
                                 message[2] if status == NOTE_ON else 0))
        elif status == CONTROL and message[1] == ALL_NOTES_OFF:
            self._events.append((MODEL, t, -1, 0))

    def input(self, state: str) -> None:
        """The input port's state (``ok``, ``gone``), from the session's main thread."""
        self._input = state

    @property
    def pages(self) -> int:
        return self._pages

    @pages.setter
    def pages(self, count: int) -> None:
        self._pages = count
        self._wake.set()

    # --- the view thread ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self, prepare: Callable | None = None) -> None:
        """The view thread's body: a frame every FRAME_S while a page is open."""
        try:
            if prepare is not None:
                prepare()
            self._loop()
        except BaseException as e:  # noqa: BLE001 - the view must never end the session
            log.debug("the view thread failed", exc_info=True)
            self.error = e

    def _loop(self) -> None:
        next_snapshot = next_figures = 0.0
        figures: dict = {}
        while not self._stop.is_set():
            if not self._pages:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            now = self.clock()
            if now >= next_snapshot:
                next_snapshot = now + SNAPSHOT_S
                self.loop.call(self._take_snapshot)
            if now >= next_figures:
                next_figures = now + FIGURES_S
                figures = self._figures()
            frame = self.frame(now, figures)
            if self.sink is not None:
                self.sink(frame)
            self._stop.wait(max(0.0, now + FRAME_S - self.clock()))

    def frame(self, now: float, figures: dict | None = None) -> bytes:
        """This moment's frame: the events since the last one and the status (one line)."""
        events, ms = self._events, self._ms
        new = []
        while True:
            try:
                who, t, pitch, velocity = events.popleft()
            except IndexError:
                break
            new.append([who, ms(t), pitch, velocity])
        st = dict(self._snapshot)
        st.update(figures or {})
        st["input"] = self._input
        st.update({f"{k}_label": v for k, v in self.labels.items()})
        self.frames += 1
        return json.dumps({"now": ms(now), "origin_epoch_ms": round(self.origin_epoch_ms(), 1),
                           "ev": new, "st": st}, separators=(",", ":")).encode() + b"\n"

    def _figures(self) -> dict:
        late = [v * 1000 for v in list(self.scheduler.lateness)[-1000:]]
        return {"late_p99_ms": round(percentile(late, 99), 2) if late else None}

    def _take_snapshot(self, engine) -> None:
        """On the engine thread (through ``loop.call``): the state it owns, handed over whole."""
        loop = self.loop
        snap = {"mode": loop.mode.name, "lookahead_ms": round(loop.lookahead * 1000),
                "temperature": round(float(engine.temperature), 3)}
        shown = getattr(loop.mode, "shown", None)
        if shown is not None:
            snap.update(shown(loop.clock()))
        if self.knobs is not None:
            snap["values"] = self.knobs.values()
        self._snapshot = snap

    @property
    def origin(self) -> float:
        """The session's origin on its clock (the loop's: a benchmark may set it late)."""
        return self.loop.origin

    def origin_epoch_ms(self) -> float:
        """The session's origin on the wall clock (when its clock is time.monotonic)."""
        return (time.time() - (time.monotonic() - self.origin)) * 1000

    def _ms(self, t: float) -> int:
        return int(math.floor((t - self.origin) * 1000 + 0.5))
