"""The play session: the threads, the queues between them, the look-ahead loop, shutdown,
recording and the status line.

    listener thread --events--> EngineLoop.inbox --> engine thread
    engine thread --(deadline, message)--> Scheduler.inbox --> scheduler thread --> output
    main thread: signals, port watch (input gone -> reconnect; output gone -> stop), status

Each piece of state has one owner: the engine thread owns the ``Engine`` (LSTM state, sampler,
stream view); the scheduler thread owns the output port and the sounding notes; the main
thread owns the ports' lifetimes. Later modes (the duet's turn-taking) plug in as a ``Mode``;
knobs reach the engine through ``EngineLoop.call``, which runs a function on the engine
thread, between two samples.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from livepiano import LivepianoError, codec, knobs
from livepiano.duet import DuetMode, restore_lookahead
from livepiano.listener import Listener, PlayerEvent, StreamPosition, player_tokens
from livepiano.ports import NOTE_OFF, NOTE_ON
from livepiano.runtime import steering
from livepiano.scheduler import FIFO_PRIORITY, Scheduler, percentile, realtime

STEP_S = 1.0 / codec.STEPS_PER_SECOND
WATCH_S = 0.5  # how often the main thread checks that the ports are still there
STATUS_S = 0.25
DRAIN_S = 0.1  # after the panic, before the ports close
CLOSE_WAIT_S = 2.0  # the longest wait for the ports to close at the end
WATCHDOG_S = 10.0  # the main thread stuck this long (the GIL held in C): end the process
ENGINE_FIFO_PRIORITY = 1  # the lowest: under the listener (FIFO_PRIORITY - 1) and the scheduler
TAKE_BACK_MARGIN_S = 0.003  # model events due sooner than this after the player's stay

_STOP = object()


# --- modes ---------------------------------------------------------------------------------

class Mode:
    """When the model may play. The engine loop asks ``may_generate(now)`` before each sample
    and tells ``heard(events, now)`` about the player's events; the duet mode of a later issue
    answers differently."""

    name = "?"

    def may_generate(self, now: float) -> bool:
        raise NotImplementedError

    def heard(self, events: list[PlayerEvent], now: float) -> None:
        pass

    # Hooks for modes that take turns (the duet); these defaults are continuous mode's.
    takes_back = True  # the loop takes back the look-ahead when the player plays

    def attach(self, loop: "EngineLoop") -> None:
        """The loop this mode drives (called from the loop's constructor, and when the mode
        knob switches modes): no leftover limit on the model's time-shifts, the loop's own
        look-ahead (the duet lengthens it while it samples an answer's opening)."""
        loop.engine.shift_limit = None
        restore_lookahead(loop)

    def tick(self, now: float) -> None:
        """Time has reached ``now`` (after each drain of the inbox)."""

    def idle_wait(self, now: float) -> float:
        """How long to wait on the inbox while ``may_generate`` is false."""
        return 0.005

    def sampled(self, token: int, deadline: float, before) -> bool:
        """The model sampled ``token`` (``deadline``: its stream time; ``before``: the engine's
        snapshot from before it); False drops it (the mode restored the engine)."""
        return True

    def pedal(self, down: bool, t: float) -> None:
        """The player's sustain pedal went down or up at ``t``."""

    def end_of_call(self, t: float) -> None:
        """The player's end-of-call control was pressed at ``t``."""


class Continuous(Mode):
    """The model plays all the time and hears you."""

    name = "continuous"

    def may_generate(self, now: float) -> bool:
        return True


MODES: dict[str, Callable[[], Mode]] = {"continuous": Continuous, "duet": DuetMode}


def make_mode(settings: dict, say: Callable[[str], None] | None = None) -> Mode:
    """The session's mode from its settings (a mode with ``from_settings`` reads them)."""
    build = MODES[settings["mode"]]
    from_settings = getattr(build, "from_settings", None)
    return from_settings(settings, say) if from_settings is not None else build()


# --- the engine thread -----------------------------------------------------------------------

class EngineLoop:
    """The engine's thread: primes the player's events as they come, samples the model's
    while its stream is less than ``lookahead`` ahead of the clock, and hands each of its
    note events to the scheduler with the deadline of its step.

    Taking back: the model's stream runs ahead of the clock, by up to ``lookahead`` for its
    notes and by up to a whole sampled silence (a time-shift of up to 1 s) beyond that. When
    the player plays, the events the model sampled for after that moment (plus a small
    margin) are taken back -- the engine is restored to its snapshot from before them and the
    scheduler cancels their messages -- so that the model hears the player at the right time
    and answers from there, instead of after its own look-ahead."""

    def __init__(self, engine, scheduler: Scheduler, *, origin: float, lookahead: float = 0.1,
                 channel: int = 0, mode: Mode | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self.scheduler = scheduler
        self.origin = origin
        self.lookahead = lookahead
        self.channel = channel
        self.mode = mode or Continuous()
        self.clock = clock
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.taken_back = 0  # model events taken back because the player played
        # (stream time after the event, engine snapshot from before it, scheduler tags) of
        # the model's events that are not yet in the past
        self._pending: deque = deque()
        self._tags = itertools.count()
        self.caught_up_steps = 0  # silence inserted because the model fell behind the clock
        self.mode.attach(self)
        self.velocity_scale = 1.0  # the dynamics knob: scales the model's output velocities
        # After the player's event, keep the silence the model had chosen (see _keep_silence)
        self.keep_silence = True

    # --- any thread ---------------------------------------------------------------------

    def hear(self, events: list[PlayerEvent]) -> None:
        self.inbox.put(events)

    def call(self, fn: Callable) -> None:
        """Run ``fn(engine)`` on the engine thread (e.g. ``lambda e: setattr(e, 'temperature',
        0.8)`` from a knob); it takes effect from the next sampled event."""
        self.inbox.put(fn)

    def stop(self) -> None:
        self.inbox.put(_STOP)

    def hear_pedal(self, down: bool, t: float) -> None:
        """The player's sustain pedal (the listener folds it into the notes; a mode that
        takes turns needs it too: a pedal held in silence keeps the phrase open)."""
        self.inbox.put(lambda _engine: self.mode.pedal(down, t))

    def hear_end_of_call(self, t: float) -> None:
        self.inbox.put(lambda _engine: self.mode.end_of_call(t))  # as the knob does

    # --- the engine thread --------------------------------------------------------------

    def stream_time(self) -> float:
        return self.origin + self.engine.steps * STEP_S

    def run(self, prepare: Callable | None = None) -> None:
        """The engine thread's body (``prepare`` runs first, e.g. to set its priority)."""
        try:
            if prepare is not None:
                prepare()
            self._loop()
        except BaseException as e:  # noqa: BLE001 - the main thread reports it
            self.error = e

    def _take(self, item) -> bool:
        if item is _STOP:
            return False
        if callable(item):
            item(self.engine)
            return True
        now = self.clock()
        self.mode.heard(item, now)
        silence_until = None
        if self.mode.takes_back:
            silence_until = self._take_back(now + TAKE_BACK_MARGIN_S)
        tokens = player_tokens(item, StreamPosition.of(self.engine), self.origin)
        self.engine.prime(tokens)
        if silence_until is not None and self.keep_silence:
            self._keep_silence(silence_until)
        return True

    def _keep_silence(self, until: float) -> None:
        """The model had chosen to be silent until ``until`` when the player's event came:
        it hears the player, then keeps that silence (fed as its own time-shifts) instead of
        choosing again. Choosing again after every event of the player cut every long
        silence it chose and kept every immediate note: it played more and more notes."""
        steps = round((until - self.stream_time()) / STEP_S)
        for tok in codec.shifts(steps) if steps > 0 else ():
            before = self.engine.snapshot()
            self.engine.feed(tok)
            self._pending.append((self.stream_time(), before, ()))

    def _loop(self) -> None:
        inbox = self.inbox
        while True:
            wait = self.turn()
            if wait is None:
                return
            if wait > 0:
                try:
                    if not self._take(inbox.get(timeout=wait)):
                        return
                except queue.Empty:
                    pass

    def turn(self) -> float | None:
        """One pass of the engine thread at ``clock()``: take everything in the inbox, tell
        the mode the time, sample at most one event. Returns how long to wait for the inbox
        before the next pass (0: go on at once), or None once stopped. ``run`` loops on it;
        a benchmark on a simulated clock calls it directly, so both run the same code."""
        inbox, engine = self.inbox, self.engine
        try:
            while True:
                if not self._take(inbox.get_nowait()):
                    return None
        except queue.Empty:
            pass
        now = self.clock()
        self.mode.tick(now)
        if not self.mode.may_generate(now):
            return self.mode.idle_wait(now)
        ahead = self.stream_time() - now
        if ahead >= self.lookahead:
            return ahead - self.lookahead + 0.001
        if ahead < 0:
            # The model fell behind the clock (start-up, a stall): it hears the silence
            # that really passed, so that its next events are not already late.
            behind = int(-ahead / STEP_S + 1)
            self.caught_up_steps += behind
            self._pending.clear()
            engine.prime(codec.shifts(behind))
        self._step(now)
        return 0.0

    def _step(self, now: float) -> None:
        engine, pending = self.engine, self._pending
        while pending and pending[0][0] <= now:  # in the past: never taken back
            pending.popleft()
        before = engine.snapshot()
        tok = engine.sample()
        deadline = self.stream_time()
        if not self.mode.sampled(tok, deadline, before):
            return
        tags = ()
        if tok < codec.TIME_SHIFT:
            tag = next(self._tags)
            tags = (tag,)
            if tok < codec.NOTE_OFF:
                velocity = codec.bin_to_velocity(engine.velocity_bin or 16)
                if self.velocity_scale != 1.0:
                    velocity = min(127, max(1, round(velocity * self.velocity_scale)))
                message = [NOTE_ON | self.channel, tok, velocity]
            else:
                message = [NOTE_OFF | self.channel, tok - codec.NOTE_OFF, 0]
            self.scheduler.schedule(deadline, message, tag)
        pending.append((deadline, before, tags))

    def _take_back(self, cutoff: float) -> float | None:
        """Take back the model's events that lie after ``cutoff`` on the clock. Returns the
        time the silence the model had chosen at ``cutoff`` would have ended (the end of
        the time-shifts that open what is taken back), None when it had chosen none."""
        pending = self._pending
        first = next((i for i, item in enumerate(pending) if item[0] > cutoff), None)
        if first is None:
            return None
        silence_until = None
        for deadline, before, _tags in itertools.islice(pending, first, None):
            if deadline <= self.origin + before.steps * STEP_S:
                break  # not a time-shift: the silence ends here
            silence_until = deadline
        self.engine.restore(pending[first][1])
        tags = [tag for i in range(first, len(pending)) for tag in pending[i][2]]
        self.taken_back += len(pending) - first
        while len(pending) > first:
            pending.pop()
        if tags:
            self.scheduler.take_back(tags)
        return silence_until


# --- recording -----------------------------------------------------------------------------

@dataclass
class Recorder:
    """What was played, with real times: the player's notes (pedal applied, as the model
    heard them) and the messages the scheduler actually sent. Appends come from the listener
    callback and the scheduler thread (list.append is atomic)."""

    origin: float
    player: list = field(default_factory=list)  # PlayerEvent
    model: list = field(default_factory=list)  # (time, message)

    def heard(self, events: list[PlayerEvent]) -> None:
        self.player.extend(events)

    def sent(self, t: float, message: list[int]) -> None:
        self.model.append((t, message))

    def notes_in(self) -> int:
        return sum(1 for e in list(self.player) if e.on)

    def notes_out(self) -> int:
        return sum(1 for _, m in list(self.model) if m[0] & 0xF0 == NOTE_ON and m[2] > 0)

    @staticmethod
    def _step_notes(events) -> list[codec.StepNote]:
        """(time, on, pitch, velocity) -> notes on the 10 ms grid; a voice ends at the first
        note-off of its pitch, unreleased voices at the last event."""
        open_: dict[int, list] = {}
        notes: list[codec.StepNote] = []
        last = 0
        for t, on, pitch, velocity in events:
            step = codec.quantize(max(t, 0.0))
            last = max(last, step)
            if on:
                open_.setdefault(pitch, []).append((step, velocity))
            elif open_.get(pitch):
                start, vel = open_[pitch].pop(0)
                notes.append(codec.StepNote(pitch, vel, start, max(step, start + 1)))
        for pitch, voices in open_.items():
            for start, vel in voices:
                notes.append(codec.StepNote(pitch, vel, start, max(last, start + 1)))
        notes.sort(key=lambda n: (n.start, n.pitch))
        return notes

    def midi(self):
        player = [(e.time - self.origin, e.on, e.pitch, e.velocity) for e in list(self.player)]
        model = []
        for t, m in list(self.model):
            status = m[0] & 0xF0
            if status in (NOTE_ON, NOTE_OFF) and len(m) >= 3:
                on = status == NOTE_ON and m[2] > 0
                model.append((t - self.origin, on, m[1], m[2] if on else 0))
        return codec.step_notes_to_midi([("player", self._step_notes(player)),
                                         ("livepiano", self._step_notes(model))])

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.midi().save(str(path))
        return path


def data_dir() -> Path:
    """The user's data folder for livepiano (sessions are saved under it)."""
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "livepiano"


def default_recording() -> Path:
    return data_dir() / "sessions" / time.strftime("session-%Y%m%d-%H%M%S.mid")


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

    def say(self, text: str) -> None:
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
        from livepiano import ports
        from livepiano.engine import Engine, resolve_model

        s = self.settings
        knob_setup = knobs.SessionKnobs(s)  # a bad controls file fails before any port opens
        api = ports.resolve_api(s["api"])
        outp = ports.Port("out", api, s["out"])  # ports first: a wrong name fails fast
        inp = None
        try:
            inp = ports.Port("in", api, s["in"])
            knob_setup.open_port(api)
            model_path = resolve_model(s["model"])
            engine = Engine(model_path, temperature=s["temperature"], seed=s["seed"])
            steering.configure(engine, s, accompany=True)
        except BaseException:
            outp.close()
            if inp is not None:
                inp.close()
            knob_setup.close()
            raise
        clock = time.monotonic
        channel = s["channel"] - 1
        origin = clock()
        recorder = Recorder(origin)
        scheduler = Scheduler(outp.client, channel=channel, clock=clock, on_sent=recorder.sent,
                              realtime_mode=s["realtime"])
        loop = EngineLoop(engine, scheduler, origin=origin, lookahead=s["lookahead_ms"] / 1000,
                          channel=channel, mode=make_mode(s, self.say), clock=clock)

        self.knobs = kn = knob_setup.attach(  # the mode knob builds a mode as the settings do
            loop, lambda name, say: knobs.build_mode(s, name, say))
        kn.notify = self._wake.set

        def deliver(events):
            recorder.heard(events)
            loop.hear(events)
            kn.heard(events)

        def echo(message):
            scheduler.send_now([(message[0] & 0xF0) | channel] + list(message[1:]))

        listener = Listener(inp, deliver, clock=clock, echo=echo if s["echo"] else None,
                            on_control=kn.on_control)
        listener.on_pedal = loop.hear_pedal  # the duet: a pedal held in silence counts
        if s.get("end_of_call_cc") is not None:
            listener.on_control = _end_of_call_cc(s["end_of_call_cc"], loop,
                                                  listener.on_control)
        threads = play_threads(scheduler, loop, listener, s["realtime"])
        old_handlers = {sig: signal.signal(sig, self._on_signal)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            _report_crashes()
            _quiet_gc()
            for t in threads:
                t.start()
            self.say(f"playing ({loop.mode.name}); in: {inp.label}; out: {outp.label}; "
                     f"model: {model_path.name}. Ctrl-C stops.")
            knob_setup.start(keys=self.status)
            self.say(knob_setup.describe())
            self._watch(inp, outp, listener, loop, scheduler, recorder, threads)
        finally:
            _arm_watchdog()  # the shutdown, too, must not hang
            knob_setup.close()
            listener.stop()
            threads[2].join(timeout=2.0)
            loop.stop()
            threads[1].join(timeout=2.0)
            scheduler.stop()
            threads[0].join(timeout=2.0)
            scheduler.panic()  # no-op when the scheduler thread already did it
            time.sleep(DRAIN_S)  # JACK delivers in its next cycle: let the note-offs out
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            path = Path(s["record"]).expanduser() if s["record"] else default_recording()
            try:
                saved = recorder.save(path)
                where = f"session saved to {saved}"
            except OSError as e:
                where = f"could not save the session to {path} ({e.strerror})"
            timing = scheduler.lateness_us()
            self.say(f"{self.stop_reason or 'stopped'}; every note released; {where}. "
                     f"{recorder.notes_in()} notes in, {recorder.notes_out()} out; scheduler "
                     f"lateness p99 {timing['lateness_us_p99'] / 1000:.2f} ms "
                     f"({scheduler.realtime_note}).")
            # Closing a client waits for the MIDI system (a stalled JACK server can take
            # seconds); the notes are released and the session saved, so do not wait long.
            closing = threading.Thread(target=lambda: (inp.close(), outp.close()), daemon=True)
            closing.start()
            closing.join(CLOSE_WAIT_S)
            _disarm_watchdog()
        return 1 if self.failed else 0

    def _on_signal(self, signum, _frame) -> None:
        name = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated"}[signum]
        self.request_stop(name)

    def _watch(self, inp, outp, listener, loop, scheduler, recorder, threads) -> None:
        rate_in, rate_out = _Rate(), _Rate()
        next_watch = time.monotonic()
        input_gone = False
        while True:
            self._wake.wait(STATUS_S if self.status else 0.05)
            self._wake.clear()
            if self._stop.is_set():
                break
            _arm_watchdog()
            now = time.monotonic()
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
                    listener.release_all()
                    self.say(f"the input port '{inp.name}' is gone; playing on and "
                             f"reconnecting when it is back.")
                elif input_gone and inp.reopen():
                    input_gone = False
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


def _quiet_gc() -> None:
    """Move everything built at start-up (modules, the model session, ports) out of the
    cyclic garbage collector's sight: a full collection then walks only what the session
    allocates, instead of holding the GIL for milliseconds while the scheduler waits."""
    import gc

    gc.collect()
    gc.freeze()


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
    listener_priority = (lambda: realtime(realtime_mode, FIFO_PRIORITY - 1, switch=False))
    return [threading.Thread(target=scheduler.run, name="scheduler", daemon=True),
            threading.Thread(target=loop.run, args=(_engine_priority(realtime_mode),),
                             name="engine", daemon=True),
            threading.Thread(target=listener.run, args=(listener_priority,),
                             name="listener", daemon=True)]


def _engine_priority(mode: str) -> Callable[[], str]:
    """SCHED_FIFO for the engine thread too, at the lowest real-time priority (below the
    listener and the scheduler): otherwise other programs preempt it while it holds the GIL,
    and the scheduler, woken for a deadline, waits for the GIL as long as that lasts."""
    return lambda: realtime(mode, ENGINE_FIFO_PRIORITY, switch=False)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "it stopped"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def play(settings: dict) -> int:
    return Session(settings).run()


# --- bench timing --------------------------------------------------------------------------

class NullOut:
    def send_message(self, message) -> None:
        pass


def _busy(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


def _steal_ms() -> int | None:
    """CPU time the hypervisor took from this virtual machine so far (Linux), in ms."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) * 1000 // os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def timing(model_path, *, deadlines: int = 2000, load: bool = False, realtime_mode: str = "auto",
           temperature: float = 1.0, speed: float = 4.0, lookahead: float = 0.1,
           seed: int | None = 0, timeout: float = 120.0, progress=None) -> dict:
    """Scheduler lateness with the engine generating in its own thread, as in ``play``, to a
    null output. ``speed`` plays the stream faster than real time (the engine has to generate
    ``speed`` times as many events per second: a harder test, and ``deadlines`` come sooner);
    ``load`` runs a busy loop in another process on the other core."""
    import multiprocessing as mp

    from livepiano.engine import Engine

    engine = Engine(model_path, temperature=temperature, seed=seed)
    step = STEP_S / speed
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
    loop = EngineLoop(engine, scheduler, origin=origin, lookahead=lookahead, clock=clock)
    loop.stream_time = lambda: loop.origin + engine.steps * step  # type: ignore[method-assign]
    threads = [threading.Thread(target=scheduler.run, daemon=True),
               threading.Thread(target=loop.run, args=(_engine_priority(realtime_mode),),
                                daemon=True)]
    _quiet_gc()
    for t in threads:
        t.start()
    t0 = clock()
    steal0 = _steal_ms()
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
    result = scheduler.lateness_us()
    if result["deadlines"] < deadlines:
        raise LivepianoError(f"only {result['deadlines']} deadlines in {timeout:.0f} s (the model "
                             f"plays too few notes); raise --speed or the temperature.")
    steal1 = _steal_ms()
    result["steal_ms"] = steal1 - steal0 if steal0 is not None and steal1 is not None else None
    result.update({"load": load, "realtime": scheduler.realtime_note, "speed": speed,
                   "seconds": round(clock() - t0, 1), "caught_up_steps": loop.caught_up_steps,
                   "model": str(model_path)})
    return result
