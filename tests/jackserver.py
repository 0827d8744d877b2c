"""Helpers for tests with real parts: a private JACK server, a test pianist, a capture port,
and a small model trained on the test fixtures.

The JACK server is ``livepiano.jack``'s, the one ``livepiano demo`` starts: real-time (``-R``;
a ``--no-realtime`` server was seen to drop half the MIDI messages under CPU load) on the dummy
driver, under a unique name passed to every child through ``JACK_DEFAULT_SERVER``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from livepiano.tools.jack import JackServer as _PackageJackServer
from livepiano.tools.jack import die_with_parent, jackd_path

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent


def livepiano_env(base: dict) -> dict:
    """The environment of a ``livepiano`` child under test: this checkout's package, and none
    of the developer's own MIDI system choice, settings or knob bindings."""
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for key in ("LIVEPIANO_MIDI_API", "LIVEPIANO_CONTROLS"):
        env.pop(key, None)
    env["LIVEPIANO_CONFIG"] = os.path.join(tempfile.gettempdir(), "livepiano-test-none",
                                           "livepiano.yaml")
    return env


def start_livepiano(env: dict, *args) -> subprocess.Popen:
    """``livepiano ARGS`` of this checkout in a child (``livepiano_env(env)``; text pipes for
    stdout and stderr) that ends with the test process: a killed test run leaves no session
    playing."""
    return subprocess.Popen([sys.executable, "-m", "livepiano.cli", *map(str, args)],
                            env=livepiano_env(env), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent())


def need(ok: bool, why: str) -> None:
    """Skip a test whose real parts (jackd, FluidSynth) are missing here; in CI (``$CI`` set)
    the skip is a failure (conftest.py), so a machine without them can never pass for green."""
    if not ok:
        pytest.skip(why)


_READ_ONLY_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"'


@contextlib.contextmanager
def read_only(folder: Path):
    """``with read_only(folder) as wrap:`` ``wrap(argv)`` is a command line that runs ``argv``
    where ``folder`` cannot be written. Not as root: the folder's write permission is taken
    away. As root, who writes whatever the permissions say, the command runs in a private
    mount namespace (``unshare -m``) in which the folder is a read-only bind mount of itself;
    nothing changes outside it."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield lambda argv: [str(a) for a in argv]
        finally:
            folder.chmod(0o700)
        return
    unshare = shutil.which("unshare")
    works = unshare is not None and subprocess.run(
        [unshare, "-m", "--propagation", "private", "sh", "-c", _READ_ONLY_MOUNT, str(folder)],
        capture_output=True, timeout=30).returncode == 0
    need(works, "root writes into any folder, and no private mount namespace (unshare -m) "
                "can be made here to mount one read-only")
    yield lambda argv: [unshare, "-m", "--propagation", "private", "sh", "-c",
                        _READ_ONLY_MOUNT + ' && exec "$@"', str(folder), *map(str, argv)]


def jackd_available() -> bool:
    return jackd_path() is not None


class JackServer(_PackageJackServer):
    """``with JackServer() as jack:`` a private server, started and stopped as ``livepiano
    demo`` does it (``livepiano.jack``), under a test name; ``jack.env`` for child processes."""

    def __init__(self, name: str | None = None):
        super().__init__(name, prefix="livepiano-test")

    def ports(self) -> list[str]:
        out = subprocess.run(["jack_lsp"], env=self.env, capture_output=True, text=True, timeout=5)
        return out.stdout.split("\n")

    def linked_to_livepiano(self, port: str) -> bool:
        """Is ``port`` (e.g. 'pianist:keys') connected to one of livepiano's ports?"""
        out = subprocess.run(["jack_lsp", "-c"], env=self.env, capture_output=True, text=True,
                             timeout=5).stdout
        links: dict[str, list[str]] = {}
        current = None
        for line in out.split("\n"):
            if line.startswith("   "):  # a connection of the port above it
                if current is not None:
                    links[current].append(line.strip())
            elif line.strip():
                current = line.strip()
                links[current] = []
        return any(other.startswith("livepiano") for other in links.get(port, ()))

    def wait_connected(self, proc, src: str, dst: str, timeout: float = 30.0) -> None:
        """Until the livepiano process ``proc`` has its ports connected to ``src`` (its input)
        and ``dst`` (its output); an early exit fails with its stderr."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"livepiano exited early: {proc.communicate()[1]}")
            if self.linked_to_livepiano(src) and self.linked_to_livepiano(dst):
                return
            time.sleep(0.1)
        raise AssertionError("livepiano did not connect its ports in time")

    def connect(self, src: str, dst: str) -> None:
        subprocess.run(["jack_connect", src, dst], env=self.env, check=True, timeout=5)

    def wait_for_port(self, pattern: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [p for p in self.ports() if pattern in p]
            if hits:
                return hits[0]
            time.sleep(0.05)
        raise TimeoutError(f"no JACK port like {pattern!r}; ports: {self.ports()}")


_PIANIST = """
import os, sys
import rtmidi
midi = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=sys.argv[1])
midi.open_virtual_port(sys.argv[2])
print("ready", flush=True)
for line in sys.stdin:
    midi.send_message(list(bytes.fromhex(line)))
