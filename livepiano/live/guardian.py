"""The guardian: a tiny companion process that silences the synth when the play session dies
without a clean exit (SIGKILL, a crash in native code, the out-of-memory killer).

    play session (scheduler thread) --writes--> Sounding (a shared 2 KB memory map)
    play session --holds--> a pipe to the guardian's stdin (b"bye" on a clean exit)
    guardian: its own MIDI client, connected to the session's output port; waits on the pipe

The scheduler records every voice it leaves sounding in the shared map as it sends (one byte
per channel and pitch, no system call, nothing allocated). The guardian blocks on its stdin:
``bye`` ends it quietly; end-of-file without it means the session is gone, and the guardian
then sends a note-off for each voice the map says is sounding, All Sound Off (CC120), All
Notes Off (CC123) and pedal up (CC64=0) on every channel used, and exits. It imports only the
standard library, python-rtmidi and livepiano's message builder: no model, no numpy, no
torch.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import tempfile

CHANNELS, PITCHES = 16, 128
SIZE = CHANNELS * PITCHES + CHANNELS  # voices per (channel, pitch), then channel-used flags
READY_TIMEOUT_S = 5.0
BYE = b"bye\n"
CLIENT_NAME = "livepiano-guardian"
REPEATS, REPEAT_S = 2, 0.5
GUARDIAN_FIFO_PRIORITY = 3  # the session's scheduler's: below JACK's own threads


class Sounding:
    """The voices sounding on the output, shared with the guardian. Written by the scheduler
    thread only."""

    def __init__(self):
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - mapped as long as it lives
        self._file.truncate(SIZE)
        self.map = mmap.mmap(self._file.fileno(), SIZE)

    def fileno(self) -> int:
        return self._file.fileno()

    def set(self, channel: int, pitch: int, voices: int) -> None:
        self.map[channel * PITCHES + pitch] = min(voices, 255)
        self.map[CHANNELS * PITCHES + channel] = 1

    def use(self, channel: int) -> None:
        self.map[CHANNELS * PITCHES + channel] = 1

    def clear(self) -> None:
        """Nothing is sounding (after a panic); the channels stay marked as used."""
        self.map[:CHANNELS * PITCHES] = bytes(CHANNELS * PITCHES)

    def close(self) -> None:
        self.map.close()
        self._file.close()


def silence(state: bytes, main_channel: int) -> list[list[int]]:
    """The messages that release what ``state`` (a ``Sounding`` map's bytes) says is
    sounding: a note-off per voice, then CC120, CC123 and CC64=0 on each channel used."""
    from livepiano.core.messages import release

    voices = [(i // PITCHES, i % PITCHES)
              for i, n in enumerate(state[:CHANNELS * PITCHES]) for _ in range(n)]
    used = {ch for ch in range(CHANNELS) if state[CHANNELS * PITCHES + ch]} | {main_channel}
    return release(voices, used, sound_off=True)


class Guardian:
    """The session's side: starts the guardian process and says goodbye on a clean exit."""

    def __init__(self, proc: subprocess.Popen, sounding: Sounding):
        self.proc = proc
        self.sounding = sounding

    @classmethod
    def start(cls, api: str, port: str, channel: int,
              env: dict | None = None) -> "Guardian":
        """A guardian connected to the output port named ``port`` (its full name); raises
        OSError or RuntimeError when it cannot start or connect."""
        sounding = Sounding()
        fd = sounding.fileno()
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, api, port, str(channel), str(fd)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(fd,), start_new_session=True, env=env)  # Ctrl-C is for the session
        import select

        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            proc.kill()
            err = proc.communicate(timeout=5)[1].decode("utf-8", "replace").strip()
            sounding.close()
            raise RuntimeError(err.splitlines()[-1] if err else "it did not start in time")
        return cls(proc, sounding)

    def goodbye(self, timeout: float = 2.0) -> None:
        """A clean exit: the session released everything itself; the guardian just ends."""
        try:
            self.proc.stdin.write(BYE)
            self.proc.stdin.close()
            self.proc.wait(timeout)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.sounding.close()


def _watch(api: str, port: str, channel: int, fd: int) -> int:
    import time

    import rtmidi

    # Asleep on a pipe all session long, so real-time priority costs nothing; when the
    # session dies, a busy machine must not keep the guardian waiting for a core.
    if hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(GUARDIAN_FIFO_PRIORITY))
        except OSError:
            pass
    silence(bytes(SIZE), channel)  # everything it needs at the end is loaded now
    state = mmap.mmap(fd, SIZE, access=mmap.ACCESS_READ)
    apis = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK,
            "coremidi": rtmidi.API_MACOSX_CORE, "winmm": rtmidi.API_WINDOWS_MM}
    out = rtmidi.MidiOut(apis[api], name=CLIENT_NAME)
    names = out.get_ports()
    if port not in names:
        print(f"the output port {port!r} is not there", file=sys.stderr)
        return 1
    out.open_port(names.index(port), "guard")
    os.write(1, b"ready\n")
    said = b""
    while True:
        chunk = os.read(0, 64)
        if not chunk:
            break
        said += chunk
    if said.startswith(BYE):
        return 0
    # Twice, and time to deliver them before closing: a JACK server whose client was just
    # killed stalls for a few cycles and may drop what is sent meanwhile (a note-off for a
    # silent note, or a second All Notes Off, does nothing).
    messages = silence(bytes(state), channel)
    for _ in range(REPEATS):
        for message in messages:
            try:
                out.send_message(message)
            except Exception:  # noqa: BLE001, S110 - the port may be gone; try the rest
                pass
        time.sleep(REPEAT_S)
    out.close_port()
    out.delete()
    return 0


if __name__ == "__main__":
    sys.exit(_watch(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
