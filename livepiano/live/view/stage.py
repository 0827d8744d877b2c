"""What leaves a play session for the stage view: a bounded, lossy hand-off from the real-time
threads, and the frames the view's own thread makes of it for each connected page.

    listener thread:  heard(events)   -> one deque append per event (never blocks)
    scheduler thread: sent(t, message) -> one deque append per note message (never blocks)
    engine thread:    a snapshot of the mode, the turn and the knob values, every SNAPSHOT_S,
                      asked for through ``EngineLoop.call`` (the engine thread owns them)
    main thread:      input(state) when the input port goes or comes back
    the view thread:  every FRAME_S while a page is connected: drain, keep the last
                      HISTORY_S, make one frame, offer it to each page's queue

Nothing here ever makes a real-time thread wait: the hand-off is a ``deque`` with a maximum
length (when nobody drains it, the oldest events go), and each page has a bounded queue of
frames; a page that falls behind loses its queued frames and gets one whole frame (the last
HISTORY_S of notes) instead. Frames are dropped, never notes: the session plays on whatever
the view does.

A frame is one line of JSON: ``now`` (ms on the session clock, from its origin), ``ev`` (new
events ``[who, ms, pitch, velocity]``: who ``p`` (the pianist) or ``m`` (the model), velocity 0
for a note-off, pitch -1 for all of that player's notes off) and ``st`` (the status). A whole
frame also has ``reset``, ``origin_epoch_ms`` (the session origin on the wall clock), the
history's length and ``params``: what each control can be set to (the knob's 128 positions).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import deque
from typing import Callable

from livepiano.core.messages import CONTROL, NOTE_OFF, NOTE_ON
from livepiano.live.scheduler import percentile
from livepiano.settings import params

log = logging.getLogger(__name__)

PLAYER, MODEL = "p", "m"
FRAME_S = 0.05  # a frame every this often while a page is connected
SNAPSHOT_S = 0.1  # the engine thread's state this often
FIGURES_S = 0.5  # the scheduler's lateness p99 this often
RATE_S = 2.0  # notes per second over this window
HISTORY_S = 20.0  # what a page shows (and what a whole frame holds)
EVENTS_KEPT = 16384  # the hand-off's bound: about 20 s of two players at 200 notes/s each
PAGE_FRAMES = 40  # frames queued for one page (2 s of frames) before it is resynced
MAX_PAGES = 8
ALL_NOTES_OFF = 123


class Page:
    """One connected page: its bounded queue of encoded frames. The view thread offers, the
    page's HTTP thread takes."""

    def __init__(self):
        self.frames: queue.Queue = queue.Queue(maxsize=PAGE_FRAMES)
        self.resync = True  # the next frame it gets is a whole one
        self.dropped = 0  # frames it lost by falling behind
        self.closed = False

    def offer(self, frame: bytes | None, whole: Callable[[], bytes]) -> None:
        """Queue ``frame`` (None: close), or, when the page is new or behind, a whole frame."""
        if frame is None:
            self.closed = True
        elif self.resync:
            frame = whole()
        try:
            self.frames.put_nowait(frame)
            if frame is not None:
                self.resync = False
            return
        except queue.Full:
            pass
        while True:  # behind: what it had queued goes, a whole frame follows
            try:
                self.frames.get_nowait()
                self.dropped += 1
            except queue.Empty:
                break
        self.resync = frame is not None
        if frame is None:
            self.frames.put_nowait(None)

    def next(self, timeout: float) -> bytes | None | bool:
        """The next frame; None once closed; False when none came within ``timeout``."""
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            return None if self.closed else False


