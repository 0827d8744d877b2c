"""``livepiano bench soak``: a long continuous-mode session in process, with a recorded
pianist, measured minute by minute (is the instrument as punctual after an hour as at first?).

The parts are the play session's own: the engine loop and scheduler threads at their
real-time priorities, the recorder writing the journal, the main thread flushing it every
second, the same garbage-collector set-up. The pianist is a MAESTRO excerpt from tests/data
looped on its own thread and handed to the session as the listener hands it (recorder, then
engine); the output is a null port. Reported: scheduler lateness p50/p99/max per minute, RSS
at the start and end and its slope after the first minute, garbage-collector pauses (count,
p99, max, by generation), notes in and out, how long the save at the end took, and how long
the save of a two-hour journal takes.
"""

from __future__ import annotations

import gc
import os
import tempfile
import threading
import time
from pathlib import Path


def pianist_file() -> Path:
    """A MAESTRO excerpt from the checkout's tests/data, else the demo's shipped primer."""
    from livepiano.core.shipped import REPOSITORY, shipped_file

    path = REPOSITORY / "tests" / "data" / "chopin_op10_12.mid"
    return path if path.is_file() else shipped_file("examples", "primer.mid")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pianist_events(path: Path):
    """(seconds, on, pitch, velocity) of the file's notes, pedal applied, and its length."""
    from livepiano.core import codec

    notes = codec.read_midi(path.read_bytes())[0]
    events = sorted([(n.start, True, n.pitch, n.velocity) for n in notes]
                    + [(n.end, False, n.pitch, 0) for n in notes], key=lambda e: (e[0], e[1]))
    return events, max(n.end for n in notes) + 1.0


class _GcPauses:
    """Every collection's duration and generation, from gc.callbacks (whatever thread ran
    it), in preallocated arrays so that measuring adds nothing for the collector to walk."""

    def __init__(self, capacity: int = 1 << 20):
        import numpy as np

        self.seconds = np.zeros(capacity)
        self.generation = np.zeros(capacity, dtype=np.int8)
        self.at = np.zeros(capacity)
        self.n = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self.n < len(self.seconds):
            self.seconds[self.n] = time.perf_counter() - self._start
            self.generation[self.n] = info["generation"]
            self.at[self.n] = time.monotonic()
            self.n += 1


