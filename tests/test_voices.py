"""The one note-on/note-off pairing: its two rules, MIDI messages, voices never released."""

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livepiano.core import messages
from livepiano.core.voices import RULES, Voice, Voices, pair_oldest


def test_oldest_a_note_off_ends_the_oldest_voice_of_its_pitch():
    v = Voices("oldest")
    v.on(60, 0.0, "a")
    v.on(60, 1.0, "b")
    v.on(62, 1.5, "c")
    assert len(v) == 3 and v.count(60) == 2 and sorted(v.keys()) == [60, 60, 62]
    assert v.off(60, 2.0) == [Voice(60, 0.0, "a")]
    assert v.count(60) == 1 and len(v) == 2
    assert v.off(60, 3.0) == [Voice(60, 1.0, "b")]
    assert v.off(60, 4.0) == []  # a silent pitch: nothing ends
    assert v.off(61, 4.0) == []
    assert v.keys() == [62] and v


def test_all_a_note_off_ends_every_voice_of_its_pitch():
    v = Voices("all")
    v.on(60, 0.0)
    v.on(60, 1.0)
    v.on(64, 1.0)
    assert v.off(60, 2.0) == [Voice(60, 0.0), Voice(60, 1.0)]
    assert v.count(60) == 0 and v.keys() == [64] and len(v) == 1
    assert v.off(60, 3.0) == []


def test_a_voice_struck_at_the_moment_of_its_note_off_ends_too():
    for rule in RULES:
        v = Voices(rule)
        v.on(60, 1.0)
        assert v.off(60, 1.0) == [Voice(60, 1.0)]


def test_empty_is_falsy_and_end_hands_back_the_unreleased_voices_in_order():
    v = Voices()
    assert not v and len(v) == 0 and v.last is None and v.end() == []
    v.on(62, 0.5, 90)
    v.on(60, 1.0, 80)
    v.on(62, 2.0, 70)
    v.off(64, 3.0)  # a moment seen, though nothing ends
    assert v.last == 3.0
    assert v.voices() == [Voice(62, 0.5, 90), Voice(62, 2.0, 70), Voice(60, 1.0, 80)]
    assert v.end() == [Voice(62, 0.5, 90), Voice(62, 2.0, 70), Voice(60, 1.0, 80)]
    assert not v and v.keys() == [] and v.count(62) == 0


def test_clear_forgets_every_voice():
    v = Voices()
    v.on(1)
    v.on(1)
    v.clear()
    assert not v and v.off(1) == []


def test_messages_a_note_on_of_velocity_zero_is_a_note_off():
    v = Voices()
    assert v.message([messages.NOTE_ON, 60, 100], 0.0) == []
    assert v.count(60) == 1 and v.voices() == [Voice(60, 0.0, 100)]
    assert v.message([messages.NOTE_ON, 60, 0], 1.0) == [Voice(60, 0.0, 100)]
    v.message([messages.NOTE_ON | 3, 61, 90], 2.0)
    assert v.message([messages.NOTE_OFF | 5, 61, 64], 3.0) == [Voice(61, 2.0, 90)]


def test_messages_by_channel_keep_each_channel_apart():
    v = Voices()
    v.message([messages.NOTE_ON | 1, 60, 100], 0.0, by_channel=True)
    v.message([messages.NOTE_ON | 2, 60, 100], 0.0, by_channel=True)
    assert sorted(v.keys()) == [(1, 60), (2, 60)]
    assert v.message([messages.NOTE_OFF | 2, 60, 0], 1.0, by_channel=True) == [
        Voice((2, 60), 0.0, 100)]
    assert v.keys() == [(1, 60)]


def test_anything_but_a_note_is_ignored():
    v = Voices()
    for m in ([messages.CONTROL, messages.SUSTAIN, 127], [0xE0, 0, 64], [messages.NOTE_ON, 60],
              []):
        assert v.message(m, 1.0) == []
    assert not v and v.last is None


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="oldest, all"):
        Voices("newest")


def test_release_takes_the_voices_as_keys():
    v = Voices()
    for m in ([messages.NOTE_ON, 60, 1], [messages.NOTE_ON, 60, 1], [messages.NOTE_ON | 1, 50, 1]):
        v.message(m, by_channel=True)
    assert messages.release(v.keys())[:3] == [[messages.NOTE_OFF, 60, 0],
                                              [messages.NOTE_OFF, 60, 0],
                                              [messages.NOTE_OFF | 1, 50, 0]]


events = st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 2)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(events)
def test_oldest_pairs_first_in_first_out_like_a_queue_per_pitch(evs):
    v = Voices("oldest")
    queues: dict[int, deque] = {}
    t = 0
    paired = 0
    for on, pitch, dt in evs:
        t += dt
        if on:
            v.on(pitch, t, len(queues.setdefault(pitch, deque())))
            queues[pitch].append(t)
        else:
            ended = v.off(pitch, t)
            q = queues.get(pitch)
            if q:
                assert [e.start for e in ended] == [q.popleft()]
                paired += 1
            else:
                assert ended == []
        assert len(v) == sum(len(q) for q in queues.values()) == len(v.keys())
        assert bool(v) == (len(v) > 0)
    left = v.end()
    assert sorted((e.key, e.start) for e in left) == sorted(
        (p, s) for p, q in queues.items() for s in q)
    assert paired + len(left) == sum(1 for on, _, _ in evs if on)


@settings(max_examples=300, deadline=None)
@given(events)
def test_all_a_note_off_leaves_its_pitch_silent_and_ends_what_sounded(evs):
    v = Voices("all")
    t = 0
    for on, pitch, dt in evs:
        t += dt
        if on:
            v.on(pitch, t)
        else:
            before = v.count(pitch)
            ended = v.off(pitch, t)
            assert len(ended) == before and v.count(pitch) == 0
            assert [e.start for e in ended] == sorted(e.start for e in ended)
    n = len(v)
    assert len(v.end()) == n and not v


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), max_size=80))
def test_pair_oldest_over_arrays_is_the_oldest_rule(evs):
    v = Voices("oldest")
    expected = [-1] * len(evs)
    for i, (on, key) in enumerate(evs):
        if on:
            v.on(key, i, i)
        else:
            for ended in v.off(key, i):
                expected[ended.data] = i
    got = pair_oldest([k for _, k in evs], [on for on, _ in evs])
    assert got.tolist() == expected


def test_pair_oldest_ignores_a_note_off_of_a_silent_key_and_leaves_the_unreleased():
    #         off 5  on 5  on 5  off 5  on 7  off 5  off 5
    got = pair_oldest([5, 5, 5, 5, 7, 5, 5], [False, True, True, False, True, False, False])
    assert got.tolist() == [-1, 3, 5, -1, -1, -1, -1]
