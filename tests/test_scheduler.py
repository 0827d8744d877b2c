"""Scheduler, listener encoding and the engine loop, without ports."""

from __future__ import annotations

import threading
import time

import pytest
from jackserver import DATA, tiny_model  # noqa: F401 (a fixture)

from livepiano.core import codec
from livepiano.core.midifile import midi_file_tokens
from livepiano.live.listener import PedalEncoder, PlayerEvent, StreamPosition, player_tokens
from livepiano.live.loop import EngineLoop
from livepiano.live.scheduler import Scheduler


class FakeOut:
    """A port that records what it is sent. ``fail_after``: every message from that many on
    raises, as a vanished port does; ``fail_at``: only the messages at those positions (counted
    over every attempt) raise. ``tried`` keeps every attempt, failed or not."""

    def __init__(self, fail_after: int | None = None, fail_at: tuple[int, ...] = ()):
        self.sent: list[tuple[float, list[int]]] = []
        self.tried: list[list[int]] = []
        self.fail_after = fail_after
        self.fail_at = set(fail_at)

    def send_message(self, message):
        self.tried.append(list(message))
        if (self.fail_after is not None and len(self.sent) >= self.fail_after) \
                or len(self.tried) - 1 in self.fail_at:
            raise OSError("port gone")
        self.sent.append((time.monotonic(), list(message)))


def _run(scheduler):
    t = threading.Thread(target=scheduler.run, daemon=True)
    t.start()
    return t


# --- scheduler ---------------------------------------------------------------------------

def test_messages_leave_in_deadline_order_never_early():
    out = FakeOut()
    s = Scheduler(out, channel=0)
    t = _run(s)
    now = time.monotonic()
    plan = [(0.06, [0x90, 62, 80]), (0.02, [0x90, 60, 80]), (0.10, [0x80, 60, 0]),
            (0.04, [0x90, 64, 80])]
    for dt, m in plan:
        s.schedule(now + dt, m)
    time.sleep(0.3)
    # A deadline earlier than the one the scheduler is waiting for still goes first.
    now2 = time.monotonic()
    s.schedule(now2 + 0.2, [0x90, 70, 80])
    s.schedule(now2 + 0.05, [0x90, 72, 80])
    time.sleep(0.35)
    s.stop()
    t.join(2)
    notes = [m for _, m in out.sent if m[0] & 0xF0 in (0x80, 0x90)]
    assert [m[1] for m in notes[:6]] == [60, 64, 62, 60, 72, 70]
    deadlines = sorted(now + dt for dt, _ in plan) + [now2 + 0.05, now2 + 0.2]
    for (sent_at, _), deadline in zip(out.sent, deadlines):
        assert sent_at >= deadline
    assert s.lateness_us()["deadlines"] == 6


def test_stop_releases_every_voice_then_all_notes_off_and_pedal_up():
    out = FakeOut()
    s = Scheduler(out, channel=2)
    t = _run(s)
    for m in ([0x92, 60, 80], [0x92, 60, 90], [0x92, 62, 80], [0x82, 62, 0], [0x92, 67, 70]):
        s.send_now(m)
    s.schedule(time.monotonic() + 10, [0x82, 67, 0])  # never reached
    time.sleep(0.1)
    s.stop()
    t.join(2)
    tail = [m for _, m in out.sent[5:]]
    assert sorted(tail[:3]) == [[0x82, 60, 0], [0x82, 60, 0], [0x82, 67, 0]]
    assert tail[3:] == [[0xB2, 123, 0], [0xB2, 64, 0]]
    assert not s.sounding and s.panic() == []  # once only, and nothing after it
    s.send_now([0x92, 1, 1])
    assert len(out.sent) == 10


def test_call_runs_on_the_scheduler_thread_between_sends():
    out = FakeOut()
    s = Scheduler(out)
    t = _run(s)
    s.schedule(time.monotonic() + 5, [0x90, 60, 80])
    seen = []
    s.call(lambda sch: seen.append((threading.current_thread() is t, sch.pending())))
    s.call(lambda sch: sch._heap.clear())
    time.sleep(0.1)
    s.stop()
    t.join(2)
    assert seen == [(True, 1)] and out.sent[-2:] == [(out.sent[-2][0], [0xB0, 123, 0]),
                                                    (out.sent[-1][0], [0xB0, 64, 0])]
    assert len(out.sent) == 2


