"""The play session: the threads, the queues between them, the look-ahead loop, shutdown,
recording and the status line.

    listener thread --events--> EngineLoop.inbox --> engine thread
    engine thread --(deadline, message)--> Scheduler.inbox --> scheduler thread --> output
    listener and scheduler threads --records--> Journal (recorder) --flush, 1 s--> disk
    main thread: signals, port and JACK-server watch (input gone -> reconnect; output or
                 server gone -> stop), journal flush, status
    guardian process: its own connection to the output; silences it if this process dies

Each piece of state has one owner: the engine thread owns the ``Engine`` (LSTM state, sampler,
stream view); the scheduler thread owns the output port, the sounding notes (and their copy
in the guardian's shared map) and runs the garbage collector in its spare time; the main
thread owns the ports' lifetimes, the journal's file and the shutdown: notes released, then
the session saved, then the ports closed. Later modes (the duet's turn-taking) plug in as a
``Mode``; knobs reach the engine through ``EngineLoop.call``, which runs a function on the
engine thread, between two samples.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Callable

from livepiano import LivepianoError
from livepiano.live import journal, knobs
from livepiano.live.listener import Listener
from livepiano.live.loop import EngineLoop
from livepiano.live.modes import make_mode
from livepiano.live.recorder import (
    Recorder,
    open_journal,
    record_path,
    recover_orphans,
    sessions_dir,
)
from livepiano.live.scheduler import FIFO_PRIORITY, Scheduler, percentile, realtime

log = logging.getLogger(__name__)

WATCH_S = 0.5  # how often the main thread checks that the ports are still there
STATUS_S = 0.25
WAKE_S = 0.05  # the main thread's turn: port watch, journal flush
DRAIN_S = 0.1  # after the panic, before the ports close
CLOSE_WAIT_S = 2.0  # the longest wait for the ports to close at the end
WATCHDOG_S = 10.0  # the main thread stuck this long (the GIL held in C): end the process
ENGINE_FIFO_PRIORITY = 1  # the lowest: under the listener (FIFO_PRIORITY - 1) and the scheduler
# The scheduler thread collects young garbage this often (a few hundred objects each time:
# well under a millisecond), and all of it about this often, in a gap at least this long.
GC_EVERY_S = 0.25
GC_FULL_EVERY_S = 60.0
GC_FULL_GAP_S = 0.010
# --- modes ---------------------------------------------------------------------------------

# --- the engine thread -----------------------------------------------------------------------

# --- recording -----------------------------------------------------------------------------

# --- the session ---------------------------------------------------------------------------

class _Rate:
    """Notes per second over the last few seconds, from a growing count."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self.samples: list[tuple[float, int]] = []

    def __call__(self, t: float, count: int) -> float:
        self.samples.append((t, count))
        while len(self.samples) > 2 and self.samples[1][0] < t - self.window:
            self.samples.pop(0)
        t0, c0 = self.samples[0]
        return (count - c0) / (t - t0) if t > t0 else 0.0


