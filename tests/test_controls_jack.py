"""Knobs over a private JACK server, with livepiano as a real subprocess: learn a CC and find
it again after a restart; sweep the temperature from 0.2 to 2.0 with CC messages during a
continuous session and read the change in the recorded session; pickup ignores a knob from a
second control port until it crosses the value.

Marked ``jack``: skipped where jackd is missing, but a failure when $CI is set."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from jackserver import (
    Capture,
    JackServer,
    Pianist,
    jackd_available,
    livepiano_env,
    need,
    start_livepiano,
    tiny_model,  # noqa: F401 (a fixture)
)

from livepiano.settings import bindings, params

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.jack


@pytest.fixture(scope="module")
def jack():
    need(jackd_available(), "jackd is not installed")
    with JackServer() as server:
        yield server


def _env(jack) -> dict:
    return livepiano_env(jack.env)


class Lines:
    """A subprocess's stderr lines, each with the time (this clock) it was read."""

    def __init__(self, proc):
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, text: str, timeout: float = 30.0) -> float:
        """The time the first line holding ``text`` was read."""
        return self.wait_for_line(text, timeout)[0]

    def wait_for_line(self, text: str, timeout: float = 30.0) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(self.lines):
                if text in line:
                    return t, line
            if self.proc.poll() is not None and not self._thread.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no line with {text!r} in {self.text()!r}")

    def values(self, param: str) -> list[str]:
        """The lines that say a new value of ``param``."""
        return [line for _, line in list(self.lines)
                if re.fullmatch(rf"livepiano: {param} [0-9.]+", line)]

    def text(self) -> str:
        return "\n".join(line for _, line in list(self.lines))

    def join(self) -> None:
        self._thread.join(10)


def _livepiano(jack, *args) -> subprocess.Popen:
    return start_livepiano(jack.env, *args)