def test_take_back_cancels_pending_and_ends_a_note_that_already_left():
    out = FakeOut()
    s = Scheduler(out)
    t = _run(s)
    now = time.monotonic()
    s.schedule(now + 0.01, [0x90, 60, 80], tag=1)
    s.schedule(now + 0.50, [0x80, 60, 0], tag=2)
    s.schedule(now + 0.50, [0x90, 64, 80], tag=3)
    time.sleep(0.1)
    s.take_back([1, 2, 3])  # 1 already left: it gets its note-off now
    time.sleep(0.6)
    s.stop()
    t.join(2)
    assert [m for _, m in out.sent] == [[0x90, 60, 80], [0x80, 60, 0],
                                        [0xB0, 123, 0], [0xB0, 64, 0]]


def test_a_failing_port_is_reported_and_still_panics():
    # A port gone for good: the scheduler stops, keeps the error, and still tries to release
    # every voice it left sounding, then All Notes Off and pedal up.
    out = FakeOut(fail_after=2)
    s = Scheduler(out, channel=3)
    t = _run(s)
    for p in (60, 61, 62):
        s.send_now([0x93, p, 80])
    t.join(2)
    assert isinstance(s.error, OSError)
    assert not t.is_alive()
    assert out.tried[3:] == [[0x83, 60, 0], [0x83, 61, 0], [0xB3, 123, 0], [0xB3, 64, 0]]
    assert not s.released
    # A port that failed once and came back: the same release reaches it.
    out = FakeOut(fail_at=(2,))
    s = Scheduler(out, channel=3)
    t = _run(s)
    for p in (60, 61, 62):
        s.send_now([0x93, p, 80])
    t.join(2)
    assert isinstance(s.error, OSError) and not t.is_alive()
    assert [m for _, m in out.sent[2:]] == [[0x83, 60, 0], [0x83, 61, 0], [0xB3, 123, 0],
                                            [0xB3, 64, 0]]
    assert s.released and not s.sounding


# --- listener encoding -------------------------------------------------------------------

def _events_of(path) -> list[tuple[float, list[int]]]:
    """The note and pedal messages of a MIDI file at their times; at one time the pedal
    first, as in Magenta's sustain pass, then note-offs before note-ons, as a keyboard sends
    a re-struck key."""
    notes, controls = codec.read_midi(path.read_bytes())
    rows = []
    for n in notes:
        rows.append((n.start, 3, [0x90, n.pitch, n.velocity]))
        rows.append((n.end, 2, [0x80, n.pitch, 0]))
    for c in controls:
        if c.number == codec.SUSTAIN_CC:
            rows.append((c.time, 0 if c.value >= 64 else 1, [0xB0, 64, c.value]))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [(t, m) for t, _, m in rows]


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.mid")))
def test_live_encoding_hears_the_notes_the_codec_reads(name):
    """Fed message by message, the listener's encoding gives the notes (pitch, start, end,
    velocity bin) that codec.midi_to_tokens gives for the file, pedal included."""
    enc, pos, tokens = PedalEncoder(), StreamPosition(), []
    for t, m in _events_of(DATA / name):
        tokens += player_tokens(enc.feed(m, t), pos, origin=0.0)

    def notes(toks):
        return sorted((n.pitch, n.start, n.end, codec.velocity_to_bin(n.velocity))
                      for n in codec.tokens_to_step_notes(toks))

    assert notes(tokens) == notes(midi_file_tokens(DATA / name))


