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
    say(f"model        {path}" + ("  (the shipped model is an undertrained interim one: its "
                                  "timing is what matters here)"
                                  if path.name == "performance_rnn.onnx" else ""))
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


BENCHES: dict[str, Callable] = {
    "model": bench_model,
    "timing": bench_timing,
    "knobs": bench_knobs,
}


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
