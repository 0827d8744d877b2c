"""The knobs in a play session: ``controls.Controls`` on the engine thread, its changes applied
to the engine, the engine loop, the scheduler and the duet.

    piano's CCs (listener thread, on_control) --+
    --control-in port (its polling thread)    --+-- EngineLoop.call --> Knobs.handle (engine)
    terminal keys (`l`, then a number)         --+     Controls.handle -> [Change, ...] -> apply
    main thread: Knobs.tick() says the changes, saves new bindings, feeds the status line

The engine thread owns the ``Controls`` object (its bindings, values and takeover state) as it
owns the engine, so a knob never races a sample. What the main thread needs -- texts to show,
bindings to save -- comes back through a queue: the bindings file is written from the main
thread, never from the engine thread, and only its ``bindings`` entry is rewritten.

Applying a change never resets the model's state. Temperature, density and key *rewind* the
unheard look-ahead instead: the events sampled for after ``now + lookahead`` are taken back
(as when the player plays), so the first event sampled with the new value lies within the
look-ahead -- without that, a sampled silence (a time-shift of up to 1 s) could keep the old
value audible for up to a second (`livepiano bench knobs` measures it; the README has the
figures).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np

from livepiano.core import messages
from livepiano.live import controls, modes
from livepiano.live.controls import Controls
from livepiano.settings import bindings, choices, files, params

log = logging.getLogger(__name__)

FOLLOW_S = 10.0  # key "follow": the player's note-ons of the last this many seconds
FOLLOW_EVERY_S = 0.5  # ... recomputed at most this often
POLL_S = 0.001
WATCH_S = 0.5  # how often the control port's thread checks that its port is still there
# knob parameter -> DuetSettings field
DUET_FIELDS = {"duet_wait": "wait", "answer_length": "max_answer"}


def build_mode(settings: dict, name: str, say: Callable[[str], None]):
    """A new mode called ``name`` for the session with these settings (the mode knob), built
    as the session builds its first one."""
    return modes.make_mode(dict(settings, mode=name), say)


def controls_path(settings: dict) -> Path:
    """The session's bindings file: ``controls`` as ``config.for_play`` resolved it, else
    (settings made in code) where `livepiano play` would look."""
    if settings.get("controls"):
        return Path(settings["controls"]).expanduser()
    return files.bindings_path()


def load(settings: dict) -> tuple[controls.Controls, Path]:
    """The session's ``Controls`` and the file its bindings are saved into (a bad file fails
    here, before any port opens). The bindings are read from that file, not taken from
    ``settings``: a save rewrites the file's bindings with the session's, so the session
    must start from exactly what the file holds. The takeover is the settings' (already
    layered: settings file, bindings file, --takeover)."""
    path = controls_path(settings)
    found = bindings.read(path)
    values = {}
    if "temperature" in settings:
        t = params.PARAMS["temperature"].curve
        values["temperature"] = min(max(float(settings["temperature"]), t.lo), t.hi)
    if settings.get("density") is not None:
        d = params.PARAMS["density"].curve
        values["density"] = min(max(float(settings["density"]), d.lo), d.hi)
    if settings.get("mode") in choices.MODES:
        values["mode"] = settings["mode"]
    return controls.from_file(found, values, settings.get("takeover")), path


class Knobs:
    """The knobs of one session. ``on_control``, ``message``, ``learn`` and ``heard`` may be
    called from any thread; ``handle`` and ``apply`` run on the engine thread (through
    ``loop.call``); ``tick`` and ``status`` on the main thread."""

    def __init__(self, controls: Controls, loop, *, path: Path | None = None,
                 make_mode: Callable | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.controls = controls
        self.loop = loop
        self.path = path
        # make_mode(name, say) -> a new mode for the loop (the mode toggle); None: no switching
        self.make_mode = make_mode
        self.clock = clock
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        # called (from any thread) after something is put in the outbox: the session's main
        # thread wakes and shows it at once instead of at its next status tick
        self.notify: Callable[[], None] | None = None
        self.text: str | None = None  # the last change, for the status line
        self.on_applied: Callable | None = None  # (change, t) on the engine thread (bench)
        # (time, pitch) of the player's recent note-ons (bounded: 10 s of the fastest playing)
        self._heard: deque = deque(maxlen=4000)
        self._following = False  # a conditioned model is steered by key "follow"
        self._moved: set[str] = set()  # "density" and "key" once their knob has moved
        self._follow_due = 0.0
        self._told: set[str] = set()
        self._duet_values: dict[str, float] = {}
        self._hint: str | None = None

    # --- any thread ---------------------------------------------------------------------

    def on_control(self, channel: int, number: int, value: int, t: float) -> None:
        """The listener's hook: a CC from the piano (other than the sustain pedal)."""
        self.message([messages.CONTROL | channel, number, value], t)

    def message(self, message, t: float | None = None) -> None:
        """A CC or pad message from any controller; handled on the engine thread."""
        t = self.clock() if t is None else t
        message = list(message)
        self.loop.call(lambda _engine: self.handle(message, t))

    def learn(self, param: str | None) -> None:
        """Start learning ``param`` (None: stop learning), e.g. from a terminal key."""
        def go(_engine):
            change = (self.controls.start_learn(param) if param is not None
                      else self.controls.cancel_learn())
            self.apply(change, self.clock())
        self.loop.call(go)

    def set(self, name: str, value, t: float | None = None) -> None:
        """Set a knob-driven parameter from elsewhere than a knob (the stage view's controls)
        as a knob would, through the engine thread: ``Controls.set`` (a pickup knob must reach
        the new value again), then ``apply`` (temperature, density and key rewind the unheard
        look-ahead). ``value`` is checked here first: a bad one raises a one-line
        ``LivepianoError`` and nothing changes."""
        name, value = params.checked_setting(name, value)
        t = self.clock() if t is None else t

        def go(_engine):
            try:
                change = self.controls.set(name, value)
            except Exception as e:  # noqa: BLE001 - checked above; a knob never ends a session
                log.debug("setting %s to %r failed", name, value, exc_info=True)
                self.post(("say", f"{name} not changed ({e})", True))
                return
            self.apply(change, t)
        self.loop.call(go)

    def press(self, name: str, t: float | None = None) -> None:
        """A momentary action (panic, end of call) from elsewhere than a pad, as a pad's
        press: through the engine thread. An unknown name raises a one-line
        ``LivepianoError``."""
        p = params.PARAMS[params.checked_action(name)]
        t = self.clock() if t is None else t
        self.loop.call(lambda _engine: self.apply(controls.Change(p.name, True, p.text(True)), t))

    def heard(self, events) -> None:
        """The player's events (listener thread): the key "follow" listens to them. What they
        change is the engine thread's, so they are handed over through the loop's inbox."""
        ons = [(ev.time, ev.pitch) for ev in events if ev.on]
        if ons:
            self.loop.call(lambda engine: self._hear(engine, ons))

    def _hear(self, engine, ons: list[tuple[float, int]]) -> None:
        self._heard.extend(ons)
        now = ons[-1][0]
        if self._following and now >= self._follow_due:
            self._follow_due = now + FOLLOW_EVERY_S
            self._set_control(engine, rewind=False)

    def post(self, item: tuple) -> None:
        """A line to say or bindings to save, for the main thread's ``tick``."""
        self.outbox.put(item)
        if self.notify is not None:
            self.notify()

    # --- the engine thread --------------------------------------------------------------

    def handle(self, message, t: float) -> None:
        for change in self.controls.handle(message):
            self.apply(change, t)
        hint = self.controls.hint
        if hint != self._hint:  # a pickup knob being ignored: say what to do (once)
            self._hint = hint
            if hint:
                self.post(("say", hint, False))

    def apply(self, change: controls.Change, t: float) -> None:
        name, value = change.param, change.value
        loop, engine = self.loop, self.loop.engine
        text = change.text
        said = name in ("learn", "bound")  # said as a line even beside a status line
        if name == "bound":
            # only the bindings: the session's takeover may be a --takeover for tonight
            self.post(("save", list(self.controls.bindings.values()), text))
            self.text, text = text, None  # said by tick() once saved
        elif name == "temperature":
            engine.temperature = value
            self._rewind()
        elif name in ("density", "key"):
            steered = name == "density" and engine.steering is not None
            if steered:  # the density steering's target, whatever the model
                engine.steering.target = float(value)
            self._moved.add(name)
            if self._tell_listening(loop.mode):  # it leans and conditions from now on
                self._rewind()
            elif engine.conditioned:
                self._following = self.controls.values["key"] == params.FOLLOW
                self._set_control(engine, rewind=True)
            elif steered:
                self._rewind()
            else:
                self._once("unconditioned", f"{engine.model_path.name} is an unconditioned "
                                            f"model: density and key have no effect with it")
        elif name == "dynamics":
            loop.velocity_scale = float(value)
        elif name == "mode":
            self._set_mode(value)
        elif name in DUET_FIELDS:
            self._duet_values[DUET_FIELDS[name]] = float(value)
            if not self._apply_duet():
                text += " (for duet mode)"
        elif name == "end_of_call":
            hook = getattr(loop.mode, "end_of_call", None)
            if loop.mode.name != "duet" or hook is None:
                text += " (only in duet mode)"
            if hook is not None:
                hook(t)
        elif name == "panic":
            self._panic()
        if text is not None:
            self.text = text
            self.post(("say", text, said))
        if self.on_applied is not None:
            self.on_applied(change, t)

    def _rewind(self) -> None:
        """Take back the unheard events beyond the look-ahead (never a reset)."""
        self._take_back(self.clock() + self.loop.lookahead)

    def _take_back(self, cutoff: float) -> None:
        """The loop's take-back; a duet is told, as when the duet mode takes back itself."""
        loop = self.loop
        before = loop.taken_back
        loop.take_back(cutoff)
        duet = getattr(loop.mode, "duet", None)
        if loop.taken_back != before and hasattr(duet, "on_take_back"):
            duet.on_take_back(loop.stream_time())

    def _tell_listening(self, mode) -> bool:
        """A mode that listens to the player (continuous) takes the density and key the
        knobs have set over what it hears; False when the mode does not listen."""
        listening = getattr(mode, "listening", None)
        if listening is None:
            return False
        values = self.controls.values
        if "density" in self._moved:
            listening.density = float(values["density"])
        if "key" in self._moved:
            key = values["key"]
            listening.key = None if key == params.FOLLOW else np.asarray(
                params.key_histogram(key))
        mode.listen(self.clock())
        return True

    def _set_control(self, engine, rewind: bool) -> None:
        values = self.controls.values
        horizon = self.clock() - FOLLOW_S
        while self._heard and self._heard[0][0] < horizon:
            self._heard.popleft()
        heard = [p for _, p in list(self._heard)]
        engine.control = params.knob_control(values["density"], values["key"], heard)
        if rewind:
            self._rewind()

    def _set_mode(self, name: str) -> None:
        if self.loop.mode.name == name:
            return
        try:
            if self.make_mode is None:
                raise LookupError("no mode switching here")
            mode = self.make_mode(name, lambda text: self.post(("say", text, True)))
        except Exception as e:  # noqa: BLE001 - a knob must never end the session
            log.debug("mode %s could not be made", name, exc_info=True)
            self._once(f"mode {name}", f"mode {name} is not available in this session ({e})")
            if self.loop.mode.name in choices.MODES:  # the toggle stays with the loop
                self.controls.set("mode", self.loop.mode.name)
            return
        old = self.loop.mode
        if hasattr(old, "detach"):
            old.detach(self.loop)
        if hasattr(mode, "attach"):
            mode.attach(self.loop)
        self.loop.mode = mode
        if self._moved:
            self._tell_listening(mode)
        self._apply_duet()

    def _apply_duet(self) -> bool:
        """The duet knobs' values into the duet mode's settings; False when not in duet mode."""
        duet = getattr(self.loop.mode, "duet", None)
        settings = getattr(duet, "settings", None)
        if settings is None or not self._duet_values:
            return settings is not None
        values = dict(self._duet_values)
        if "max_answer" in values:
            values["min_answer"] = min(settings.min_answer, values["max_answer"])
        duet.settings = dataclasses.replace(settings, **values)
        return True

    def _panic(self) -> None:
        """Release everything sounding now; the session goes on."""
        loop = self.loop
        self._take_back(self.clock())
        loop.forget_pending()
        loop.engine.release_all()  # the model hears its notes end
        loop.scheduler.call(lambda scheduler: scheduler.release())

    def _once(self, key: str, text: str) -> None:
        if key not in self._told:
            self._told.add(key)
            self.post(("say", text, True))

    def values(self) -> dict:
        """A copy of the parameters' current values (on the engine thread, which owns them:
        the stage view asks for it through ``loop.call``)."""
        return dict(self.controls.values)

    # --- the main thread ----------------------------------------------------------------

    def tick(self) -> list[tuple[str, bool]]:
        """What happened since the last tick: (text, said) -- ``said``: worth a line of its own
        even beside a status line (learning, bindings, notices; a value change shows in the
        status line). New bindings are saved here, on the calling (main) thread."""
        lines = []
        while True:
            try:
                item = self.outbox.get_nowait()
            except queue.Empty:
                return lines
            if item[0] == "save":
                _, learned, text = item
                if self.path is None:
                    lines.append((text, True))
                    continue
                try:
                    bindings.save(self.path, learned)
                    lines.append((f"{text}; saved to {self.path}", True))
                except Exception as e:  # noqa: BLE001 - a full disk must not end the session
                    log.debug("saving the bindings to %s failed", self.path, exc_info=True)
                    lines.append((f"{text}; NOT saved ({e})", True))
            else:
                lines.append((item[1], item[2]))

    def status(self) -> str:
        """The knobs' part of the status line: a pickup hint, the learn prompt, the last change."""
        hint = self.controls.hint
        if hint:
            return hint
        return self.text or ""