def test_pedal_extends_released_notes_until_pedal_up_or_restrike():
    enc = PedalEncoder()
    assert enc.feed([0xB0, 64, 100], 0.0) == []
    assert [e.on for e in enc.feed([0x90, 60, 80], 0.1)] == [True]
    assert enc.feed([0x80, 60, 0], 0.2) == []  # held by the pedal
    restrike = enc.feed([0x90, 60, 70], 0.3)  # ends the held voice, starts a new one
    assert [(e.on, e.pitch, e.time) for e in restrike] == [(False, 60, 0.3), (True, 60, 0.3)]
    assert enc.feed([0x80, 60, 0], 0.4) == []
    assert enc.feed([0x90, 64, 80], 0.5)[0].on
    up = enc.feed([0xB0, 64, 0], 0.6)  # releases 60 (key up); 64 is still down
    assert [(e.on, e.pitch) for e in up] == [(False, 60)]
    assert [(e.on, e.pitch) for e in enc.release_all(0.7)] == [(False, 64)]
    assert enc.feed([0xF8], 0.8) == [] and enc.feed([0xB0, 1, 5], 0.8) == []


def test_player_tokens_place_silences_velocity_and_short_notes():
    pos = StreamPosition()
    toks = player_tokens([PlayerEvent(1.5, True, 60, 100)], pos, origin=0.0)
    assert toks == codec.shifts(150) + [codec.velocity_event(codec.velocity_to_bin(100)), 60]
    # Same velocity bin: no velocity event; an off in the same step moves one step later.
    toks = player_tokens([PlayerEvent(1.5, True, 62, 99), PlayerEvent(1.502, False, 62, 0)],
                         pos, origin=0.0)
    assert toks == [62, codec.shift(1), codec.note_off(62)]
    # An event from before the stream's step (the model ran ahead) lands at the stream's step.
    pos.step = 400
    assert player_tokens([PlayerEvent(2.0, False, 60, 0)], pos, origin=0.0) == [
        codec.note_off(60)]


# --- the engine loop ---------------------------------------------------------------------

def test_an_engine_error_is_kept_for_the_main_thread():
    class Broken:
        steps, velocity_bin = 0, 0

        def prime(self, tokens):
            pass

        def snapshot(self):
            return None

        def sample(self):
            raise RuntimeError("model exploded")

    loop = EngineLoop(Broken(), RecordingScheduler(), origin=time.monotonic())
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    t.join(2)
    assert isinstance(loop.error, RuntimeError)


class RecordingScheduler:
    def __init__(self):
        self.items: list[tuple[float, float, list[int]]] = []
        self.taken_back: set = set()
        self.tags: dict = {}

    def schedule(self, deadline, message, tag=None):
        self.items.append((time.monotonic(), deadline, message))
        self.tags[tag] = deadline

    def take_back(self, tags):
        self.taken_back.update(tags)


def test_engine_loop_stays_within_its_lookahead_and_hears_the_player(tiny_model):
    from livepiano.runtime.engine import Engine

    engine = Engine(tiny_model, seed=3)
    sched = RecordingScheduler()
    origin = time.monotonic()
    loop = EngineLoop(engine, sched, origin=origin, lookahead=0.05)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    time.sleep(0.3)
    played_at = time.monotonic()
    loop.hear([PlayerEvent(played_at, True, 40, 90)])
    seen = []
    loop.call(lambda e: seen.append([v for v in e.voices() if v[0] == 40 and v[2] == "player"]))
    loop.call(lambda e: setattr(e, "temperature", 0.5))
    time.sleep(1.2)
    loop.stop()
    t.join(2)
    assert loop.error is None
    assert seen and seen[0], "the player's note is not in the model's stream"
    # The model heard it when it was played, not after its own look-ahead: what it had
    # sampled for later was taken back.
    assert seen[0][0][1] <= codec.quantize(played_at - origin) + 1
    assert all(sched.tags[tag] > played_at for tag in sched.taken_back)
    assert engine.temperature == 0.5
    notes = [(put, deadline) for put, deadline, m in sched.items]
    assert len(notes) >= 5
    # A note event is sampled only while the stream is less than the look-ahead ahead.
    assert all(deadline - put < 0.05 + 0.002 for put, deadline in notes)
    assert all(m[0] & 0xF0 in (0x80, 0x90) for _, _, m in sched.items)


