"""A private JACK server: ``jackd -R -S -d dummy`` under a name of its own, for ``livepiano
demo`` on a system without an ALSA sequencer (a container, a headless box), and for the tests.

    with JackServer() as jack:      # started; os.environ points this process's JACK clients at it
        ...                         # rtmidi.API_UNIX_JACK clients, or children run with jack.env
                                    # stopped here, and on Ctrl-C; on Linux also if we are killed

The server runs real-time (``-R``: a ``--no-realtime`` server was seen to drop MIDI messages
under CPU load; where real-time scheduling is not allowed jackd falls back to a normal thread)
and synchronous (``-S``): in JACK2's default asynchronous mode a client that runs late (a
busy or virtual machine) is still reading its input buffer when the sending client writes the
next period into it. rtmidi's JACK input then reads torn events: garbled messages, and now and
then a crash in its process callback (SIGSEGV in ``_rtmidi``, seen in CI). A probe here (a
sender in another process, chords of 6 messages every 3 ms for 20 s, a SCHED_FIFO spinner
beside it) read 172 and 1,557 bad messages of ~35,600 from an asynchronous server and none
from a synchronous one. On the dummy driver (no sound card: nothing is audible, MIDI flows
between clients) waiting for late clients costs nothing. Every JACK client finds the server
through ``JACK_DEFAULT_SERVER``; ``JACK_NO_START_SERVER`` keeps libjack from starting a
default server of its own when ours is not up yet.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Callable

from livepiano import LivepianoError

log = logging.getLogger(__name__)

JACKD_ARGS = ["-R", "-S", "-d", "dummy", "-r", "48000", "-p", "64"]
PR_SET_PDEATHSIG = 1


def jackd_path() -> str | None:
    return shutil.which("jackd")


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes a child end (SIGTERM) when this process does (Linux; None
    elsewhere). prctl is looked up here, in the parent: between fork and exec the child of a
    threaded process must not load anything (another thread may have held the loader's lock)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return set_death_signal


SLOTS = 6  # JACK2 registers at most 8 servers per machine, killed ones included


def _claim_slot(prefix: str) -> tuple[int, int] | None:
    """A server name from a small pool, held by a lock file until ``stop``: (slot, fd).

    JACK2 keeps each server's entry in a shared registry of eight and reclaims a dead server's
    entry only for a server of the same name. Unique names therefore fill the registry with
    the entries of servers that were killed ("Too many servers already active"); reusing a
    few names lets each new server take over the entry its killed predecessor left."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): unique names
        return None
    for slot in range(SLOTS):
        path = os.path.join(tempfile.gettempdir(), f"{prefix}-jack-{slot}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return slot, fd
    return None


class JackServer:
    """A private JACK server; ``env`` is the environment for child processes that use it."""

    def __init__(self, name: str | None = None, prefix: str = "livepiano"):
        self._slot = None if name is not None else _claim_slot(prefix)
        self.name = name or (f"{prefix}-{self._slot[0]}" if self._slot
                             else f"{prefix}-{uuid.uuid4().hex[:8]}")
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
            preexec_fn=die_with_parent())
        # JACK clients in this process (rtmidi's) find the server through the environment.
        for key in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER"):
            self._saved[key] = os.environ.get(key)
            os.environ[key] = self.env[key]
        try:
            self._wait_up(timeout)
        except BaseException:
            log.debug("jackd did not come up; its output: %s", self.log_tail())
            self.stop()
            raise
        log.debug("jackd %s is up (pid %s)", self.env.get("JACK_DEFAULT_SERVER"), self.pid)
        return self

    def _wait_up(self, timeout: float) -> None:
        from livepiano.live import ports

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
        if self._slot is not None:
            os.close(self._slot[1])  # the lock goes with it
            self._slot = None

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
