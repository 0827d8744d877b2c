"""The built-in synth: the real SoundFont that livepiano installs (pretty_midi's TimGM6mb.sf2)
rendered into buffers and WAVs -- the right pitches at the right times at a sane level; that
``generate --wav`` uses it where FluidSynth is not installed (a subprocess whose PATH has no
fluidsynth) and that its WAV's onsets match the MIDI file's; and the one-line errors for a
missing or broken SoundFont and for ``play --out builtin`` without a sound device."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from livepiano import LivepianoError
from livepiano.core.synth import (
    SAMPLE_RATE,
    Synth,
    load_soundfont,
    packaged_soundfont,
    render_events,
)

REPO = Path(__file__).resolve().parent.parent
RATE = SAMPLE_RATE


@pytest.fixture(scope="module")
def font():
    path = packaged_soundfont()
    assert path is not None, "pretty_midi (a dependency) ships TimGM6mb.sf2"
    return load_soundfont(path)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def _peak_hz(x: np.ndarray) -> float:
    n = 1 << 15
    spectrum = np.abs(np.fft.rfft(x[:n] * np.hanning(min(n, len(x))), n))
    return float(np.fft.rfftfreq(n, 1 / RATE)[spectrum.argmax()])


def test_notes_sound_at_their_times_with_their_pitch_and_end_after_release(font):
    # A4, then E5 a second later, each held 0.5 s; silence between and after.
    events = [(0.5, [0x90, 69, 100]), (1.0, [0x80, 69, 0]),
              (2.0, [0x90, 76, 100]), (2.5, [0x80, 76, 0])]
    audio = render_events(Synth(font), events, tail=2.0)
    mono = audio.mean(axis=1)

    def win(a: float, b: float) -> np.ndarray:
        return mono[int(a * RATE):int(b * RATE)]

    assert _rms(win(0.0, 0.49)) == 0.0  # nothing before the first note-on
    first, second = _rms(win(0.5, 0.6)), _rms(win(2.0, 2.1))
    assert first > 0.01 and second > 0.01  # sounding from the note-on
    # The attack is at the note-on: the 10 ms before it are far quieter than the 10 ms after.
    assert _rms(win(1.99, 2.0)) < 0.2 * _rms(win(2.0, 2.01))
    # Released: nearly silent well after each note-off (the SoundFont's release is ~1 s).
    assert _rms(win(1.8, 1.99)) < 0.05 * first
    assert _rms(win(3.9, 4.4)) < 0.05 * second
    assert abs(_peak_hz(win(0.55, 1.0)) - 440.0) < 3.0
    assert abs(_peak_hz(win(2.05, 2.5)) - 659.3) < 4.0
    assert 0.05 < np.abs(audio).max() < 1.0  # audible, and not clipped


def test_sustain_pedal_holds_released_notes_and_velocity_sets_the_level(font):
    held = render_events(Synth(font), [(0.0, [0xB0, 64, 127]), (0.0, [0x90, 60, 100]),
                                       (0.2, [0x80, 60, 0]), (1.5, [0xB0, 64, 0])], tail=1.0)
    assert _rms(held[int(1.0 * RATE):int(1.4 * RATE)]) > 0.005  # still sounding under the pedal
    soft = render_events(Synth(font), [(0.0, [0x90, 60, 30])], tail=0.5)
    loud = render_events(Synth(font), [(0.0, [0x90, 60, 120])], tail=0.5)
    assert _rms(loud) > 4 * _rms(soft)
    off = Synth(font)
    off.message([0x90, 60, 100])
    off.render(RATE // 10)
    off.message([0xB0, 123, 0])  # All Notes Off
    assert _rms(off.render(2 * RATE)[RATE:]) < 1e-4


def test_a_broken_or_missing_soundfont_is_one_line(tmp_path):
    with pytest.raises(LivepianoError) as e:
        load_soundfont(tmp_path / "none.sf2")
    assert "cannot read the SoundFont" in str(e.value) and "\n" not in str(e.value)
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(b"RIFF\x20\x00\x00\x00sfbkLIST\x40\x00\x00\x00pdta")
    with pytest.raises(LivepianoError) as e:
        load_soundfont(broken)
    assert "is not a usable SoundFont" in str(e.value) and "\n" not in str(e.value)


# --- through the command line, without FluidSynth ---------------------------------------------

def _no_fluidsynth_env(tmp_path: Path) -> dict:
    """A child's environment with nothing on PATH (so no fluidsynth program), this checkout's
    package first."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    env = dict(os.environ)
    env["PATH"] = str(empty)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for key in ("LIVEPIANO_SOUNDFONT", "LIVEPIANO_MIDI_API", "LIVEPIANO_CONTROLS"):
        env.pop(key, None)
    env["LIVEPIANO_CONFIG"] = str(tmp_path / "no-settings" / "livepiano.yaml")
    return env


