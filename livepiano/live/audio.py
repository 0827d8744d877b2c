"""The built-in synth on the default audio device: ``play --out builtin`` and the demo's live
sound where FluidSynth is not installed.

    any thread --send_message--> inbox (SimpleQueue) --> audio thread: Synth --> miniaudio

Threads: miniaudio's audio thread owns the ``Synth``: each time the device wants samples it
calls ``pull(frames)``, which applies the messages waiting in the inbox and renders. Senders
(the scheduler, the demo's ear) only put messages on the inbox. miniaudio is compiled into its
wheel and finds the system's sound server or ALSA at run time, so it needs nothing installed.
"""

from __future__ import annotations

import queue
import time

import numpy as np

from livepiano import LivepianoError
from livepiano.core import messages
from livepiano.core.synth import SAMPLE_RATE, Synth, find_soundfont, load_soundfont
from livepiano.live.quiet import quiet_stderr

BUFFER_MS = 20  # the device's buffer: a message is heard at most about this much later
RING_OUT_S = 0.5  # after All Notes Off at the close, before the device stops


class BuiltinSynth:
    """MIDI messages -> the built-in synth -> the default audio device. ``start`` opens the
    device (one LivepianoError where there is none); without it, ``pull`` renders the same
    sound into buffers."""

    def __init__(self, soundfont=None, rate: int = SAMPLE_RATE):
        self.soundfont = find_soundfont(soundfont, sf2_only=True)
        self.rate = rate
        # Loaded by start (or the first pull); from then on the audio thread's alone.
        self.synth: Synth | None = None
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.device = None

    def load(self) -> Synth:
        if self.synth is None:
            self.synth = Synth(load_soundfont(self.soundfont), self.rate)
        return self.synth

    def send_message(self, message) -> None:
        self.inbox.put(list(message))

    def pull(self, frames: int) -> np.ndarray:
        """The next ``frames`` frames (float32, frames x 2) after the waiting messages."""
        synth = self.load()
        while True:
            try:
                synth.message(self.inbox.get_nowait())
            except queue.Empty:
                break
        return synth.render(frames)

    def _stream(self):
        frames = yield b""
        while True:
            frames = yield self.pull(frames).tobytes()

    def start(self) -> BuiltinSynth:
        """Play on the default audio device; a LivepianoError where none opens."""
        try:
            import miniaudio
        except ImportError:
            raise LivepianoError("the built-in synth needs the miniaudio package for sound; "
                                 "reinstall livepiano (`pip install livepiano`).") from None
        with quiet_stderr():  # ALSA lists every device it fails to open on stderr
            try:
                device = miniaudio.PlaybackDevice(
                    output_format=miniaudio.SampleFormat.FLOAT32, nchannels=2,
                    sample_rate=self.rate, buffersize_msec=BUFFER_MS)
            except miniaudio.MiniaudioError as e:
                raise LivepianoError(f"no sound device to play the built-in synth on "
                                     f"({no_device_reason(e)}); connect one, or name a MIDI "
                                     f"synth with --out (see `livepiano ports`).") from None
        try:
            self.load()  # after the device: without one, the SoundFont is not read at all
            stream = self._stream()
            next(stream)
            with quiet_stderr():
                device.start(stream)
        except BaseException:
            device.close()
            raise
        self.device = device
        return self

    def close(self) -> None:
        """All notes off, a moment to ring out, then the device stops; idempotent."""
        if self.device is None:
            return
        for m in messages.release((), range(16)):  # All Notes Off, pedal up
            self.send_message(m)
        time.sleep(RING_OUT_S)
        device, self.device = self.device, None
        device.close()


def no_device_reason(error: Exception) -> str:
    """miniaudio's error in words: it raises ('failed to init device', -401)."""
    args = [a for a in getattr(error, "args", ()) if isinstance(a, str)]
    return args[0] if args else str(error) or type(error).__name__