class Session:
    """A ``livepiano play`` session built from settings (see ``config.SCHEMA``)."""

    def __init__(self, settings: dict, *, out=sys.stderr, status: bool | None = None):
        self.settings = settings
        self.out = out
        self.status = out.isatty() if status is None else status
        self.stop_reason: str | None = None
        self.failed = False
        self._stop = threading.Event()
        self._wake = threading.Event()  # the main thread's: a stop, or a knob change to show
        self.save_s: float | None = None  # how long the save at the end took
        self._ending = "saving"  # what a Ctrl-C during the ending is told
        # For code that runs a session in-process (the demo): set once its threads are
        # playing; the scheduler's lateness figures once it has ended.
        self.playing = threading.Event()
        self.lateness: dict | None = None
        self.view = None  # the stage view's server (--view), once listening

    def say(self, text: str) -> None:
        log.info("%s", text)
        if self.status:
            self.out.write("\r\x1b[2K")
        self.out.write(f"livepiano: {text}\n")
        self.out.flush()

    def request_stop(self, reason: str, failed: bool = False) -> None:
        if self.stop_reason is None:
            self.stop_reason, self.failed = reason, failed
        self._stop.set()
        self._wake.set()

    def run(self) -> int:
        from livepiano.live import ports
        from livepiano.runtime import steering
        from livepiano.runtime.engine import Engine
        from livepiano.runtime.modelfile import resolve_model

        s = self.settings
        log.debug("settings: %s", s)
        # Where the session goes is settled before anything plays: a path that cannot be
        # written fails here, an existing file is kept and a new name used.
        path, renamed = record_path(s["record"])
        recover_orphans([sessions_dir(), path.parent], self.say)
        if renamed:
            self.say(renamed)
        knob_setup = knobs.SessionKnobs(s)  # a bad controls file fails before any port opens
        api = ports.resolve_api(s["api"])
        view = self._listen_view()  # a taken port, too
        try:
            outp = ports.Port("out", api, s["out"])  # ports first: a wrong name fails fast
        except BaseException:
            if view is not None:
                view.close()
            raise
        inp = recorder = guardian = server = None
        clock = time.monotonic
        channel = s["channel"] - 1
        try:
            inp = ports.Port("in", api, s["in"])
            knob_setup.open_port(api)
            model_path = resolve_model(s["model"])
            engine = Engine(model_path, temperature=s["temperature"], seed=s["seed"])
            steering.configure(engine, s, accompany=True)
            origin = clock()
            recorder = Recorder(open_journal(path, origin))
            guardian = self._start_guardian(api, outp, channel)
            server = self._watch_server(api)
            scheduler = Scheduler(outp.client, channel=channel, clock=clock,
                                  on_sent=recorder.sent, realtime_mode=s["realtime"],
                                  mirror=guardian.sounding if guardian is not None else None)
            loop = EngineLoop(engine, scheduler, origin=origin,
                              lookahead=s["lookahead_ms"] / 1000, channel=channel,
                              mode=make_mode(s, self.say), clock=clock)
            self.knobs = kn = knob_setup.attach(  # the mode knob builds a mode as settings do
                loop, lambda name, say: knobs.build_mode(s, name, say))
            kn.notify = self._wake.set
        except BaseException:  # nothing played: nothing to keep
            if view is not None:
                view.close()
            if guardian is not None:
                guardian.goodbye()
            if server is not None:
                server.close()
            if recorder is not None:
                recorder.journal.discard()
            outp.close()
            if inp is not None:
                inp.close()
            knob_setup.close()
            raise

        stage = self._stage(view, loop, scheduler, kn, inp, outp)
        if stage is not None:  # the view sees what the scheduler sends, as the recorder does
            scheduler.on_sent = _both(recorder.sent, stage.sent)

        def deliver(events):
            recorder.heard(events)
            loop.hear(events)
            kn.heard(events)
            if stage is not None:
                stage.heard(events)

        def echo(message):
            scheduler.send_now([(message[0] & 0xF0) | channel] + list(message[1:]))

        listener = Listener(inp, deliver, clock=clock, echo=echo if s["echo"] else None,
                            on_control=kn.on_control)
        listener.on_pedal = loop.hear_pedal  # the duet: a pedal held in silence counts
        if s.get("end_of_call_cc") is not None:
            listener.on_control = _end_of_call_cc(s["end_of_call_cc"], loop,
                                                  listener.on_control)
        threads = play_threads(scheduler, loop, listener, s["realtime"])
        collector = Collector(scheduler, clock)
        main_priority = MainPriority(s["realtime"])
        old_handlers = {sig: signal.signal(sig, self._on_signal)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            _report_crashes()
            collector.start()
            main_priority.start()
            for t in threads:
                t.start()
            self.say(f"playing ({loop.mode.name}); in: {inp.label}; out: {outp.label}; "
                     f"model: {model_path.name}; recording to {path}. Ctrl-C stops.")
            if view is not None:
                view.start(stage, engine_priority(s["realtime"]))
                self.say(f"the view: {view.url}")
            self.playing.set()
            knob_setup.start(keys=self.status)
            self.say(knob_setup.describe())
            self._watch(inp, outp, listener, loop, scheduler, recorder, threads, server)
        finally:
            main_priority.end()
            collector.stop()
            if view is not None:
                view.close()
            self._shut_down(inp, outp, knob_setup, listener, loop, scheduler, threads,
                            recorder, guardian, server, old_handlers)
        return 1 if self.failed else 0

    def _listen_view(self):
        """The stage view's server, its port bound (``--view``), or None."""
        s = self.settings
        if not s.get("view"):
            return None
        from livepiano.live.view.process import ViewServer

        self.view = ViewServer(s["view_host"], s["view_port"], realtime=s["realtime"])
        return self.view

    @staticmethod
    def _stage(view, loop, scheduler, kn, inp, outp):
        if view is None:
            return None
        from livepiano.live.view.stage import Stage

        return Stage(loop, scheduler, kn, clock=loop.clock,
                     labels={"in": inp.label, "out": outp.label})

    def _start_guardian(self, api: str, outp, channel: int):
        """The companion that silences the output if this process dies without a clean exit
        (it needs a port it can connect to by name: a virtual output has none, and in-process
        ports end with the process, their synth too)."""
        from livepiano.live.ports import INPROCESS

        if outp.name is None or api == INPROCESS:
            return None
        from livepiano.live.guardian import Guardian

        try:
            return Guardian.start(api, outp.name, channel)
        except (OSError, RuntimeError) as e:
            self.say(f"playing without a guardian ({e}): if livepiano is killed, notes "
                     f"may hang on the synth.")
            return None

    def _watch_server(self, api: str):
        if api != "jack":
            return None
        from livepiano.live.jackwatch import ServerWatch

        return ServerWatch.open(self._wake.set)

    def _shut_down(self, inp, outp, knob_setup, listener, loop, scheduler, threads, recorder,
                   guardian, server, old_handlers) -> None:
        """Notes released first, then the session saved (Ctrl-C cannot cut that short), then
        the ports closed. A native call stuck while the threads stop or the ports close ends
        the process; the save has no such limit."""
        _arm_watchdog()  # stopping the threads, too, must not hang
        knob_setup.close()
        listener.stop()
        threads[2].join(timeout=2.0)
        loop.stop()
        threads[1].join(timeout=2.0)
        scheduler.stop()
        threads[0].join(timeout=2.0)
        scheduler.panic()  # no-op when the scheduler thread already did it
        time.sleep(DRAIN_S)  # JACK delivers in its next cycle: let the note-offs out
        _disarm_watchdog()
        server_gone = server is not None and server.gone.is_set()
        released = scheduler.released and not server_gone and _present(outp)
        # From here on a Ctrl-C changes nothing: the save must finish, and after it the
        # ports close within CLOSE_WAIT_S; the handlers come back only when all is done.
        self._ending = "saving"
        for sig in old_handlers:
            signal.signal(sig, self._on_signal_ending)
        t0 = time.monotonic()
        try:
            where = f"session saved to {recorder.save()}"
        except (OSError, LivepianoError) as e:
            why = getattr(e, "strerror", None) or str(e)
            where = (f"could not save the session ({why}); its journal "
                     f"{recorder.journal.path} is kept: `livepiano recover` it")
        self.save_s = time.monotonic() - t0
        if guardian is not None:
            guardian.goodbye()
        timing = self.lateness = scheduler.lateness_us()
        log.debug("stopped: %s (failed: %s); released: %s; timing %s", self.stop_reason,
                  self.failed, released, timing)
        done = ("every note released" if released else
                "notes could not be released (the output is gone)")
        self.say(f"{self.stop_reason or 'stopped'}; {done}; {where}. "
                 f"{recorder.notes_in()} notes in, {recorder.notes_out()} out; scheduler "
                 f"lateness p99 {timing['lateness_us_p99'] / 1000:.2f} ms "
                 f"({scheduler.realtime_note}).")
        self._ending = "closing the ports"
        try:
            # Closing a client waits for the MIDI system (a stalled JACK server can take
            # seconds); the notes are released and the session saved, so do not wait long.
            _arm_watchdog()
            if server_gone:
                return  # nothing to close on a server that is not there; libjack may hang
            closing = threading.Thread(target=self._close, args=(inp, outp, server),
                                       daemon=True)
            closing.start()
            closing.join(CLOSE_WAIT_S)
            _disarm_watchdog()
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)

    def _view_input(self, state: str) -> None:
        view = getattr(self, "view", None)
        if view is not None and view.stage is not None:
            view.stage.input(state)

    @staticmethod
    def _close(inp, outp, server) -> None:
        inp.close()
        outp.close()
        if server is not None:
            server.close()

    def _on_signal_ending(self, _signum, _frame) -> None:
        self.out.write(f"livepiano: {self._ending}…\n")
        self.out.flush()

    def _on_signal(self, signum, _frame) -> None:
        name = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated"}[signum]
        self.request_stop(name)

    def _watch(self, inp, outp, listener, loop, scheduler, recorder, threads,
               server=None) -> None:
        rate_in, rate_out = _Rate(), _Rate()
        next_watch = next_flush = time.monotonic()
        input_gone = False
        while True:
            self._wake.wait(STATUS_S if self.status else WAKE_S)
            self._wake.clear()
            if self._stop.is_set():
                break
            _arm_watchdog()
            now = time.monotonic()
            if server is not None and server.gone.is_set():
                self.request_stop("the JACK server stopped", failed=True)
                break
            if now >= next_flush:
                next_flush = now + journal.FLUSH_S
                recorder.journal.flush()
            if listener.error is not None:
                self.request_stop(f"the listener failed ({_describe(listener.error)})",
                                  failed=True)
                break
            if loop.error is not None:
                self.request_stop(f"the engine failed ({_describe(loop.error)})", failed=True)
                break
            if scheduler.error is not None or not threads[0].is_alive():
                self.request_stop(f"the scheduler failed ({_describe(scheduler.error)})",
                                  failed=True)
                break
            if now >= next_watch:
                next_watch = now + WATCH_S
                if not outp.present():
                    self.request_stop(f"the output port '{outp.name}' vanished", failed=True)
                    break
                if not input_gone and not inp.present():
                    input_gone = True
                    self._view_input("gone")
                    listener.release_all()
                    self.say(f"the input port '{inp.name}' is gone; playing on and "
                             f"reconnecting when it is back.")
                elif input_gone and inp.reopen():
                    input_gone = False
                    self._view_input("ok")
                    self.say(f"the input port '{inp.name}' is back.")
            kn = getattr(self, "knobs", None)
            if kn is not None:  # knob changes: a line each (on a terminal, the status line)
                for text, said in kn.tick():
                    if said or not self.status:
                        self.say(text)
            if self.status:
                late = [v * 1000 for v in list(scheduler.lateness)[-1000:]]
                line = (f"{loop.mode.name}  T {loop.engine.temperature:.2f}  "
                        f"in {rate_in(now, recorder.notes_in()):4.1f} n/s  "
                        f"out {rate_out(now, recorder.notes_out()):4.1f} n/s  "
                        f"late p99 {percentile(late, 99):.2f} ms"
                        + ("  [input gone]" if input_gone else "")
                        + (f"  | {kn.status()}" if kn is not None and kn.status() else ""))
                self.out.write("\r\x1b[2K" + line)
                self.out.flush()


