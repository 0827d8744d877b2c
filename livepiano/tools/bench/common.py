"""What the benchmarks share: real-time priority for the measuring thread, percentiles, the
model card's summary line, duet calls cut from recorded performances, the stage view beside a
run (``--view``)."""

from __future__ import annotations

import os

CALL_SECONDS = (1.5, 2.5, 2.0, 3.5, 1.8, 3.0)  # the lengths calls are cut at, in turn

# MAESTRO's mean rate of performance events (≈ 45 events/s): a 30-second priming chunk.
PRIME_CHUNK_TOKENS = 1350


def thread_realtime(on: bool) -> str:
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


def percentiles(values_us: list[float]) -> tuple[float, float, float]:
    import numpy as np

    a = np.asarray(values_us, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def card_summary(path) -> str:
    """What the model's YAML card says of its training, for a benchmark's first line."""
    from livepiano.runtime.modelfile import read_model_card

    card = read_model_card(path)
    model, training = card.get("model") or {}, card.get("training") or {}
    nll = (card.get("evaluation") or {}).get("validation_nll")
    if not model:
        return ""
    return (f"  ({model.get('layers')}x{model.get('hidden')}, {training.get('epochs')} epochs, "
            f"validation NLL {nll})")



def cut_calls(performances, wait: float, *, count: int | None = None,
              seconds: float | None = None, between: float = 0.0) -> list[list[tuple]]:
    """Duet calls cut from the performances in turn (each a list of (start, end, pitch,
    velocity) sorted by start), lengths cycling through CALL_SECONDS: the notes starting in a
    window (ends kept, at most 0.4 s past it), shifted to start at 0; a window with a silence
    of ``wait`` - 0.1 s inside (it would be two calls), or under 3 notes, is passed over.
    Stops at ``count`` calls, or when the calls, their answers (each about as long) and
    ``between`` after each fill ``seconds``, or when the performances run out."""
    cursors: list[float | None] = [0.0] * len(performances)
    calls: list[list[tuple]] = []
    filled, k = 0.0, 0
    while ((count is None or len(calls) < count) and (seconds is None or filled < seconds)
           and any(c is not None for c in cursors)):
        i = k % len(performances)
        k += 1
        notes, a = performances[i], cursors[i]
        if a is None:
            continue
        length = CALL_SECONDS[len(calls) % len(CALL_SECONDS)]
        last = notes[-1][0] if notes else -1.0
        while a is not None:
            if a > last:
                a = None
                break
            window = [n for n in notes if a <= n[0] < a + length]
            if len(window) >= 3:
                first = window[0][0]
                cut = [(s - first, min(e, a + length + 0.4) - first, p, v)
                       for s, e, p, v in window]
                covered, gap = 0.0, 0.0
                for s, e, _, _ in cut:
                    gap = max(gap, s - covered)
                    covered = max(covered, e)
                if gap < wait - 0.1:
                    calls.append(cut)
                    filled += 2 * max(e for _, e, _, _ in cut) + wait + between
                    a += length + 0.5
                    break
            a += 0.5
        cursors[i] = a
    return calls


VIEW_WAIT_S = 120.0  # how long --view waits for a page to open


def open_view(loop, scheduler, port: int, realtime_mode: str, say, knobs=None,
              wait: bool = True):
    """The stage view on a benchmark's engine loop and scheduler, as ``play --view`` serves
    it (a fresh ``Knobs`` when the benchmark has none); with ``wait``, once a page has opened
    it."""
    from livepiano.live.controls import Controls
    from livepiano.live.knobs import Knobs
    from livepiano.live.session import engine_priority
    from livepiano.live.view.process import serve

    if knobs is None:
        knobs = Knobs(Controls(), loop, clock=loop.clock)
    view = serve(loop, scheduler, knobs, port=port, prepare=engine_priority(realtime_mode),
                 realtime=realtime_mode)
    sent = scheduler.on_sent
    scheduler.on_sent = view.stage.sent if sent is None else (
        lambda t, m: (sent(t, m), view.stage.sent(t, m)))
    if not wait:
        say(f"view         {view.url}")
        return view
    say(f"view         {view.url} -- waiting for a page to open it")
    try:
        view.wait_for_page(VIEW_WAIT_S)
    except BaseException:
        view.close()
        raise
    return view