midi.close_port()  # a crash here (the race below) ends this process, not the test run
os._exit(0)
"""


class Pianist:
    """A JACK MIDI output port that plays messages at their times.

    The port lives in a child process: python-rtmidi's JACK output frees its port while
    JACK's process callback may still be using it, which now and then crashed the whole test
    run on a busy machine; in a child, such a crash only ends the child, and its port
    vanishes as an unplugged keyboard's does."""

    def __init__(self, client: str = "pianist", port: str = "keys", timeout: float = 10.0):
        self.proc = subprocess.Popen([sys.executable, "-c", _PIANIST, client, port],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=die_with_parent())
        self.name = f"{client}:{port}"
        self.sent: list[tuple[float, list[int]]] = []  # (when it left, message)
        ready = threading.Event()
        threading.Thread(target=lambda: self.proc.stdout.readline() and ready.set(),
                         daemon=True).start()
        if not ready.wait(timeout):
            self.close()
            raise TimeoutError(f"the pianist's port {self.name} did not open")

    def send(self, message) -> None:
        self.proc.stdin.write(bytes(message).hex() + "\n")
        self.proc.stdin.flush()

    def play(self, timed_messages, speed: float = 1.0, gap: float = 0.0015) -> None:
        """``timed_messages``: (seconds from now, [bytes]) in time order. Messages are at
        least ``gap`` apart, a little more than one JACK period (64 frames at 48 kHz), as a
        human chord is: python-rtmidi 1.5.8's JACK input corrupts messages that arrive in
        one period (see livepiano.listener), and that bug is not what these tests test."""
        t0 = time.monotonic()
        last = -1.0
        for at, message in timed_messages:
            wait = max(t0 + at / speed, last + gap) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.send(message)
            last = time.monotonic()
            self.sent.append((last, message))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)