def _cli(args, env, cwd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "livepiano.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
                          check=False)


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def _midi_onsets(path: Path, apart: float = 0.05) -> np.ndarray:
    """Note-on times of a MIDI file, those closer than ``apart`` to the previous as one."""
    t, ons = 0.0, []
    for m in mido.MidiFile(str(path)):
        t += m.time
        if m.type == "note_on" and m.velocity > 0:
            ons.append(t)
    out: list[float] = []
    for o in sorted(ons):
        if not out or o - out[-1] > apart:
            out.append(o)
    return np.array(out)


def _wav_onsets(path: Path, hop: float = 0.01, size: int = 2048) -> np.ndarray:
    """Onset times of a WAV: peaks of the spectral flux (the rise of log magnitude summed over
    frequencies, frame to frame) that stand out from their second of music."""
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2).mean(1) / 32768
    step = int(rate * hop)
    frames = np.array([x[i:i + size] * np.hanning(size) for i in range(0, len(x) - size, step)])
    logmag = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=1)))
    flux = np.concatenate([[0.0], np.maximum(np.diff(logmag, axis=0), 0).sum(1)])
    found = []
    for i, f in enumerate(flux):
        near, around = flux[max(0, i - 3):i + 4], flux[max(0, i - 50):i + 50]
        if f > 0 and f == near.max() and f > np.median(around) + 0.5 * around.std() \
                and f > 0.05 * flux.max():
            found.append(i * hop + size / 2 / rate)
    return np.array(found)


def _matched(a: np.ndarray, b: np.ndarray, within: float = 0.035) -> float:
    """The share of times in ``a`` that have one in ``b`` within ``within`` seconds."""
    return float(np.mean([np.abs(b - t).min() <= within for t in a])) if len(a) else 0.0


def test_generate_wav_without_fluidsynth_renders_the_midi_onsets(tmp_path):
    env = _no_fluidsynth_env(tmp_path)
    # 5 notes/s: onsets far enough apart that the same ones 150 ms later fall between them
    r = _cli(["generate", "--seconds", "6", "--seed", "1", "--density", "5", "-o",
              tmp_path / "g.mid", "--wav", tmp_path / "g.wav"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("wav"))
    assert "the built-in synth (FluidSynth is not installed)" in line and "dBFS" in line
    midi, heard = _midi_onsets(tmp_path / "g.mid"), _wav_onsets(tmp_path / "g.wav")
    assert len(midi) >= 10
    # Each of the MIDI file's onsets is heard within 35 ms, and little is heard elsewhere
    # (FluidSynth's render of such a file scores about 0.9 on both).
    assert _matched(midi, heard) >= 0.8 and _matched(heard, midi) >= 0.75
    nearest = [heard[np.abs(heard - t).argmin()] - t for t in midi]
    assert abs(float(np.median(nearest))) <= 0.015
    # The check tells times apart: the same onsets 150 ms later do not match.
    assert _matched(midi + 0.15, heard) < 0.5
    with wave.open(str(tmp_path / "g.wav")) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768
    assert -20 < 20 * np.log10(np.abs(x).max()) < 0  # a sane level


def test_generate_wav_with_a_broken_soundfont_is_one_line(tmp_path):
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(b"RIFF\x20\x00\x00\x00sfbkLIST\x40\x00\x00\x00pdta")
    r = _cli(["generate", "--seconds", "1", "-o", tmp_path / "x.mid", "--wav",
              tmp_path / "x.wav", "--soundfont", broken], _no_fluidsynth_env(tmp_path), tmp_path)
    assert "is not a usable SoundFont" in _one_line_error(r)
    assert not (tmp_path / "x.mid").exists()  # said before generating


def _sound_device_opens() -> bool:
    try:
        import miniaudio

        from livepiano.live.quiet import quiet_stderr

        with quiet_stderr():
            miniaudio.PlaybackDevice().close()
        return True
    except Exception:  # noqa: BLE001 - no device, whatever miniaudio raises
        return False


@pytest.mark.skipif(_sound_device_opens(), reason="platform: a sound device is here: it would play")
def test_play_out_builtin_without_a_sound_device_is_one_line(tmp_path):
    env = _no_fluidsynth_env(tmp_path)
    r = _cli(["play", "--out", "builtin"], env, tmp_path, timeout=60)
    line = _one_line_error(r)
    assert line.startswith("livepiano: no sound device to play the built-in synth on")
    assert "--out" in line


def test_the_live_synth_renders_what_it_is_sent_from_another_thread():
    """``play --out builtin``'s synth without a device: messages from a sender thread, pulled
    into buffers as the audio device pulls them."""
    import threading

    from livepiano.live.audio import BuiltinSynth

    live = BuiltinSynth()
    assert not live.pull(RATE // 10).any()  # silence before any message
    sender = threading.Thread(target=live.send_message, args=([0x90, 69, 100],))
    sender.start()
    sender.join()
    block = live.pull(RATE // 2)
    assert block.dtype == np.float32 and block.shape == (RATE // 2, 2)
    assert _rms(block) > 0.01 and abs(_peak_hz(block.mean(axis=1)) - 440.0) < 3.0
    live.send_message([0xB0, 123, 0])
    live.pull(2 * RATE)
    assert _rms(live.pull(RATE // 10)) < 1e-4  # released
    live.close()  # never started: nothing to stop
