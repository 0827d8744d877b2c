"""The built-in synth: MIDI messages -> stereo samples from a SoundFont (SF2), with numpy only.

It is what sounds where FluidSynth is not installed: ``demo.wav`` and ``generate --wav``
render through it, and ``play --out builtin`` feeds it from the scheduler. Its SoundFont is
the General MIDI one that the ``pretty_midi`` package ships (TimGM6mb.sf2), unless another is
given. It is written here rather than taken from PyPI because the embedded SoundFont synths
there do not install on a bare machine: ``tinysoundfont`` requires PyAudio, which has no
Linux or macOS wheel and needs PortAudio's headers and a compiler to build.

What it plays of a SoundFont: the preset and instrument zones (key and velocity ranges),
sample loops, tuning (root key, coarse and fine tune, scale tuning, the sample's correction),
attenuation, pan, the volume envelope (delay, attack, hold, decay with key scaling, sustain,
release) and the velocity curve of the SF2 default modulator; the sustain pedal, channel
volume, program changes, All Notes Off and All Sound Off. Not filters, LFOs, the modulation
envelope, other modulators, reverb or chorus: a piano sounds right without them.

One ``Synth`` belongs to one thread: ``message`` and ``render`` are called from it alone.
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livepiano import LivepianoError

SAMPLE_RATE = 44100
MAX_VOICES = 96
SILENT_DB = -100.0  # a released voice below this is over
# Loud enough that a MAESTRO performance peaks a few dB under full scale with TimGM6mb's
# piano; clipped, not wrapped, where dense chords go over.
MASTER_GAIN = 2.5

# SF2 generator numbers (SoundFont 2.04, section 8.1.2)
START_OFS, END_OFS, LOOP_START_OFS, LOOP_END_OFS = 0, 1, 2, 3
START_COARSE, END_COARSE = 4, 12
PAN = 17
DELAY_VOL, ATTACK_VOL, HOLD_VOL, DECAY_VOL, SUSTAIN_VOL, RELEASE_VOL = 33, 34, 35, 36, 37, 38
KEY_TO_HOLD, KEY_TO_DECAY = 39, 40
INSTRUMENT, KEY_RANGE, VEL_RANGE = 41, 43, 44
LOOP_START_COARSE, KEYNUM, VELOCITY, ATTENUATION, LOOP_END_COARSE = 45, 46, 47, 48, 50
COARSE_TUNE, FINE_TUNE, SAMPLE_ID, SAMPLE_MODES, SCALE_TUNING = 51, 52, 53, 54, 56
EXCLUSIVE_CLASS, ROOT_KEY = 57, 58
_DEFAULTS = {DELAY_VOL: -12000, ATTACK_VOL: -12000, HOLD_VOL: -12000, DECAY_VOL: -12000,
             RELEASE_VOL: -12000, SCALE_TUNING: 100, ROOT_KEY: -1, KEYNUM: -1, VELOCITY: -1}
# Generators that only an instrument zone may set (a preset zone's are ignored).
_INSTRUMENT_ONLY = {START_OFS, END_OFS, LOOP_START_OFS, LOOP_END_OFS, START_COARSE, END_COARSE,
                    LOOP_START_COARSE, LOOP_END_COARSE, KEYNUM, VELOCITY, SAMPLE_MODES,
                    EXCLUSIVE_CLASS, ROOT_KEY}

_RECORDS = {  # pdta sub-chunk -> (struct format, record size)
    b"phdr": ("<20sHHHIII", 38), b"pbag": ("<HH", 4), b"pgen": ("<Hh", 4),
    b"inst": ("<20sH", 22), b"ibag": ("<HH", 4), b"igen": ("<Hh", 4),
    b"shdr": ("<20sIIIIIBbHH", 46),
}


@dataclass(frozen=True)
class Region:
    """One sample as a preset plays it over a range of keys and velocities."""

    keys: tuple[int, int]
    vels: tuple[int, int]
    start: int
    end: int
    loop_start: int
    loop_end: int
    looped: bool
    sample_rate: int
    root: int
    tune_cents: float  # coarse + fine tune + the sample's pitch correction
    scale: float  # cents per key (100: tempered)
    gain: float  # from the initial attenuation
    pan: float  # -0.5 (left) .. 0.5 (right)
    delay: float  # seconds
    attack: float  # seconds
    hold: float  # seconds
    decay: float  # timecents: each voice adds its key's share and converts to seconds
    decay_per_key: float  # timecents per key below 60 added to the decay
    sustain_db: float
    release: float  # seconds


@dataclass
class SoundFont:
    path: Path
    samples: np.ndarray  # int16, all samples of the file end to end (scaled at playback)
    presets: dict  # (bank, program) -> [Region]

    def regions(self, bank: int, program: int) -> list[Region]:
        """The preset's regions; a missing one falls back to bank 0 of the program, then to
        the first preset of the bank, as General MIDI players do."""
        for key in ((bank, program), (0, program), (bank, 0), (0, 0)):
            if key in self.presets:
                return self.presets[key]
        return next(iter(self.presets.values()), [])


def _timecents(tc: int) -> float:
    return 0.0 if tc <= -32768 else 2.0 ** (tc / 1200.0)


def _bad(path: Path, why: str) -> LivepianoError:
    return LivepianoError(f"{path} is not a usable SoundFont ({why}); give another with "
                          f"--soundfont FILE.sf2 or reinstall livepiano.")


def _chunks(data: bytes, start: int, end: int):
    """(id, payload start, payload end) of the RIFF chunks between ``start`` and ``end``."""
    while start + 8 <= end:
        cid, size = data[start:start + 4], struct.unpack_from("<I", data, start + 4)[0]
        body = start + 8
        if body + size > end:
            raise ValueError(f"chunk {cid!r} runs past the end of the file")
        yield cid, body, body + size
        start = body + size + (size & 1)


def load_soundfont(path: str | os.PathLike) -> SoundFont:
    """Read an SF2 file: its samples and every preset's regions. A missing, unreadable or
    broken file is one LivepianoError."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LivepianoError(f"cannot read the SoundFont {path} ({e.strerror or e}); give "
                             f"another with --soundfont FILE.sf2.") from None
    if data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise _bad(path, "not an SF2 file")
    try:
        lists = {}
        for cid, a, b in _chunks(data, 12, len(data)):
            if cid == b"LIST":
                lists[data[a:a + 4]] = {c: (x, y) for c, x, y in _chunks(data, a + 4, b)}
        sdta, pdta = lists.get(b"sdta", {}), lists.get(b"pdta", {})
        if b"smpl" not in sdta:
            raise ValueError("no 16-bit samples (an SF3 file? use an SF2)")
        a, b = sdta[b"smpl"]
        samples = np.frombuffer(data, "<i2", (b - a) // 2, a)
        table = {}
        for name, (fmt, size) in _RECORDS.items():
            if name not in pdta:
                raise ValueError(f"no {name.decode()} records")
            x, y = pdta[name]
            table[name] = [struct.unpack_from(fmt, data, x + i * size)
                           for i in range((y - x) // size)]
        presets = _presets(table, len(samples))
    except (ValueError, struct.error, IndexError, KeyError) as e:
        raise _bad(path, str(e)) from None
    if not presets:
        raise _bad(path, "no playable presets")
    return SoundFont(path, samples, presets)


def _zones(bags, gens, first: int, last: int, terminal: int):
    """(global generators, [zone generators]) of the bags first..last; a zone whose last
    generator is not ``terminal`` is the global zone (only as the first)."""
    out, glob = [], {}
    for i in range(first, last):
        g = {}
        for op, amount in gens[bags[i][0]:bags[i + 1][0]]:
            g[op] = amount
        if terminal in g:
            out.append(g)
        elif i == first:
            glob = g
    return glob, out


def _range(amount: int) -> tuple[int, int]:
    lo, hi = amount & 0xFF, (amount >> 8) & 0xFF
    return lo, hi


def _presets(t: dict, n_samples: int) -> dict:
    phdr, inst, shdr = t[b"phdr"], t[b"inst"], t[b"shdr"]
    presets = {}
    for p in range(len(phdr) - 1):  # the last record is the terminal one
        _, program, bank, bag0 = phdr[p][:4]
        pglob, pzones = _zones(t[b"pbag"], t[b"pgen"], bag0, phdr[p + 1][3], INSTRUMENT)
        regions = []
        for pz in pzones:
            pg = {**pglob, **pz}
            i = pg[INSTRUMENT]
            if not 0 <= i < len(inst) - 1:
                continue
            iglob, izones = _zones(t[b"ibag"], t[b"igen"], inst[i][1], inst[i + 1][1],
                                   SAMPLE_ID)
            for iz in izones:
                region = _region({**iglob, **iz}, pg, shdr, n_samples)
                if region is not None:
                    regions.append(region)
        if regions:
            presets[(bank, program)] = regions
    return presets


def _region(ig: dict, pg: dict, shdr: list, n_samples: int) -> Region | None:
    def val(op: int) -> int:  # instrument value (or default) plus the preset's offset
        v = ig.get(op, _DEFAULTS.get(op, 0))
        return v if op in _INSTRUMENT_ONLY else v + pg.get(op, 0)

    def rng(op: int) -> tuple[int, int]:
        a = _range(ig[op]) if op in ig else (0, 127)
        b = _range(pg[op]) if op in pg else (0, 127)
        return max(a[0], b[0]), min(a[1], b[1])

    sid = ig[SAMPLE_ID]
    if not 0 <= sid < len(shdr) - 1:
        return None
    _, s_start, s_end, s_loop, s_loop_end, rate, pitch, correction, _, kind = shdr[sid]
    if kind & 0x8000:  # a ROM sample: not in the file
        return None
    keys, vels = rng(KEY_RANGE), rng(VEL_RANGE)
    if keys[0] > keys[1] or vels[0] > vels[1]:
        return None
    start = s_start + val(START_OFS) + 32768 * val(START_COARSE)
    end = s_end + val(END_OFS) + 32768 * val(END_COARSE)
    loop_start = s_loop + val(LOOP_START_OFS) + 32768 * val(LOOP_START_COARSE)
    loop_end = s_loop_end + val(LOOP_END_OFS) + 32768 * val(LOOP_END_COARSE)
    end = min(end, n_samples - 1)
    if not 0 <= start < end or rate <= 0:
        return None
    looped = val(SAMPLE_MODES) & 1 == 1 and start <= loop_start < loop_end - 1 <= end
    root = val(ROOT_KEY)
    return Region(
        keys=keys, vels=vels, start=start, end=end, loop_start=loop_start, loop_end=loop_end,
        looped=looped, sample_rate=rate, root=root if 0 <= root <= 127 else pitch,
        tune_cents=100.0 * val(COARSE_TUNE) + val(FINE_TUNE) + correction,
        scale=float(val(SCALE_TUNING)),
        gain=10.0 ** (-max(val(ATTENUATION), 0) / 200.0),
        pan=min(max(val(PAN), -500), 500) / 1000.0,
        delay=_timecents(val(DELAY_VOL)), attack=_timecents(val(ATTACK_VOL)),
        hold=_timecents(val(HOLD_VOL)), decay=float(val(DECAY_VOL)),
        decay_per_key=float(val(KEY_TO_DECAY)),
        sustain_db=-min(max(val(SUSTAIN_VOL), 0), 1440) / 10.0,
        release=max(_timecents(val(RELEASE_VOL)), 0.001))


class _Voice:
    """One region sounding for one key: where it is in its sample, and its envelope as a
    closed form of the time since its note-on (and since its release)."""

    def __init__(self, region: Region, channel: int, key: int, velocity: int, gain: float,
                 rate: int):
        r = self.region = region
        self.channel, self.key = channel, key
        self.pos = float(r.start)
        cents = (key - r.root) * r.scale + r.tune_cents
        self.step = 2.0 ** (cents / 1200.0) * r.sample_rate / rate
        # The SF2 default velocity modulator: 960 cB on a concave curve, i.e. (vel/127)^2;
        # and the samples' 16 bits to full scale.
        g = gain * r.gain * (velocity / 127.0) ** 2 / 32768.0
        angle = (r.pan + 0.5) * np.pi / 2
        self.left, self.right = g * np.cos(angle), g * np.sin(angle)
        self.decay = max(_timecents(r.decay + (60 - key) * r.decay_per_key), 0.001)
        self.onset_end = r.delay + r.attack + r.hold  # where the decay begins (s)
        self.age = 0  # frames since the note-on
        self.released_at: int | None = None  # age at the release
        self.release_db = 0.0  # the level then
        self.held = False  # released under the sustain pedal
        self.done = False
        self.rate = rate

    def _level(self, t: np.ndarray) -> np.ndarray:
        """Envelope amplitude before any release at times ``t`` (s) since the note-on."""
        r = self.region
        a0 = r.delay
        a1 = a0 + r.attack
        in_attack = np.clip((t - a0) / r.attack, 0.0, 1.0) if r.attack > 0 else (t >= a0) * 1.0
        return np.where(t < a1, in_attack, 10.0 ** (self._decay_db(t) / 20.0))

    def _decay_db(self, t):
        """The level in dB from the end of the hold on: falling 100 dB per decay time, down
        to the sustain level (works on floats and arrays)."""
        return np.maximum(SILENT_DB * np.maximum(t - self.onset_end, 0.0) / self.decay,
                          self.region.sustain_db)

    def release(self) -> None:
        """Key up: from now on the level falls 100 dB per release time from where it is."""
        if self.released_at is None:
            self.released_at = self.age
            level = float(self._level(np.array([self.age / self.rate]))[0])
            self.release_db = 20.0 * np.log10(level) if level > 1e-5 else SILENT_DB

    def render(self, out: np.ndarray, samples: np.ndarray) -> None:
        """Add this voice's next ``len(out)`` frames to ``out`` (frames x 2)."""
        n = len(out)
        r = self.region
        k = np.arange(n)
        pos = self.pos + self.step * k
        if r.looped:
            length = r.loop_end - r.loop_start
            over = pos >= r.loop_end
            pos = np.where(over, r.loop_start + np.mod(pos - r.loop_start, length), pos)
        else:
            alive = pos < r.end - 1
            if not alive.all():
                self.done = True
                n = int(alive.sum())
                pos, k = pos[:n], k[:n]
        if n == 0:
            self.done = True
            return
        idx = pos.astype(np.int64)
        frac = (pos - idx).astype(np.float32)
        a = samples[idx].astype(np.float32)
        wave = a + (samples[idx + 1] - a) * frac
        # Messages come between renders, so a render is wholly before or after the release;
        # after the attack the level is a straight line in dB (clamped at the sustain level).
        t0 = self.age / self.rate
        if self.released_at is not None:
            since = t0 - self.released_at / self.rate
            slope = SILENT_DB / (r.release * self.rate)
            db = self.release_db + SILENT_DB * since / r.release + slope * k
            env = 10.0 ** (db / 20.0)
            self.done = self.done or db[-1] <= SILENT_DB
        elif t0 < self.onset_end:  # delay, attack, hold: to the frame
            env = self._level(t0 + k / self.rate)
        else:
            start = SILENT_DB * (t0 - self.onset_end) / self.decay
            db = np.maximum(start + SILENT_DB / (self.decay * self.rate) * k, r.sustain_db)
            env = 10.0 ** (db / 20.0)
            self.done = self.done or (r.sustain_db <= SILENT_DB and db[-1] <= SILENT_DB)
        wave = wave * env.astype(np.float32)
        out[:n, 0] += wave * self.left
        out[:n, 1] += wave * self.right
        last = self.pos + self.step * n
        if r.looped and last >= r.loop_end:
            last = r.loop_start + (last - r.loop_start) % (r.loop_end - r.loop_start)
        self.pos = last
        self.age += n


class Synth:
    """Sixteen MIDI channels over one SoundFont (channel 10 plays bank 128, the drums)."""

    def __init__(self, soundfont: SoundFont, rate: int = SAMPLE_RATE, gain: float = MASTER_GAIN):
        self.soundfont, self.rate, self.gain = soundfont, rate, gain
        self.voices: list[_Voice] = []
        self.program = [0] * 16
        self.volume = [100] * 16  # CC7
        self.pedal = [False] * 16
        self._regions: dict = {}

    def _preset(self, channel: int) -> list[Region]:
        key = (128 if channel == 9 else 0, self.program[channel])
        if key not in self._regions:
            self._regions[key] = self.soundfont.regions(*key)
        return self._regions[key]

    def message(self, m) -> None:
        """One MIDI message (bytes as a list); anything it does not play is ignored."""
        if not m:
            return
        status, ch = m[0] & 0xF0, m[0] & 0x0F
        if status == 0x90 and len(m) >= 3 and m[2] > 0:
            self.note_on(ch, m[1], m[2])
        elif status in (0x80, 0x90) and len(m) >= 3:
            self.note_off(ch, m[1])
        elif status == 0xB0 and len(m) >= 3:
            self.control(ch, m[1], m[2])
        elif status == 0xC0 and len(m) >= 2:
            self.program[ch] = m[1] & 0x7F

    def note_on(self, ch: int, key: int, velocity: int) -> None:
        gain = self.gain * (self.volume[ch] / 127.0) ** 2
        for r in self._preset(ch):
            if r.keys[0] <= key <= r.keys[1] and r.vels[0] <= velocity <= r.vels[1]:
                self.voices.append(_Voice(r, ch, key, velocity, gain, self.rate))
        if len(self.voices) > MAX_VOICES:  # the oldest released first, else the oldest
            gone = sorted(self.voices, key=lambda v: (v.released_at is None, -v.age))
            for v in gone[:len(self.voices) - MAX_VOICES]:
                self.voices.remove(v)

    def note_off(self, ch: int, key: int) -> None:
        for v in self.voices:
            if v.channel == ch and v.key == key and v.released_at is None and not v.held:
                if self.pedal[ch]:
                    v.held = True
                else:
                    v.release()

    def control(self, ch: int, cc: int, value: int) -> None:
        if cc == 64:
            self.pedal[ch] = value >= 64
            if not self.pedal[ch]:
                for v in self.voices:
                    if v.channel == ch and v.held:
                        v.held = False
                        v.release()
        elif cc == 7:
            self.volume[ch] = value
        elif cc == 120:  # all sound off
            self.voices = [v for v in self.voices if v.channel != ch]
        elif cc == 123:  # all notes off: released, as a key up
            for v in self.voices:
                if v.channel == ch:
                    v.held = False
                    v.release()

    def render(self, frames: int) -> np.ndarray:
        """The next ``frames`` frames: float32, frames x 2, clipped to [-1, 1]."""
        out = np.zeros((frames, 2), np.float32)
        samples = self.soundfont.samples
        for v in self.voices:
            v.render(out, samples)
        self.voices = [v for v in self.voices if not v.done]
        np.clip(out, -1.0, 1.0, out=out)
        return out


def render_events(synth: Synth, events, tail: float = 1.5) -> np.ndarray:
    """Render (seconds, message) pairs in time order, each at its own frame, and ``tail``
    seconds after the last: float32 frames x 2."""
    chunks, done = [], 0
    for t, m in events:
        frame = round(t * synth.rate)
        if frame > done:
            chunks.append(synth.render(frame - done))
            done = frame
        synth.message(m)
    chunks.append(synth.render(int(tail * synth.rate)))
    return np.concatenate(chunks)


def to_pcm16(audio: np.ndarray) -> bytes:
    """float frames x 2 in [-1, 1] -> interleaved little-endian 16-bit PCM."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


# --- which SoundFont -------------------------------------------------------------------------

SOUNDFONT_ENV = "LIVEPIANO_SOUNDFONT"
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


def find_soundfont(explicit: str | os.PathLike | None = None, sf2_only: bool = False) -> Path:
    """The soundfont to use: ``explicit`` (a file, or a folder to search), else
    ``$LIVEPIANO_SOUNDFONT``, else the first in the usual places, else the one that livepiano
    installs. ``sf2_only``: pass over .sf3 files in the search (the built-in synth reads SF2)."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_dir():
            found = _search([path], sf2_only)
            if found is None:
                raise LivepianoError(f"no soundfont in {path}; give the path of an .sf2 file.")
            return found
        return _check_soundfont(path, "--soundfont")
    env = os.environ.get(SOUNDFONT_ENV)
    if env:
        return _check_soundfont(Path(env).expanduser(), f"${SOUNDFONT_ENV}")
    found = _search(_soundfont_dirs(), sf2_only) or packaged_soundfont()
    if found is None:
        raise LivepianoError("no soundfont found (not even pretty_midi's TimGM6mb.sf2, which "
                             "livepiano installs); reinstall livepiano, or pass --soundfont "
                             "FILE.sf2.")
    return found


def _search(dirs: list[Path], sf2_only: bool = False) -> Path | None:
    suffixes = (".sf2",) if sf2_only else (".sf2", ".sf3")
    for d in dirs:
        try:
            if not d.is_dir():
                continue
            for name in _PREFERRED:
                if name.lower().endswith(suffixes) and _is_soundfont(d / name):
                    return d / name
            for p in sorted(d.iterdir()):
                if p.suffix.lower() in suffixes and _is_soundfont(p):
                    return p
        except OSError:
            continue
    return None


SOUNDFONT_PACKAGE, SOUNDFONT_FILE = "pretty_midi", "TimGM6mb.sf2"


def packaged_soundfont() -> Path | None:
    """The General MIDI SoundFont that the ``pretty_midi`` package ships (a dependency of
    livepiano), found without importing the package; None where it is not installed."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(SOUNDFONT_PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SOUNDFONT_FILE
        if path.is_file():
            return path
    return None
