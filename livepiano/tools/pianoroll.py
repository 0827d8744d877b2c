"""Piano-roll pictures of MIDI files, drawn into a numpy RGB array and written as PNG by hand
(zlib + struct), so that no plotting library is needed.

    info = plot_midi("session.mid", "session.png")      # 1200 x 500 by default

What the picture shows: pitch upwards, time to the right; one bar per note (key down to key
up, pedal not applied), its brightness the note's velocity. Tracks named ``player`` or
``primer`` are blue, ``livepiano`` or ``model`` orange, any other track green (then violet,
teal, ...). Behind the notes: the rows of the black keys a little darker, a line under every
C with its octave label (C4 is middle C), a faint line every second and a labelled tick every
few seconds. Text uses a tiny built-in 5x7 capitals font.
"""

from __future__ import annotations

import colorsys
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from livepiano import LivepianoError
from livepiano.core.voices import Voices

WIDTH, HEIGHT = 1200, 500

BACKGROUND = (24, 26, 32)         # white-key rows and margins
BLACK_KEY_ROW = (17, 18, 23)
C_LINE = (62, 66, 78)
SECOND_LINE = (33, 36, 44)
MAJOR_LINE = (48, 52, 63)
TEXT = (170, 176, 190)
DIM_TEXT = (120, 126, 140)

PLAYER, MODEL, OTHER = "player", "model", "other"
ROLE_OF_NAME = {"player": PLAYER, "primer": PLAYER, "livepiano": MODEL, "model": MODEL}
# (hue in degrees, saturation): blue for the player, orange for the model, then others.
HUES = {PLAYER: (212, 0.72), MODEL: (28, 0.88)}
OTHER_HUES = [(135, 0.62), (285, 0.50), (175, 0.70), (350, 0.62), (55, 0.75)]
_BLACK_KEYS = {1, 3, 6, 8, 10}

# --- a 5x7 bitmap font (capitals, digits, a little punctuation) ------------------------------

_GLYPHS = {
    "A": ".###.|#...#|#...#|#####|#...#|#...#|#...#",
    "B": "####.|#...#|#...#|####.|#...#|#...#|####.",
    "C": ".###.|#...#|#....|#....|#....|#...#|.###.",
    "D": "####.|#...#|#...#|#...#|#...#|#...#|####.",
    "E": "#####|#....|#....|####.|#....|#....|#####",
    "F": "#####|#....|#....|####.|#....|#....|#....",
    "G": ".###.|#...#|#....|#.###|#...#|#...#|.####",
    "H": "#...#|#...#|#...#|#####|#...#|#...#|#...#",
    "I": ".###.|..#..|..#..|..#..|..#..|..#..|.###.",
    "J": "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
    "K": "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#",
    "L": "#....|#....|#....|#....|#....|#....|#####",
    "M": "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#",
    "N": "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
    "O": ".###.|#...#|#...#|#...#|#...#|#...#|.###.",
    "P": "####.|#...#|#...#|####.|#....|#....|#....",
    "Q": ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#",
    "R": "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
    "S": ".####|#....|#....|.###.|....#|....#|####.",
    "T": "#####|..#..|..#..|..#..|..#..|..#..|..#..",
    "U": "#...#|#...#|#...#|#...#|#...#|#...#|.###.",
    "V": "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
    "W": "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.",
    "X": "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
    "Y": "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..",
    "Z": "#####|....#|...#.|..#..|.#...|#....|#####",
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
    "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
    "3": "####.|....#|....#|.###.|....#|....#|####.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
    "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
    "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
    "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    " ": ".....|.....|.....|.....|.....|.....|.....",
    ".": ".....|.....|.....|.....|.....|.##..|.##..",
    ",": ".....|.....|.....|.....|.##..|..#..|.#...",
    ":": ".....|.##..|.##..|.....|.##..|.##..|.....",
    "-": ".....|.....|.....|.###.|.....|.....|.....",
    "_": ".....|.....|.....|.....|.....|.....|#####",
    "/": "....#|....#|...#.|..#..|.#...|#....|#....",
    "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.",
    ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...",
    "#": ".#.#.|.#.#.|#####|.#.#.|#####|.#.#.|.#.#.",
    "?": ".###.|#...#|....#|...#.|..#..|.....|..#..",
}
_FONT = {ch: np.array([[c == "#" for c in row] for row in g.split("|")], dtype=bool)
         for ch, g in _GLYPHS.items()}
