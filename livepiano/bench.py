"""The benchmarks the issues name: ``livepiano bench WHICH``.

Each benchmark is a function ``bench_X(args) -> dict`` registered in ``BENCHES``; the command
prints a readable report and, with ``--json``, ends with one line holding the dict as JSON.
Arguments shared by the benchmarks are declared in ``add_arguments``. This module imports
only the standard library at the top, so building the command line stays cheap.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

# MAESTRO's mean rate of performance events (≈ 45 events/s): a 30-second priming chunk.
PRIME_CHUNK_TOKENS = 1350


def add_arguments(p) -> None:
    p.add_argument("--model", default=None,
                   help="exported .onnx model "
                        "(default: $LIVEPIANO_MODEL or models/performance_rnn.onnx)")
    p.add_argument("--steps", type=int, default=3000,
                   help="timed model steps after warm-up (model; at least 2000)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (model)")
    p.add_argument("--rt", action="store_true",
                   help="time the steps under SCHED_FIFO where allowed, to separate the model's "
                        "own latency from other processes' interference (model)")
    p.add_argument("--load", action="store_true",
                   help="a busy loop on the other core while measuring (timing)")
    p.add_argument("--realtime", choices=("auto", "fifo", "switch", "off"), default="auto",
                   help="scheduler timing mechanism, as `play --realtime` (timing)")
    p.add_argument("--deadlines", type=int, default=2000,
                   help="scheduler deadlines to measure (timing; at least 2000)")
    p.add_argument("--changes", type=int, default=200,
                   help="knob changes to measure (knobs; at least 200)")
    p.add_argument("--wait", type=float, default=0.6,
                   help="silence that ends a call, seconds (duet; default: 0.6)")
    p.add_argument("--calls", type=int, default=21,
                   help="held-out calls to play (duet; at least 20)")
    p.add_argument("--data", default=None, metavar="CACHE_OR_MIDI_DIR",
                   help="cut the calls from this token cache's or MAESTRO folder's test split "
                        "(duet; default: the MAESTRO test-split excerpts in tests/data)")
    from livepiano.tools.bench import music

    music.add_arguments(p)
    p.add_argument("--json", action="store_true",
                   help="end with one line of JSON holding the figures")


def _realtime(on: bool) -> str:
    """SCHED_FIFO (priority 1) for the calling thread, or back to normal; what happened."""
    if not hasattr(os, "sched_setscheduler"):
        return "none (not available on this system)"
    try:
        if on:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            return "SCHED_FIFO 1"
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        return "normal"
    except OSError as e:
        return f"none ({e.strerror or e})"


def _percentiles(values_us: list[float]) -> tuple[float, float, float]:
    import numpy as np

    a = np.asarray(values_us, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def bench_model(args) -> dict:
    """Per-step latency of Engine.sample (1 intra-op thread), priming throughput on 30-second
    chunks, and generation speed as a multiple of real time."""
    import numpy as np

    from livepiano import codec
    from livepiano.engine import Engine, resolve_model

    steps = max(2000, int(getattr(args, "steps", 3000) or 3000))
    path = resolve_model(getattr(args, "model", None))
    engine = Engine(path, seed=getattr(args, "seed", 0), temperature=1.0)
    say = getattr(args, "say", print)
    say(f"model        {path} ({engine.layers}x{engine.hidden}, "
        f"{'conditioned' if engine.conditioned else 'unconditioned'})")

    # Warm-up: a short phrase, then some sampling.
    engine.prime([codec.velocity_event(20), 60, codec.shift(20), codec.note_off(60)])
    for _ in range(300):
        engine.sample()

    # Everything below is timed, under SCHED_FIFO with --rt where the system allows it.
    priority = _realtime(True) if getattr(args, "rt", False) else "normal"
    try:
        # Per-step latency; the stream it makes doubles as priming material below.
        clock = time.perf_counter_ns
        lat = np.empty(steps)
        made = []
        gen_steps0 = engine.steps
        wall0 = clock()
        for i in range(steps):
            t = clock()
            made.append(engine.sample())
            lat[i] = clock() - t
        wall = (clock() - wall0) / 1e9
        gen_seconds = (engine.steps - gen_steps0) / codec.STEPS_PER_SECOND
        p50, p99, pmax = _percentiles(lat / 1e3)

        # The model call alone (T=1), to tell the model's time from the sampler's.
        state = np.zeros((engine.layers, 1, engine.hidden), np.float32)
        feeds = {"token": np.zeros((1, 1), np.int64), "h": state, "c": state.copy()}
        if engine.conditioned:
            feeds["control"] = np.zeros((1, 1, engine.control_dim), np.float32)
        raw = np.empty(min(steps, 1000))
        for i in range(len(raw)):
            t = clock()
            engine.session.run(["logits", "h_out", "c_out"], feeds)
            raw[i] = clock() - t
        model_p50 = float(np.percentile(raw, 50)) / 1e3

        # Priming: 30-second chunks from a zero state, one batched call each.
        source = np.resize(np.asarray(made, dtype=np.int64), PRIME_CHUNK_TOKENS * 4)
        chunks = source.reshape(4, PRIME_CHUNK_TOKENS)
        engine.reset()
        engine.prime(chunks[0][:64])  # warm the T>1 path
        t0 = clock()
        primed = 0
        for chunk in chunks:
            engine.reset()
            engine.prime(chunk)
            primed += len(chunk)
        prime_s = (clock() - t0) / 1e9
    finally:
        if priority.startswith("SCHED_FIFO"):
            _realtime(False)

    mean_step_s = float(lat.mean()) / 1e9
    result = {
        "model": str(path),
        "layers": engine.layers,
        "hidden": engine.hidden,
        "steps": steps,
        "priority": priority,
        "step_us_p50": round(p50, 1),
        "step_us_p99": round(p99, 1),
        "step_us_max": round(pmax, 1),
        "step_us_mean": round(mean_step_s * 1e6, 1),
        "model_call_us_p50": round(model_p50, 1),
        "prime_tokens_per_s": round(primed / prime_s),
        "prime_chunk_tokens": PRIME_CHUNK_TOKENS,
        "generated_seconds": round(gen_seconds, 2),
        "wall_seconds": round(wall, 3),
        "realtime_factor": round(gen_seconds / wall, 1),
        # The same speed at MAESTRO's event rate, independent of what this model samples.
        "realtime_factor_at_45_events_per_s": round(1.0 / (45 * mean_step_s), 1),
        # This machine may be shared: the load when the figures were taken.
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    say(f"step         p50 {p50:8.1f} µs   p99 {p99:8.1f} µs   max {pmax:8.1f} µs   "
        f"({steps} steps, 1 intra-op thread, {priority} priority; "
        f"the model call alone: p50 {model_p50:.1f} µs)")
    say(f"priming      {result['prime_tokens_per_s']:,} tokens/s "
        f"(30-s chunks of {PRIME_CHUNK_TOKENS} tokens)")
    if result["loadavg_1m"] is not None:
        say(f"load         {result['loadavg_1m']} (1-minute load average; other work skews these)")
    say(f"generation   {result['realtime_factor']}x real time "
        f"({gen_seconds:.1f} s of music in {wall:.2f} s; "
        f"{result['realtime_factor_at_45_events_per_s']}x at MAESTRO's 45 events/s)")
    return result


def bench_timing(args) -> dict:
    """Scheduler lateness (how late each message leaves after its deadline) with the engine
    generating in its own thread, as in `livepiano play`, to a null output."""
    from livepiano.engine import resolve_model
    from livepiano.live import timing

    path = resolve_model(getattr(args, "model", None))
    say = getattr(args, "say", print)
    load = bool(getattr(args, "load", False))
    say(f"model        {path}; {'a busy loop on the other core' if load else 'no extra load'}")
    r = timing(path, deadlines=max(2000, int(getattr(args, "deadlines", 2000) or 2000)),
               load=load, realtime_mode=getattr(args, "realtime", "auto") or "auto",
               seed=getattr(args, "seed", 0))
    r["loadavg_1m"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    say(f"lateness     p50 {r['lateness_us_p50']:8.1f} µs   p99 {r['lateness_us_p99']:8.1f} µs   "
        f"max {r['lateness_us_max']:8.1f} µs   late > 1 ms: {r['late_over_1ms']} of "
        f"{r['deadlines']} deadlines")
    say(f"scheduler    {r['realtime']}; stream played {r['speed']}x real time "
        f"({r['seconds']} s)")
    if r.get("steal_ms") is not None:
        say(f"machine      {r['steal_ms']} ms stolen by the hypervisor during the run; "
            f"load average {r['loadavg_1m']}")
    return r


def bench_knobs(args) -> dict:
    """From a knob's CC message to the first event sampled with the new temperature, in
    process as in `livepiano play` (the real listener, knobs and engine loop; continuous
    mode; a null output)."""
    from livepiano.engine import resolve_model
    from livepiano.knobs import latency

    path = resolve_model(getattr(args, "model", None))
    say = getattr(args, "say", print)
    changes = max(200, int(getattr(args, "changes", 200) or 200))
    say(f"model        {path}{_card_summary(path)}")
    say(f"knob         a CC every 50-150 ms, alternating between two temperatures; "
        f"{changes} changes (about {changes * 0.1:.0f} s)")
    r = latency(path, changes=changes, realtime_mode=getattr(args, "realtime", "auto") or "auto",
                seed=getattr(args, "seed", 0))
    r["loadavg_1m"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    say(f"to effect    p50 {r['knob_to_effect_ms_p50']:7.2f} ms   p99 "
        f"{r['knob_to_effect_ms_p99']:7.2f} ms   max {r['knob_to_effect_ms_max']:7.2f} ms   "
        f"(CC sent -> first event sampled with the new temperature; {r['measured']} of "
        f"{r['changes']} changes)")
    say(f"applied      p50 {r['knob_to_applied_ms_p50']:7.2f} ms   p99 "
        f"{r['knob_to_applied_ms_p99']:7.2f} ms   (CC sent -> value set on the engine thread)")
    say(f"in stream    p50 {r['knob_to_stream_ms_p50']:7.2f} ms   p99 "
        f"{r['knob_to_stream_ms_p99']:7.2f} ms   (CC sent -> where that event begins in the "
        f"stream, i.e. when the new value is heard; look-ahead {r['lookahead_ms']} ms, "
        f"{r['taken_back_events']} unheard events taken back)")
    if r["loadavg_1m"] is not None:
        say(f"load         {r['loadavg_1m']} (1-minute load average; other work skews these)")
    return r


# --- bench duet -------------------------------------------------------------------------------

DUET_CALL_SECONDS = (1.5, 2.5, 2.0, 3.5, 1.8, 3.0)  # the lengths calls are cut at, in turn
DUET_BARGE_EVERY = 3  # every third answer is interrupted by the next call


def _duet_sources(data: str | None, limit: int = 8) -> tuple[list[list[tuple]], str]:
    """Held-out performances as lists of (start s, end s, pitch, velocity), pedal applied:
    tests/data's MAESTRO test-split excerpts, or the test split of ``data`` (a token cache
    or a MAESTRO folder)."""
    from pathlib import Path

    from livepiano import LivepianoError, codec
    from livepiano.data import midi_file_notes

    if data is None:
        folder = Path(__file__).resolve().parent.parent / "tests" / "data"
        files = sorted(folder.glob("*.mid"))
        if not files:
            raise LivepianoError(f"no MIDI excerpts in {folder}; give --data (a token cache or "
                                 f"a MAESTRO folder).")
        return ([[(n.start, n.end, n.pitch, n.velocity) for n in midi_file_notes(p)]
                 for p in files], f"{len(files)} MAESTRO test-split excerpts in {folder}")
    from livepiano.engine import load_eval_tokens

    arrays, split = load_eval_tokens(data, "test", limit)
    step = 1.0 / codec.STEPS_PER_SECOND
    return ([[(n.start * step, n.end * step, n.pitch, n.velocity)
              for n in codec.tokens_to_step_notes(a[:20000])] for a in arrays],
            f"{len(arrays)} performances of {data}" + (f" ({split} split)" if split else ""))


def _duet_calls(sources, count: int, wait: float) -> list[list[tuple]]:
    """``count`` calls cut from the sources in turn: the notes starting in a window (their
    ends kept, at most 0.4 s past it), shifted to start at 0; a window whose notes leave a
    silence of ``wait`` - 0.1 s inside is passed over (it would be two calls)."""
    cursors = [0.0] * len(sources)
    calls: list[list[tuple]] = []
    k = 0
    while len(calls) < count and any(c is not None for c in cursors):
        i = k % len(sources)
        k += 1
        notes, a = sources[i], cursors[i]
        if a is None:
            continue
        length = DUET_CALL_SECONDS[len(calls) % len(DUET_CALL_SECONDS)]
        for _ in range(200):
            window = [n for n in notes if a <= n[0] < a + length]
            if not window and a > max((n[0] for n in notes), default=0.0):
                a = None
                break
            first = min((n[0] for n in window), default=a)
            cut = [(s - first, min(e, a + length + 0.4) - first, p, v) for s, e, p, v in window]
            covered, gap = 0.0, 0.0
            for s, e, _, _ in sorted(cut):
                gap = max(gap, s - covered)
                covered = max(covered, e)
            if len(cut) >= 3 and gap < wait - 0.1:
                calls.append(cut)
                a += length + 0.5
                break
            a += 0.5
        cursors[i] = a
    return calls


class _QueueInput:
    """An input port's stand-in for ``Listener``: messages put by the pianist."""

    def __init__(self):
        import collections

        self.client = self
        self.queue = collections.deque()

    def ignore_types(self, **_):
        pass

    def get_message(self):
        try:
            return self.queue.popleft(), 0.0
        except IndexError:
            return None