def _connected(jack, client_port: str, timeout: float = 30.0) -> None:
    """Until ``client_port`` (e.g. 'pianist:keys') is connected to one of livepiano's ports."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if jack.linked_to_livepiano(client_port):
            return
        time.sleep(0.05)
    raise AssertionError(f"{client_port} was not connected to livepiano in time")


def _cc(pianist: Pianist, number: int, value: int, channel: int = 0) -> None:
    pianist.send([0xB0 | channel, number, value])


def _learn(jack, pianist, param, path, moves, timeout=20) -> subprocess.CompletedProcess:
    proc = _livepiano(jack, "learn", param, "--api", "jack", "--in", pianist.name,
                      "--controls", path, "--timeout", timeout)
    first = proc.stderr.readline()
    assert f"learn {param.replace('_', ' ')}" in first and "Ctrl-C" in first, first
    _connected(jack, pianist.name)
    for number, value in moves:
        _cc(pianist, number, value)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, first + err)


def test_learn_a_cc_and_it_is_there_after_a_restart(jack, tmp_path):
    path = tmp_path / "livepiano.yaml"
    # learning saves into a settings file: its settings and comments stay
    path.write_text("# mine\ntemperature: 0.9   # warm\nmode: duet\n")
    pianist = Pianist("knobs-learn", "cc")
    try:
        # A controller's snapshot (one value of each of several CCs) binds nothing; the knob
        # that then moves (a second, different value) is bound.
        r = _learn(jack, pianist, "temperature", path, [(30, 5), (31, 90), (21, 40), (21, 41)])
        assert r.returncode == 0, r.stderr
        assert "CC 21 on channel 1 now drives temperature" in r.stdout
        assert f"saved to {path}" in r.stdout
        # The same knob learned for another parameter replaces, and names, the old binding.
        r = _learn(jack, pianist, "dynamics", path, [(21, 60), (21, 61)])
        assert r.returncode == 0, r.stderr
        assert "now drives dynamics (instead of temperature)" in r.stdout
        r = _learn(jack, pianist, "temperature", path, [(22, 1), (22, 3)])
        assert r.returncode == 0, r.stderr
        # nothing moved (one value of a CC never seen before): nothing bound, exit 1
        r = _learn(jack, pianist, "key", path, [(23, 9)], timeout=1)
        assert r.returncode == 1 and "nothing bound" in r.stderr, r.stderr
    finally:
        pianist.close()
    # a new process reads the file back
    listed = subprocess.run([sys.executable, "-m", "livepiano.cli", "controls", "--controls",
                             str(path)], env=_env(jack), cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert "temperature    CC 22 on channel 1 (jump)" in listed.stdout
    assert "dynamics       CC 21 on channel 1 (jump)" in listed.stdout
    assert "CC 30" not in listed.stdout and "CC 31" not in listed.stdout
    assert path.read_text().startswith("# mine\ntemperature: 0.9   # warm\nmode: duet\n")


def _bits(counts: Counter) -> float:
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


def test_a_temperature_sweep_by_cc_changes_what_the_model_plays(jack, tiny_model, tmp_path):
    controls = tmp_path / "controls.yaml"
    bindings.save(controls, [params.Binding(params.Control("cc", 1, 21), "temperature")])
    record = tmp_path / "sweep.mid"
    # The density steering would hold back the notes a hot temperature adds, and with them
    # the spread of pitches measured here: the temperature alone is under test.
    settings = tmp_path / "settings.yaml"
    settings.write_text("steer: false\n")
    p = params.PARAMS["temperature"]
    low, mid, high = (round(p.position(t)) for t in (0.2, 1.0, 2.0))
    pianist, cap = Pianist("sweeper", "keys"), Capture("sweep-capture", jack.env)
    proc = _livepiano(jack, "play", "--api", "jack", "--in", "sweeper", "--out", "sweep-capture",
                      "--model", tiny_model, "--record", record, "--seed", 5,
                      "--controls", controls, "--config", settings)
    lines = Lines(proc)
    try:
        started = lines.wait_for("playing (")
        _connected(jack, "sweeper:keys")
        _connected(jack, "sweep-capture:input")
        hold = 5.0
        times = {}
        for name, value in (("low", low), ("mid", mid), ("high", high)):
            _cc(pianist, 21, value)  # through the piano's own port: the listener's on_control
            times[name] = time.monotonic()
            time.sleep(hold)
        times["end"] = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    finally:
        pianist.close()
        cap.close()
        if proc.poll() is None:
            proc.kill()
    lines.join()
    assert proc.returncode == 0, lines.text()
    # each change is said at once as a line (stderr is not a terminal)
    for value in (low, mid, high):
        said = f"livepiano: temperature {p.value_at(value):.2f}"
        assert said in lines.text(), lines.text()
    assert lines.wait_for(f"temperature {p.value_at(high):.2f}") - times["high"] < 1.0

    import mido

    mid_file = mido.MidiFile(str(record))
    assert [t.name for t in mid_file.tracks] == ["player", "livepiano"]
    notes, t = [], 0.0
    for msg in mido.merge_tracks([mid_file.tracks[1]]):
        t += mido.tick2second(msg.time, mid_file.ticks_per_beat, 500000)
        if msg.type == "note_on" and msg.velocity > 0:
            notes.append((t, msg.note))

    # The recording's time 0 is the session's start, on livepiano's clock: found from the
    # first note the capture received (this clock) and the same note in the recording; else
    # the moment it said it was playing (a little after its start).
    ons = cap.notes_on()
    origin = started
    if ons and notes and ons[0][1] == notes[0][1]:
        origin = next(t for t, m in cap.messages if m[0] & 0xF0 == 0x90 and m[2] > 0) \
            - notes[0][0]

    def segment(a: str, b: str) -> list[int]:
        # a margin keeps the look-ahead and the CC's way in out of each segment
        lo, hi = times[a] - origin + 0.5, times[b] - origin
        return [n for t, n in notes if lo <= t < hi]

    cold, hot = segment("low", "mid"), segment("high", "end")
    secs = hold - 0.5
    cold_rate = len(set(cold)) / secs
    hot_rate = len(set(hot)) / secs
    summary = (f"T=0.2: {len(cold)} notes, {len(set(cold))} pitches, {_bits(Counter(cold)):.2f} "
               f"bits; T=2.0: {len(hot)} notes, {len(set(hot))} pitches, "
               f"{_bits(Counter(hot)):.2f} bits")
    print(summary)
    assert len(hot) >= 10, summary
    assert _bits(Counter(hot)) >= _bits(Counter(cold)) + 1.0, summary
    assert hot_rate >= cold_rate + 1.0, summary


def test_pickup_ignores_a_knob_until_it_crosses_the_value(jack, tiny_model, tmp_path):
    controls = tmp_path / "controls.yaml"
    bindings.save(controls, [params.Binding(params.Control("cc", 1, 21), "temperature")])
    knobs = Pianist("knobbox", "out")
    cap = Capture("pickup-capture", jack.env)
    proc = _livepiano(jack, "play", "--api", "jack", "--out", "pickup-capture",
                      "--control-in", "knobbox", "--takeover", "pickup", "--model", tiny_model,
                      "--record", tmp_path / "p.mid", "--seed", 6, "--controls", controls)
    lines = Lines(proc)
    p = params.PARAMS["temperature"]
    try:
        lines.wait_for("playing (")
        assert "takeover pickup" in lines.wait_for_line("knobs:")[1]
        _connected(jack, "knobbox:out")
        for value in (10, 30):  # below the value (1.0 is at 64), moving toward it
            _cc(knobs, 21, value)
            time.sleep(0.3)
        hint = lines.wait_for("to pick it up")
        time.sleep(0.5)
        assert not lines.values("temperature"), lines.text()
        _cc(knobs, 21, 80)  # one fast turn across the value: picked up
        said = lines.wait_for(f"livepiano: temperature {p.value_at(80):.2f}", timeout=5)
        assert said >= hint
        _cc(knobs, 21, 20)  # now it follows the knob
        lines.wait_for(f"livepiano: temperature {p.value_at(20):.2f}", timeout=5)
        # the control port vanishes and comes back: said, reconnected, the knob works again
        knobs.close()
        lines.wait_for("the control port 'knobbox:out' is gone", timeout=10)
        knobs = Pianist("knobbox", "out")
        lines.wait_for("the control port 'knobbox:out' is back", timeout=10)
        _connected(jack, "knobbox:out")
        _cc(knobs, 21, 40)
        lines.wait_for(f"livepiano: temperature {p.value_at(40):.2f}", timeout=5)
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    finally:
        knobs.close()
        cap.close()
        if proc.poll() is None:
            proc.kill()
    lines.join()
    assert proc.returncode == 0, lines.text()
    assert "turn CC 21 on channel 1 up to pick it up" in lines.text()
    assert "every note released" in lines.text()
