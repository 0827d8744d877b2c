"""``livepiano bench knobs``: from a knob's CC arriving to the first event sampled with the new
value, through the real listener, engine loop and scheduler."""

from __future__ import annotations

import os
import queue
import time

from livepiano.core import messages
from livepiano.live.controls import Controls
from livepiano.live.knobs import Knobs
from livepiano.settings import params
from livepiano.tools.bench.common import card_summary, thread_realtime


class _FeedPort:
    """An input port fed by the benchmark: what the listener polls (rtmidi's interface)."""

    def __init__(self):
        self.client = self
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def ignore_types(self, **_kw) -> None:
        pass

    def push(self, message) -> None:
        self._queue.put((list(message), 0.0))

    def get_message(self):
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None


def latency(model_path, *, changes: int = 200, temperatures: tuple[float, float] = (0.5, 1.5),
            lookahead: float = 0.1, gap_ms: tuple[float, float] = (50.0, 150.0),
            realtime_mode: str = "auto", seed: int | None = 0, timeout: float = 120.0,
            progress=None, view_port: int | None = None, say=print, via: str = "cc",
            wait_for_page: bool = True) -> dict:
    """From a CC message to the first event sampled with the new temperature, in-process as
    in ``play``: the real ``Listener`` polls a port the benchmark feeds, its ``on_control``
    hook hands the CC to ``Knobs`` through ``EngineLoop.call``; the engine generates in
    continuous mode to a null output. A CC alternating between the knob positions of two
    temperatures is pushed every ``gap_ms`` (random in the range). Per change: ``t0`` when
    the CC is pushed; applied (on the engine thread); effect (the first sample that used the
    new temperature has returned); stream (where that event begins in the stream, on the
    clock: from then on what sounds was sampled with the new value). ``view_port``: serve
    the stage view there (as ``play --view``, the knob's moves shown) and measure once a page
    has opened it (with ``wait_for_page``). ``via="view"``: each change is posted to the
    view's ``/set`` instead, as its page's temperature control does (``t0`` before the
    request: HTTP, the view's server process and its pipe, then the same path)."""
    import random

    from livepiano.live.listener import Listener
    from livepiano.live.loop import EngineLoop
    from livepiano.live.scheduler import Scheduler, percentile
    from livepiano.live.session import play_threads
    from livepiano.runtime.engine import Engine
    from livepiano.tools.bench.timing import NullOut

    p = params.PARAMS["temperature"]
    values = [int(round(p.position(t))) for t in temperatures]
    temps = [p.value_at(v) for v in values]
    engine = Engine(model_path, temperature=temps[0], seed=seed)
    clock = time.monotonic
    scheduler = Scheduler(NullOut(), clock=clock, realtime_mode=realtime_mode)
    waiting: list = [None]  # (index, t0, temperature) of the change not yet heard
    rows: dict[int, tuple[float, float, float]] = {}  # index -> (t0, effect, stream)

    def sampled(_token, begins):  # begins: where the sampled event begins in the stream
        w = waiting[0]
        if w is not None and engine.temperature == w[2] and w[0] not in rows:
            rows[w[0]] = (w[1], clock(), begins)

    loop = EngineLoop(engine, scheduler, origin=clock() + 0.05, lookahead=lookahead,
                      clock=clock, on_sampled=sampled)
    knob = params.Control("cc", 1, 21)
    controls = Controls([params.Binding(knob, "temperature")], values={"temperature": temps[0]})
    knobs = Knobs(controls, loop, clock=clock)
    port = _FeedPort()
    listener = Listener(port, loop.hear, clock=clock, on_control=knobs.on_control)

    applied: dict[int, float] = {}
    taken_back = [0]

    def on_applied(change, _t):
        w = waiting[0]
        if w is not None and change.param == "temperature" and change.value == w[2]:
            applied[w[0]] = clock()

    knobs.on_applied = on_applied
    view = None
    if via == "view" and view_port is None:
        view_port = 0
    if view_port is not None:
        from livepiano.tools.bench.common import open_view

        view = open_view(loop, scheduler, view_port, realtime_mode, say, knobs,
                         wait=wait_for_page)
        loop.origin = clock() + 0.05
    threads = play_threads(scheduler, loop, listener, realtime_mode)
    for t in threads:
        t.start()
    rng = random.Random(seed)
    t_start = clock()
    # The sender stands in for the page's browser: posting takes a few system calls after t0,
    # and it is given real-time priority, as the listener that takes a CC has, so that what is
    # timed is the view's path, not this thread waiting for a core behind other programs.
    sender = thread_realtime(True) if via == "view" and realtime_mode in ("auto", "fifo") \
        else None
    try:
        time.sleep(0.5)  # the engine gets going at the first temperature
        for i in range(changes):
            if loop.error or scheduler.error or listener.error:
                raise loop.error or scheduler.error or listener.error
            if clock() - t_start > timeout:
                break
            k = (i + 1) % 2
            t0 = clock()
            waiting[0] = (i, t0, temps[k])
            if via == "view":
                _post(view.port, temps[k])
            else:
                port.push([messages.CONTROL | (knob.channel - 1), knob.number, values[k]])
            time.sleep(rng.uniform(*gap_ms) / 1000)
            if progress:
                progress(i + 1)
        time.sleep(0.2)
        taken_back[0] = loop.taken_back
    finally:
        if sender is not None:
            thread_realtime(False)
        listener.stop()
        loop.stop()
        scheduler.stop()
        for t in threads:
            t.join(2.0)
        if view is not None:
            view.close()
    effect = [(rows[i][1] - rows[i][0]) * 1000 for i in sorted(rows)]
    stream = [(rows[i][2] - rows[i][0]) * 1000 for i in sorted(rows)]
    apply_ms = [(applied[i] - rows[i][0]) * 1000 for i in sorted(rows) if i in applied]

    def stats(name, xs):
        return {f"{name}_p50": round(percentile(xs, 50), 2),
                f"{name}_p99": round(percentile(xs, 99), 2),
                f"{name}_max": round(max(xs), 2) if xs else 0.0}

    result = {"changes": changes, "measured": len(effect), "missed": changes - len(effect),
              "view": view is not None, "via": via, "sender": sender}
    if view is not None:
        result.update({"view_frames": view.stage.frames, "view_pages": view.stage.pages})
    result.update(stats("knob_to_effect_ms", effect))
    result.update(stats("knob_to_applied_ms", apply_ms))
    result.update(stats("knob_to_stream_ms", stream))
    result.update({"temperatures": [round(t, 3) for t in temps], "cc_values": values,
                   "lookahead_ms": round(lookahead * 1000), "taken_back_events": taken_back[0],
                   "gap_ms": list(gap_ms), "seconds": round(clock() - t_start, 1),
                   "model": str(model_path)})
    return result