def _both(first: Callable, second: Callable) -> Callable:
    """One ``on_sent`` hook that calls two."""
    def both(t, message):
        first(t, message)
        second(t, message)
    return both


def _present(port) -> bool:
    try:
        return port.present()
    except Exception:  # noqa: BLE001 - a MIDI system that is gone cannot list its ports
        return False


def _arm_watchdog() -> None:
    """(Re)start a watchdog that ends the process if the main thread does not come back within
    WATCHDOG_S. It runs in C, without the GIL: when the MIDI system stops taking messages,
    python-rtmidi's JACK send spins in C holding the GIL (seen when a stalled JACK server
    stopped running livepiano's client), and nothing written in Python can run any more --
    not even the Ctrl-C handler. Better to end with a traceback than to hang."""
    import faulthandler

    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)


def _disarm_watchdog() -> None:
    import faulthandler

    faulthandler.cancel_dump_traceback_later()


def _report_crashes() -> None:
    """A crash in native code (the MIDI library, the model runtime) prints every thread's
    Python stack to stderr: the play threads' stacks are the only clue where it happened."""
    import faulthandler

    if not faulthandler.is_enabled():
        faulthandler.enable(all_threads=True)


def quiet_gc() -> None:
    """Move everything built at start-up (modules, the model session, ports) out of the
    cyclic garbage collector's sight: a full collection then walks only what the session
    allocates, instead of holding the GIL for milliseconds while the scheduler waits."""
    import gc

    gc.collect()
    gc.freeze()


