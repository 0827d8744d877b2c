"""The ensemble and continuation measures of `bench music` on hand-made notes, where each
figure is known by counting."""

from __future__ import annotations

import math

import pytest

from livepiano.tools.bench import measures as m

# C4 0-2 s, E4 1-3 s, G4 4-5 s
PIANIST = [(0.0, 2.0, 60), (1.0, 3.0, 64), (4.0, 5.0, 67)]
MODEL = [
    (0.5, 1.0, 61),   # C# beside a held C: a clash
    (1.04, 1.1, 60),  # C beside C and E; 40 ms after the E's onset: in sync, in harmony
    (1.5, 2.0, 72),   # C beside C and E (its own pitch class held): no clash; harmony
    (2.0, 2.2, 59),   # B at the moment the C ends (not held any more): no clash
    (2.5, 3.0, 65),   # F beside a held E: a clash
    (3.5, 4.0, 63),   # D# in silence
    (3.8, 4.0, 64),   # E, which the pianist held until 0.8 s ago: harmony
    (4.0, 4.5, 66),   # F# as the G begins: a clash, and in sync
]


def test_clash_counts_semitones_from_held_notes_without_the_same_pitch_class():
    assert m.clash_share(MODEL, PIANIST) == pytest.approx(3 / 8)
    # a minor ninth and a major seventh count as the semitone does
    assert m.clash_share([(0.5, 1.0, 73)], PIANIST) == 1.0
    assert m.clash_share([(0.5, 1.0, 71)], PIANIST) == 1.0
    # a whole tone, or a semitone with the same pitch class also held, is no clash
    assert m.clash_share([(0.5, 1.0, 62)], PIANIST) == 0.0
    assert m.clash_share([(1.5, 2.0, 61)], PIANIST + [(1.2, 2.0, 49)]) == 0.0
    assert m.clash_share([], PIANIST) is None


def test_harmony_is_the_pianists_pitch_classes_of_the_last_second():
    assert m.harmony_share(MODEL, PIANIST) == pytest.approx(3 / 8)
    assert m.harmony_share([(4.1, 4.2, 64)], PIANIST) == 0.0  # the E ended 1.1 s before


def test_sync_is_within_50_ms_of_an_onset():
    assert m.sync_share(MODEL, PIANIST) == pytest.approx(2 / 8)
    assert m.sync_share([(0.95, 1.0, 50)], PIANIST) == 1.0
    assert m.sync_share([(0.94, 1.0, 50)], PIANIST) == 0.0
    assert m.sync_share(MODEL, []) == 0.0


def test_key_cosine_per_window():
    # model: C twice, C#, D#, E, F, F#, B once each; pianist: C, E, G once each
    assert m.key_cosine(MODEL, PIANIST, 10.0) == pytest.approx(3 / math.sqrt(30))
    # two windows: the same pitch class in the first, none shared in the second
    two = m.key_cosine([(1, 2, 60), (11, 12, 61)], [(1, 2, 48), (11, 12, 62)], 20.0)
    assert two == pytest.approx(0.5)
    # a window where one part is silent is left out
    assert m.key_cosine([(1, 2, 60)], [(1, 2, 48), (11, 12, 62)], 20.0) == pytest.approx(1.0)


def test_shifting_wraps_around_and_keeps_lengths():
    assert m.shifted([(9.0, 9.5, 60), (1.0, 3.0, 62)], 2.0, 10.0) == [(1.0, 1.5, 60),
                                                                      (3.0, 5.0, 62)]
    offsets = m.chance_offsets(120.0)
    assert len(offsets) == m.CHANCE_SHIFTS and offsets[0] == 10.0 and offsets[-1] == 110.0


def test_ensemble_chance_and_lift():
    pianist = [(float(t), t + 0.5, 60) for t in range(10)]
    model = [(float(t), t + 0.5, 61) for t in range(10)]  # a semitone on every onset
    f = m.ensemble(model, pianist, 10.0, shifts=[0.5, 0.6])
    assert f["clash"] == 1.0 and f["clash_chance"] == 0.0  # shifted, it falls in the gaps
    assert f["sync"] == 1.0 and f["sync_chance"] == 0.0 and f["sync_lift"] is None
    same = [(float(t), t + 0.5, 60) for t in range(10)]
    g = m.ensemble(same, pianist, 10.0, shifts=[0.75])
    # shifted 0.75 s, each C still follows a C that sounded within the last second
    assert g["harmony"] == 1.0 and g["harmony_chance"] == 1.0 and g["harmony_lift"] == 1.0
    assert g["duration_ratio"] == 1.0 and g["short_share"] == 0.0
    blips = [(float(t), t + 0.05, 60) for t in range(10)]
    h = m.ensemble(blips, pianist, 10.0, shifts=[0.75])
    assert h["duration_ratio"] == pytest.approx(0.1) and h["short_share"] == 1.0


def test_hands_split_at_middle_c():
    left, right = m.hands([(0, 1, 59), (0, 1, 60), (0, 1, 40)])
    assert left == [(0, 1, 59), (0, 1, 40)] and right == [(0, 1, 60)]


def test_continuation_figures():
    primer = [(t * 2.0, t * 2.0 + 1.0, 60 + (t % 2) * 7) for t in range(10)]  # 0.5/s, C and G
    after = [(t * 1.0, t * 1.0 + 0.5, 60) for t in range(20)]  # 1/s, all C, notes half as long
    other = [(0.0, 1.0, 62)]
    row = m.continuation(primer, after, other, 20.0, 20.0)
    assert row["primer_rate"] == 0.5 and row["rate"] == 1.0
    assert row["density_log2_err"] == pytest.approx(1.0)
    assert row["key_cosine"] == pytest.approx(1 / math.sqrt(2))
    assert row["key_cosine_other"] == 0.0
    assert row["duration_ratio"] == pytest.approx(0.5)
    rows = [dict(row, primer_rate=p, rate=2 * p + 1) for p in (1.0, 2.0, 5.0)]
    agg = m.continuations(rows)
    assert agg["density_corr"] == pytest.approx(1.0)
    assert agg["key_cosine"] == pytest.approx(1 / math.sqrt(2))
    assert m.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert m.pearson([1, 1], [1, 2]) is None
