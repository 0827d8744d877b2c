"""The view server's pages (in the server's own process): the last HISTORY_S of notes, the
frames each connected page is sent, and what a page that falls behind gets instead.

Each frame from the session (``stage.Stage``) holds the events since the one before; here
they join the history, the notes-per-second figures are counted, and the frame goes to every
page's bounded queue. A new page, or one whose queue is full (it stopped reading), loses
what it had queued and gets one whole frame instead: the whole history, the session's origin
on the wall clock and what each control can be set to. Frames are dropped, never the notes
of the history.

A frame (one line of JSON): ``now`` (ms on the session clock, from its origin), ``ev``
(events ``[who, ms, pitch, velocity]``: who ``p`` (the pianist) or ``m`` (the model),
velocity 0 for a note-off, pitch -1 for all of that player's notes off) and ``st`` (the
status). A whole frame also has ``reset``, ``origin_epoch_ms``, ``history_s`` and
``params``.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import deque
from typing import Callable

from livepiano.settings import params

PLAYER, MODEL = "p", "m"
HISTORY_S = 20.0  # what a page shows (and what a whole frame holds)
RATE_S = 2.0  # notes per second over this window
PAGE_FRAMES = 40  # frames queued for one page (2 s of frames) before it is resynced
MAX_PAGES = 8


class Page:
    """One connected page: its bounded queue of encoded frames. The frames' thread offers,
    the page's HTTP thread takes."""

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


class Pages:
    """The connected pages and the history they are drawn from. ``feed`` runs on the thread
    that reads the session's frames; ``connect``/``disconnect`` on the HTTP threads."""

    def __init__(self, on_count: Callable[[int], None] | None = None,
                 history_s: float = HISTORY_S):
        self.on_count = on_count  # told the number of pages whenever it changes
        self.history_s = history_s
        self.history: deque = deque()  # [who, ms, pitch, velocity], in time order
        self.params = params_spec()
        self.status: dict = {}
        self.now = 0
        self.origin_epoch_ms = 0.0
        self.frames = 0
        self._pages: list[Page] = []
        self._lock = threading.Lock()

    def connect(self) -> Page | None:
        """A new page (None when MAX_PAGES are connected); its first frame is a whole one."""
        with self._lock:
            if len(self._pages) >= MAX_PAGES:
                return None
            page = Page()
            self._pages.append(page)
            count = len(self._pages)
        if self.on_count is not None:
            self.on_count(count)
        return page

    def disconnect(self, page: Page) -> None:
        with self._lock:
            if page not in self._pages:
                return
            self._pages.remove(page)
            count = len(self._pages)
        if self.on_count is not None:
            self.on_count(count)

    def count(self) -> int:
        with self._lock:
            return len(self._pages)

    def feed(self, frame: dict) -> bytes:
        """A frame from the session: into the history, then to every page; what was sent."""
        self.now = frame["now"]
        self.origin_epoch_ms = frame.get("origin_epoch_ms", self.origin_epoch_ms)
        new = frame.get("ev", [])
        history = self.history
        history.extend(new)
        horizon = self.now - (self.history_s + 2.0) * 1000
        while history and history[0][1] < horizon:
            history.popleft()
        self.status = dict(frame.get("st", {}), **self._rates())
        encoded = encode({"now": self.now, "ev": new, "st": self.status})
        whole_frame: list = []

        def whole() -> bytes:  # made once per frame, for the pages that need one
            if not whole_frame:
                whole_frame.append(self.whole_frame())
            return whole_frame[0]

        with self._lock:
            pages = list(self._pages)
        for page in pages:
            page.offer(encoded, whole)
        self.frames += 1
        return encoded

    def whole_frame(self) -> bytes:
        return encode({"reset": True, "now": self.now, "ev": list(self.history),
                       "st": self.status, "origin_epoch_ms": round(self.origin_epoch_ms, 1),
                       "history_s": self.history_s, "params": self.params})

    def _rates(self) -> dict:
        since = self.now - RATE_S * 1000
        counts = {PLAYER: 0, MODEL: 0}
        for who, t, _pitch, velocity in reversed(self.history):
            if t < since:
                break
            if velocity > 0:
                counts[who] += 1
        return {"in_per_s": round(counts[PLAYER] / RATE_S, 1),
                "out_per_s": round(counts[MODEL] / RATE_S, 1)}

    def close(self) -> None:
        """Every page's event stream ends."""
        with self._lock:
            pages = list(self._pages)
        for page in pages:
            page.offer(None, bytes)


def encode(frame: dict) -> bytes:
    return json.dumps(frame, separators=(",", ":")).encode()


def params_spec() -> list[dict]:
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
