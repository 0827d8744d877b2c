"""``livepiano demo`` as a real subprocess: the recorded pianist, the duet, real MIDI ports
(ALSA virtual ports where there is a sequencer, else the demo's own private JACK server),
the files it leaves and the report; and that it leaves no JACK server behind, Ctrl-C
included. Plus the primer's calls, without ports.

Marked ``jack``: skipped where there is neither jackd nor an ALSA sequencer, but a failure
when $CI is set."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mido
import pytest
from jackserver import livepiano_env, need

from livepiano.tools import demo
from livepiano.tools.render import wav_levels

REPO = Path(__file__).resolve().parent.parent
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
ANSWER_ALLOWANCE_MS = 250


def _need_ports() -> None:
    need(shutil.which("jackd") is not None or os.path.exists("/dev/snd/seq"),
          "neither jackd nor an ALSA sequencer is here")


def _env() -> dict:
    env = livepiano_env(os.environ)
    env.pop("JACK_DEFAULT_SERVER", None)  # the demo starts its own
    return env


def _demo(*args) -> list[str]:
    return [sys.executable, "-m", "livepiano.cli", "demo", *map(str, args)]


def _jack_servers(name: str) -> list[int]:
    """Pids of processes that run the JACK server ``name`` (from their environment)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            environ = (d / "environ").read_bytes().split(b"\0")
            cmd = (d / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if os.path.basename(cmd) == b"jackd" and \
                f"JACK_DEFAULT_SERVER={name}".encode() in environ:
            found.append(int(d.name))
    return found


def _server_name(text: str) -> str | None:
    m = re.search(r"private server '([^']+)'", text)
    return m.group(1) if m else None


def _model_notes_released(path: Path) -> tuple[int, dict]:
    """(note-ons, voices left sounding) of the track 'livepiano'."""
    track = next(t for t in mido.MidiFile(str(path)).tracks if t.name == "livepiano")
    sounding: Counter = Counter()
    ons = 0
    for m in track:
        if m.type == "note_on" and m.velocity > 0:
            ons += 1
            sounding[(m.channel, m.note)] += 1
        elif m.type in ("note_on", "note_off") and sounding[(m.channel, m.note)]:
            sounding[(m.channel, m.note)] -= 1
    return ons, {k: v for k, v in sounding.items() if v}


def _answers_right_after_the_wait(out: str) -> None:
    """A call's end to the answer's first note, the median of the calls: never before the
    duet's wait, and at once after it (the answer opens with a note, due when the wait ends;
    the allowance is for the engine's step and the ports, and a busy machine)."""
    median = int(re.search(r"answer latency: median (\d+) ms", out).group(1))
    wait_ms = demo.DUET_WAIT_S * 1000
    assert wait_ms <= median <= wait_ms + ANSWER_ALLOWANCE_MS, out


# --- without ports -----------------------------------------------------------------------------

def test_the_primer_is_found_and_cut_into_released_calls():
    path = demo.primer_path()
    assert path.name == "primer.mid"
    events = demo.primer_events(path)
    calls = demo.split_calls(events)
    assert len(calls) >= 5
    played = sum(1 for _, m in events if m[0] & 0xF0 == 0x90 and m[2] > 0)
    assert sum(c.notes for c in calls) == played  # every note of the primer, once
    for call in calls:
        assert demo.MIN_PHRASE_S <= call.length <= demo.PHRASE_S + 2 * demo.MIN_PHRASE_S
        times = [t for t, _ in call.messages]
        assert times == sorted(times) and times[0] >= 0
        down: Counter = Counter()
        pedal = False
        for _, m in call.messages:
            if m[0] & 0xF0 == 0x90 and m[2] > 0:
                down[m[1]] += 1
            elif m[0] & 0xF0 in (0x80, 0x90):
                assert down[m[1]] > 0, "a note-off for a key this call never struck"
                down[m[1]] -= 1
            else:
                pedal = m[2] >= 64
        assert not +down and not pedal, "a call must end with every key and the pedal up"


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="platform: the Linux choice of systems")
def test_without_a_midi_system_the_demo_takes_in_process_ports(monkeypatch):
    from livepiano.tools import jack

    monkeypatch.setattr(jack, "jackd_path", lambda: None)
    monkeypatch.setattr(demo, "_alsa_seq_present", lambda: False)
    assert demo.choose_system() == ("inprocess", None)
    text = demo.fallback_line()
    assert "in-process ports" in text and "apt install jackd2" in text and "\n" not in text