def test_every_note_on_gets_its_note_off_while_the_player_interrupts(tiny_model):
    """The engine loop and the real scheduler, with the player playing all the time so that
    look-ahead events are taken back over and over: per pitch, every note-on that left has a
    note-off, and the model heard every player event."""
    import random
    from collections import Counter

    from livepiano.runtime.engine import Engine

    out = FakeOut()
    sched = Scheduler(out)
    loop = EngineLoop(Engine(tiny_model, seed=5, temperature=1.5), sched,
                      origin=time.monotonic(), lookahead=0.1)
    threads = [threading.Thread(target=sched.run, daemon=True),
               threading.Thread(target=loop.run, daemon=True)]
    for t in threads:
        t.start()
    rnd, down = random.Random(5), set()
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        time.sleep(rnd.random() * 0.04)
        p = rnd.randint(40, 80)
        loop.hear([PlayerEvent(time.monotonic(), p not in down, p, 0 if p in down else 80)])
        down ^= {p}
    loop.stop()
    threads[1].join(2)
    sched.stop()
    threads[0].join(2)
    assert loop.error is None and sched.error is None
    assert loop.taken_back > 0
    balance = Counter()
    for _, m in out.sent:
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            balance[m[1]] += 1
        elif m[0] & 0xF0 in (0x80, 0x90):
            balance[m[1]] -= 1
    assert not {p: n for p, n in balance.items() if n > 0}


def test_idle_work_runs_only_away_from_deadlines():
    """The session's garbage collection runs in the scheduler thread's spare time: only when
    the next deadline is more than IDLE_GAP_S (and the final spin) away, given the time it
    has; and still when nothing is scheduled. Judged at the moment the scheduler decided (its
    clock's last reading), so a stall of this machine cannot pass for a wrong decision."""
    from livepiano.live.scheduler import IDLE_GAP_S, IDLE_POLL_S

    readings = []

    def clock() -> float:
        now = time.monotonic()
        if threading.current_thread().name == "scheduler":
            readings.append(now)
        return now

    out = FakeOut()
    sched = Scheduler(out, clock=clock)
    calls = []

    def idle(gap: float) -> bool:
        calls.append((readings[-1] if readings else None, gap))
        time.sleep(0.001)  # work that takes a while
        return True

    sched.idle = idle
    thread = threading.Thread(target=sched.run, daemon=True, name="scheduler")
    thread.start()
    t0 = time.monotonic() + 0.05
    deadlines = [t0 + i * 0.02 for i in range(20)]
    for d in deadlines:
        sched.schedule(d, [0x90, 60, 1])
    time.sleep(deadlines[-1] - time.monotonic() + 0.2)
    sched.stop()
    thread.join(5)
    assert len(out.sent) >= 20
    between = [(at, gap) for at, gap in calls if at is not None and t0 - 0.05 < at < deadlines[-1]]
    assert between, "idle work never ran between the deadlines"
    for at, gap in between:
        ahead = min(d for d in deadlines if d > at) - at
        assert gap > IDLE_GAP_S, gap
        assert ahead - sched._spin == pytest.approx(gap, abs=1e-9), (ahead, gap)
    assert any(at is not None and at > deadlines[-1] and gap == IDLE_POLL_S
               for at, gap in calls), "no idle work with nothing scheduled"


def test_the_session_collector_takes_garbage_collection_off_every_other_thread():
    import gc

    from livepiano.live.session import GC_EVERY_S, GC_FULL_GAP_S, Collector

    now = [0.0]
    sched = Scheduler(FakeOut())
    collector = Collector(sched, clock=lambda: now[0])
    collected = []

    def seen(phase, info):
        if phase == "stop":
            collected.append(info["generation"])

    collector.start()
    gc.callbacks.append(seen)
    try:
        assert not gc.isenabled() and sched.idle == collector.idle
        assert collector.idle(1.0) is False and collected == []  # not due yet
        now[0] += GC_EVERY_S
        assert collector.idle(1.0) is True and collected == [1]
        now[0] += 60.0
        assert collector.idle(GC_FULL_GAP_S / 2) is True and collected == [1, 1]  # too short
        now[0] += GC_EVERY_S
        assert collector.idle(GC_FULL_GAP_S) is True and collected == [1, 1, 2]
    finally:
        gc.callbacks.remove(seen)
        collector.stop()
        gc.unfreeze()
    assert gc.isenabled() and sched.idle is None
