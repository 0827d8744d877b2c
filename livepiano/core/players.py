"""Two players in one stream: which player each event of a token stream belongs to.

A model that knows who played hears, beside every event, a player flag: ``OWN`` (0) for its
own events, ``OTHER`` (1) for the other player's. Time-shifts belong to both (they carry
``OWN``, the value a one-player stream has everywhere). A velocity event belongs to the
note-on it sets up, a note-off to the note it ends.

Two ways of making two players out of one performance, for training data and for measuring
real playing:

- ``split_hands``: the two hands, by register, with a split point that moves with the music
  (where the pitches played around each moment best part into a low and a high group);
- ``alternate_phrases``: phrases cut at the performance's pauses and given to the players in
  turn, each answer starting only after the call has died away, as in a duet.

Pure numpy; no torch.
"""

from __future__ import annotations

import numpy as np

from livepiano.core import codec

OWN, OTHER = 0, 1
# Around each note, the onsets within this many steps decide where the hands part.
HAND_WINDOW_STEPS = 100
# Where the parting may fall (MIDI pitches): a split far outside the middle of the keyboard
# would give one hand everything.
HAND_SPLIT_RANGE = (43, 79)
# Onsets spanning less than this (semitones) are one hand's: a melody alone is not split.
ONE_HAND_SPAN = 10
MIDDLE_C = 60


class TokenNotes:
    """The notes of a token stream and the note each token belongs to (-1: none, as for
    time-shifts, a note-off of a silent pitch or a velocity event no note-on follows).
    Notes pair as the codec decodes them: a note-off ends the oldest voice of its pitch;
    notes never released end at the stream's last step."""

    def __init__(self, tokens):
        tokens = np.asarray(tokens, dtype=np.int64)
        owner = np.full(len(tokens), -1, np.int64)
        pitch: list[int] = []
        start: list[int] = []
        end: list[int] = []
        open_voices: dict[int, list[int]] = {}
        waiting_velocity: list[int] = []
        step = 0
        for i, tok in enumerate(tokens.tolist()):
            if tok < codec.NOTE_OFF:
                k = len(pitch)
                pitch.append(tok)
                start.append(step)
                end.append(-1)
                open_voices.setdefault(tok, []).append(k)
                owner[i] = k
                for v in waiting_velocity:
                    owner[v] = k
                waiting_velocity.clear()
            elif tok < codec.TIME_SHIFT:
                voices = open_voices.get(tok - codec.NOTE_OFF)
                if voices:
                    k = voices.pop(0)
                    end[k] = step
                    owner[i] = k
            elif tok < codec.VELOCITY:
                step += tok - codec.TIME_SHIFT + 1
            else:
                waiting_velocity.append(i)
        self.tokens = tokens
        self.owner = owner
        self.pitch = np.asarray(pitch, np.int64)
        self.start = np.asarray(start, np.int64)
        ends = np.asarray(end, np.int64)
        self.end = np.where(ends < 0, step, ends)
        self.steps = step

    def flags(self, note_player: np.ndarray) -> np.ndarray:
        """Per-token player flags (int64) for a player per note."""
        note_player = np.asarray(note_player, np.int64)
        out = np.full(len(self.tokens), OWN, np.int64)
        has = self.owner >= 0
        out[has] = note_player[self.owner[has]]
        return out


def _parting(pitches: np.ndarray, split_range: tuple[int, int]) -> float:
    """Where the pitches (sorted) part into two hands: the split between two neighbouring
    pitches that best separates them into a low and a high group (the largest between-group
    variance, as Otsu's threshold), among the splits inside ``split_range``; +inf or -inf
    (all one hand) when they span less than ``ONE_HAND_SPAN``."""
    if pitches[-1] - pitches[0] < ONE_HAND_SPAN:
        return float("inf") if pitches.mean() < MIDDLE_C else float("-inf")
    n = len(pitches)
    k = np.arange(1, n)
    below = np.cumsum(pitches)[:-1]
    mean_low = below / k
    mean_high = (pitches.sum() - below) / (n - k)
    score = k * (n - k) * (mean_high - mean_low) ** 2
    mids = (pitches[1:] + pitches[:-1]) / 2.0
    lo, hi = split_range
    usable = (pitches[1:] != pitches[:-1]) & (mids > lo) & (mids < hi)
    if not usable.any():
        return float(np.clip((pitches[0] + pitches[-1]) / 2.0, lo, hi))
    return float(mids[int(np.argmax(np.where(usable, score, -np.inf)))])