GLYPH_W, GLYPH_H = 5, 7


def text_width(text: str, scale: int = 1) -> int:
    return max(0, len(text) * (GLYPH_W + 1) * scale - scale)


def draw_text(img: np.ndarray, x: int, y: int, text: str, color, scale: int = 1) -> int:
    """Write ``text`` (upper-cased; unknown characters as '?') with its top-left at (x, y),
    clipped to the image. Returns the x after the text."""
    h, w = img.shape[:2]
    for ch in text.upper():
        glyph = _FONT.get(ch, _FONT["?"])
        if scale > 1:
            glyph = glyph.repeat(scale, axis=0).repeat(scale, axis=1)
        gh, gw = glyph.shape
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + gw, w), min(y + gh, h)
        if x1 > x0 and y1 > y0:
            img[y0:y1, x0:x1][glyph[y0 - y:y1 - y, x0 - x:x1 - x]] = color
        x += (GLYPH_W + 1) * scale
    return x


# --- PNG -------------------------------------------------------------------------------------

def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an [H, W, 3] uint8 array (filter 0 on every row)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("expected an [H, W, 3] array")
    h, w = rgb.shape[:2]
    raw = np.zeros((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    try:
        Path(path).write_bytes(png_bytes(rgb))
    except OSError as e:
        raise LivepianoError(f"cannot write {path} ({e.strerror or e}); check the folder.") \
            from None


# --- reading tracks ----------------------------------------------------------------------------

@dataclass
class Track:
    name: str
    role: str  # PLAYER, MODEL or OTHER
    notes: list = field(default_factory=list)  # (pitch, velocity, start_s, end_s)


def role_of(name: str) -> str:
    return ROLE_OF_NAME.get(name.strip().lower(), OTHER)


def read_tracks(path: str | os.PathLike) -> list[Track]:
    """The notes of each track of a MIDI file that has notes, with times in seconds (tempo
    changes of any track applied). A note lasts from its note-on to the first note-off of its
    channel and pitch (oldest voice first); a note never released ends with its track."""
    import mido

    from livepiano.core.midifile import open_midi_file

    mid = open_midi_file(path)
    if mid.type == 2:
        raise LivepianoError(f"{path} is a type-2 MIDI file (independent patterns), which "
                             f"cannot be drawn on one time line; give a type-0 or type-1 file.")
    tempo = []  # (tick, set_tempo) of every track, in order
    tick = 0
    for msg in mido.merge_tracks(mid.tracks):
        tick += msg.time
        if msg.type == "set_tempo":
            tempo.append((tick, msg))
    tpb = mid.ticks_per_beat or 480
    tracks = []
    others = 0
    for i, track in enumerate(mid.tracks):
        # mido plays this track beside the file's tempo changes up to its end: times in
        # seconds (the changes after the track's own messages, so that of two changes at one
        # tick the file's last one holds).
        length, changes, last = sum(m.time for m in track), mido.MidiTrack(), 0
        for tick, msg in tempo:
            if tick > length:
                break
            changes.append(msg.copy(time=tick - last))
            last = tick
        name = ""
        voices = Voices("oldest")  # a note-off ends the oldest voice of its channel and pitch
        notes = []
        seconds = 0.0
        for msg in mido.MidiFile(type=1, ticks_per_beat=tpb, tracks=[track, changes]):
            seconds += msg.time
            if msg.type == "track_name" and not name:
                name = msg.name
            elif msg.type in ("note_on", "note_off"):
                for v in voices.message(msg.bytes(), seconds, by_channel=True):
                    notes.append((msg.note, v.data, v.start, seconds))
        for v in voices.end():
            notes.append((v.key[1], v.data, v.start, max(seconds, v.start)))
        if notes:
            notes.sort(key=lambda n: (n[2], n[0]))
            role = role_of(name)
            if role == OTHER:
                others += 1
            tracks.append(Track(name or f"track {i}", role, notes))
    return tracks


# --- drawing --------------------------------------------------------------------------------

def track_color(role: str, velocity: int, other_index: int = 0) -> tuple[int, int, int]:
    """The bar colour: the role's hue, brighter for louder notes."""
    hue, sat = HUES.get(role) or OTHER_HUES[other_index % len(OTHER_HUES)]
    value = 0.30 + 0.70 * max(0, min(127, velocity)) / 127
    r, g, b = colorsys.hsv_to_rgb(hue / 360, sat, value)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _pitch_name(pitch: int) -> str:
    return f"C{pitch // 12 - 1}"


@dataclass
class Layout:
    """Where things are on the picture: the plot rectangle, the pitch rows and the time axis."""

    width: int
    height: int
    left: int
    top: int
    right: int   # exclusive
    bottom: int  # exclusive
    low: int     # lowest pitch shown (a C)
    high: int    # highest pitch shown (a B)
    seconds: float
    scale: int   # font scale

    @property
    def px_per_second(self) -> float:
        return (self.right - self.left) / self.seconds

    def x(self, t: float) -> int:
        return self.left + int(round(t * self.px_per_second))

    def row(self, pitch: int) -> tuple[int, int]:
        """Pixel rows [y0, y1) of a pitch."""
        h = (self.bottom - self.top) / (self.high - self.low + 1)
        y0 = self.top + int(round((self.high - pitch) * h))
        y1 = self.top + int(round((self.high - pitch + 1) * h))
        return y0, y1


def _nice_step(px_per_second: float, min_px: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if step * px_per_second >= min_px:
            return step
    return 7200


def layout_for(tracks: list[Track], width: int = WIDTH, height: int = HEIGHT) -> Layout:
    pitches = [n[0] for t in tracks for n in t.notes]
    end = max((n[3] for t in tracks for n in t.notes), default=0.0)
    lo, hi = (min(pitches), max(pitches)) if pitches else (48, 83)
    lo, hi = lo - lo % 12, hi + (11 - hi % 12)  # whole octaves: C .. B
    while hi - lo + 1 < 36:  # at least three octaves
        if lo >= 12 and (hi >= 127 or (lo + hi) // 2 > 60):
            lo -= 12
        else:
            hi += 12
    lo, hi = max(lo, 0), min(hi, 127)
    scale = 2 if height >= 300 and width >= 600 else 1
    char = (GLYPH_W + 1) * scale
    left = 3 * char + 4 * scale
    top = GLYPH_H * scale + 10 * scale
    bottom = height - (GLYPH_H * scale + 8 * scale)
    right = width - 3 * scale
    seconds = max(1.0, end * 1.01)
    return Layout(width, height, left, top, right, bottom, lo, hi, seconds, scale)


def draw(tracks: list[Track], width: int = WIDTH, height: int = HEIGHT,
         title: str = "") -> tuple[np.ndarray, Layout]:
    """The piano roll of ``tracks`` as an [height, width, 3] uint8 array, and its layout."""
    if width < 200 or height < 120:
        raise LivepianoError(f"a piano roll of {width}x{height} is too small; give at least "
                             f"200x120.")
    lay = layout_for(tracks, width, height)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    s = lay.scale

    # Keyboard rows and C lines.
    for pitch in range(lay.low, lay.high + 1):
        y0, y1 = lay.row(pitch)
        if pitch % 12 in _BLACK_KEYS:
            img[y0:y1, lay.left:lay.right] = BLACK_KEY_ROW
    for pitch in range(lay.low, lay.high + 1):
        if pitch % 12 == 0:
            y0, y1 = lay.row(pitch)
            img[y1 - 1, lay.left - 2 * s:lay.right] = C_LINE
            label = _pitch_name(pitch)
            ty = (y0 + y1) // 2 - GLYPH_H * s // 2
            ty = min(max(ty, lay.top), lay.bottom - GLYPH_H * s)
            draw_text(img, lay.left - 3 * s - text_width(label, s), ty, label, DIM_TEXT, s)

    # Seconds.
    major = _nice_step(lay.px_per_second, (4 * (GLYPH_W + 1) + 8) * s)
    if lay.px_per_second >= 5:
        for sec in range(1, int(lay.seconds) + 1):
            img[lay.top:lay.bottom, lay.x(sec)] = SECOND_LINE
    k = 0
    while k * major <= lay.seconds:
        t = k * major
        x = lay.x(t)
        if k:
            img[lay.top:lay.bottom, x] = MAJOR_LINE
        img[lay.bottom:lay.bottom + 3 * s, x] = C_LINE
        label = f"{int(t)}S" if lay.seconds < 120 else f"{int(t) // 60}:{int(t) % 60:02d}"
        lx = min(max(x - text_width(label, s) // 2, 0), width - text_width(label, s))
        draw_text(img, lx, lay.bottom + 4 * s, label, DIM_TEXT, s)
        k += 1

    # Notes; bars leave a one-pixel gap to the next row and the next note. The player's
    # tracks are drawn last: their notes are usually the shorter ones and stay visible where
    # the model holds a note on the same key.
    legend, indexed = [], []
    other_index = 0
    for tr in tracks:
        indexed.append((tr, other_index))
        legend.append((f"{tr.name} ({len(tr.notes)})", track_color(tr.role, 110, other_index)))
        if tr.role == OTHER:
            other_index += 1
    drawing_order = {OTHER: 0, MODEL: 1, PLAYER: 2}
    for tr, idx in sorted(indexed, key=lambda ti: drawing_order[ti[0].role]):
        for pitch, vel, start, end in tr.notes:
            if not lay.low <= pitch <= lay.high:
                continue
            y0, y1 = lay.row(pitch)
            if y1 - y0 >= 4:
                y1 -= 1
            x0, x1 = lay.x(start), max(lay.x(end), lay.x(start) + 1)
            if x1 - x0 >= 4:
                x1 -= 1
            img[y0:y1, x0:min(x1, lay.right)] = track_color(tr.role, vel, idx)

    # Legend (top left) and title (top right).
    x, y = lay.left, (lay.top - GLYPH_H * s) // 2
    for label, color in legend:
        img[y:y + GLYPH_H * s, x:x + GLYPH_H * s] = color
        x = draw_text(img, x + GLYPH_H * s + 3 * s, y, label, TEXT, s) + 6 * s
    if not tracks:
        draw_text(img, x, y, "NO NOTES", TEXT, s)
    if title:
        tw = text_width(title, s)
        if lay.right - tw > x + 8 * s:
            draw_text(img, lay.right - tw, y, title, DIM_TEXT, s)
    return img, lay


@dataclass(frozen=True)
class Plotted:
    png: Path
    width: int
    height: int
    tracks: list
    seconds: float

    def describe(self) -> str:
        parts = ", ".join(f"{t.name} {len(t.notes)} notes" for t in self.tracks) or "no notes"
        return f"{self.png} ({self.width}x{self.height}; {parts}; {self.seconds:.1f} s)"


def plot_midi(midi_path: str | os.PathLike, png_path: str | os.PathLike,
              width: int = WIDTH, height: int = HEIGHT, title: str | None = None) -> Plotted:
    """Draw the piano roll of a MIDI file into a PNG."""
    tracks = read_tracks(midi_path)
    img, lay = draw(tracks, width, height,
                    Path(midi_path).name if title is None else title)
    write_png(png_path, img)
    end = max((n[3] for t in tracks for n in t.notes), default=0.0)
    return Plotted(Path(png_path), width, height, tracks, end)