class Collector:
    """The cyclic garbage collector, run in the scheduler thread's spare time instead of
    automatically by whichever thread allocates. A collection holds the GIL throughout: run
    by the engine's or the main thread, it could start a moment before a deadline, or be
    preempted by other programs halfway; the scheduler thread runs it only with no deadline
    in the next few ms, at its real-time priority. Young objects every GC_EVERY_S, all of
    them every minute or so (in a gap of GC_FULL_GAP_S). ``start``/``stop`` on the main
    thread around the session; ``idle`` is the scheduler's ``idle`` hook."""

    def __init__(self, scheduler: Scheduler, clock: Callable[[], float] = time.monotonic):
        self.scheduler = scheduler
        self.clock = clock
        self._next = self._next_full = 0.0
        self.collections = 0

    def start(self) -> None:
        import gc

        quiet_gc()
        gc.disable()
        now = self.clock()
        self._next, self._next_full = now + GC_EVERY_S, now + GC_FULL_EVERY_S
        self.scheduler.idle = self.idle

    def idle(self, gap: float) -> bool:
        import gc

        now = self.clock()
        if now < self._next:
            return False
        full = now >= self._next_full and gap >= GC_FULL_GAP_S
        gc.collect(2 if full else 1)
        self.collections += 1
        self._next = now + GC_EVERY_S
        if full:
            self._next_full = now + GC_FULL_EVERY_S
        return True

    def stop(self) -> None:
        import gc

        self.scheduler.idle = None
        gc.enable()


