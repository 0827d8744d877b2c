"""The 388-event performance vocabulary and MIDI <-> tokens, Magenta-compatible.

Pure: no file system, no ports. Callers hand in the bytes of a MIDI file or a
``mido.MidiFile`` and get tokens back, or hand in tokens and get a ``mido.MidiFile`` back
(``data.read_midi_file`` reads a file from disk).

Token ids (Magenta's PerformanceOneHotEncoding with 32 velocity bins, 100 shift steps):

    note-on  pitch p      -> p            (0..127)
    note-off pitch p      -> 128 + p      (128..255)
    time-shift s steps    -> 255 + s      (256..355, s = 1..100, 10 ms each)
    velocity bin b        -> 355 + b      (356..387, b = 1..32)

Reading follows what Magenta does when it reads a MIDI file (note_seq through pretty_midi),
because a token stream only means the same thing everywhere if every corner case is decided
the same way: which note a note-off ends, how the pedal extends notes, in which order events
at the same 10 ms step are written.
"""

from __future__ import annotations

import io
import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

import numpy as np

from livepiano import LivepianoError
from livepiano.core.voices import Voices

if TYPE_CHECKING:
    import mido

NUM_PITCHES = 128
NUM_VELOCITY_BINS = 32
MAX_SHIFT_STEPS = 100
STEPS_PER_SECOND = 100

NOTE_ON = 0
NOTE_OFF = NOTE_ON + NUM_PITCHES  # 128
TIME_SHIFT = NOTE_OFF + NUM_PITCHES  # 256 is a shift of 1 step
VELOCITY = TIME_SHIFT + MAX_SHIFT_STEPS  # 356 is velocity bin 1
VOCAB_SIZE = VELOCITY + NUM_VELOCITY_BINS  # 388

PIANO_LOW, PIANO_HIGH = 21, 108
SUSTAIN_CC = 64

# pretty_midi refuses files whose last tick is beyond this: they are almost always corrupt.
_MAX_TICK = 10_000_000
# Velocity bin width, as Magenta's velocity_bin_size: ceil(127 / 32) = 4.
_BIN_SIZE = math.ceil(127 / NUM_VELOCITY_BINS)


class CodecError(LivepianoError, ValueError):
    """A MIDI file that cannot be read; the message says why in one sentence."""


# --- token ids -------------------------------------------------------------------------

def note_on(pitch: int) -> int:
    return NOTE_ON + pitch


def note_off(pitch: int) -> int:
    return NOTE_OFF + pitch


def shift(steps: int) -> int:
    if not 1 <= steps <= MAX_SHIFT_STEPS:
        raise ValueError(f"a time-shift is 1..{MAX_SHIFT_STEPS} steps, not {steps}")
    return TIME_SHIFT + steps - 1


def velocity_event(bin_: int) -> int:
    if not 1 <= bin_ <= NUM_VELOCITY_BINS:
        raise ValueError(f"a velocity bin is 1..{NUM_VELOCITY_BINS}, not {bin_}")
    return VELOCITY + bin_ - 1


def velocity_to_bin(velocity: int) -> int:
    return (velocity - 1) // _BIN_SIZE + 1


def bin_to_velocity(bin_: int) -> int:
    return 1 + (bin_ - 1) * _BIN_SIZE


def kind(token: int) -> str:
    """'on', 'off', 'shift' or 'velocity'."""
    if token < NOTE_OFF:
        return "on"
    if token < TIME_SHIFT:
        return "off"
    if token < VELOCITY:
        return "shift"
    return "velocity"


def shift_steps(token: int) -> int:
    """Steps of a time-shift token (0 for any other token)."""
    return token - TIME_SHIFT + 1 if TIME_SHIFT <= token < VELOCITY else 0


