"""A private JACK server: ``jackd -R -d dummy`` under a unique name, for ``livepiano demo`` on
a system without an ALSA sequencer (a container, a headless box), and for the tests.

    with JackServer() as jack:      # started; os.environ points this process's JACK clients at it
        ...                         # rtmidi.API_UNIX_JACK clients, or children run with jack.env
                                    # stopped here, and on Ctrl-C; on Linux also if we are killed

The server runs real-time (``-R``: a ``--no-realtime`` server was seen to drop MIDI messages
under CPU load; where real-time scheduling is not allowed jackd falls back to a normal thread)
on the dummy driver (no sound card needed: nothing is audible, MIDI flows between clients).
Every JACK client finds it through ``JACK_DEFAULT_SERVER``; ``JACK_NO_START_SERVER`` keeps
libjack from starting a default server of its own when ours is not up yet.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from livepiano import LivepianoError

JACKD_ARGS = ["-R", "-d", "dummy", "-r", "48000", "-p", "64"]
PR_SET_PDEATHSIG = 1


def jackd_path() -> str | None:
    return shutil.which("jackd")


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux)
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class JackServer:
    """A private JACK server; ``env`` is the environment for child processes that use it."""

    def __init__(self, name: str | None = None, prefix: str = "livepiano"):
        self.name = name or f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen | None = None
        self.env = dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_AUDIO_RESERVATION="1",
                        JACK_NO_START_SERVER="1")
        self._saved: dict[str, str | None] = {}
        self.log = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = 30.0) -> "JackServer":
        exe = jackd_path()
        if exe is None:
            raise LivepianoError("jackd is not installed (Debian/Ubuntu: `sudo apt install "
                                 "jackd2`).")
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [exe, *JACKD_ARGS], env=self.env, stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,  # Ctrl-C is ours to pass on
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        # JACK clients in this process (rtmidi's) find the server through the environment.
        for key in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER"):
            self._saved[key] = os.environ.get(key)
            os.environ[key] = self.env[key]
        try:
            self._wait_up(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_up(self, timeout: float) -> None:
        from livepiano import ports

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise LivepianoError(f"jackd exited at start (status {self.proc.returncode}): "
                                     f"{self.log_tail(300).strip().splitlines()[-1:] or ''}")
            try:
                probe = ports.open_client("out", "jack", "livepiano-probe")
                probe.delete()
                return
            except LivepianoError:
                pass
            if time.monotonic() > deadline:
                raise LivepianoError(f"jackd did not come up in {timeout:g} s (is the machine "
                                     f"very busy?); try again.")
            time.sleep(0.05)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and restore the environment; idempotent."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass  # killed: it goes when the kernel gets to it
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = {}

    def log_tail(self, chars: int = 3000) -> str:
        if self.log is None:
            return ""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-chars:]

    def __enter__(self) -> "JackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
