"""MIDI file -> WAV through FluidSynth, and the level of what came out.

Two ways to run FluidSynth, the first one present wins:

- the ``fluidsynth`` program: ``fluidsynth -ni -q -g GAIN -F out.wav -T wav -r RATE SF file.mid``
  (its fast-render mode: no audio device, faster than real time);
- pyfluidsynth (``import fluidsynth``): the MIDI file is played into a ``Synth`` here, event by
  event, and its samples are written with the stdlib ``wave`` module.

The soundfont is the one given (``--soundfont``), else ``$LIVEPIANO_SOUNDFONT``, else the first
found in the usual places (Debian/Ubuntu/Fedora/Arch, Homebrew, FluidSynth's own default
locations). No numpy-free fallback synth: without FluidSynth or a soundfont the error names
what to install on this OS.

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

SOUNDFONT_ENV = "LIVEPIANO_SOUNDFONT"
SAMPLE_RATE = 44100
# FluidSynth's own default gain (0.2) leaves MAESTRO piano with FluidR3_GM near -18 dBFS peak
# (RMS -38 dBFS); 0.8 brings it to about -6 dBFS peak, with room left for denser chords.
GAIN = 0.8
TAIL_SECONDS = 1.5  # release and reverb after the last event (pyfluidsynth path)

# Searched in this order; in each folder a preferred name first, then any .sf2/.sf3.
_PREFERRED = ("FluidR3_GM.sf2", "default-GM.sf2", "default.sf2", "GeneralUser GS.sf2",
              "MuseScore_General.sf3", "FluidR3_GM.sf3", "TimGM6mb.sf2")


def _soundfont_dirs() -> list[Path]:
    home = Path.home()
    dirs = [
        Path("/usr/share/sounds/sf2"),            # Debian, Ubuntu (fluid-soundfont-gm)
        Path("/usr/share/sounds/sf3"),            # Debian (musescore-general-soundfont)
        Path("/usr/share/soundfonts"),            # Fedora, Arch, FluidSynth's Linux default
        Path("/usr/local/share/soundfonts"),      # FluidSynth's default when built from source
        Path("/opt/homebrew/share/soundfonts"),   # Homebrew (Apple silicon)
        Path("/opt/homebrew/share/fluidsynth"),
        Path("/usr/local/share/fluidsynth"),      # Homebrew (Intel)
        home / ".local/share/soundfonts",
        home / ".local/share/sounds/sf2",
        home / "Library/Audio/Sounds/Banks",      # macOS, per user
        home / "soundfonts",
    ]
    if sys.platform.startswith("win"):
        dirs.insert(0, Path("C:/soundfonts"))     # FluidSynth's Windows default
        if os.environ.get("APPDATA"):
            dirs.append(Path(os.environ["APPDATA"]) / "livepiano" / "soundfonts")
    return dirs


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


def _is_soundfont(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[:4] == b"RIFF" and head[8:12] == b"sfbk"


def _check_soundfont(path: Path, where: str) -> Path:
    if not path.is_file():
        raise LivepianoError(f"no soundfont at {path} ({where}); give the path of an .sf2 file.")
    if not _is_soundfont(path):
        raise LivepianoError(f"{path} ({where}) is not an SF2/SF3 soundfont; give the path of "
                             f"an .sf2 file.")
    return path


def find_soundfont(explicit: str | os.PathLike | None = None) -> Path:
    """The soundfont to use: ``explicit`` (a file, or a folder to search), else
    ``$LIVEPIANO_SOUNDFONT``, else the first in the usual places."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_dir():
            found = _search([path])
            if found is None:
                raise LivepianoError(f"no .sf2/.sf3 soundfont in {path}; give the path of an .sf2 "
                                     f"file, or install one: {install_hint()}.")
            return found
        return _check_soundfont(path, "--soundfont")
    env = os.environ.get(SOUNDFONT_ENV)
    if env:
        return _check_soundfont(Path(env).expanduser(), f"${SOUNDFONT_ENV}")
    found = _search(_soundfont_dirs())
    if found is None:
        raise LivepianoError(f"no soundfont found (looked in /usr/share/sounds/sf2, "
                             f"/usr/share/soundfonts and Homebrew's share); install one with "
                             f"{install_hint()}, or pass --soundfont FILE.sf2.")
    return found