def split_hands(pitch: np.ndarray, start: np.ndarray, window: int = HAND_WINDOW_STEPS,
                split_range: tuple[int, int] = HAND_SPLIT_RANGE, every: int = 25) -> np.ndarray:
    """0 (left hand) or 1 (right hand) for each note (pitches and start steps). Every
    ``every`` steps, the notes started within ``window`` steps part into a low and a high
    group (``_parting``); a note goes to the left hand when it lies below the parting of
    its moment."""
    pitch = np.asarray(pitch, np.int64)
    start = np.asarray(start, np.int64)
    if not len(pitch):
        return np.zeros(0, np.int64)
    order = np.argsort(start, kind="stable")
    s_sorted, p_sorted = start[order], pitch[order]
    grid = np.arange(int(s_sorted[0]), int(s_sorted[-1]) + every, every)
    lo_idx = np.searchsorted(s_sorted, grid - window, side="left")
    hi_idx = np.searchsorted(s_sorted, grid + window, side="right")
    split = np.full(len(grid), float(MIDDLE_C))
    for g, (lo, hi) in enumerate(zip(lo_idx.tolist(), hi_idx.tolist())):
        if hi > lo:
            split[g] = _parting(np.sort(p_sorted[lo:hi]), split_range)
    cell = np.clip((start - grid[0] + every // 2) // every, 0, len(grid) - 1)
    return (pitch > split[cell]).astype(np.int64)


def hand_flags(tokens, own_hand: int) -> np.ndarray:
    """Player flags of a performance's tokens with the hands split (``split_hands``): the
    events of hand ``own_hand`` (0 left, 1 right) are ``OWN``, the other hand's ``OTHER``."""
    notes = TokenNotes(tokens)
    hands = split_hands(notes.pitch, notes.start)
    return notes.flags(np.where(hands == own_hand, OWN, OTHER))


def phrase_cuts(start: np.ndarray, end: np.ndarray, shortest: int, longest: int) -> list[int]:
    """Start steps of phrases after the first: from each phrase's start, the onset between
    ``shortest`` and ``longest`` steps later that follows the longest silence (or the least
    overlap) since the notes before it; the last phrase runs to the end."""
    start = np.asarray(start, np.int64)
    end = np.asarray(end, np.int64)
    if not len(start):
        return []
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    onsets, first = np.unique(s, return_index=True)
    # The latest end of every note started before each onset: a positive silence before
    # an onset is a pause, a negative one the overlap of notes still sounding.
    reach = np.maximum.accumulate(e)
    before = np.concatenate([[np.iinfo(np.int64).min // 2], reach[first[1:] - 1]])
    silence = onsets - before
    cuts = []
    at = int(onsets[0])
    while True:
        lo = np.searchsorted(onsets, at + shortest, side="left")
        hi = np.searchsorted(onsets, at + longest, side="right")
        if lo >= hi:
            break
        pick = lo + int(np.argmax(silence[lo:hi]))
        at = int(onsets[pick])
        cuts.append(at)
    return cuts


def alternate_phrases(tokens, rng: np.random.Generator, shortest: float = 2.0,
                      longest: float = 8.0, wait: tuple[float, float] = (0.5, 1.0)
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, flags) of a duet made from a performance: phrases of ``shortest`` to
    ``longest`` seconds, cut at its pauses (``phrase_cuts``), given to the players in turn
    (which one begins is drawn); each phrase starts only when every note of the one before
    has ended and a further ``wait`` seconds (drawn) have passed, as a call is answered."""
    notes = codec.tokens_to_step_notes(tokens)
    if not notes:
        return np.asarray(tokens, np.int64), np.zeros(len(tokens), np.int64)
    start = np.array([n.start for n in notes], np.int64)
    end = np.array([n.end for n in notes], np.int64)
    cuts = phrase_cuts(start, end, int(shortest * codec.STEPS_PER_SECOND),
                       int(longest * codec.STEPS_PER_SECOND))
    phrase = np.searchsorted(np.asarray(cuts, np.int64), start, side="right")
    # Each phrase is moved later by what the waits before it added up to.
    delay = np.zeros(len(cuts) + 1, np.int64)
    for k, cut in enumerate(cuts, start=1):
        previous_end = int((end[phrase == k - 1] + delay[k - 1]).max())
        pause = int(round(rng.uniform(*wait) * codec.STEPS_PER_SECOND))
        delay[k] = max(delay[k - 1], previous_end + pause - cut)
    first = int(rng.integers(2))
    moved = [codec.Note(n.pitch, n.velocity, (n.start + delay[k]) / codec.STEPS_PER_SECOND,
                        (n.end + delay[k]) / codec.STEPS_PER_SECOND)
             for n, k in zip(notes, phrase.tolist())]
    out = np.asarray(codec.notes_to_tokens(moved), np.int64)
    decoded = TokenNotes(out)
    starts_moved = np.asarray(cuts, np.int64) + delay[1:]
    note_phrase = np.searchsorted(starts_moved, decoded.start, side="right")
    return out, decoded.flags((note_phrase + first) % 2)


def own_tokens(tokens, flags) -> np.ndarray:
    """The tokens of the ``OWN`` player with the time-shifts: what that player alone
    played, on the shared clock."""
    tokens = np.asarray(tokens, np.int64)
    return tokens[np.asarray(flags) == OWN]