def shifts(steps: int) -> list[int]:
    """Time-shift tokens for a silence of ``steps``: full 1 s shifts first, then the rest;
    none for a silence of no steps (or fewer: time never runs backwards)."""
    if steps <= 0:
        return []
    out = [TIME_SHIFT + MAX_SHIFT_STEPS - 1] * (steps // MAX_SHIFT_STEPS)
    if steps % MAX_SHIFT_STEPS:
        out.append(TIME_SHIFT + steps % MAX_SHIFT_STEPS - 1)
    return out


def describe(token: int) -> str:
    k = kind(token)
    if k == "on":
        return f"on {token}"
    if k == "off":
        return f"off {token - NOTE_OFF}"
    if k == "shift":
        return f"shift {shift_steps(token)}"
    return f"vel {token - VELOCITY + 1}"


# --- notes -----------------------------------------------------------------------------

@dataclass
class Note:
    """A sounding note; times in seconds. ``instrument`` is Magenta's instrument index
    (one per program, channel and track), which is what the sustain pedal acts on."""

    pitch: int
    velocity: int
    start: float
    end: float
    instrument: int = 0
    program: int = 0
    is_drum: bool = False


@dataclass
class ControlChange:
    number: int
    value: int
    time: float
    instrument: int = 0


def parse_midi(source, name: str = "MIDI data") -> "mido.MidiFile":
    """A ``mido.MidiFile`` from a MIDI file's bytes (or the file itself), or a one-line
    CodecError naming ``name`` and what is wrong."""
    import mido

    if isinstance(source, mido.MidiFile):
        return source
    if not isinstance(source, (bytes, bytearray)):
        raise TypeError(f"the codec reads bytes or a mido.MidiFile, not {type(source).__name__}")
    data = bytes(source)
    if not data:
        raise CodecError(f"{name}: the file is empty.")
    if not data.startswith(b"MThd"):
        raise CodecError(f"{name}: not a MIDI file (it does not start with an MThd header).")
    try:
        return mido.MidiFile(file=io.BytesIO(data))
    except (EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        why = str(e) or type(e).__name__
        raise CodecError(f"{name}: corrupt or truncated MIDI data ({why}).") from None


def _tick_scales(mid) -> list[tuple[int, float]]:
    # Tempo comes from the first track only, as pretty_midi reads it.
    res = mid.ticks_per_beat
    scales = [(0, 60.0 / (120.0 * res))]
    tick = 0
    for msg in mid.tracks[0] if mid.tracks else ():
        tick += msg.time
        if msg.type != "set_tempo":
            continue
        scale = 60.0 / ((6e7 / msg.tempo) * res)
        if tick == 0:
            scales = [(0, scale)]
        elif scale != scales[-1][1]:
            scales.append((tick, scale))
    return scales


def _tick_to_time(scales: list[tuple[int, float]]):
    """A function tick -> seconds with pretty_midi's float arithmetic, so that times that
    land exactly on a half step round the same way here as in Magenta."""
    starts = [0]
    bases = [0.0]
    last_end = 0.0
    for (start, scale), (end, _) in zip(scales[:-1], scales[1:]):
        last_end = last_end + scale * (end - start)
        starts.append(end)
        bases.append(last_end)
    starts[0] = scales[0][0]

    def convert(tick: int) -> float:
        i = len(starts) - 1
        while starts[i] > tick:
            i -= 1
        return bases[i] + scales[i][1] * (tick - starts[i])

    if len(scales) == 1:
        scale0 = scales[0][1]
        return lambda tick: 0.0 + scale0 * tick
    return convert


def read_midi(source, name: str = "MIDI data") -> tuple[list[Note], list[ControlChange]]:
    """Notes and control changes of a MIDI file (its bytes or a mido.MidiFile), as
    pretty_midi and note_seq see them: a note-off (or a note-on with velocity 0) ends every
    open note of its channel and pitch that started at an earlier tick; a note that starts
    and ends on the same tick is dropped; notes never released are dropped; each
    (program, channel, track) is an instrument, numbered in the order its first note ends.
    """
    mid = parse_midi(source, name)
    if mid.type not in (0, 1, 2):
        raise CodecError(f"{name}: unsupported MIDI file type {mid.type}.")
    last_tick = 0
    for track in mid.tracks:
        last_tick = max(last_tick, sum(m.time for m in track))
    if last_tick + 1 > _MAX_TICK:
        raise CodecError(f"MIDI file has a largest tick of {last_tick + 1}; it is likely corrupt.")
    to_time = _tick_to_time(_tick_scales(mid))

    instruments: "OrderedDict[tuple, list]" = OrderedDict()  # key -> [program, channel, notes, ccs]
    stragglers: dict[tuple, list] = {}  # (channel, track) -> cc list of a channel with no notes yet

    def instrument(program: int, channel: int, track: int, create: bool):
        key = (program, channel, track)
        if key in instruments:
            return instruments[key]
        if not create and (channel, track) in stragglers:
            return [program, channel, None, stragglers[(channel, track)]]
        if create:
            # Controls that came before the first note of this channel belong to it; the
            # list is shared as pretty_midi shares it.
            ccs = stragglers.get((channel, track), [])
            inst = instruments[key] = [program, channel, [], ccs]
            return inst
        ccs = stragglers[(channel, track)] = []
        return [program, channel, None, ccs]

    for track_idx, track in enumerate(mid.tracks):
        open_notes: dict[tuple[int, int], list[tuple[int, int]]] = {}
        programs = [0] * 16
        tick = 0
        for msg in track:
            tick += msg.time
            t = msg.type
            if t == "note_on" and msg.velocity > 0:
                open_notes.setdefault((msg.channel, msg.note), []).append((tick, msg.velocity))
            elif t == "note_off" or t == "note_on":
                key = (msg.channel, msg.note)
                started = open_notes.get(key)
                if started is None:
                    continue
                to_close = [s for s in started if s[0] != tick]
                to_keep = [s for s in started if s[0] == tick]
                if to_close:
                    end = to_time(tick)
                    inst = instrument(programs[msg.channel], msg.channel, track_idx, True)
                    for start_tick, velocity in to_close:
                        inst[2].append((msg.note, velocity, to_time(start_tick), end))
                if to_close and to_keep:
                    open_notes[key] = to_keep
                else:
                    del open_notes[key]
            elif t == "program_change":
                programs[msg.channel] = msg.program
            elif t == "control_change":
                inst = instrument(programs[msg.channel], msg.channel, track_idx, False)
                inst[3].append((msg.control, msg.value, to_time(tick)))

    notes: list[Note] = []
    controls: list[ControlChange] = []
    for index, (program, channel, inst_notes, ccs) in enumerate(instruments.values()):
        drum = channel == 9
        notes.extend(Note(p, v, s, e, index, program, drum) for p, v, s, e in inst_notes)
        controls.extend(ControlChange(n, v, tm, index) for n, v, tm in ccs)
    return notes, controls


_SUSTAIN_ON, _SUSTAIN_OFF, _ON, _OFF = 0, 1, 2, 3


def apply_sustain(notes: list[Note], controls: Sequence[ControlChange]) -> list[Note]:
    """Notes with the sustain pedal (CC64 >= 64 is down) applied per instrument, as
    Magenta's apply_sustain_control_changes: a note released while the pedal is down lasts
    until the pedal comes up or the same pitch is struck again, whichever is first. A note
    that a re-strike would shorten to nothing is removed. Drum notes are left alone.
    Returns new Note objects; the input is not modified."""
    notes = [Note(n.pitch, n.velocity, n.start, n.end, n.instrument, n.program, n.is_drum)
             for n in notes]
    events: list[tuple[float, int, object]] = []
    events.extend((n.start, _ON, n) for n in notes if not n.is_drum)
    events.extend((n.end, _OFF, n) for n in notes if not n.is_drum)
    for cc in controls:
        if cc.number == SUSTAIN_CC:
            events.append((cc.time, _SUSTAIN_ON if cc.value >= 64 else _SUSTAIN_OFF, cc))
    events.sort(key=lambda e: (e[0], e[1]))

    active: dict[int, list[Note]] = defaultdict(list)
    pedal: dict[int, bool] = defaultdict(bool)
    removed: set[int] = set()
    time = 0.0
    for time, what, obj in events:
        inst = obj.instrument
        if what == _SUSTAIN_ON:
            pedal[inst] = True
        elif what == _SUSTAIN_OFF:
            pedal[inst] = False
            keep = []
            for n in active[inst]:
                if n.end < time:
                    n.end = time
                else:
                    keep.append(n)
            active[inst] = keep
        elif what == _ON:
            if pedal[inst]:
                keep = []
                for n in active[inst]:
                    if n.pitch == obj.pitch:
                        n.end = time
                        if n.start == n.end:
                            removed.add(id(n))
                    else:
                        keep.append(n)
                active[inst] = keep
            active[inst].append(obj)
        elif not pedal[inst]:
            lst = active[inst]
            for i, n in enumerate(lst):
                if n is obj:
                    del lst[i]
                    break
    for lst in active.values():
        for n in lst:
            n.end = time
    return [n for n in notes if id(n) not in removed]


def quantize(seconds: float) -> int:
    """Nearest 10 ms step, as Magenta's quantize_to_step with a cutoff of 0.5."""
    return int(seconds * STEPS_PER_SECOND + 0.5)


def notes_to_tokens(notes: Iterable[Note]) -> list[int]:
    """Magenta's Performance events for notes whose sustain is already applied: times to
    the nearest step (a note gets at least one step), events at the same step in the
    order of their notes sorted by (start time, pitch), a velocity event only when the
    bin changes, silences longer than 1 s split into 1 s shifts."""
    ordered = sorted(notes, key=lambda n: (n.start, n.pitch))
    events = []
    for idx, n in enumerate(ordered):
        start, end = quantize(n.start), quantize(n.end)
        if end == start:
            end += 1
        events.append((start, idx, False))
        events.append((end, idx, True))
    events.sort()
    tokens: list[int] = []
    step = 0
    current_bin = 0
    for at, idx, is_off in events:
        if at > step:
            tokens.extend(shifts(at - step))
            step = at
        n = ordered[idx]
        if is_off:
            tokens.append(NOTE_OFF + n.pitch)
            continue
        b = velocity_to_bin(n.velocity)
        if b != current_bin:
            current_bin = b
            tokens.append(VELOCITY + b - 1)
        tokens.append(NOTE_ON + n.pitch)
    return tokens


def midi_to_notes(source, name: str = "MIDI data") -> list[Note]:
    """Notes of a MIDI file (bytes or mido.MidiFile) with the sustain pedal applied;
    ``name`` is what a CodecError calls it."""
    notes, controls = read_midi(source, name)
    return apply_sustain(notes, controls)


def midi_to_tokens(source, name: str = "MIDI data") -> list[int]:
    """Token ids of a MIDI file (bytes or mido.MidiFile)."""
    return notes_to_tokens(midi_to_notes(source, name))


# --- tokens back to notes and MIDI -------------------------------------------------------

@dataclass
class StepNote:
    """A decoded note on the 10 ms grid. ``order`` is its place among the notes that start
    at the same step, as the token stream played them."""

    pitch: int
    velocity: int
    start: int
    end: int
    order: int = 0

    @property
    def start_seconds(self) -> float:
        return self.start / STEPS_PER_SECOND

    @property
    def end_seconds(self) -> float:
        return self.end / STEPS_PER_SECOND


def tokens_to_step_notes(tokens: Iterable[int], default_velocity: int = 100) -> list[StepNote]:
    """Notes of a token stream, decided as Magenta's Performance.to_sequence decides them,
    so that any stream decodes without an exception:

    - a note-on of a pitch that is already sounding starts a second voice of that pitch;
      a note-off ends the oldest sounding voice of its pitch;
    - a note-off of a silent pitch is ignored;
    - a note that would last zero steps is dropped;
    - notes never released end at the stream's last step;
    - before the first velocity event, notes have ``default_velocity``;
    - ids outside the vocabulary are ignored.

    Notes come back sorted by (start step, order)."""
    sounding = Voices("oldest")  # data: (velocity, order)
    notes: list[StepNote] = []
    step = 0
    velocity = default_velocity
    order = 0
    order_step = -1
    for tok in tokens:
        tok = int(tok)
        if 0 <= tok < NOTE_OFF:
            if order_step != step:
                order_step, order = step, 0
            sounding.on(tok, step, (velocity, order))
            order += 1
        elif tok < TIME_SHIFT:
            for v in sounding.off(tok - NOTE_OFF, step):
                if step > v.start:
                    notes.append(StepNote(v.key, v.data[0], v.start, step, v.data[1]))
        elif tok < VELOCITY:
            step += tok - TIME_SHIFT + 1
        elif tok < VOCAB_SIZE:
            velocity = bin_to_velocity(tok - VELOCITY + 1)
    for v in sounding.end():
        if step > v.start:
            notes.append(StepNote(v.key, v.data[0], v.start, step, v.data[1]))
    notes.sort(key=lambda n: (n.start, n.order))
    return notes


# Decoded MIDI files run at 120 bpm with up to 100 ticks per 10 ms step (0.1 ms). Magenta
# orders notes that start in the same step by exact start time, then pitch; so where the
# stream played a step's onsets out of pitch order, the later ones are staggered by a tick
# each to keep that order when the file is read back. Long files get coarser ticks, because
# readers (pretty_midi, so Magenta too) refuse files past tick 10,000,000.
TEMPO = 500_000
_STEPS_PER_BEAT = 50
_MAX_TICKS_PER_STEP = 100


def _ticks_per_step(last_step: int) -> int:
    return max(1, min(_MAX_TICKS_PER_STEP, (_MAX_TICK - 1) // (last_step + 1)))


class NoteArrays(NamedTuple):
    """Step notes as parallel numpy arrays (what a long session's save works on: a list of
    hundreds of thousands of ``StepNote`` objects takes seconds to build and walk)."""

    pitch: np.ndarray
    velocity: np.ndarray
    start: np.ndarray
    end: np.ndarray
    order: np.ndarray

    @classmethod
    def of(cls, notes: "Sequence[StepNote] | NoteArrays") -> "NoteArrays":
        if isinstance(notes, NoteArrays):
            return notes
        table = np.array([(n.pitch, n.velocity, n.start, n.end, n.order) for n in notes],
                         dtype=np.int64).reshape(-1, 5)
        return cls(*table.T)

    def __len__(self) -> int:
        return len(self.pitch)


def _staggers(notes: NoteArrays, cap: int) -> np.ndarray:
    """Tick offsets that make (start, offset, pitch) order equal to the stream's order of
    onsets within each step; offsets stay below half a step (``cap``)."""
    out = np.zeros(len(notes), dtype=np.int64)
    if not len(notes):
        return out
    played = np.lexsort((notes.order, notes.start))  # stable: list order breaks ties
    start, pitch = notes.start[played], notes.pitch[played]
    same_step = np.zeros(len(played), dtype=bool)
    np.equal(start[1:], start[:-1], out=same_step[1:])
    back = np.zeros(len(played), dtype=bool)
    back[1:] = same_step[1:] & (pitch[1:] <= pitch[:-1])  # out of pitch order: one tick on
    count = np.cumsum(back)
    step_begins = np.flatnonzero(~same_step)[np.cumsum(~same_step) - 1]
    out[played] = np.minimum(count - count[step_begins], cap)
    return out


_CHANNELS = [c for c in range(16) if c != 9]


def _channel_plan(pitch: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A MIDI channel per note (pitch, start tick, end tick, in list order): overlapping voices
    of one pitch go to different channels, because on one channel a note-off ends them all.
    Each note takes the first channel whose last note of its pitch has ended by its start."""
    n = len(pitch)
    plan = np.full(n, _CHANNELS[0], dtype=np.int64)
    if not n:
        return plan
    order = np.argsort(pitch, kind="stable")
    p, s, e = pitch[order], start[order], end[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(p[1:], p[:-1], out=first[1:])
    group = np.cumsum(first) - 1
    # The latest end among the earlier notes of the same pitch (kept to its pitch by lifting
    # each pitch's ends above every earlier pitch's).
    apart = (int(e.max()) + 1) * group
    latest = np.maximum.accumulate(e + apart) - apart
    before = np.where(first, 0, np.roll(latest, 1))
    # A note that starts after every earlier note of its pitch has ended takes the first
    # channel; only the others need the channel search below. When starts never go back
    # within a pitch, the state the search starts from is then known: the previous note on
    # the first channel, every other channel free by now.
    clear = s >= before
    if clear.all():
        return plan
    ordered = bool((first | (np.concatenate(([0], s[:-1])) <= s)).all())
    todo = np.flatnonzero(~clear).tolist() if ordered else range(n)  # else search every note
    starts, ends, firsts, clears = s.tolist(), e.tolist(), first.tolist(), clear.tolist()
    chosen = np.zeros(n, dtype=np.int64)
    free_at: dict[int, int] = {}
    for i in todo:
        if firsts[i]:
            free_at = {}
        elif ordered and clears[i - 1]:
            free_at = {0: ends[i - 1]}
        pick = 0
        for c in range(len(_CHANNELS)):
            if free_at.get(c, 0) <= starts[i]:
                pick = c
                break
        free_at[pick] = max(free_at.get(pick, 0), ends[i])
        chosen[i] = pick
    plan[order] = np.asarray(_CHANNELS)[chosen]
    return plan


class _Placed(NamedTuple):
    """One track's messages in file order: tick, note-on or off, channel, pitch, velocity."""

    name: str
    channels: list[int]
    tick: np.ndarray
    is_on: np.ndarray
    channel: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray


def _placed_tracks(tracks) -> tuple[int, list[_Placed]]:
    """(ticks per beat, each track's messages in file order and the channels it uses)."""
    tracks = [(name, NoteArrays.of(notes)) for name, notes in tracks]
    last = max((int(notes.end.max()) for _, notes in tracks if len(notes)), default=0)
    tps = _ticks_per_step(last)
    out = []
    for name, notes in tracks:
        on_tick = notes.start * tps + _staggers(notes, (tps - 1) // 2)
        off_tick = notes.end * tps
        plan = _channel_plan(notes.pitch, on_tick, off_tick)
        # Each note's on then off, sorted stably by (tick, on): at one tick, note-offs go
        # before note-ons so a re-struck pitch sounds again.
        tick = np.stack([on_tick, off_tick], axis=1).ravel()
        is_on = np.tile(np.array([1, 0], dtype=np.int64), len(notes))
        velocity = np.stack([np.clip(notes.velocity, 1, 127),
                             np.zeros(len(notes), dtype=np.int64)], axis=1).ravel()
        file_order = np.lexsort((is_on, tick))
        out.append(_Placed(name, sorted(set(plan.tolist())), tick[file_order],
                           is_on[file_order], np.repeat(plan, 2)[file_order],
                           np.repeat(notes.pitch, 2)[file_order], velocity[file_order]))
    return tps * _STEPS_PER_BEAT, out


def step_notes_to_midi(tracks: Sequence[tuple[str, Sequence[StepNote]]], program: int = 0):
    """A type-1 ``mido.MidiFile`` with one track per (name, notes)."""
    import mido

    ticks_per_beat, placed = _placed_tracks(tracks)
    mid = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    first = True
    for t in placed:
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=t.name, time=0))
        if first:
            track.append(mido.MetaMessage("set_tempo", tempo=TEMPO, time=0))
            first = False
        for ch in t.channels:
            track.append(mido.Message("program_change", channel=ch, program=program, time=0))
        now = 0
        for tick, is_on, ch, pitch, vel in zip(t.tick.tolist(), t.is_on.tolist(),
                                               t.channel.tolist(), t.pitch.tolist(),
                                               t.velocity.tolist()):
            kind_ = "note_on" if is_on else "note_off"
            track.append(mido.Message(kind_, channel=ch, note=pitch, velocity=vel,
                                      time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        mid.tracks.append(track)
    return mid


def _varlen_widths(values: np.ndarray) -> np.ndarray:
    """Bytes of each value as an SMF variable-length quantity (values below 2**28)."""
    return 1 + (values >= 1 << 7) + (values >= 1 << 14) + (values >= 1 << 21)


def _put_varlens(out: np.ndarray, at: np.ndarray, values: np.ndarray,
                 width: np.ndarray) -> None:
    """Write each value as a variable-length quantity of ``width`` bytes into ``out`` at
    ``at``: seven bits a byte, most significant first, the high bit set on all but the last."""
    for k in range(4):
        has = width > k
        shift = 7 * (width[has] - 1 - k)
        more = np.where(k < width[has] - 1, 0x80, 0)
        out[at[has] + k] = ((values[has] >> shift) & 0x7F) | more


def _varlen(n: int) -> bytes:
    values = np.array([n], dtype=np.int64)
    width = _varlen_widths(values)
    out = np.zeros(int(width[0]), dtype=np.uint8)
    _put_varlens(out, np.zeros(1, dtype=np.int64), values, width)
    return out.tobytes()


def _note_messages(t: _Placed) -> bytes:
    """The track's note messages as SMF bytes: each a variable-length delta time, then its
    status, pitch and velocity (every byte placed at once: a long session has hundreds of
    thousands of them)."""
    if not len(t.tick):
        return b""
    delta = np.diff(t.tick, prepend=0)
    width = _varlen_widths(delta)
    size = width + 3
    at = np.cumsum(size) - size
    out = np.zeros(int(size.sum()), dtype=np.uint8)
    _put_varlens(out, at, delta, width)
    out[at + width] = np.where(t.is_on == 1, 0x90, 0x80) | t.channel
    out[at + width + 1] = t.pitch
    out[at + width + 2] = t.velocity
    return out.tobytes()


def step_notes_to_smf(tracks, program: int = 0) -> bytes:
    """The bytes of the file ``step_notes_to_midi`` makes, written directly: a long session
    has hundreds of thousands of messages, and building a mido object for each one takes
    seconds an instrument's shutdown does not have. Notes are ``StepNote`` lists or
    ``NoteArrays``."""
    ticks_per_beat, placed = _placed_tracks(tracks)
    chunks = [b"MThd", (6).to_bytes(4, "big"), (1).to_bytes(2, "big"),
              len(placed).to_bytes(2, "big"), ticks_per_beat.to_bytes(2, "big")]
    first = True
    for t in placed:
        body = bytearray()
        label = t.name.encode("latin-1", "replace")
        body += b"\x00\xff\x03" + _varlen(len(label)) + label
        if first:
            body += b"\x00\xff\x51\x03" + TEMPO.to_bytes(3, "big")
            first = False
        for ch in t.channels:
            body += bytes((0, 0xC0 | ch, program))
        body += _note_messages(t)
        body += b"\x00\xff\x2f\x00"
        chunks += [b"MTrk", len(body).to_bytes(4, "big"), bytes(body)]
    return b"".join(chunks)


def tokens_to_midi(tokens: Iterable[int], name: str = "livepiano"):
    """A ``mido.MidiFile`` of a token stream (see tokens_to_step_notes for invalid streams)."""
    return step_notes_to_midi([(name, tokens_to_step_notes(tokens))])


def events_per_kind(tokens: Iterable[int]) -> dict[str, int]:
    counts = {"on": 0, "off": 0, "shift": 0, "velocity": 0}
    for t in tokens:
        counts[kind(int(t))] += 1
    return counts


def duration_steps(tokens: Iterable[int]) -> int:
    return sum(shift_steps(int(t)) for t in tokens)


# --- control vectors ---------------------------------------------------------------------

# What a conditioned model is told about the music around each step: [density, pc_0..pc_11].
# Density is note-ons per second divided by 10 (capped at 3), so typical playing gives
# 0.2..1.5; the pitch-class histogram sums to 1. All zeros means "unconditioned".
CONTROL_LAYOUT = ["density"] + [f"pitch_class_{i}" for i in range(12)]
CONTROL_DIM = len(CONTROL_LAYOUT)
DENSITY_SCALE = 10.0
DENSITY_CAP = 3.0  # the density entry's largest value (30 notes/s)


def control_vector(tokens) -> np.ndarray:
    """The control vector describing a stretch of tokens (zeros when it has no notes)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    ons = tokens[tokens < NOTE_OFF]
    out = np.zeros(CONTROL_DIM, dtype=np.float32)
    if len(ons):
        seconds = duration_steps(tokens.tolist()) / STEPS_PER_SECOND
        hist = np.bincount(ons % 12, minlength=12).astype(np.float32)
        out[:] = conditioning(len(ons) / max(seconds, 1.0), hist / hist.sum())
    return out


def conditioning(notes_per_second: float, pitch_classes) -> list[float]:
    """The control vector from a note density and a 12-bin pitch-class histogram (summing to
    1): the one place the density is scaled and capped, for data and for knobs alike."""
    return [min(notes_per_second / DENSITY_SCALE, DENSITY_CAP)] + [float(x) for x in pitch_classes]


# --- augmentation on tokens --------------------------------------------------------------

def transpose(tokens: np.ndarray, semitones: int, low: int = 0,
              high: int = 127) -> np.ndarray | None:
    """Tokens with every note moved by ``semitones``, or None when a note would leave
    [low, high] (the caller then picks another interval)."""
    tokens = np.asarray(tokens, dtype=np.int64)  # uint16 (the cache's dtype) cannot go down
    is_note = tokens < TIME_SHIFT
    if semitones == 0:
        return tokens.copy()
    pitches = tokens[is_note] % NUM_PITCHES
    if pitches.size and (pitches.min() + semitones < low or pitches.max() + semitones > high):
        return None
    out = tokens.copy()
    out[is_note] = tokens[is_note] + semitones
    return out


def transposition_range(tokens: np.ndarray, limit: int, low: int = PIANO_LOW,
                        high: int = PIANO_HIGH) -> tuple[int, int]:
    """The intervals in [-limit, limit] that keep every note of ``tokens`` inside
    [low, high]; a stream already outside that range may only move inside 0..127."""
    tokens = np.asarray(tokens)
    pitches = tokens[tokens < TIME_SHIFT] % NUM_PITCHES
    if not pitches.size:
        return -limit, limit
    lo_p, hi_p = int(pitches.min()), int(pitches.max())
    if lo_p < low or hi_p > high:
        low, high = 0, 127
    return max(-limit, low - lo_p), min(limit, high - hi_p)


def stretch(tokens: Sequence[int], factor: float) -> list[int]:
    """Tokens with time scaled by ``factor``: each event moves to the nearest step of its
    scaled time and keeps its place in the stream. A note that would shrink to zero steps
    has its note-off moved to the next step, so every note still lasts at least one step
    as in Magenta's encoding."""
    out: list[int] = []
    step = 0
    emitted = 0
    pending: list[int] = []
    pending_step = 0
    voices = Voices("oldest")  # the notes' scaled starts

    def advance(to: int) -> None:
        nonlocal emitted
        if to > emitted:
            out.extend(shifts(to - emitted))
            emitted = to

    for tok in tokens:
        tok = int(tok)
        if TIME_SHIFT <= tok < VELOCITY:
            step += tok - TIME_SHIFT + 1
            continue
        new = int(step * factor + 0.5)
        if pending and new >= pending_step:
            advance(pending_step)
            out.extend(pending)
            pending = []
        advance(new)
        if tok < NOTE_OFF:
            voices.on(tok, new)
        elif tok < TIME_SHIFT:
            ended = voices.off(tok - NOTE_OFF, new)
            if ended and ended[0].start == new:
                pending.append(tok)
                pending_step = new + 1
                continue
        out.append(tok)
    if pending:
        advance(pending_step)
        out.extend(pending)
    advance(int(step * factor + 0.5))
    return out