def test_the_demo_on_in_process_ports_without_jackd_or_fluidsynth(tmp_path):
    """The path a fresh machine takes: nothing on PATH (no jackd, no fluidsynth), the duet over
    in-process ports through the same session code, demo.wav from the built-in synth."""
    empty = tmp_path / "bin"
    empty.mkdir()
    env = _env()
    env["PATH"] = str(empty)
    env.pop("LIVEPIANO_SOUNDFONT", None)
    proc = subprocess.run(_demo("--api", "inprocess", "--seconds", 10, "-o", tmp_path / "out"),
                          capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env,
                          check=False)
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, err + out
    assert "Traceback" not in err, err
    assert demo.fallback_line() in err  # one line: which path, and what to install
    assert "demo (duet mode, in-process ports)" in out, out
    calls, answered = map(int, re.search(r"(\d+) calls? played, (\d+) answered", out).groups())
    assert calls >= 1 and answered >= 1, out
    _answers_right_after_the_wait(out)
    mid = tmp_path / "out" / "demo.mid"
    tracks = {t.name: t for t in mido.MidiFile(str(mid)).tracks}
    assert set(tracks) >= {"player", "livepiano"}
    assert sum(1 for m in tracks["player"] if m.type == "note_on" and m.velocity > 0) > 0
    ons, left = _model_notes_released(mid)
    assert ons > 0 and left == {}, left
    wav_line = next(ln for ln in out.splitlines() if ln.startswith("wav:"))
    assert "the built-in synth" in wav_line, wav_line
    levels = wav_levels(tmp_path / "out" / "demo.wav")
    assert levels.seconds > 5 and not levels.silent and levels.rms > 1e-3, levels


# --- the real thing ----------------------------------------------------------------------------

@pytest.mark.jack
def test_demo_plays_a_duet_writes_the_files_and_reports(tmp_path):
    _need_ports()
    need(shutil.which("fluidsynth") is not None and SOUNDFONT.is_file(),
          "fluidsynth or the FluidR3_GM soundfont is not installed")
    t0 = time.monotonic()
    proc = subprocess.run(_demo("--seconds", 20, "-o", tmp_path), capture_output=True,
                          text=True, timeout=240, cwd=tmp_path, env=_env())
    took = time.monotonic() - t0
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, err + out
    assert "Traceback" not in err, err
    assert took < 150, f"the demo took {took:.0f} s for --seconds 20"
    # The report.
    calls, answered = map(int, re.search(r"(\d+) calls? played, (\d+) answered", out).groups())
    assert calls >= 1 and answered >= 1, out
    assert re.search(r"answer latency: median \d+ ms, max \d+ ms", out), out
    assert re.search(r"scheduler lateness: p99 [0-9.]+ ms", out), out
    assert len(re.findall(r"call \d+: \d+ notes", err)) == calls, err  # a line per call
    notes_in, notes_out = map(int, re.search(r"notes: (\d+) in .*, (\d+) out", out).groups())
    assert "demo.mid" in out and "demo.wav" in out
    assert "duet mode" in out, out
    _answers_right_after_the_wait(out)
    # demo.mid: the pianist's and the model's tracks, with notes, every model note released.
    mid = tmp_path / "demo.mid"
    tracks = {t.name: t for t in mido.MidiFile(str(mid)).tracks}
    assert set(tracks) >= {"player", "livepiano"}
    player = sum(1 for m in tracks["player"] if m.type == "note_on" and m.velocity > 0)
    ons, left = _model_notes_released(mid)
    assert player == notes_in > 0 and ons == notes_out > 0
    assert left == {}, f"model notes never released: {left}"
    # demo.wav: rendered through FluidSynth, and not silent.
    levels = wav_levels(tmp_path / "demo.wav")
    assert levels.seconds > 5 and not levels.silent and levels.rms > 1e-3, levels
    # Nothing left running.
    name = _server_name(out + err)
    if name is not None:
        assert _jack_servers(name) == [], f"jackd '{name}' is still running"


@pytest.mark.jack
def test_ctrl_c_stops_the_demo_and_its_jack_server(tmp_path):
    _need_ports()
    proc = subprocess.Popen(_demo("--seconds", 60, "-o", tmp_path, "--no-wav"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=_env())
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "playing (" in line:
                break
        assert any("playing (" in ln for ln in lines), "".join(lines)
        name = _server_name("".join(lines))
        if name is not None:
            assert _jack_servers(name), "the demo's JACK server is not running"
        time.sleep(4.0)  # into the first call
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = "".join(lines) + err
    assert proc.returncode == 0, err
    assert "interrupted" in err and "every note released" in err, err
    assert "Traceback" not in err, err
    assert (tmp_path / "demo.mid").is_file()
    _, left = _model_notes_released(tmp_path / "demo.mid")
    assert left == {}
    assert re.search(r"calls? played", out)
    if name is not None:
        assert _jack_servers(name) == [], f"jackd '{name}' is still running after Ctrl-C"


def test_the_pianists_idea_of_the_duet_is_the_duets():
    from livepiano.live.duet import DuetSettings

    d = DuetSettings()
    assert (demo.DUET_WAIT_S, demo.MIN_ANSWER_S, demo.MAX_ANSWER_S, demo.GRACE_S) == \
        (d.wait, d.min_answer, d.max_answer, d.grace)