def soak(model_path, minutes: float, *, realtime_mode: str = "auto", seed: int | None = 0,
         progress=None) -> dict:
    import numpy as np

    from livepiano.live import journal
    from livepiano.live.listener import PlayerEvent
    from livepiano.live.loop import EngineLoop
    from livepiano.live.recorder import Recorder, open_journal
    from livepiano.live.scheduler import FIFO_PRIORITY, Scheduler, realtime
    from livepiano.live.session import WAKE_S, Collector, MainPriority, engine_priority
    from livepiano.runtime.engine import Engine
    from livepiano.tools.bench.timing import NullOut, steal_ms
    from livepiano.tools.bench.witness import Witness, overlapping

    events, length = _pianist_events(pianist_file())
    engine = Engine(model_path, temperature=1.0, seed=seed)
    folder = Path(tempfile.mkdtemp(prefix="livepiano-soak-"))
    clock = time.monotonic
    origin = clock()
    recorder = Recorder(open_journal(folder / "soak.mid", origin))
    scheduler = Scheduler(NullOut(), clock=clock, on_sent=recorder.sent,
                          realtime_mode=realtime_mode, keep_lateness=100_000)
    loop = EngineLoop(engine, scheduler, origin=origin, lookahead=0.1, clock=clock)
    stop = threading.Event()

    def pianist() -> None:  # in the listener's place, at its priority
        realtime(realtime_mode, FIFO_PRIORITY - 1, switch=False)
        start = clock()
        lap = 0
        while not stop.is_set():
            for at, on, pitch, velocity in events:
                wait = start + lap * length + at - clock()
                if wait > 0 and stop.wait(wait):
                    return
                batch = [PlayerEvent(clock(), on, pitch, velocity)]
                recorder.heard(batch)
                loop.hear(batch)
            lap += 1

    threads = [threading.Thread(target=scheduler.run, name="scheduler", daemon=True),
               threading.Thread(target=loop.run, args=(engine_priority(realtime_mode),),
                                name="engine", daemon=True),
               threading.Thread(target=pianist, name="pianist", daemon=True)]
    pauses = _GcPauses()
    collector = Collector(scheduler, clock)
    collector.start()
    main_priority = MainPriority(realtime_mode)
    main_priority.start()
    gc.callbacks.append(pauses)
    rss = [(0.0, _rss_mb())]
    minutes_out: list[dict] = []
    late: list[float] = []
    over_1ms: list[tuple[float, float]] = []  # (deadline, lateness) of every deadline > 1 ms
    witness = Witness()
    witness.start()
    t0 = clock()
    for t in threads:
        t.start()
    steal_at_minute = steal_ms()
    next_minute = t0 + 60.0
    next_flush = t0 + journal.FLUSH_S
    end = t0 + minutes * 60.0
    try:
        while True:
            time.sleep(WAKE_S)
            if clock() < next_flush:
                continue
            next_flush += journal.FLUSH_S
            recorder.journal.flush()
            while scheduler.lateness:
                deadline, lateness = scheduler.deadlines.popleft(), scheduler.lateness.popleft()
                late.append(lateness)
                if lateness > 0.001:
                    over_1ms.append((deadline, lateness))
            now = clock()
            rss.append((now - t0, _rss_mb()))
            if loop.error or scheduler.error:
                raise loop.error or scheduler.error
            if now >= next_minute or now >= end:
                us = np.asarray(late) * 1e6
                steal = steal_ms()
                minutes_out.append({
                    "minute": len(minutes_out) + 1, "deadlines": int(us.size),
                    "p50_us": round(float(np.percentile(us, 50)), 1) if us.size else None,
                    "p99_us": round(float(np.percentile(us, 99)), 1) if us.size else None,
                    "max_us": round(float(us.max()), 1) if us.size else None,
                    "gc_full": int(((pauses.generation[:pauses.n] == 2)
                                    & (pauses.at[:pauses.n] > next_minute - 60)).sum()),
                    "rss_mb": round(rss[-1][1], 1),
                    "steal_ms": (steal - steal_at_minute if None not in (steal, steal_at_minute)
                                 else None),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                    "minute_start": next_minute - 60.0, "minute_end": now})
                late.clear()
                steal_at_minute = steal
                next_minute += 60.0
                if progress:
                    progress(minutes_out[-1])
                if now >= end:
                    break
    finally:
        stop.set()
        loop.stop()
        threads[1].join(2.0)
        scheduler.stop()
        threads[0].join(2.0)
        threads[2].join(2.0)
        gc.callbacks.remove(pauses)
        collector.stop()
        main_priority.end()
        witness.stop()
    for m in minutes_out:
        m["machine_max_us"] = round(witness.minute_max(m.pop("minute_start"),
                                                        m.pop("minute_end")) * 1e6, 1)
    late_at = np.asarray([d for d, _ in over_1ms])
    late_s = np.asarray([v for _, v in over_1ms])
    stalled = witness.stalled(late_at, late_s)
    gc_end = pauses.at[:pauses.n]
    in_gc = overlapping(late_at, late_s, gc_end - pauses.seconds[:pauses.n], gc_end)
    t_save = clock()
    saved = recorder.save()
    save_s = clock() - t_save
    seconds = np.asarray([t for t, _ in rss])
    mb = np.asarray([m for _, m in rss])
    after = seconds >= 60.0
    slope = (float(np.polyfit(seconds[after] / 60.0, mb[after], 1)[0])
             if after.sum() >= 3 else None)
    gc_s = pauses.seconds[:pauses.n] * 1e3
    full = pauses.generation[:pauses.n] == 2
    result = {
        "minutes": minutes_out,
        "lateness_us_p99_worst_minute": max((m["p99_us"] or 0) for m in minutes_out),
        "lateness_us_max": max((m["max_us"] or 0) for m in minutes_out),
        "late_over_1ms": int(late_s.size),
        "late_over_1ms_in_machine_stalls": int(stalled.sum()),
        "late_over_1ms_in_gc": int(in_gc.sum()),
        "late_over_1ms_in_gc_not_stalls": int((in_gc & ~stalled).sum()),
        "lateness_us_max_outside_machine_stalls": (round(float(late_s[~stalled].max()) * 1e6, 1)
                                                   if (~stalled).any() else None),
        "witness": witness.note, "witness_wakes": witness.wakes,
        "machine_stall_us_max": round(float(witness.lateness.max()) * 1e6, 1)
        if len(witness.lateness) else 0.0,
        "rss_mb_start": round(float(mb[0]), 1), "rss_mb_end": round(float(mb[-1]), 1),
        "rss_mb_per_min_after_first": round(slope, 3) if slope is not None else None,
        "gc_collections": int(pauses.n),
        "gc_full_collections": int((pauses.generation[:pauses.n] == 2).sum()),
        "gc_pause_ms_p99": round(float(np.percentile(gc_s, 99)), 3) if gc_s.size else 0.0,
        "gc_pause_ms_max": round(float(gc_s.max()), 3) if gc_s.size else 0.0,
        "gc_full_pause_ms_max": round(float(gc_s[full].max()), 3) if full.any() else 0.0,
        "gc_young_pause_ms_p99": (round(float(np.percentile(gc_s[~full], 99)), 3)
                                  if (~full).any() else 0.0),
        "notes_in": recorder.notes_in(), "notes_out": recorder.notes_out(),
        "save_s": round(save_s, 3), "saved": str(saved),
        "realtime": scheduler.realtime_note, "caught_up_steps": loop.caught_up_steps,
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "model": str(model_path)}
    saved.unlink(missing_ok=True)
    result["save_two_hours_s"] = round(two_hour_save_s(folder), 3)
    folder.rmdir()
    return result