class ControlInput:
    """A second input port for knobs and pads (``--control-in``): polled every millisecond
    from its own thread, as the listener polls the piano; everything goes to the knobs."""

    def __init__(self, port, knobs: Knobs, clock: Callable[[], float] = time.monotonic):
        self.port = port
        self.knobs = knobs
        self.clock = clock
        self.error: BaseException | None = None
        self._stop = False
        port.client.ignore_types(sysex=True, timing=True, active_sense=True)

    def run(self) -> None:
        get, sleep = self.port.client.get_message, time.sleep
        next_watch = self.clock() + WATCH_S
        gone = False
        try:
            while not self._stop:
                item = get()
                if item is None:
                    now = self.clock()
                    if now >= next_watch:  # the port vanished? say so, reconnect when back
                        next_watch = now + WATCH_S
                        gone = self._watch(gone)
                    sleep(POLL_S)
                    continue
                if item[0] and item[0][0] & 0xF0 in (messages.NOTE_OFF, messages.NOTE_ON,
                                                     messages.CONTROL):
                    self.knobs.message(item[0], self.clock())
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            log.debug("the control port's thread failed", exc_info=True)
            self.error = e

    def _watch(self, gone: bool) -> bool:
        name = self.port.name
        if not gone and not self.port.present():
            self.knobs.post(("say", f"the control port '{name}' is gone; the knobs "
                                          f"wait for it to come back.", True))
            return True
        if gone and self.port.reopen():
            self.port.client.ignore_types(sysex=True, timing=True, active_sense=True)
            self.knobs.post(("say", f"the control port '{self.port.name}' is back.",
                                   True))
            return False
        return gone

    def stop(self) -> None:
        self._stop = True