class Capture:
    """A JACK MIDI input port ``CLIENT:input`` that records (arrival time, message), served by
    JACK's own C monitor ``jack_midi_dump``. Not an rtmidi input: python-rtmidi 1.5.8's JACK
    input hands over copies of a neighbouring message now and then when several arrive in one
    period (see livepiano.listener), and the capture must not invent or lose notes."""

    _LINE = re.compile(r"\s*\d+:\s+((?:[0-9a-f]{2}\s)+)")

    def __init__(self, client: str = "capture", env: dict | None = None, timeout: float = 10.0):
        cmd = ["jack_midi_dump", client]
        if shutil.which("stdbuf"):
            cmd = ["stdbuf", "-oL"] + cmd
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.name = f"{client}:input"
        self.messages: list[tuple[float, list[int]]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lsp = subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True).stdout
            if self.name in lsp.split("\n"):
                return
            time.sleep(0.05)
        self.close()
        raise TimeoutError(f"jack_midi_dump did not open {self.name}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            m = self._LINE.match(line)
            if m:
                self.messages.append((time.monotonic(), [int(x, 16) for x in m.group(1).split()]))

    def notes_on(self) -> list[list[int]]:
        return [m for _, m in list(self.messages) if m[0] & 0xF0 == 0x90 and m[2] > 0]

    def close(self) -> None:
        time.sleep(0.1)  # let the last messages through
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._thread.join(5)


def sounding_after(messages) -> dict:
    """(channel, pitch) -> voices left sounding after ``messages``, honouring All Notes Off."""
    sounding: dict = {}
    for m in messages:
        status, ch = m[0] & 0xF0, m[0] & 0x0F
        if status == 0x90 and m[2] > 0:
            sounding[(ch, m[1])] = sounding.get((ch, m[1]), 0) + 1
        elif status in (0x80, 0x90):
            if sounding.get((ch, m[1])):
                sounding[(ch, m[1])] -= 1
        elif status == 0xB0 and m[1] == 123:
            for key in [k for k in sounding if k[0] == ch]:
                sounding[key] = 0
    return {k: v for k, v in sounding.items() if v}


def excerpt(path: Path, seconds: float) -> list[tuple[float, list[int]]]:
    """(time, message bytes) of the note and pedal messages of a MIDI file's first seconds."""
    import mido

    out, t = [], 0.0
    for msg in mido.MidiFile(str(path)):
        t += msg.time
        if t > seconds:
            break
        if msg.type in ("note_on", "note_off") or (msg.type == "control_change"
                                                   and msg.control == 64):
            out.append((t, msg.bytes()))
    # Release what is still down at the cut.
    down = set()
    for _, m in out:
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            down.add(m[1])
        elif m[0] & 0xF0 in (0x80, 0x90):
            down.discard(m[1])
    out.append((t, [0xB0, 64, 0]))
    out.extend((t, [0x80, p, 0]) for p in sorted(down))
    return out


def train_tiny_model(out: Path, steps: int = 150, seed: int = 0) -> Path:
    """A small unconditioned model trained briefly on the MAESTRO excerpts in tests/data, so
    that it plays note-like output; exported to ``out`` (.onnx)."""
    import numpy as np
    import torch

    from livepiano.core import codec
    from livepiano.core.midifile import midi_file_tokens
    from livepiano.learn.export import write_onnx
    from livepiano.learn.network import ModelConfig, PerformanceRNN

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    streams = [np.asarray(midi_file_tokens(p), dtype=np.int64)
               for p in sorted(DATA.glob("*.mid"))]
    model = PerformanceRNN(ModelConfig(hidden=64, layers=1, embedding=32, control_dim=0,
                                       dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    window, batch = 96, 16
    with torch.enable_grad():
        for _ in range(steps):
            rows = []
            for _ in range(batch):
                s = streams[rng.integers(len(streams))]
                i = rng.integers(0, len(s) - window - 1)
                rows.append(s[i:i + window + 1])
            x = torch.from_numpy(np.stack(rows))
            h, c = model.zero_state(batch)
            logits, _, _ = model(x[:, :-1], h, c)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, codec.VOCAB_SIZE),
                                                     x[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    write_onnx(model, out)
    return out


@pytest.fixture(scope="session")
def tiny_model(request, tmp_path_factory):
    """A small model trained on tests/data, cached across runs (in pytest's cache folder) by
    the trainer's source and the data it trains on."""
    pytest.importorskip("torch")
    h = hashlib.sha256(inspect.getsource(train_tiny_model).encode())
    for p in sorted(DATA.glob("*.mid")):
        h.update(p.read_bytes())
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    folder = Path(cache.mkdir("livepiano-tiny-model") if cache is not None
                  else tmp_path_factory.mktemp("tiny-model"))
    path = folder / f"tiny-{h.hexdigest()[:12]}.onnx"
    if not path.is_file():
        train_tiny_model(folder / "training.onnx")
        os.replace(folder / "training.onnx", path)
    return path
