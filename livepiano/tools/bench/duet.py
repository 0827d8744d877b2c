"""``livepiano bench duet``: answer latency, barge-in latency, answer length and how the answers
follow their calls, with calls cut from real performances, played into a real session."""

from __future__ import annotations

import os

from livepiano.core import messages
from livepiano.core.voices import Voices
from livepiano.settings.schema import DUET
from livepiano.tools.bench.common import card_summary, cut_calls


def _duet_sources(data: str | None, limit: int = 8) -> tuple[list[list[tuple]], str]:
    """Held-out performances as lists of (start s, end s, pitch, velocity), pedal applied:
    tests/data's MAESTRO test-split excerpts, or the test split of ``data`` (a token cache
    or a MAESTRO folder)."""
    from pathlib import Path

    from livepiano import LivepianoError
    from livepiano.core import codec
    from livepiano.core.midifile import midi_file_notes

    if data is None:
        folder = Path(__file__).resolve().parents[3] / "tests" / "data"  # the checkout's
        files = sorted(folder.glob("*.mid"))
        if not files:
            raise LivepianoError(f"no MIDI excerpts in {folder}; give --data (a token cache or "
                                 f"a MAESTRO folder).")
        return ([[(n.start, n.end, n.pitch, n.velocity) for n in midi_file_notes(p)]
                 for p in files], f"{len(files)} MAESTRO test-split excerpts in {folder}")
    from livepiano.learn.evaluate import load_eval_tokens

    arrays, split = load_eval_tokens(data, "test", limit)
    step = 1.0 / codec.STEPS_PER_SECOND
    return ([[(n.start * step, n.end * step, n.pitch, n.velocity)
              for n in codec.tokens_to_step_notes(a[:20000])] for a in arrays],
            f"{len(arrays)} performances of {data}" + (f" ({split} split)" if split else ""))


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
        self.sounding = Voices("oldest")

    def send_message(self, message) -> None:
        m = list(message)
        self.sent.append((self.clock(), m))
        self.sounding.message(m)


def _pc_cosine(a: list[int], b: list[int]) -> float | None:
    import numpy as np

    if not a or not b:
        return None
    ha, hb = np.bincount(np.asarray(a) % 12, minlength=12), np.bincount(np.asarray(b) % 12,
                                                                         minlength=12)
    return float(ha @ hb / (np.linalg.norm(ha) * np.linalg.norm(hb)))


def duet_run(model_path, calls, *, wait: float = DUET["wait"].default, realtime_mode: str = "auto",
             seed: int | None = 0, lookahead: float = 0.1, progress=None) -> dict:
    """The calls played in real time into the real Listener, EngineLoop (duet mode) and
    Scheduler in this process, the output stamped as it leaves; every ``DUET_BARGE_EVERY``-th
    answer is interrupted by the next call while the model has a note sounding."""
    import time

    from livepiano.live.duet import DuetSettings
    from livepiano.live.duet_mode import DuetMode
    from livepiano.live.listener import Listener
    from livepiano.live.loop import EngineLoop
    from livepiano.live.scheduler import Scheduler
    from livepiano.live.session import play_threads
    from livepiano.runtime import steering
    from livepiano.runtime.engine import Engine
    from livepiano.settings import schema

    clock = time.monotonic
    engine = Engine(model_path, seed=seed)
    steering.configure(engine, schema.defaults(), accompany=True)  # as play does
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
            timeline = sorted([(s, 1, [messages.NOTE_ON, p, v]) for s, e, p, v in call]
                              + [(e, 0, [messages.NOTE_OFF, p, 0]) for s, e, p, v in call])
            t0 = clock()
            for at, _, m in timeline:
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
            limit = phrase_end + wait + mode.settings.max_answer + mode.settings.grace + 2.0
            first = None
            while clock() < limit:
                check()
                time.sleep(0.002)
                if first is None:
                    first = next((t for t, m in out.sent[-50:] if t > phrase_end
                                  and messages.kind(m) == "on"), None)
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
        ons = [(t, m[1]) for t, m in mine if messages.kind(m) == "on"]
        turn["first_note"] = ons[0][0] if ons else None
        turn["answer_pitches"] = [p for _, p in ons]
        offs = [t for t, m in mine if messages.kind(m) == "off"]
        turn["answer_s"] = (max(offs) - ons[0][0]) if ons and offs else None
    # Barge-in: from the next call's first note to the moment nothing of the model sounds
    # any more (any note it starts after the barge-in counts against it).
    for i, turn in enumerate(turns):
        tb = turn["barged_at"]
        if tb is None:
            continue
        sounding = Voices("oldest")
        silent_at, at_barge = None, False
        for t, m in sent:
            if t > turns[i + 1]["phrase_end"]:
                break
            if t >= tb and not at_barge:
                at_barge = True
                silent_at = None if sounding else tb
            kind = messages.kind(m)
            sounding.message(m, t)
            if at_barge:
                if kind == "on":
                    silent_at = None
                elif kind == "off" and silent_at is None and not sounding:
                    silent_at = t
        turn["bargein_s"] = None if silent_at is None else silent_at - tb
    stops = [a.reason for _, a in mode.log if type(a).__name__ == "StopAnswer"]
    return {"turns": turns, "stops": stops, "caught_up_steps": loop.caught_up_steps,
            "lateness": scheduler.lateness_us(), "realtime": scheduler.realtime_note,
            "conditioned": engine.conditioned, "layers": engine.layers, "hidden": engine.hidden}


def bench(args) -> dict:
    """Call and response in real time, in process as in `livepiano play --mode duet`: held-out
    calls go into the real listener; the engine loop answers through the scheduler to a null
    output that stamps each message. Answer latency (phrase end -> first answer note, so it
    includes the wait), barge-in latency, answer vs call length, and the pitch-class cosine of
    each call with its answer next to that of random pairs of calls."""
    import random

    import numpy as np

    from livepiano.runtime.modelfile import resolve_model

    say = getattr(args, "say", print)
    path = resolve_model(getattr(args, "model", None))
    wait = float(getattr(args, "wait", None) or DUET["wait"].default)
    count = max(20, int(getattr(args, "calls", 21) or 21))
    sources, where = _duet_sources(getattr(args, "data", None))
    calls = cut_calls(sources, wait, count=count)
    if len(calls) < 20:
        from livepiano import LivepianoError

        raise LivepianoError(f"only {len(calls)} calls could be cut from {where}; give --data "
                             f"with more music.")
    say(f"model        {path}{card_summary(path)}")
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
    longest = DUET["max_answer"].default + DUET["grace"].default  # the answer's hard cap
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
        "answers_within_clamp": sum(1 for a in answers_s if a <= longest + 0.05),
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




DUET_BARGE_EVERY = 3  # every third answer is interrupted by the next call

