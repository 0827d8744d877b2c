"""Two players in one stream (core.players): notes and the tokens that belong to them, the
hands split by register, a duet made of a performance's phrases."""

from __future__ import annotations

from collections import Counter

import numpy as np
from conftest import DATA

from livepiano.core import codec, players
from livepiano.core.codec import Note
from livepiano.core.midifile import midi_file_tokens
from livepiano.core.players import OTHER, OWN


def _tokens(notes: list[tuple[int, float, float]], velocity: int = 64) -> np.ndarray:
    return np.asarray(codec.notes_to_tokens([Note(p, velocity, s, e) for p, s, e in notes]))


def test_each_token_belongs_to_its_note_and_shifts_to_none():
    tokens = [codec.velocity_event(20), 60, codec.velocity_event(25), 72, codec.shift(10),
              codec.note_off(60), codec.shift(10), codec.note_off(72), codec.note_off(50)]
    notes = players.TokenNotes(tokens)
    assert notes.pitch.tolist() == [60, 72]
    assert notes.start.tolist() == [0, 0] and notes.end.tolist() == [10, 20]
    # velocity events go with the note-on they set up; a note-off of a silent pitch: none
    assert notes.owner.tolist() == [0, 0, 1, 1, -1, 0, -1, 1, -1]
    flags = notes.flags(np.array([OWN, OTHER]))
    assert flags.tolist() == [OWN, OWN, OTHER, OTHER, OWN, OWN, OWN, OTHER, OWN]


def test_a_re_struck_pitch_pairs_oldest_first_and_unreleased_notes_end_at_the_end():
    tokens = [60, codec.shift(5), 60, codec.shift(5), codec.note_off(60), codec.shift(5)]
    notes = players.TokenNotes(tokens)
    assert notes.start.tolist() == [0, 5]
    assert notes.end.tolist() == [10, 15]  # the first voice ends first; the second never did
    assert notes.owner[4] == 0


def test_bass_and_melody_go_to_the_left_and_the_right_hand():
    # An Alberti bass under a melody, both moving: the split follows them.
    notes = []
    for bar in range(8):
        t = bar * 1.0
        lift = 2 * bar  # the whole texture climbs
        for k, p in enumerate((36, 43, 40, 43)):
            notes.append((p + lift, t + 0.25 * k, t + 0.25 * k + 0.2))
        notes.append((67 + lift, t, t + 0.9))
    tokens = _tokens(notes)
    tn = players.TokenNotes(tokens)
    hands = players.split_hands(tn.pitch, tn.start)
    melody = np.isin(tn.pitch - 2 * (tn.start // 100), [67])
    assert (hands[melody] == 1).all() and (hands[~melody] == 0).all()


def test_a_melody_alone_is_one_hand():
    tokens = _tokens([(72 + (i % 5), 0.3 * i, 0.3 * i + 0.25) for i in range(20)])
    tn = players.TokenNotes(tokens)
    assert (players.split_hands(tn.pitch, tn.start) == 1).all()
    tokens = _tokens([(40 + (i % 5), 0.3 * i, 0.3 * i + 0.25) for i in range(20)])
    tn = players.TokenNotes(tokens)
    assert (players.split_hands(tn.pitch, tn.start) == 0).all()


def test_hand_flags_give_one_hand_to_each_player():
    tokens = midi_file_tokens(DATA / "chopin_op10_12.mid")
    left = players.hand_flags(tokens, own_hand=0)
    right = players.hand_flags(tokens, own_hand=1)
    shift = (np.asarray(tokens) >= codec.TIME_SHIFT) & (np.asarray(tokens) < codec.VELOCITY)
    assert (left[shift] == OWN).all() and (right[shift] == OWN).all()
    notes = ~shift
    assert (left[notes] != right[notes]).all()  # every note event is exactly one hand's
    ons = np.asarray(tokens) < codec.NOTE_OFF
    mean_own_left = np.asarray(tokens)[ons & (left == OWN)].mean()
    mean_own_right = np.asarray(tokens)[ons & (right == OWN)].mean()
    assert mean_own_left + 10 < mean_own_right
    own_alone = players.own_tokens(tokens, left)
    assert codec.duration_steps(own_alone.tolist()) == codec.duration_steps(tokens)


def test_phrases_are_cut_at_the_pauses():
    # Two-second groups of notes with a 0.4-s silence between them, one pause that is longer.
    start, end = [], []
    t = 0
    for group in range(6):
        for k in range(8):
            start.append(t + 25 * k)
            end.append(t + 25 * k + 20)
        t += 8 * 25 + (120 if group == 2 else 40)
    cuts = players.phrase_cuts(np.array(start), np.array(end), shortest=200, longest=800)
    onsets_after_pause = [s for s, prev in zip(start[1:], end[:-1]) if s - prev > 10]
    assert cuts and set(cuts) <= set(onsets_after_pause)
    # between 2 and 8 s apart
    gaps = np.diff([start[0]] + cuts)
    assert (gaps >= 200).all() and (gaps <= 800).all()
    # the long pause is taken when it is in reach
    assert start[24] in cuts


def test_a_duet_answers_each_phrase_after_it_has_died_away():
    tokens = midi_file_tokens(DATA / "chopin_op10_12.mid")
    rng = np.random.default_rng(3)
    duet, flags = players.alternate_phrases(tokens, rng, wait=(0.5, 0.5))
    before = codec.tokens_to_step_notes(tokens)
    after = players.TokenNotes(duet)
    # the same notes, later
    assert Counter(n.pitch for n in before) == Counter(after.pitch.tolist())
    assert codec.duration_steps(duet.tolist()) > codec.duration_steps(tokens)
    note_player = np.zeros(len(after.pitch), np.int64)
    for i, tok in enumerate(duet.tolist()):
        if tok < codec.NOTE_OFF:
            note_player[after.owner[i]] = flags[i]
    order = np.argsort(after.start, kind="stable")
    turns = np.flatnonzero(np.diff(note_player[order])) + 1
    assert len(turns) >= 2  # the players take turns
    for t in turns:
        earlier = order[:t]
        caller = note_player[order[t - 1]]
        ended = after.end[earlier][note_player[earlier] == caller].max()
        assert after.start[order[t]] >= ended + 50  # every note of the call over, and a wait
