"""Deadlines -> MIDI messages on time; the set of sounding notes; panic.

The scheduler is the one owner of the output port and of what is sounding on it. Other
threads hand it ``(deadline, message)`` through a queue; deadlines are absolute times on one
monotonic clock, so errors never accumulate over a session. Its thread waits on the queue
until shortly before the next deadline (a new, earlier deadline wakes it), then spins to the
deadline and sends. When it stops -- asked to, or after an exception -- every sounding note
gets its note-off, then All Notes Off (CC123) and pedal up (CC64=0) on the output channel.

Real time. With the engine stepping in another thread, a Python thread that wakes for a
deadline may have to wait for the GIL for a whole switch interval (5 ms by default), for the
CPU when other programs keep the cores busy, and for the GIL again when the thread holding it
was preempted by those programs. ``realtime()`` gives a thread SCHED_FIFO where the system
allows it (the play session gives it to the scheduler, the listener and the engine, in that
order of priority, all below JACK's own threads) and shortens the GIL switch interval; the
README's design section has the measurements behind the choice.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from typing import Callable

from livepiano.core import messages
from livepiano.core.voices import Voices

log = logging.getLogger(__name__)

# Wake this long before a deadline, then spin. Under SCHED_FIFO a wake-up is punctual to tens
# of µs, and a long spin only holds the GIL that the engine thread then takes back after a
# switch interval, making the send late (bench timing --load, 3 runs each: p99 0.39-0.71 ms
# spinning 1 ms, 0.20-0.38 ms spinning 0.2 ms). A plain thread wakes up to a few ms late, and
# there the longer spin wins (147-194 against 191-232 of 3,000 deadlines late by > 1 ms).
SPIN_S = 0.001
SPIN_FIFO_S = 0.0002
SENT_TAGS_KEPT = 512  # tagged messages remembered after sending, for a late take_back
SWITCH_INTERVAL_S = 0.0005
FIFO_PRIORITY = 3  # below JACK: jackd -R runs at 10, its clients' process threads at 5

_STOP = object()
IDLE_GAP_S = 0.004  # idle() runs only when the next deadline is at least this far away
IDLE_POLL_S = 0.5  # with nothing scheduled, idle() still runs this often


def realtime(mode: str, priority: int = FIFO_PRIORITY, switch: bool = True) -> str:
    """Make the *calling* thread as punctual as ``mode`` allows: 'fifo' (SCHED_FIFO at
    ``priority``), 'switch' (a short GIL switch interval, for the whole process), 'auto'
    (both where allowed) or 'off'. Returns a short description of what was done."""
    done = []
    if mode in ("fifo", "auto"):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            done.append(f"SCHED_FIFO priority {priority}")
        except (AttributeError, OSError) as e:
            why = getattr(e, "strerror", None) or "not available here"
            done.append(f"no SCHED_FIFO ({why})")
    if switch and mode in ("switch", "auto"):
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        done.append(f"GIL switch interval {SWITCH_INTERVAL_S * 1000:g} ms")
    return ", ".join(done) or "plain thread"


def _is_fifo() -> bool:
    try:
        return os.sched_getscheduler(0) == os.SCHED_FIFO
    except (AttributeError, OSError):
        return False


def percentile(values, q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Scheduler:
    """Sends messages to ``out`` (anything with ``send_message(list)``) at their deadlines.

    ``schedule`` and ``send_now`` may be called from any thread; ``run`` is the body of the
    scheduler's own thread. ``on_sent(time, message)`` (e.g. the recorder) is called after
    each scheduled message and each panic message, from the thread that sent it; messages
    sent at once (the player's echo) are not reported."""

    def __init__(self, out, channel: int = 0, clock: Callable[[], float] = time.monotonic,
                 on_sent: Callable | None = None, realtime_mode: str = "off",
                 keep_lateness: int = 5000, mirror=None):
        self.out = out
        # What is sounding, also for a process outside this one (the guardian's shared map:
        # anything with set(channel, pitch, voices) and clear()); written by this thread.
        self.mirror = mirror
        self.channel = channel
        self.clock = clock
        self.on_sent = on_sent
        self.realtime_mode = realtime_mode
        self.realtime_note = ""
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.sounding = Voices("oldest")  # keys (channel, pitch)
        self.lateness: deque = deque(maxlen=keep_lateness)  # seconds, one per deadline
        self.deadlines: deque = deque(maxlen=keep_lateness)  # the deadline of each of them
        self.error: BaseException | None = None
        self._heap: list = []  # (deadline, seq, message, tag)
        self._spin = SPIN_S  # run() shortens it once the thread has SCHED_FIFO
        self._sent_tags: dict = {}  # tag -> message, for the last messages sent with a tag
        self._seq = itertools.count()
        self._panicked = False
        self.released = False  # the final panic sent every message it had (set by panic)
        # Work for this thread's spare time (the session's garbage collection): called on
        # this thread with the time left before the next deadline's spin when that is at
        # least IDLE_GAP_S; True if it did something (it took time: the scheduler looks at
        # its inbox and the clock again).
        self.idle: Callable[[float], bool] | None = None
        self._lock = threading.Lock()  # guards the port between run() and a late panic()

    # --- any thread -------------------------------------------------------------------

    def schedule(self, deadline: float, message: list[int], tag=None) -> None:
        """Send ``message`` at ``deadline``; a ``tag`` lets ``take_back`` cancel it."""
        self.inbox.put((deadline, message, tag))

    def send_now(self, message: list[int]) -> None:
        self.inbox.put((None, message, None))

    def take_back(self, tags) -> None:
        """Cancel the scheduled messages with these tags (the engine took those events back).
        One that already left cannot be unsent: if it was a note-on, its note-off goes at
        once, because nobody else knows that the note is sounding any more."""
        tags = set(tags)
        self.call(lambda _scheduler: self._take_back(tags))

    def call(self, fn: Callable) -> None:
        """Run ``fn(scheduler)`` on the scheduler's thread, between two sends (e.g. the duet
        dropping an answer's pending messages and releasing its notes)."""
        self.inbox.put(fn)

    def stop(self) -> None:
        self.inbox.put(_STOP)

    def pending(self) -> int:
        return len(self._heap)

    # --- the scheduler's thread -----------------------------------------------------------

    def run(self) -> None:
        self.realtime_note = realtime(self.realtime_mode)
        self._spin = SPIN_FIFO_S if _is_fifo() else SPIN_S
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - reported by whoever started us
            log.debug("the scheduler thread failed", exc_info=True)
            self.error = e
        finally:
            self.panic()

    def _take(self, item) -> bool:
        if item is _STOP:
            return False
        if callable(item):
            item(self)
            return True
        deadline, message, tag = item
        if deadline is None:
            self._send(message, None)
        else:
            heapq.heappush(self._heap, (deadline, next(self._seq), message, tag))
        return True

    def _take_back(self, tags: set) -> None:
        kept = [item for item in self._heap if item[3] not in tags]
        if len(kept) < len(self._heap):
            self._heap[:] = kept
            heapq.heapify(self._heap)
        for tag in tags:
            message = self._sent_tags.pop(tag, None)
            if message is not None and messages.kind(message) == "on":
                off = [messages.NOTE_OFF | (message[0] & 0x0F), message[1], 0]
                self._send(off, None)
                if self.on_sent is not None:
                    self.on_sent(self.clock(), off)

    def _loop(self) -> None:
        heap, clock, inbox = self._heap, self.clock, self.inbox
        while True:
            # Take everything waiting, then sleep until shortly before the next deadline;
            # anything arriving meanwhile wakes us (it may be earlier).
            try:
                while True:
                    if not self._take(inbox.get_nowait()):
                        return
            except queue.Empty:
                pass
            if not heap:
                if self.idle is not None:
                    if self.idle(IDLE_POLL_S):
                        continue
                    try:
                        if not self._take(inbox.get(timeout=IDLE_POLL_S)):
                            return
                    except queue.Empty:
                        pass
                    continue
                if not self._take(inbox.get()):
                    return
                continue
            wait = heap[0][0] - clock() - self._spin
            if wait > IDLE_GAP_S and self.idle is not None and self.idle(wait):
                continue  # it took some of the wait: look again
            if wait > 0:
                try:
                    if not self._take(inbox.get(timeout=wait)):
                        return
                    continue
                except queue.Empty:
                    pass
            deadline = heap[0][0]
            while clock() < deadline:
                pass
            while heap and heap[0][0] <= deadline:
                _, _, message, tag = heapq.heappop(heap)
                self._send(message, deadline)
                if tag is not None:
                    self._sent_tags[tag] = message
                    if len(self._sent_tags) > SENT_TAGS_KEPT:
                        del self._sent_tags[next(iter(self._sent_tags))]

    def _send(self, message: list[int], deadline: float | None) -> None:
        with self._lock:
            if self._panicked:
                return
            self._announce(message)
            self.out.send_message(message)
            now = self.clock()
        self._track(message)
        if deadline is not None:
            self.deadlines.append(deadline)
            self.lateness.append(now - deadline)
            if self.on_sent is not None:
                self.on_sent(now, message)

    def _announce(self, message: list[int]) -> None:
        """A note-on enters the guardian's map before it is sent: killed between the two, the
        guardian releases a note that may not have sounded (harmless) instead of missing one
        that did. A note-off leaves the map only after it was sent (``_track``)."""
        if self.mirror is not None and messages.kind(message) == "on":
            key = (message[0] & 0x0F, message[1])
            self.mirror.set(key[0], key[1], self.sounding.count(key) + 1)

    def _track(self, message: list[int]) -> None:
        self.sounding.message(message, by_channel=True)
        if self.mirror is not None and messages.kind(message) is not None:
            key = (message[0] & 0x0F, message[1])
            self.mirror.set(key[0], key[1], self.sounding.count(key))

    def release(self) -> list[list[int]]:
        """The panic knob, without ending anything: drop every scheduled message and send a
        note-off for every sounding note, then All Notes Off and pedal up; the scheduler goes
        on with what comes next. Runs on the scheduler's thread (``call``)."""
        with self._lock:
            if self._panicked:
                return []
            messages = self._release_messages()
            for m in messages:
                self.out.send_message(m)
            now = self.clock()
        self.sounding.clear()
        if self.mirror is not None:
            self.mirror.clear()
        self._heap.clear()
        self._sent_tags.clear()
        if self.on_sent is not None:
            for m in messages:
                self.on_sent(now, m)
        return messages

    def _release_messages(self) -> list[list[int]]:
        return messages.release(self.sounding.keys(), (self.channel,))

    def panic(self) -> list[list[int]]:
        """Note-off for every sounding note, then All Notes Off and pedal up; nothing is sent
        after this. Safe to call more than once and from any thread once ``run`` has ended."""
        with self._lock:
            if self._panicked:
                return []
            self._panicked = True
            messages = self._release_messages()
            failed = 0
            for m in messages:
                try:
                    self.out.send_message(m)
                except Exception:  # the port may be gone; keep trying the rest
                    log.debug("a release could not be sent: %s", m, exc_info=True)
                    failed += 1
            self.released = not failed
            now = self.clock()
        for m in messages:
            if self.on_sent is not None:
                self.on_sent(now, m)
        self.sounding.clear()
        if self.mirror is not None and self.released:
            self.mirror.clear()
        self._heap.clear()
        return messages

    # --- figures --------------------------------------------------------------------------

    def lateness_us(self) -> dict:
        values = list(self.lateness)
        us = [v * 1e6 for v in values]
        return {"deadlines": len(us),
                "lateness_us_p50": round(percentile(us, 50), 1),
                "lateness_us_p99": round(percentile(us, 99), 1),
                "lateness_us_max": round(max(us), 1) if us else 0.0,
                "late_over_1ms": sum(1 for v in values if v > 0.001)}