class _StampingOutput:
    """A null output that remembers (clock time, message) of everything sent to it and what
    sounds."""

    def __init__(self, clock):
        self.clock = clock
        self.sent: list[tuple[float, list[int]]] = []
        self.sounding: dict[int, int] = {}

    def send_message(self, message) -> None:
        m = list(message)
        self.sent.append((self.clock(), m))
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            self.sounding[m[1]] = self.sounding.get(m[1], 0) + 1
        elif m[0] & 0xF0 in (0x80, 0x90) and self.sounding.get(m[1]):
            self.sounding[m[1]] -= 1
            if not self.sounding[m[1]]:
                del self.sounding[m[1]]


def _pc_cosine(a: list[int], b: list[int]) -> float | None:
    import numpy as np

    if not a or not b:
        return None
    ha, hb = np.bincount(np.asarray(a) % 12, minlength=12), np.bincount(np.asarray(b) % 12,
                                                                         minlength=12)
    return float(ha @ hb / (np.linalg.norm(ha) * np.linalg.norm(hb)))


def duet_run(model_path, calls, *, wait: float = 0.6, realtime_mode: str = "auto",
             seed: int | None = 0, lookahead: float = 0.1, progress=None) -> dict:
    """The calls played in real time into the real Listener, EngineLoop (duet mode) and
    Scheduler in this process, the output stamped as it leaves; every ``DUET_BARGE_EVERY``-th
    answer is interrupted by the next call while the model has a note sounding."""
    import time

    from livepiano.duet import DuetMode, DuetSettings
    from livepiano.engine import Engine
    from livepiano.listener import Listener
    from livepiano.live import EngineLoop, play_threads
    from livepiano.scheduler import Scheduler

    clock = time.monotonic
    engine = Engine(model_path, seed=seed)
    from livepiano import config
    from livepiano.runtime import steering

    steering.configure(engine, config.defaults(), accompany=True)  # as play does
    out = _StampingOutput(clock)
    inp = _QueueInput()
    scheduler = Scheduler(out, clock=clock, realtime_mode=realtime_mode)
    mode = DuetMode(DuetSettings(wait=wait))
    origin = clock()
    loop = EngineLoop(engine, scheduler, origin=origin, lookahead=lookahead, mode=mode,
                      clock=clock)
    listener = Listener(inp, loop.hear, clock=clock)
    listener.on_pedal = loop.hear_pedal
    threads = play_threads(scheduler, loop, listener, realtime_mode)
    for t in threads:
        t.start()
    turns = []  # per call: dict of times
    duet = mode.duet

    def check():
        for x in (loop.error, scheduler.error, listener.error):
            if x is not None:
                raise x

    def answer_over() -> bool:
        return duet.state == "listen" and duet.turns and duet.turns[-1].over is not None

    barge_next = False
    try:
        time.sleep(0.3)
        for i, call in enumerate(calls):
            messages = sorted([(s, 1, [0x90, p, v]) for s, e, p, v in call]
                              + [(e, 0, [0x80, p, 0]) for s, e, p, v in call])
            t0 = clock()
            for at, _, m in messages:
                delay = t0 + at - clock()
                if delay > 0:
                    time.sleep(delay)
                inp.queue.append(m)
                if barge_next:  # this call's first note interrupts the previous answer
                    turns[-1]["barged_at"] = clock()
                    barge_next = False
            phrase_end = clock()
            turn = {"call_start": t0, "phrase_end": phrase_end,
                    "call_s": max(e for _, e, _, _ in call),
                    "pitches": [p for _, _, p, _ in call], "barged_at": None}
            turns.append(turn)
            barge = (i + 1) % DUET_BARGE_EVERY == 0 and i + 1 < len(calls)
            limit = phrase_end + wait + 16.0 + 2.0 + 2.0
            first = None
            while clock() < limit:
                check()
                time.sleep(0.002)
                if first is None:
                    first = next((t for t, m in out.sent[-50:] if t > phrase_end
                                  and m[0] & 0xF0 == 0x90 and m[2] > 0), None)
                if barge and first is not None and clock() > first + 0.8 and out.sounding:
                    barge_next = True  # the next call's first note comes now
                    break
                if answer_over() and len(duet.turns) >= i + 1 and not out.sounding:
                    break
            if not barge_next:
                time.sleep(0.3)
            if progress:
                progress(i + 1, len(calls))
        time.sleep(0.3)
        check()
    finally:
        loop.stop()
        threads[1].join(2.0)
        listener.stop()
        threads[2].join(2.0)
        scheduler.stop()
        threads[0].join(2.0)
    sent = out.sent
    ends = [t["call_start"] for t in turns[1:]] + [sent[-1][0] + 1 if sent else 0.0]
    for turn, until in zip(turns, ends):
        mine = [(t, m) for t, m in sent if turn["phrase_end"] < t < until]
        ons = [(t, m[1]) for t, m in mine if m[0] & 0xF0 == 0x90 and m[2] > 0]
        turn["first_note"] = ons[0][0] if ons else None
        turn["answer_pitches"] = [p for _, p in ons]
        offs = [t for t, m in mine if m[0] & 0xF0 == 0x80 or (m[0] & 0xF0 == 0x90 and m[2] == 0)]
        turn["answer_s"] = (max(offs) - ons[0][0]) if ons and offs else None
    # Barge-in: from the next call's first note to the moment nothing of the model sounds
    # any more (any note it starts after the barge-in counts against it).
    for i, turn in enumerate(turns):
        tb = turn["barged_at"]
        if tb is None:
            continue
        sounding: dict[int, int] = {}
        silent_at, at_barge = None, False
        for t, m in sent:
            if t > turns[i + 1]["phrase_end"]:
                break
            if t >= tb and not at_barge:
                at_barge = True
                silent_at = None if any(sounding.values()) else tb
            on = m[0] & 0xF0 == 0x90 and m[2] > 0
            off = m[0] & 0xF0 == 0x80 or (m[0] & 0xF0 == 0x90 and m[2] == 0)
            if on:
                sounding[m[1]] = sounding.get(m[1], 0) + 1
            elif off and sounding.get(m[1]):
                sounding[m[1]] -= 1
            if at_barge:
                if on:
                    silent_at = None
                elif off and silent_at is None and not any(sounding.values()):
                    silent_at = t
        turn["bargein_s"] = None if silent_at is None else silent_at - tb
    stops = [a.reason for _, a in mode.log if type(a).__name__ == "StopAnswer"]
    return {"turns": turns, "stops": stops, "caught_up_steps": loop.caught_up_steps,
            "lateness": scheduler.lateness_us(), "realtime": scheduler.realtime_note,
            "conditioned": engine.conditioned, "layers": engine.layers, "hidden": engine.hidden}


