"""The player's side: an input port -> timestamped note events -> the engine's inbox.

``PedalEncoder`` turns raw note and sustain messages into the notes the model hears, deciding
every case as ``codec.apply_sustain`` does for files: a key released while the pedal is down
keeps sounding until the pedal comes up or the same pitch is struck again, and a note-off ends
every voice of its pitch that is sounding. ``player_tokens`` places those events in the token
stream (time-shifts for the silences, a velocity event when the bin changes). ``Listener``
runs ``PedalEncoder`` on its own thread: it stamps each message with the clock as it arrives and
hands the events on through queues.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable, NamedTuple

from livepiano.core import codec, messages
from livepiano.core.messages import CONTROL, NOTE_OFF, NOTE_ON
from livepiano.core.voices import Voices


class PlayerEvent(NamedTuple):
    time: float  # seconds on the session clock
    on: bool
    pitch: int
    velocity: int  # 0 for a note-off


class PedalEncoder:
    """Raw messages -> note events with the sustain pedal applied (one instrument: the pedal
    acts on every channel of the input, as one piano)."""

    def __init__(self):
        self.pedal = False
        self.down = Voices("all")  # voices whose key is down; a key up releases its pitch
        self.held: dict[int, int] = defaultdict(int)  # voices released under the pedal

    def feed(self, message, t: float) -> list[PlayerEvent]:
        if not message:
            return []
        kind = messages.kind(message)
        if kind == "on":
            return self.note_on(message[1], message[2], t)
        if kind == "off":
            return self.note_off(message[1], t)
        if message[0] & 0xF0 == CONTROL and len(message) >= 3 \
                and message[1] == codec.SUSTAIN_CC:
            return self.sustain(message[2] >= 64, t)
        return []

    def note_on(self, pitch: int, velocity: int, t: float) -> list[PlayerEvent]:
        out = []
        if self.pedal:  # a re-strike under the pedal ends the voices of that pitch
            for _ in range(len(self.down.off(pitch, t)) + self.held[pitch]):
                out.append(PlayerEvent(t, False, pitch, 0))
            self.held[pitch] = 0
        self.down.on(pitch, t)
        out.append(PlayerEvent(t, True, pitch, velocity))
        return out

    def note_off(self, pitch: int, t: float) -> list[PlayerEvent]:
        voices = len(self.down.off(pitch, t))
        if not voices:
            return []
        if self.pedal:
            self.held[pitch] += voices
            return []
        return [PlayerEvent(t, False, pitch, 0)] * voices

    def sustain(self, down: bool, t: float) -> list[PlayerEvent]:
        if down == self.pedal:
            return []
        self.pedal = down
        if down:
            return []
        out = [PlayerEvent(t, False, p, 0) for p, n in sorted(self.held.items()) for _ in range(n)]
        self.held.clear()
        return out

    def release_all(self, t: float) -> list[PlayerEvent]:
        """Note-offs for everything the player left sounding (the port vanished)."""
        out = [PlayerEvent(t, False, p, 0) for p in sorted(self.down.keys())]
        out += [PlayerEvent(t, False, p, 0) for p, n in sorted(self.held.items())
                for _ in range(n)]
        self.down.clear()
        self.held.clear()
        self.pedal = False
        return out


class StreamPosition:
    """Where the shared token stream stands: its step, the velocity bin in force and the step
    at which each pitch last started. Player events and the model's own events both move it."""

    def __init__(self, step: int = 0, velocity_bin: int = 0, started: dict | None = None):
        self.step = step
        self.velocity_bin = velocity_bin
        self.started: dict[int, int] = dict(started or {})

    @classmethod
    def of(cls, engine) -> "StreamPosition":
        """Where an ``engine.Engine``'s stream stands now."""
        started = {}
        for pitch, start, _who in engine.voices():
            started[pitch] = max(start, started.get(pitch, start))
        return cls(engine.steps, engine.velocity_bin, started)

    def follow(self, token: int) -> None:
        """Account for a token that went into the stream (the model's or the player's)."""
        if token < codec.NOTE_OFF:
            self.started[token] = self.step
        elif token < codec.TIME_SHIFT:
            pass
        elif token < codec.VELOCITY:
            self.step += codec.shift_steps(token)
        else:
            self.velocity_bin = token - codec.VELOCITY + 1