def bench(args) -> dict:
    """From a knob's CC message to the first event sampled with the new temperature, in
    process as in `livepiano play` (the real listener, knobs and engine loop; continuous
    mode; a null output)."""
    from livepiano.runtime.modelfile import resolve_model
    from livepiano.tools.bench.knobs import latency

    path = resolve_model(getattr(args, "model", None))
    say = getattr(args, "say", print)
    changes = max(200, int(getattr(args, "changes", 200) or 200))
    say(f"model        {path}{card_summary(path)}")
    say(f"knob         a CC every 50-150 ms, alternating between two temperatures; "
        f"{changes} changes (about {changes * 0.1:.0f} s)")
    via = getattr(args, "via", "cc") or "cc"
    view = bool(getattr(args, "view", False))
    r = latency(path, changes=changes, realtime_mode=getattr(args, "realtime", "auto") or "auto",
                seed=getattr(args, "seed", 0), say=say, via=via, wait_for_page=view,
                view_port=getattr(args, "view_port", 8765) if view or via == "view" else None)
    if r["view"]:
        say(f"view         a page open ({r['view_frames']} frames sent)")
    r["loadavg_1m"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    sent = "CC sent" if via == "cc" else "POST /set sent"
    say(f"to effect    p50 {r['knob_to_effect_ms_p50']:7.2f} ms   p99 "
        f"{r['knob_to_effect_ms_p99']:7.2f} ms   max {r['knob_to_effect_ms_max']:7.2f} ms   "
        f"({sent} -> first event sampled with the new temperature; {r['measured']} of "
        f"{r['changes']} changes)")
    say(f"applied      p50 {r['knob_to_applied_ms_p50']:7.2f} ms   p99 "
        f"{r['knob_to_applied_ms_p99']:7.2f} ms   ({sent} -> value set on the engine thread)")
    say(f"in stream    p50 {r['knob_to_stream_ms_p50']:7.2f} ms   p99 "
        f"{r['knob_to_stream_ms_p99']:7.2f} ms   ({sent} -> where that event begins in the "
        f"stream, i.e. when the new value is heard; look-ahead {r['lookahead_ms']} ms, "
        f"{r['taken_back_events']} unheard events taken back)")
    if r["loadavg_1m"] is not None:
        say(f"load         {r['loadavg_1m']} (1-minute load average; other work skews these)")
    return r



def _post(port: int, temperature: float) -> None:
    """The temperature as the view's page posts it (``--via view``)."""
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = json.dumps({"name": "temperature", "value": temperature})
        conn.request("POST", "/set", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        if answer.status != 200:
            from livepiano import LivepianoError

            raise LivepianoError(f"the view refused the change: {answer.read().decode().strip()}")
        answer.read()
    finally:
        conn.close()