def bench_duet(args) -> dict:
    """Call and response in real time, in process as in `livepiano play --mode duet`: held-out
    calls go into the real listener; the engine loop answers through the scheduler to a null
    output that stamps each message. Answer latency (phrase end -> first answer note, so it
    includes the wait), barge-in latency, answer vs call length, and the pitch-class cosine of
    each call with its answer next to that of random pairs of calls."""
    import random

    import numpy as np

    from livepiano.engine import resolve_model

    say = getattr(args, "say", print)
    path = resolve_model(getattr(args, "model", None))
    wait = float(getattr(args, "wait", None) or 0.6)
    count = max(20, int(getattr(args, "calls", 21) or 21))
    sources, where = _duet_sources(getattr(args, "data", None))
    calls = _duet_calls(sources, count, wait)
    if len(calls) < 20:
        from livepiano import LivepianoError

        raise LivepianoError(f"only {len(calls)} calls could be cut from {where}; give --data "
                             f"with more music.")
    say(f"model        {path}{_card_summary(path)}")
    say(f"calls        {len(calls)} cut from {where}; wait {wait:g} s; every "
        f"{DUET_BARGE_EVERY}rd answer interrupted by the next call")
    r = duet_run(path, calls, wait=wait, realtime_mode=getattr(args, "realtime", "auto") or "auto",
                 seed=getattr(args, "seed", 0),
                 progress=lambda i, n: say(f"  call {i}/{n}") if getattr(args, "verbose", False)
                 else None)
    turns = r["turns"]
    lat = [(t["first_note"] - t["phrase_end"]) * 1000 for t in turns if t["first_note"]]
    barge = [t["bargein_s"] * 1000 for t in turns if t.get("bargein_s") is not None]
    missed_barge = sum(1 for t in turns if t["barged_at"] is not None and t["bargein_s"] is None)
    full = [t for t in turns if t["barged_at"] is None and t["answer_s"] is not None]
    cos = [c for t in turns if (c := _pc_cosine(t["pitches"], t["answer_pitches"])) is not None]
    rng = random.Random(0)
    rand = []
    for _ in range(200):
        a, b = rng.sample(range(len(turns)), 2)
        c = _pc_cosine(turns[a]["pitches"], turns[b]["pitches"])
        if c is not None:
            rand.append(c)
    other = []  # a call against another call's answer
    for i, t in enumerate(turns):
        j = (i + len(turns) // 2) % len(turns)
        c = _pc_cosine(t["pitches"], turns[j]["answer_pitches"])
        if c is not None and j != i:
            other.append(c)

    def pct(v, q):
        return round(float(np.percentile(v, q)), 1) if v else None

    calls_s = [t["call_s"] for t in full]
    answers_s = [t["answer_s"] for t in full]
    result = {
        "model": str(path), "layers": r["layers"], "hidden": r["hidden"],
        "conditioned": r["conditioned"], "wait_s": wait, "calls": len(turns),
        "answered": len(lat),
        "answer_latency_ms_p50": pct(lat, 50), "answer_latency_ms_p99": pct(lat, 99),
        "answer_latency_ms_max": round(max(lat), 1) if lat else None,
        "bargeins": len(barge) + missed_barge, "bargein_missed": missed_barge,
        "bargein_ms_p50": pct(barge, 50), "bargein_ms_p99": pct(barge, 99),
        "call_s_median": round(float(np.median(calls_s)), 2) if calls_s else None,
        "answer_s_median": round(float(np.median(answers_s)), 2) if answers_s else None,
        "answer_call_ratio_median": round(float(np.median(
            [a / max(c, 1e-9) for a, c in zip(answers_s, calls_s)])), 2) if full else None,
        "answers_within_clamp": sum(1 for a in answers_s if a <= 16.0 + 2.0 + 0.05),
        "stop_reasons": {k: r["stops"].count(k) for k in sorted(set(r["stops"]))},
        "pc_cosine_median": round(float(np.median(cos)), 3) if cos else None,
        "pc_cosine_random_median": round(float(np.median(rand)), 3) if rand else None,
        "pc_cosine_other_answer_median": round(float(np.median(other)), 3) if other else None,
        "scheduler_lateness_us_p99": r["lateness"]["lateness_us_p99"],
        "caught_up_steps": r["caught_up_steps"], "realtime": r["realtime"],
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    say(f"answer       latency p50 {result['answer_latency_ms_p50']} ms   p99 "
        f"{result['answer_latency_ms_p99']} ms   max {result['answer_latency_ms_max']} ms   "
        f"(phrase end -> first answer note, wait {wait * 1000:.0f} ms included; "
        f"{len(lat)} of {len(turns)} calls answered)")
    say(f"barge-in     p50 {result['bargein_ms_p50']} ms   p99 {result['bargein_ms_p99']} ms   "
        f"(the player's note -> the model silent; {len(barge)} barge-ins"
        + (f", {missed_barge} where the model played on" if missed_barge else "") + ")")
    if full:
        say(f"length       answers {result['answer_s_median']} s for calls of "
            f"{result['call_s_median']} s (medians of {len(full)} uninterrupted answers; "
            f"first note to last note-off; clamp 2-16 s + 2 s to find a pause); "
            f"answer/call {result['answer_call_ratio_median']}; ends: "
            + ", ".join(f"{k} {v}" for k, v in result["stop_reasons"].items()))
    say(f"pitch class  cosine call vs its answer: median {result['pc_cosine_median']}   "
        f"random pairs of calls: {result['pc_cosine_random_median']}   a call vs another's "
        f"answer: {result['pc_cosine_other_answer_median']}"
        + ("  (follow on: the model is conditioned)" if r["conditioned"] else ""))
    say(f"machine      scheduler lateness p99 {result['scheduler_lateness_us_p99']} µs; "
        f"{r['realtime']}; load average {result['loadavg_1m']}")
    return result


BENCHES: dict[str, Callable] = {
    "model": bench_model,
    "timing": bench_timing,
    "duet": bench_duet,
    "knobs": bench_knobs,
    "music": lambda args: _music(args),
}


def _music(args) -> dict:
    from livepiano.tools.bench.music import bench_music

    return bench_music(args)


def run(which: str, args) -> int:
    from livepiano import LivepianoError

    fn = BENCHES.get(which)
    if fn is None:
        raise LivepianoError(f"no benchmark called {which!r}; "
                             f"pick one of {', '.join(sorted(BENCHES))}.")
    result = fn(args)
    if getattr(args, "json", False):
        print(json.dumps(result), flush=True)
    return 0


def _card_summary(path) -> str:
    """What the model's YAML card says of its training, for a benchmark's first line."""
    from livepiano.engine import read_model_card

    card = read_model_card(path)
    model, training = card.get("model") or {}, card.get("training") or {}
    nll = (card.get("evaluation") or {}).get("validation_nll")
    if not model:
        return ""
    return (f"  ({model.get('layers')}x{model.get('hidden')}, {training.get('epochs')} epochs, "
            f"validation NLL {nll})")