def _search(dirs: list[Path]) -> Path | None:
    for d in dirs:
        try:
            if not d.is_dir():
                continue
            for name in _PREFERRED:
                if _is_soundfont(d / name):
                    return d / name
            for p in sorted(d.iterdir()):
                if p.suffix.lower() in (".sf2", ".sf3") and _is_soundfont(p):
                    return p
        except OSError:
            continue
    return None


def find_fluidsynth() -> tuple[str, str] | None:
    """("cli", path of the program) or ("pyfluidsynth", module file), or None."""
    exe = shutil.which("fluidsynth")
    if exe:
        return "cli", exe
    try:
        import fluidsynth  # noqa: F401  (pyfluidsynth; raises ImportError without libfluidsynth)

        if hasattr(fluidsynth, "Synth"):
            return "pyfluidsynth", getattr(fluidsynth, "__file__", "fluidsynth")
    except Exception:  # pyfluidsynth raises ImportError or OSError when the library is missing
        pass
    return None


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
    via: str  # "fluidsynth CLI" or "pyfluidsynth"

    def describe(self) -> str:
        return f"{self.wav} ({self.levels.describe()}; {self.via}, {self.soundfont.name})"


def render_midi(midi_path: str | os.PathLike, wav_path: str | os.PathLike,
                soundfont: str | os.PathLike | None = None, sample_rate: int = SAMPLE_RATE,
                gain: float = GAIN) -> Rendered:
    """Render ``midi_path`` to a 16-bit stereo WAV at ``wav_path`` and read its levels back."""
    midi_path, wav_path = Path(midi_path), Path(wav_path)
    if not midi_path.is_file():
        raise LivepianoError(f"no MIDI file at {midi_path}; give the path of a .mid file.")
    synth = find_fluidsynth()
    if synth is None:
        raise LivepianoError(f"FluidSynth is needed to render audio and was not found (neither "
                             f"the fluidsynth program on PATH nor pyfluidsynth); install "
                             f"{install_hint()}.")
    sf = find_soundfont(soundfont)
    if not wav_path.parent.is_dir():
        raise LivepianoError(f"cannot write {wav_path}: the folder {wav_path.parent} does not "
                             f"exist; create it or write elsewhere.")
    kind, where = synth
    if kind == "cli":
        _render_cli(where, midi_path, wav_path, sf, sample_rate, gain)
        via = "fluidsynth CLI"
    else:
        _render_pyfluidsynth(midi_path, wav_path, sf, sample_rate, gain)
        via = "pyfluidsynth"
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


def _render_pyfluidsynth(midi_path: Path, wav_path: Path, sf: Path, rate: int,
                         gain: float) -> None:
    import fluidsynth
    import mido
    import numpy as np

    try:
        mid = mido.MidiFile(str(midi_path))
    except Exception as e:
        raise LivepianoError(f"{midi_path}: not a readable MIDI file ({e}).") from None
    synth = fluidsynth.Synth(gain=gain, samplerate=float(rate))
    try:
        sfid = synth.sfload(str(sf))
        if sfid == -1:
            raise LivepianoError(f"FluidSynth could not load the soundfont {sf}; give another "
                                 f"with --soundfont.")
        for ch in range(16):
            if ch != 9:
                synth.program_select(ch, sfid, 0, 0)
        chunks = []
        pending = 0.0  # seconds of audio owed before the next event
        rendered = 0

        def advance(seconds: float) -> None:
            nonlocal pending, rendered
            pending += seconds
            n = int(round((pending) * rate))
            if n > 0:
                chunks.append(np.asarray(synth.get_samples(n), dtype=np.int16))
                rendered += n
                pending -= n / rate

        for msg in mid:  # times in seconds, tempo applied
            if msg.time:
                advance(msg.time)
            if msg.is_meta:
                continue
            t = msg.type
            if t == "note_on":
                if msg.velocity:
                    synth.noteon(msg.channel, msg.note, msg.velocity)
                else:
                    synth.noteoff(msg.channel, msg.note)
            elif t == "note_off":
                synth.noteoff(msg.channel, msg.note)
            elif t == "control_change":
                synth.cc(msg.channel, msg.control, msg.value)
            elif t == "program_change":
                synth.program_change(msg.channel, msg.program)
            elif t == "pitchwheel":
                synth.pitch_bend(msg.channel, msg.pitch)
        advance(TAIL_SECONDS)
    finally:
        synth.delete()
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    try:
        with wave.open(str(wav_path), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(data.astype("<i2").tobytes())
    except OSError as e:
        raise LivepianoError(f"cannot write {wav_path} ({e.strerror or e}); check the "
                             f"folder.") from None