def _end_of_call_cc(number: int, loop: EngineLoop, then: Callable | None) -> Callable:
    """``Listener.on_control`` for ``--end-of-call-cc``: that CC's press ends the call, a press
    as the knobs count one (>= 64 after a release, after nothing, or repeating the previous
    value: buttons that send only 127); every CC also goes on to ``then`` (the knobs)."""
    prev: list = [None]

    def on_control(channel: int, cc: int, value: int, t: float) -> None:
        if cc == number:
            if value >= 64 and (prev[0] is None or prev[0] < 64 or prev[0] == value):
                loop.hear_end_of_call(t)
            prev[0] = value
        if then is not None:
            then(channel, cc, value, t)
    return on_control


def play_threads(scheduler, loop, listener, realtime_mode: str) -> list[threading.Thread]:
    """The three threads of a play session, not yet started, each taking its real-time
    priority as it starts: scheduler above listener above engine."""
    # The listener polls every millisecond; under SCHED_FIFO (below the scheduler) it is
    # never preempted by other programs while it holds the GIL.
    def listener_priority() -> str:
        return realtime(realtime_mode, FIFO_PRIORITY - 1, switch=False)

    return [threading.Thread(target=scheduler.run, name="scheduler", daemon=True),
            threading.Thread(target=loop.run, args=(engine_priority(realtime_mode),),
                             name="engine", daemon=True),
            threading.Thread(target=listener.run, args=(listener_priority,),
                             name="listener", daemon=True)]


def engine_priority(mode: str) -> Callable[[], str]:
    """SCHED_FIFO for the engine thread too, at the lowest real-time priority (below the
    listener and the scheduler): otherwise other programs preempt it while it holds the GIL,
    and the scheduler, woken for a deadline, waits for the GIL as long as that lasts."""
    return lambda: realtime(mode, ENGINE_FIFO_PRIORITY, switch=False)


class MainPriority:
    """SCHED_FIFO, at the engine's priority, for the main thread while the session plays.
    It wakes every WAKE_S and holds the GIL for a moment each time; as a plain thread on a
    busy machine it is preempted by other programs now and then in that moment, and the
    scheduler, woken for a deadline, waits for the GIL as long as that lasts. ``end`` puts it
    back before the save, a long computation that must not keep other programs off a core."""

    def __init__(self, mode: str):
        self.mode = mode
        self._before = None

    def start(self) -> None:
        if hasattr(os, "sched_getscheduler"):
            self._before = (os.sched_getscheduler(0), os.sched_getparam(0))
        realtime(self.mode, ENGINE_FIFO_PRIORITY, switch=False)

    def end(self) -> None:
        if self._before is not None:
            try:
                os.sched_setscheduler(0, *self._before)
            except OSError:
                pass
            self._before = None


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "it stopped"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def play(settings: dict) -> int:
    return Session(settings).run()


# --- bench timing --------------------------------------------------------------------------

