"""In-process MIDI ports: virtual ports and connections between clients of this one process,
for when no MIDI system (ALSA sequencer, CoreMIDI, JACK) is reachable.

``MidiIn`` and ``MidiOut`` offer the part of python-rtmidi's clients that livepiano uses
(``open_virtual_port``, ``get_ports``, ``open_port``, ``send_message``, ``get_message``,
``ignore_types``, ``close_port``, ``delete``), so ``ports.open_client(kind, "inprocess")``
hands them to the same session code that real ports go through. As on ALSA, a client's
virtual output is listed among the ports an input can open and the other way round, by
``client:port`` names.

Threads: any thread may send; a message is put on the receiving input's queue at once
(``queue.SimpleQueue``), and the input's owner (the listener thread, say) takes it with
``get_message``, as it polls an rtmidi input. The bus's table of ports is guarded by one lock,
each output's list of connected inputs by its own.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

API = "inprocess"


class _Bus:
    """The process's ports: name -> the input that receives (inputs) or the output that sends
    (outputs)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.inputs: dict[str, MidiIn] = {}
        self.outputs: dict[str, MidiOut] = {}


BUS = _Bus()


class MidiIn:
    """An input client: a virtual port that outputs connect to, or a connection to one
    output; messages wait on a queue until ``get_message`` takes them."""

    def __init__(self, name: str = "livepiano", deliver: Callable | None = None):
        """``deliver(message)``: hand each message on at once, in the sender's thread,
        instead of queueing it for ``get_message`` (the built-in synth's port)."""
        self.name = name
        self.deliver = deliver
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._port: str | None = None  # our virtual port's name
        self._source: MidiOut | None = None  # the output we opened
        self._last = time.monotonic()
        self._skip: tuple = ()

    def open_virtual_port(self, name: str = "in") -> None:
        full = f"{self.name}:{name}"
        with BUS.lock:
            BUS.inputs[full] = self
        self._port = full

    def get_ports(self) -> list[str]:
        """The outputs this input can open."""
        with BUS.lock:
            return list(BUS.outputs)

    def open_port(self, index: int = 0, name: str | None = None) -> None:
        with BUS.lock:
            source = list(BUS.outputs.values())[index]
        source.connect(self)
        self._source = source

    def ignore_types(self, sysex: bool = True, timing: bool = True,
                     active_sense: bool = True) -> None:
        self._skip = tuple(s for s, on in ((0xF0, sysex), (0xF8, timing), (0xFE, active_sense))
                           if on)

    def receive(self, message: list[int]) -> None:
        """Called by the sending output, in the sender's thread."""
        if not message or message[0] in self._skip:
            return
        if self.deliver is not None:
            self.deliver(message)
        else:
            self._queue.put((message, time.monotonic()))

    def get_message(self):
        """(message, seconds since the previous message) or None, as rtmidi's."""
        try:
            message, at = self._queue.get_nowait()
        except queue.Empty:
            return None
        delta, self._last = at - self._last, at
        return message, delta

    def close_port(self) -> None:
        with BUS.lock:
            if self._port is not None:
                BUS.inputs.pop(self._port, None)
            outputs = list(BUS.outputs.values())
        for out in outputs:
            out.disconnect(self)
        if self._source is not None:
            self._source.disconnect(self)
        self._port = self._source = None

    def delete(self) -> None:
        self.close_port()


class MidiOut:
    """An output client: a virtual port that inputs connect to, or a connection to one
    input; ``send_message`` hands a message to every connected input."""

    def __init__(self, name: str = "livepiano"):
        self.name = name
        self._targets: list[MidiIn] = []  # the inputs that receive what we send
        self._lock = threading.Lock()
        self._port: str | None = None

    def open_virtual_port(self, name: str = "out") -> None:
        full = f"{self.name}:{name}"
        with BUS.lock:
            BUS.outputs[full] = self
        self._port = full

    def get_ports(self) -> list[str]:
        """The inputs this output can open."""
        with BUS.lock:
            return list(BUS.inputs)

    def open_port(self, index: int = 0, name: str | None = None) -> None:
        with BUS.lock:
            target = list(BUS.inputs.values())[index]
        self.connect(target)

    def connect(self, target: MidiIn) -> None:
        """Send to ``target`` from now on (an input opening this output, or the other way)."""
        with self._lock:
            if target not in self._targets:
                self._targets.append(target)

    def disconnect(self, target: MidiIn) -> None:
        with self._lock:
            if target in self._targets:
                self._targets.remove(target)

    def send_message(self, message) -> None:
        with self._lock:
            targets = list(self._targets)
        for target in targets:
            target.receive(list(message))

    def close_port(self) -> None:
        with BUS.lock:
            if self._port is not None:
                BUS.outputs.pop(self._port, None)
        with self._lock:
            self._targets = []
        self._port = None

    def delete(self) -> None:
        self.close_port()