def player_tokens(events, position: StreamPosition, origin: float) -> list[int]:
    """Tokens that put the player's ``events`` into the stream at ``position`` (which they
    advance): shifts up to each event's step (an event from before the stream's step is
    placed at the stream's step: the model may already be a look-ahead further), a velocity
    event when the bin changes, then the note event. A note-off lands at least one step after
    its note-on, as the codec makes every note at least one step long."""
    tokens: list[int] = []

    def put(tok: int) -> None:
        tokens.append(tok)
        position.follow(tok)

    for ev in events:
        step = codec.quantize(ev.time - origin)
        if not ev.on and position.started.get(ev.pitch, -1) >= max(step, position.step):
            step = position.started[ev.pitch] + 1
        if step > position.step:
            for tok in codec.shifts(step - position.step):
                put(tok)
        if ev.on:
            b = codec.velocity_to_bin(ev.velocity)
            if b != position.velocity_bin:
                put(codec.velocity_event(b))
            put(codec.note_on(ev.pitch))
        else:
            put(codec.note_off(ev.pitch))
    return tokens


POLL_S = 0.001


class Listener:
    """Feeds an input port's notes to ``deliver(events)`` (the engine's inbox), control changes
    other than the pedal to ``on_control(channel, number, value, t)`` (the knobs' hook), and,
    with ``echo``, the raw note and pedal messages to ``echo(message)``.

    It polls rtmidi's queue from its own thread every millisecond rather than taking rtmidi's
    callback: with python-rtmidi 1.5.8 on JACK, the callback hands over corrupted copies when
    several messages arrive in one JACK period (a chord played by a script: 25 of 366 messages
    of a MAESTRO excerpt came out as copies of a neighbour), and the queue did so far less
    often (once, in a burst of 128 messages in one period; never in chords). Both were on an
    asynchronous JACK server, whose late clients read torn input buffers (see livepiano.jack:
    a synchronous one gave no wrong message through the queue in a probe). A message is
    stamped with the clock when it is taken from the queue, at most a millisecond after it
    arrived."""

    def __init__(self, port, deliver: Callable, clock: Callable[[], float] = time.monotonic,
                 echo: Callable | None = None, on_control: Callable | None = None):
        self.port = port
        self.deliver = deliver
        self.clock = clock
        self.echo = echo
        self.on_control = on_control
        self.encoder = PedalEncoder()
        # on_pedal(down, t): the sustain pedal went down or up (the duet's hook: the events
        # carry the pedal only folded into note lengths, and a pedal held in silence counts)
        self.on_pedal: Callable | None = None
        self.error: BaseException | None = None
        self._stop = False
        port.client.ignore_types(sysex=True, timing=True, active_sense=True)

    def run(self, prepare: Callable | None = None) -> None:
        """The listener thread's body (``prepare`` runs first, e.g. to set its priority)."""
        if prepare is not None:
            prepare()
        get, sleep = self.port.client.get_message, time.sleep
        try:
            while not self._stop:
                item = get()
                if item is None:
                    sleep(POLL_S)
                    continue
                self.handle(item[0], self.clock())
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e

    def handle(self, message, t: float) -> None:
        status = message[0] & 0xF0 if message else 0
        if status == CONTROL and len(message) >= 3 and message[1] != codec.SUSTAIN_CC:
            if self.on_control is not None:
                self.on_control(message[0] & 0x0F, message[1], message[2], t)
            return
        if status not in (NOTE_ON, NOTE_OFF, CONTROL):
            return  # aftertouch, pitch bend, program change: not part of the vocabulary
        pedal = self.encoder.pedal
        events = self.encoder.feed(message, t)
        if self.echo is not None:
            self.echo(list(message))
        if events:
            self.deliver(events)
        if self.on_pedal is not None and self.encoder.pedal != pedal:
            self.on_pedal(self.encoder.pedal, t)

    def release_all(self) -> None:
        """The port vanished: release what the player left sounding (in the model's stream and,
        with echo, on the output)."""
        pedal = self.encoder.pedal
        events = self.encoder.release_all(self.clock())
        if self.echo is not None:
            for ev in events:
                self.echo([NOTE_OFF, ev.pitch, 0])
            self.echo([CONTROL, codec.SUSTAIN_CC, 0])
        if events:
            self.deliver(events)
        if pedal and self.on_pedal is not None:
            self.on_pedal(False, self.clock())

    def stop(self) -> None:
        self._stop = True