class Stage:
    """The hand-off between a session's threads and the stage view (see the module docstring).
    ``heard``, ``sent`` and ``input`` may be called from any thread and never block; ``run`` is
    the view thread's body; ``connect``/``disconnect`` come from the server's threads."""

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
        self._events: deque = deque(maxlen=EVENTS_KEPT)
        self._snapshot: dict = {}  # replaced whole by the engine thread
        self._input = "ok"
        self._pages: list[Page] = []
        self._lock = threading.Lock()  # guards _pages
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._history: deque = deque()  # the view thread's: events of the last HISTORY_S
        self._params = _params_spec()
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

    # --- the server's threads ---------------------------------------------------------------

    def connect(self) -> Page | None:
        """A new page (None when MAX_PAGES are connected); its first frame is a whole one."""
        with self._lock:
            if len(self._pages) >= MAX_PAGES:
                return None
            page = Page()
            self._pages.append(page)
        self._wake.set()
        return page

    def disconnect(self, page: Page) -> None:
        with self._lock:
            if page in self._pages:
                self._pages.remove(page)

    def pages(self) -> int:
        with self._lock:
            return len(self._pages)

    # --- the view thread ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self, prepare: Callable | None = None) -> None:
        """The view thread's body: a frame every FRAME_S while a page is connected."""
        try:
            if prepare is not None:
                prepare()
            self._loop()
        except BaseException as e:  # noqa: BLE001 - the view must never end the session
            log.debug("the view thread failed", exc_info=True)
            self.error = e
        finally:
            with self._lock:
                pages = list(self._pages)
            for page in pages:
                page.offer(None, bytes)

    def _loop(self) -> None:
        next_snapshot = next_figures = 0.0
        figures: dict = {}
        while not self._stop.is_set():
            if not self.pages():
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
            self.tick(now, figures)
            self._stop.wait(max(0.0, now + FRAME_S - self.clock()))

    def tick(self, now: float, figures: dict | None = None) -> bytes:
        """Drain the hand-off, make this moment's frame and offer it to every page."""
        new = self._drain(now)
        status = self.status(now, figures or {})
        frame = _encode({"now": self._ms(now), "ev": new, "st": status})
        whole_frame: list = []

        def whole() -> bytes:  # made once per tick, for the pages that need one
            if not whole_frame:
                whole_frame.append(self.whole_frame(now, status))
            return whole_frame[0]

        with self._lock:
            pages = list(self._pages)
        for page in pages:
            page.offer(frame, whole)
        self.frames += 1
        return frame

    def _drain(self, now: float) -> list:
        events, history, ms = self._events, self._history, self._ms
        new = []
        while True:
            try:
                who, t, pitch, velocity = events.popleft()
            except IndexError:
                break
            item = [who, ms(t), pitch, velocity]
            new.append(item)
            history.append(item)
        horizon = ms(now - HISTORY_S - 2.0)
        while history and history[0][1] < horizon:
            history.popleft()
        return new

    def whole_frame(self, now: float, status: dict) -> bytes:
        return _encode({"reset": True, "now": self._ms(now), "ev": list(self._history),
                        "st": status, "origin_epoch_ms": round(self.origin_epoch_ms(), 1),
                        "history_s": HISTORY_S, "params": self._params})

    def status(self, now: float, figures: dict) -> dict:
        """The status part of a frame: the engine thread's last snapshot, the rates of notes
        over the last RATE_S, the scheduler's figures, the ports."""
        st = dict(self._snapshot)
        since = self._ms(now - RATE_S)
        counts = {PLAYER: 0, MODEL: 0}
        for who, t, _pitch, velocity in reversed(self._history):
            if t < since:
                break
            if velocity > 0:
                counts[who] += 1
        st["in_per_s"] = round(counts[PLAYER] / RATE_S, 1)
        st["out_per_s"] = round(counts[MODEL] / RATE_S, 1)
        st.update(figures)
        st["input"] = self._input
        st.update({f"{k}_label": v for k, v in self.labels.items()})
        return st

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


def _encode(frame: dict) -> bytes:
    return json.dumps(frame, separators=(",", ":"), default=_plain).encode()


def _plain(value):
    """numpy numbers and the like, for JSON."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _params_spec() -> list[dict]:
    """What the page's controls can be set to, from the knobs' own definitions: a numeric
    knob's value at each of its 128 positions, a stepped knob's or a toggle's choices; and the
    actions (buttons)."""
    out = []
    for name in params.SETTABLE:
        p = params.PARAMS[name]
        spec = {"name": name, "label": name.replace("_", " "), "help": p.help, "unit": p.unit,
                "digits": p.digits}
        if p.curve is not None:
            spec["kind"] = "range"
            spec["values"] = [round(p.value_at(q), 4) for q in range(params.TOP + 1)]
        else:
            spec["kind"] = "choice"
            spec["choices"] = list(p.choices)
        out.append(spec)
    for name in params.PRESSABLE:
        p = params.PARAMS[name]
        out.append({"name": name, "label": name.replace("_", " "), "help": p.help,
                    "kind": "action"})
    return out
