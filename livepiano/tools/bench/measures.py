"""How two parts sound together, and how a continuation follows its primer: pure functions of
note lists, used by `livepiano bench music`.

A note is ``(start s, end s, pitch)`` as it sounds (the sustain pedal applied). "The pianist"
is the part the model plays beside (in real playing: the right hand), "the model" the other
one (the left hand).

- *clash*: the share of the model's note-ons a semitone (interval 1 or 11 mod 12) from a
  note the pianist holds at that moment, with no held note of the same pitch class;
- *harmony*: the share whose pitch class the pianist sounded in the last second;
- *sync*: the share within 50 ms of one of the pianist's onsets;
- *key*: the cosine of the two parts' pitch-class histograms (note-ons) per 10-s window,
  averaged over the windows where both play;
- *chance*: each figure again with the model's part shifted in time against the pianist's
  (wrapped around the excerpt), averaged over several shifts; a *lift* is a figure over its
  chance.

A note "held at t" started at or before t and ends after t; the pianist's notes that start at
the very moment of a model's note-on count as held by then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SEMITONE = (1, 11)
HARMONY_S = 1.0
SYNC_S = 0.05
KEY_WINDOW_S = 10.0
SHORT_S = 0.1  # a note shorter than this is a blip
CHANCE_SHIFTS = 8  # shifts of the model's part that make its chance
MIDDLE_C = 60

Notes = Sequence[tuple[float, float, int]]


def _arrays(notes: Notes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(notes) == 0:
        empty = np.zeros(0)
        return empty, empty, np.zeros(0, np.int64)
    a = np.asarray([(n[0], n[1], n[2]) for n in notes], dtype=np.float64)
    return a[:, 0], a[:, 1], a[:, 2].astype(np.int64)


class Sounding:
    """Which pitch classes of a part sound in a stretch of time, asked many times: per pitch
    class, the notes' starts sorted and the latest end among the notes started so far."""

    def __init__(self, notes: Notes):
        starts, ends, pitches = _arrays(notes)
        self._starts, self._reach = [], []
        for pc in range(12):
            mine = pitches % 12 == pc
            order = np.argsort(starts[mine], kind="stable")
            self._starts.append(starts[mine][order])
            self._reach.append(np.maximum.accumulate(ends[mine][order]) if order.size
                               else np.zeros(0))

    def classes(self, t: np.ndarray, since: np.ndarray) -> np.ndarray:
        """bool [len(t), 12]: the pitch classes with a note that starts at or before ``t``
        and ends after ``since`` (``since == t``: held at ``t``)."""
        t = np.asarray(t, dtype=np.float64)
        since = np.asarray(since, dtype=np.float64)
        out = np.zeros((t.size, 12), bool)
        for pc in range(12):
            starts, reach = self._starts[pc], self._reach[pc]
            if not starts.size:
                continue
            i = np.searchsorted(starts, t, side="right")
            out[:, pc] = (i > 0) & (reach[np.maximum(i - 1, 0)] > since)
        return out


def clash_share(model: Notes, pianist: Notes) -> float | None:
    """The share of ``model``'s note-ons a semitone from a note ``pianist`` holds, with none
    of the same pitch class held; None without model notes."""
    starts, _, pitches = _arrays(model)
    if not starts.size:
        return None
    held = Sounding(pianist).classes(starts, starts)
    pc = pitches % 12
    rows = np.arange(pc.size)
    near = held[rows, (pc + SEMITONE[0]) % 12] | held[rows, (pc + SEMITONE[1]) % 12]
    return float(np.mean(near & ~held[rows, pc]))


def harmony_share(model: Notes, pianist: Notes, window: float = HARMONY_S) -> float | None:
    """The share of ``model``'s note-ons whose pitch class ``pianist`` sounded in the
    ``window`` seconds up to it."""
    starts, _, pitches = _arrays(model)
    if not starts.size:
        return None
    sounded = Sounding(pianist).classes(starts, starts - window)
    return float(np.mean(sounded[np.arange(pitches.size), pitches % 12]))


def sync_share(model: Notes, pianist: Notes, tolerance: float = SYNC_S) -> float | None:
    """The share of ``model``'s note-ons within ``tolerance`` s of one of ``pianist``'s."""
    starts, _, _ = _arrays(model)
    if not starts.size:
        return None
    onsets = np.sort(_arrays(pianist)[0])
    if not onsets.size:
        return 0.0
    i = np.searchsorted(onsets, starts)
    before = np.abs(starts - onsets[np.clip(i - 1, 0, onsets.size - 1)])
    after = np.abs(onsets[np.clip(i, 0, onsets.size - 1)] - starts)
    return float(np.mean(np.minimum(before, after) <= tolerance + 1e-9))


def histogram(pitches) -> np.ndarray:
    """Note counts per pitch class (C first)."""
    return np.bincount(np.asarray(pitches, dtype=np.int64) % 12, minlength=12).astype(float)


def cosine(a, b) -> float | None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return None
    return float(a @ b / (na * nb))