class KeyReader:
    """Terminal command keys while the status line is on a terminal: ``l`` lists the
    parameters, then a number (1-9) learns that one; any other key cancels. Ctrl-C still
    stops the session (the terminal keeps its signals)."""

    def __init__(self, knobs: Knobs, stream=None):
        self.knobs = knobs
        self.stream = stream if stream is not None else sys.stdin
        self._stop = False
        self._saved = None
        self._choosing = False

    @staticmethod
    def menu() -> str:
        return "learn which? " + "  ".join(f"{i} {n.replace('_', ' ')}"
                                           for i, n in enumerate(params.LEARN_ORDER[:9], 1))

    def key(self, ch: str) -> None:
        if self._choosing:
            self._choosing = False
            if ch.isdigit() and 1 <= int(ch) <= min(9, len(params.LEARN_ORDER)):
                self.knobs.learn(params.LEARN_ORDER[int(ch) - 1])
            else:
                self.knobs.learn(None)
        elif ch in "lL":
            self._choosing = True
            self.knobs.text = self.menu()
        elif ch == "\x1b" and self.knobs.controls.learning:
            self.knobs.learn(None)

    def run(self) -> None:
        import select
        import termios
        import tty

        fd = self.stream.fileno()
        try:
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        except (termios.error, OSError):
            return
        try:
            while not self._stop:
                ready, _, _ = select.select([fd], [], [], 0.1)
                if ready:
                    data = os.read(fd, 1)
                    if not data:
                        return
                    self.key(data.decode("utf-8", "replace"))
        finally:
            self.restore()

    def restore(self) -> None:
        if self._saved is not None:
            import termios

            try:
                termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)
            except (termios.error, OSError, ValueError):
                pass
            self._saved = None

    def stop(self) -> None:
        self._stop = True


