"""``livepiano bench timing``: how late the scheduler sends its messages while the engine
generates ahead, optionally with a busy loop on the other core."""

from __future__ import annotations

import os
import threading
import time

from livepiano import LivepianoError
from livepiano.live.loop import STEP_S, EngineLoop
from livepiano.live.scheduler import Scheduler
from livepiano.live.session import engine_priority, quiet_gc


class NullOut:
    def send_message(self, message) -> None:
        pass


def _busy(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


def steal_ms() -> int | None:
    """CPU time the hypervisor took from this virtual machine so far (Linux), in ms."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) * 1000 // os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def timing(model_path, *, deadlines: int = 2000, load: bool = False, realtime_mode: str = "auto",
           temperature: float = 1.0, speed: float = 4.0, lookahead: float = 0.1,
           seed: int | None = 0, timeout: float = 120.0, progress=None,
           view_port: int | None = None, say=print) -> dict:
    """Scheduler lateness with the engine generating in its own thread, as in ``play``, to a
    null output. ``speed`` plays the stream faster than real time (the engine has to generate
    ``speed`` times as many events per second: a harder test, and ``deadlines`` come sooner);
    ``load`` runs a busy loop in another process on the other core; ``view_port``: serve the
    stage view there (as ``play --view``) and measure once a page has opened it."""
    import multiprocessing as mp

    from livepiano.runtime.engine import Engine

    engine = Engine(model_path, temperature=temperature, seed=seed)
    clock = time.monotonic
    busy = None
    if load:
        ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
        busy = ctx.Process(target=_busy, args=(clock() + timeout + 5,), daemon=True)
        busy.start()
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cpus) > 1:
            try:
                os.sched_setaffinity(busy.pid, {cpus[-1]})
            except OSError:
                pass
    scheduler = Scheduler(NullOut(), clock=clock, realtime_mode=realtime_mode,
                          keep_lateness=10 ** 6)
    origin = clock() + 0.05
    loop = EngineLoop(engine, scheduler, origin=origin, lookahead=lookahead, clock=clock,
                      step_s=STEP_S / speed)
    view = None
    if view_port is not None:
        from livepiano.tools.bench.common import open_view

        view = open_view(loop, scheduler, view_port, realtime_mode, say)
        loop.origin = clock() + 0.05
    threads = [threading.Thread(target=scheduler.run, daemon=True),
               threading.Thread(target=loop.run, args=(engine_priority(realtime_mode),),
                                daemon=True)]
    quiet_gc()
    for t in threads:
        t.start()
    t0 = clock()
    steal0 = steal_ms()
    try:
        while len(scheduler.lateness) < deadlines and clock() - t0 < timeout:
            if loop.error or scheduler.error:
                raise loop.error or scheduler.error
            time.sleep(0.2)
            if progress:
                progress(len(scheduler.lateness))
    finally:
        loop.stop()
        threads[1].join(2.0)
        scheduler.stop()
        threads[0].join(2.0)
        if busy is not None:
            busy.terminate()
            busy.join()
        if view is not None:
            view.close()
    result = scheduler.lateness_us()
    if result["deadlines"] < deadlines:
        raise LivepianoError(f"only {result['deadlines']} deadlines in {timeout:.0f} s (the model "
                             f"plays too few notes); raise --speed or the temperature.")
    steal1 = steal_ms()
    result["steal_ms"] = steal1 - steal0 if steal0 is not None and steal1 is not None else None
    if view is not None:
        result.update({"view_frames": view.stage.frames, "view_pages": view.stage.pages})
    result.update({"view": view is not None, "load": load,
                   "realtime": scheduler.realtime_note, "speed": speed,
                   "seconds": round(clock() - t0, 1), "caught_up_steps": loop.caught_up_steps,
                   "model": str(model_path)})
    return result


def bench(args) -> dict:
    """Scheduler lateness (how late each message leaves after its deadline) with the engine
    generating in its own thread, as in `livepiano play`, to a null output."""
    from livepiano.runtime.modelfile import resolve_model
    from livepiano.tools.bench.timing import timing

    path = resolve_model(getattr(args, "model", None))
    say = getattr(args, "say", print)
    load = bool(getattr(args, "load", False))
    say(f"model        {path}; {'a busy loop on the other core' if load else 'no extra load'}")
    r = timing(path, deadlines=max(2000, int(getattr(args, "deadlines", 2000) or 2000)),
               load=load, realtime_mode=getattr(args, "realtime", "auto") or "auto",
               seed=getattr(args, "seed", 0), say=say,
               view_port=getattr(args, "view_port", 8765) if getattr(args, "view", False)
               else None)
    r["loadavg_1m"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    say(f"lateness     p50 {r['lateness_us_p50']:8.1f} µs   p99 {r['lateness_us_p99']:8.1f} µs   "
        f"max {r['lateness_us_max']:8.1f} µs   late > 1 ms: {r['late_over_1ms']} of "
        f"{r['deadlines']} deadlines")
    say(f"scheduler    {r['realtime']}; stream played {r['speed']}x real time "
        f"({r['seconds']} s)")
    if r["view"]:
        say(f"view         a page open ({r['view_frames']} frames sent)")
    if r.get("steal_ms") is not None:
        say(f"machine      {r['steal_ms']} ms stolen by the hypervisor during the run; "
            f"load average {r['loadavg_1m']}")
    return r