def key_cosine(model: Notes, pianist: Notes, seconds: float,
               window: float = KEY_WINDOW_S) -> float | None:
    """The mean over the full ``window``s of ``[0, seconds)`` where both parts play of the
    cosine of their pitch-class histograms (note-ons)."""
    m_starts, _, m_pitches = _arrays(model)
    p_starts, _, p_pitches = _arrays(pianist)
    values = []
    for w in range(int(seconds // window)):
        lo, hi = w * window, (w + 1) * window
        c = cosine(histogram(m_pitches[(m_starts >= lo) & (m_starts < hi)]),
                   histogram(p_pitches[(p_starts >= lo) & (p_starts < hi)]))
        if c is not None:
            values.append(c)
    return float(np.mean(values)) if values else None


def shifted(notes: Notes, offset: float, period: float) -> list[tuple[float, float, int]]:
    """``notes`` moved ``offset`` s later, wrapped around ``period`` (each keeps its length)."""
    out = []
    for s, e, p in notes:
        start = (s + offset) % period
        out.append((start, start + (e - s), p))
    return sorted(out)


def chance_offsets(seconds: float, count: int = CHANCE_SHIFTS) -> list[float]:
    """Shifts spread evenly over the excerpt, none nearer than a key window to no shift."""
    lo = min(KEY_WINDOW_S, seconds / 4)
    hi = seconds - lo
    if count <= 1 or hi <= lo:
        return [seconds / 2]
    return [lo + (hi - lo) * k / (count - 1) for k in range(count)]


def durations(notes: Notes) -> np.ndarray:
    starts, ends, _ = _arrays(notes)
    return ends - starts


def median_duration(notes: Notes) -> float | None:
    d = durations(notes)
    return float(np.median(d)) if d.size else None


def short_share(notes: Notes, limit: float = SHORT_S) -> float | None:
    d = durations(notes)
    return float(np.mean(d < limit)) if d.size else None


def _ratio(a, b) -> float | None:
    if a is None or b is None or not b > 0:
        return None
    return float(a / b)


def ensemble(model: Notes, pianist: Notes, seconds: float,
             shifts: Sequence[float] | None = None) -> dict:
    """Every figure of ``model`` beside ``pianist`` over ``[0, seconds)``, with its chance
    (the mean over ``shifts`` of the model's part moved in time) and lift."""
    shifts = chance_offsets(seconds) if shifts is None else list(shifts)
    moved = [shifted(model, s, seconds) for s in shifts]
    out: dict = {"notes": len(model), "pianist_notes": len(pianist)}
    figures = {"clash": lambda m: clash_share(m, pianist),
               "harmony": lambda m: harmony_share(m, pianist),
               "sync": lambda m: sync_share(m, pianist),
               "key": lambda m: key_cosine(m, pianist, seconds)}
    for name, figure in figures.items():
        value = figure(model)
        chances = [c for c in (figure(m) for m in moved) if c is not None]
        chance = float(np.mean(chances)) if chances else None
        out[name] = value
        out[f"{name}_chance"] = chance
        if name != "clash":
            out[f"{name}_lift"] = _ratio(value, chance)
    out["duration_median_s"] = median_duration(model)
    out["pianist_duration_median_s"] = median_duration(pianist)
    out["duration_ratio"] = _ratio(out["duration_median_s"], out["pianist_duration_median_s"])
    out["short_share"] = short_share(model)
    return out


def hands(notes: Notes, split: int = MIDDLE_C) -> tuple[list, list]:
    """(left hand, right hand): the notes under ``split``, and the rest."""
    left = [n for n in notes if n[2] < split]
    right = [n for n in notes if n[2] >= split]
    return left, right


# --- continuations ------------------------------------------------------------------------------

def rate(notes: Notes, seconds: float) -> float:
    """Note-ons per second."""
    return len(notes) / seconds if seconds > 0 else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def log2_error(value: float, reference: float) -> float | None:
    """|log2(value / reference)|: 1 is twice (or half) as much."""
    if not value > 0 or not reference > 0:
        return None
    return abs(math.log2(value / reference))


def continuation(primer: Notes, after: Notes, other_primer: Notes, primer_s: float,
                 after_s: float) -> dict:
    """One continuation ``after`` (``after_s`` long) of ``primer`` (``primer_s`` long):
    densities, the key cosine with its own primer and with ``other_primer`` (another file's),
    its median note over the primer's."""
    p_rate, a_rate = rate(primer, primer_s), rate(after, after_s)
    hp = histogram([n[2] for n in primer])
    ha = histogram([n[2] for n in after])
    return {"primer_rate": p_rate, "rate": a_rate,
            "density_log2_err": log2_error(a_rate, p_rate),
            "key_cosine": cosine(ha, hp),
            "key_cosine_other": cosine(ha, histogram([n[2] for n in other_primer])),
            "duration_ratio": _ratio(median_duration(after), median_duration(primer))}


def continuations(rows: Sequence[dict]) -> dict:
    """The figures over many ``continuation`` rows: the density correlation (Pearson) of the
    continuations with their primers, and the medians of the rest."""
    def median(key):
        values = [r[key] for r in rows if r.get(key) is not None]
        return float(np.median(values)) if values else None
    return {"density_corr": pearson([r["primer_rate"] for r in rows], [r["rate"] for r in rows]),
            "density_log2_err": median("density_log2_err"),
            "key_cosine": median("key_cosine"),
            "key_cosine_other": median("key_cosine_other"),
            "duration_ratio": median("duration_ratio")}