class SessionKnobs:
    """What ``live.Session`` holds for the knobs: the ``Knobs``, the optional control port and
    its thread, and the terminal key reader."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.controls, self.path = load(settings)  # a bad controls file fails first
        self.knobs: Knobs | None = None
        self.port = None
        self.threads: list[threading.Thread] = []
        self._workers: list = []

    def open_port(self, api: str) -> None:
        """The ``control_in`` port (a wrong name fails fast with the list of ports)."""
        if self.settings.get("control_in"):
            from livepiano.live import ports

            self.port = ports.Port("in", api, self.settings["control_in"])

    def attach(self, loop, make_mode: Callable | None = None) -> Knobs:
        """The session's ``Knobs`` on its engine loop (before the listener is built: its
        ``on_control`` hook is ``knobs.on_control``); ``make_mode(name, say)`` builds a mode
        for the mode toggle."""
        self.knobs = Knobs(self.controls, loop, path=self.path, make_mode=make_mode,
                           clock=loop.clock)
        return self.knobs

    def start(self, *, keys: bool) -> None:
        """The control port's thread, and with ``keys`` the terminal key reader (when stdin
        is a terminal)."""
        assert self.knobs is not None
        if self.port is not None:
            reader = ControlInput(self.port, self.knobs, self.knobs.clock)
            self._workers.append(reader)
            self.threads.append(threading.Thread(target=reader.run, name="control-in",
                                                 daemon=True))
        if keys and sys.stdin is not None and sys.stdin.isatty():
            keyreader = KeyReader(self.knobs)
            self._workers.append(keyreader)
            self.threads.append(threading.Thread(target=keyreader.run, name="keys", daemon=True))
        for t in self.threads:
            t.start()

    def describe(self) -> str:
        n = len(self.controls.bindings)
        where = f"; control-in: {self.port.label}" if self.port is not None else ""
        keys = "; press l to learn a knob" if any(isinstance(w, KeyReader)
                                                   for w in self._workers) else ""
        takeover = f"takeover {self.controls.takeover}"
        if self.path.is_file() or n:
            bound = f"{n} binding{'s' if n != 1 else ''} from {self.path} ({takeover})"
        else:
            bound = f"none bound yet (learned ones go to {self.path}; {takeover})"
        return f"knobs: {bound}{where}{keys}."

    def error(self) -> BaseException | None:
        for w in self._workers:
            if getattr(w, "error", None) is not None:
                return w.error
        return None

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        for t in self.threads:
            t.join(timeout=1.0)
        for w in self._workers:
            if isinstance(w, KeyReader):
                w.restore()
        if self.port is not None:
            self.port.close()


# --- bench knobs -----------------------------------------------------------------------------

