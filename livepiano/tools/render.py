"""MIDI file -> WAV through FluidSynth where it is installed, else the built-in synth; and
the level of what came out.

Two ways to render, the first one present wins:

- the ``fluidsynth`` program: ``fluidsynth -ni -q -g GAIN -F out.wav -T wav -r RATE SF file.mid``
  (its fast-render mode: no audio device, faster than real time);
- the built-in synth (``livepiano.core.synth``, numpy only): the MIDI file is played into it
  here, event by event, and its samples are written with the stdlib ``wave`` module.

The soundfont is the one given (``--soundfont``), else ``$LIVEPIANO_SOUNDFONT``, else the first
found in the usual places (Debian/Ubuntu/Fedora/Arch, Homebrew, FluidSynth's own default
locations), else the General MIDI one that livepiano installs with ``pretty_midi``.

    rendered = render_midi("take.mid", "take.wav")
    print(rendered.describe())   # take.wav  26.8 s, peak -4.1 dBFS, RMS -21.3 dBFS (...)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

from livepiano import LivepianoError
from livepiano.core.synth import SOUNDFONT_ENV, find_soundfont

SAMPLE_RATE = 44100
# FluidSynth's own default gain (0.2) leaves MAESTRO piano with FluidR3_GM near -18 dBFS peak
# (RMS -38 dBFS); 0.8 brings it to about -6 dBFS peak, with room left for denser chords.
GAIN = 0.8
TAIL_SECONDS = 1.5  # release and reverb after the last event (the built-in synth)
BUILTIN_VIA = "the built-in synth (FluidSynth is not installed)"

def install_hint() -> str:
    """What to install on this OS to get FluidSynth and a General MIDI soundfont."""
    if sys.platform == "darwin":
        return ("`brew install fluid-synth`, then download a General MIDI soundfont (e.g. "
                "FluidR3_GM.sf2) and pass --soundfont or set $" + SOUNDFONT_ENV)
    if sys.platform.startswith("win"):
        return ("FluidSynth from github.com/FluidSynth/fluidsynth/releases (its bin folder on "
                "PATH) and a General MIDI soundfont at C:\\soundfonts\\default.sf2 (or pass "
                "--soundfont)")
    return ("`sudo apt install fluidsynth fluid-soundfont-gm` (Debian/Ubuntu; Fedora: "
            "`sudo dnf install fluidsynth fluid-soundfont-gm`; Arch: "
            "`sudo pacman -S fluidsynth soundfont-fluid`)")


def find_fluidsynth() -> str | None:
    """The path of the ``fluidsynth`` program on PATH, or None."""
    return shutil.which("fluidsynth")


# --- levels --------------------------------------------------------------------------------

@dataclass(frozen=True)
class WavLevels:
    seconds: float
    sample_rate: int
    channels: int
    peak: float  # 0..1 of full scale
    rms: float

    @staticmethod
    def _db(x: float) -> float:
        import math

        return 20 * math.log10(x) if x > 0 else float("-inf")

    @property
    def peak_dbfs(self) -> float:
        return self._db(self.peak)

    @property
    def rms_dbfs(self) -> float:
        return self._db(self.rms)

    @property
    def silent(self) -> bool:
        return self.peak < 1e-4

    def describe(self) -> str:
        if self.silent:
            return f"{self.seconds:.1f} s, silent"
        return (f"{self.seconds:.1f} s, peak {self.peak_dbfs:.1f} dBFS, "
                f"RMS {self.rms_dbfs:.1f} dBFS")


def wav_levels(path: str | os.PathLike) -> WavLevels:
    """Duration, peak and RMS of a PCM WAV file (8/16/24/32-bit), read with ``wave``."""
    import numpy as np

    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            frames = w.getnframes()
            raw = w.readframes(frames)
    except (OSError, EOFError, wave.Error) as e:
        raise LivepianoError(f"{path}: not a readable WAV file ({e}).") from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128) / 128
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float64) / 32768
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float64) / (1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float64) / 2**31
    else:
        raise LivepianoError(f"{path}: {width}-byte samples are not PCM WAV.")
    peak = float(np.abs(x).max()) if x.size else 0.0
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return WavLevels(frames / rate if rate else 0.0, rate, channels, peak, rms)


# --- rendering -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Rendered:
    wav: Path
    levels: WavLevels
    soundfont: Path
    via: str  # FluidSynth (the program) or the built-in synth, in words

    def describe(self) -> str:
        return f"{self.wav} ({self.levels.describe()}; {self.via}, {self.soundfont.name})"


def render_midi(midi_path: str | os.PathLike, wav_path: str | os.PathLike,
                soundfont: str | os.PathLike | None = None, sample_rate: int = SAMPLE_RATE,
                gain: float = GAIN) -> Rendered:
    """Render ``midi_path`` to a 16-bit stereo WAV at ``wav_path`` and read its levels back."""
    midi_path, wav_path = Path(midi_path), Path(wav_path)
    if not midi_path.is_file():
        raise LivepianoError(f"no MIDI file at {midi_path}; give the path of a .mid file.")
    exe = find_fluidsynth()
    sf = find_soundfont(soundfont, sf2_only=exe is None)
    if not wav_path.parent.is_dir():
        raise LivepianoError(f"cannot write {wav_path}: the folder {wav_path.parent} does not "
                             f"exist; create it or write elsewhere.")
    if exe is None:
        _render_builtin(midi_path, wav_path, sf, sample_rate)
        via = BUILTIN_VIA
    else:
        _render_cli(exe, midi_path, wav_path, sf, sample_rate, gain)
        via = "FluidSynth (fluidsynth program)"
    if not wav_path.is_file():
        raise LivepianoError(f"FluidSynth wrote no {wav_path}; check that the folder is "
                             f"writable.")
    return Rendered(wav_path, wav_levels(wav_path), sf, via)


def _midi_seconds(midi_path: Path) -> float:
    import mido

    try:
        return float(mido.MidiFile(str(midi_path)).length)
    except Exception:  # a broken file: fluidsynth will say so; keep a generous timeout
        return 600.0


def _render_cli(exe: str, midi_path: Path, wav_path: Path, sf: Path, rate: int,
                gain: float) -> None:
    cmd = [exe, "-ni", "-q", "-g", f"{gain:g}", "-r", str(rate), "-T", "wav",
           "-F", str(wav_path), str(sf), str(midi_path)]
    timeout = 60 + 2 * _midi_seconds(midi_path)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LivepianoError(f"fluidsynth took over {timeout:.0f} s to render {midi_path}; "
                             f"try a shorter file.") from None
    except OSError as e:
        raise LivepianoError(f"cannot run {exe} ({e.strerror or e}); reinstall FluidSynth: "
                             f"{install_hint()}.") from None
    errors = [ln.strip() for ln in (proc.stderr or "").splitlines()
              if "error" in ln.lower() or "not a soundfont" in ln.lower()]
    if proc.returncode != 0 or errors:
        why = (errors or [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
               or [f"exit status {proc.returncode}"])[0]
        raise LivepianoError(f"fluidsynth could not render {midi_path} ({why[:200]}); check "
                             f"the MIDI file and the soundfont {sf}.")


def renderer_line(soundfont: str | os.PathLike | None = None) -> str:
    """Which synth and SoundFont a render will use, in words; a missing or broken SoundFont
    is said here, before anything is played or generated."""
    fluidsynth = find_fluidsynth() is not None
    sf = find_soundfont(soundfont, sf2_only=not fluidsynth)
    if fluidsynth:
        return f"FluidSynth with {sf.name}"
    from livepiano.core.synth import load_soundfont

    load_soundfont(sf)
    return f"{BUILTIN_VIA} with {sf.name}"


def _render_builtin(midi_path: Path, wav_path: Path, sf: Path, rate: int) -> None:
    import mido

    from livepiano.core.synth import Synth, load_soundfont, render_events, to_pcm16

    font = load_soundfont(sf)
    try:
        mid = mido.MidiFile(str(midi_path))
        events, t = [], 0.0
        for msg in mid:  # times in seconds, tempo applied
            t += msg.time
            if not msg.is_meta and msg.type != "sysex":
                events.append((t, msg.bytes()))
    except Exception as e:  # noqa: BLE001 - mido raises many kinds on a broken file
        raise LivepianoError(f"{midi_path}: not a readable MIDI file ({e}).") from None
    audio = render_events(Synth(font, rate), events, TAIL_SECONDS)
    try:
        with wave.open(str(wav_path), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(to_pcm16(audio))
    except OSError as e:
        raise LivepianoError(f"cannot write {wav_path} ({e.strerror or e}); check the "
                             f"folder.") from None