TWO_HOURS_MESSAGES = 2 * 3600 * 40  # 20 messages a second on each track: 144,000 notes


def two_hour_save_s(folder: Path) -> float:
    """Seconds that saving a journal as long as two hours of busy playing takes (the MIDI file
    made from it at the session's end); the file is removed after."""
    from livepiano.live.recorder import Recorder, open_journal

    recorder = Recorder(open_journal(folder / "two-hours.mid", 0.0))
    add = recorder.journal.add
    for i in range(TWO_HOURS_MESSAGES):
        add(i % 2, 5.0 + i * 0.025, 0x90 if i % 4 < 2 else 0x80, 40 + (i // 4) % 48, 70)
    recorder.journal.flush()
    t0 = time.monotonic()
    saved = recorder.save()
    took = time.monotonic() - t0
    saved.unlink(missing_ok=True)
    return took


def bench(args) -> dict:
    """A long continuous-mode session with a looped recorded pianist, minute by minute."""
    from livepiano.runtime.modelfile import resolve_model
    from livepiano.tools.bench.common import card_summary

    path = resolve_model(getattr(args, "model", None))
    say = getattr(args, "say", None) or (lambda text: print(text, flush=True))  # minute by minute
    minutes = float(getattr(args, "minutes", 10.0))
    if not minutes > 0:
        from livepiano import LivepianoError

        raise LivepianoError(f"--minutes must be more than 0, not {minutes:g}.")
    say(f"model        {path}{card_summary(path)}")
    say(f"pianist      {pianist_file().name}, looped; {minutes:g} minutes in continuous mode; "
        f"load average {os.getloadavg()[0]:.2f} at the start")
    say("minute  deadlines  lateness p50    p99      max (µs)  full GCs  RSS MB  load   "
        "stolen ms")

    def minute(m: dict) -> None:  # the machine's own stalls are known only at the end
        say(f"{m['minute']:6d}  {m['deadlines']:9d}  {m['p50_us'] or 0:12.1f} "
            f"{m['p99_us'] or 0:8.1f} {m['max_us'] or 0:8.1f}  {m['gc_full']:8d}  "
            f"{m['rss_mb']:6.1f}  {m['loadavg_1m']:5.2f}  {m['steal_ms']}")

    r = soak(path, minutes, realtime_mode=getattr(args, "realtime", "auto") or "auto",
             seed=getattr(args, "seed", 0), progress=minute)
    say(f"lateness     worst minute's p99 {r['lateness_us_p99_worst_minute']:.1f} µs; max "
        f"{r['lateness_us_max']:.1f} µs over the run")
    say(f"witnesses    bare processes beside it ({r['witness']}) woke up to "
        f"{r['machine_stall_us_max']:.1f} µs late; their worst per minute: "
        + ", ".join(f"{m['machine_max_us'] / 1000:.1f}" for m in r["minutes"]) + " ms")
    outside = r["lateness_us_max_outside_machine_stalls"]
    say(f"late > 1 ms  {r['late_over_1ms']} deadlines, {r['late_over_1ms_in_machine_stalls']} of "
        f"them while a witness too was late, {r['late_over_1ms_in_gc_not_stalls']} others during a "
        f"garbage collection; max outside the witnesses' stalls "
        + (f"{outside:.1f} µs" if outside is not None else "none"))
    say(f"memory       RSS {r['rss_mb_start']} MB at the start, {r['rss_mb_end']} MB at the "
        f"end; {r['rss_mb_per_min_after_first']} MB/min after the first minute")
    say(f"gc           {r['gc_collections']} collections ({r['gc_full_collections']} full); "
        f"pause p99 {r['gc_pause_ms_p99']} ms, max {r['gc_pause_ms_max']} ms (young p99 "
        f"{r['gc_young_pause_ms_p99']} ms; full max {r['gc_full_pause_ms_max']} ms)")
    say(f"notes        {r['notes_in']} in, {r['notes_out']} out; save at exit "
        f"{r['save_s']:.3f} s; a two-hour journal ({TWO_HOURS_MESSAGES // 2:,} notes) saves in "
        f"{r['save_two_hours_s']:.3f} s")
    say(f"machine      {r['realtime']}; load average {' '.join(map(str, r['loadavg']))} "
        f"(1, 5, 15 min) at the end")
    return r
