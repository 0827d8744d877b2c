"""``livepiano bench model``: the model's step latency on one thread, priming speed and
generation speed against real time."""

from __future__ import annotations

import os
import time

from livepiano.tools.bench.common import (
    PRIME_CHUNK_TOKENS,
    percentiles,
    thread_realtime,
)


def bench(args) -> dict:
    """Per-step latency of Engine.sample (1 intra-op thread), priming throughput on 30-second
    chunks, and generation speed as a multiple of real time."""
    import numpy as np

    from livepiano.core import codec
    from livepiano.runtime.engine import Engine
    from livepiano.runtime.modelfile import model_feeds, resolve_model

    steps = max(2000, int(getattr(args, "steps", 3000) or 3000))
    path = resolve_model(getattr(args, "model", None))
    engine = Engine(path, seed=getattr(args, "seed", 0), temperature=1.0)
    say = getattr(args, "say", print)
    say(f"model        {path} ({engine.layers}x{engine.hidden}, "
        f"{'conditioned' if engine.conditioned else 'unconditioned'}"
        f"{', two players' if engine.two_players else ''})")

    # Warm-up: a short phrase, then some sampling.
    engine.prime([codec.velocity_event(20), 60, codec.shift(20), codec.note_off(60)])
    for _ in range(300):
        engine.sample()

    # Everything below is timed, under SCHED_FIFO with --rt where the system allows it.
    priority = thread_realtime(True) if getattr(args, "rt", False) else "normal"
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
        p50, p99, pmax = percentiles(lat / 1e3)

        # The model call alone (T=1), to tell the model's time from the sampler's.
        state = np.zeros((engine.layers, 1, engine.hidden), np.float32)
        feeds = model_feeds(engine.shape, np.zeros((1, 1), np.int64), state, state.copy())
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
            thread_realtime(False)

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

