"""The duet's turn-taking, driven with explicit times: calls cut from the MAESTRO excerpts in
tests/data, answers played from real token streams, and property tests over random timelines."""

from __future__ import annotations

import copy
import functools
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from jackserver import tiny_model  # noqa: F401 (a fixture)

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.core.midifile import midi_file_notes, midi_file_tokens
from livepiano.live.duet import (
    ANSWER,
    ENDING,
    LISTEN,
    Duet,
    DuetSettings,
    IgnoreCall,
    Listen,
    StartAnswer,
    StopAnswer,
)
from livepiano.settings.choices import BARGE_IN

DATA = Path(__file__).parent / "data"
EXCERPTS = sorted(DATA.glob("*.mid"))
STEP = 1.0 / codec.STEPS_PER_SECOND


# --- helpers -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _notes(path: Path) -> tuple:
    return tuple(midi_file_notes(path))


def cut(path: Path, start: float, seconds: float) -> list[codec.Note]:
    """The notes (pedal folded in) that start in [start, start + seconds), moved so that the
    first starts at 0; checked to be one phrase (no silence of 0.6 s inside)."""
    notes = [n for n in _notes(path) if start <= n.start < start + seconds]
    first = min(n.start for n in notes)
    out = [codec.Note(n.pitch, n.velocity, n.start - first, n.end - first) for n in notes]
    covered = 0.0
    for n in sorted(out, key=lambda n: n.start):
        assert n.start - covered < 0.6, f"{path.name} has a pause at {start + n.start:.2f}"
        covered = max(covered, n.end)
    return out


def timeline(notes, offset: float) -> list[tuple]:
    """(time, kind, pitch, velocity) of notes placed at ``offset``: note-offs before note-ons
    at one time, so that a re-struck key is up before it goes down again."""
    events = [(n.start + offset, 1, "on", n.pitch, n.velocity) for n in notes]
    events += [(n.end + offset, 0, "off", n.pitch, 0) for n in notes]
    events.sort(key=lambda e: (e[0], e[1]))
    return [(t, kind, pitch, vel) for t, _, kind, pitch, vel in events]


def phrase_end(notes, offset: float) -> float:
    return max(n.end + offset for n in notes)


class ModelStream:
    """A stand-in for the engine loop's sampling: plays a token stream as the answer, a
    look-ahead ahead of the clock, from the answer's start; stops when the duet says so."""

    def __init__(self, tokens, lookahead: float = 0.1):
        self.tokens = list(tokens)
        self.lookahead = lookahead
        self.i = 0
        self.t = 0.0
        self.played: list[tuple[float, int]] = []  # (stream time after it, token)
        self.answers: list[list[tuple[float, int]]] = []  # what each answer played

    def start(self, at: float) -> None:
        self.i, self.t, self.played = 0, at, []
        self.answers.append(self.played)

    def run(self, duet: Duet, now: float) -> list:
        actions = []
        while duet.may_generate(now) and self.t < now + self.lookahead:
            tok = self.tokens[self.i % len(self.tokens)]
            self.i += 1
            self.t += codec.shift_steps(tok) * STEP
            self.played.append((self.t, tok))
            actions += duet.on_model_event(tok, self.t)
        return actions


def drive(duet: Duet, events, until: float, *, grid: float = 0.01, model: ModelStream = None,
          controls=(), check=None) -> list[tuple[float, object]]:
    """Feed ``events`` (time, kind, value, velocity) and end-of-call ``controls`` (times) in
    time order, ticking on a ``grid`` and at every ``duet.deadline()``; the model plays while
    the duet lets it. Returns (time, action) in order; ``check(duet, t, actions)`` runs after
    each call."""
    timed = sorted([(e[0], 0, e) for e in events] + [(c, 1, None) for c in controls],
                   key=lambda x: (x[0], x[1]))
    log: list[tuple[float, object]] = []
    i, t = 0, min([timed[0][0]] if timed else [0.0])

    def note(actions, now):
        for a in actions:
            log.append((now, a))
            if isinstance(a, StartAnswer) and model is not None:
                model.start(now)
        if check is not None:
            check(duet, now, actions)

    while True:
        while i < len(timed) and timed[i][0] <= t:
            at, is_control, e = timed[i]
            if is_control:
                note(duet.on_end_of_call_control(at), at)
            else:
                note(duet.on_player_event(e[1], e[2], at, e[3]), at)
            i += 1
        note(duet.tick(t), t)
        if model is not None:
            note(model.run(duet, t), t)
        if t >= until:
            return log
        nxt = [until, t + grid]
        if i < len(timed):
            nxt.append(timed[i][0])
        d = duet.deadline()
        if d is not None and d > t:
            nxt.append(d)
        t = min(nxt)


def of(log, kind) -> list:
    return [a for _, a in log if isinstance(a, kind)]


def spans(played) -> list[tuple[int, float, float]]:
    """(pitch, on, off) of the notes of a played model stream [(time after token, token)]: a
    note-off ends the oldest voice of its pitch; unreleased voices never end."""
    open_: dict[int, list[float]] = {}
    out = []
    for t, tok in played:
        if tok < codec.NOTE_OFF:
            open_.setdefault(tok, []).append(t)
        elif tok < codec.TIME_SHIFT and open_.get(tok - codec.NOTE_OFF):
            out.append((tok - codec.NOTE_OFF, open_[tok - codec.NOTE_OFF].pop(0), t))
    out += [(p, on, math.inf) for p, ons in open_.items() for on in ons]
    return out


def sounding(played, t: float) -> list[int]:
    """Pitches the played stream has sounding at ``t``."""
    return sorted(p for p, on, off in spans(played) if on <= t < off)


def first_silence(played, t: float) -> float:
    """The first moment from ``t`` on at which none of the stream's notes sounds."""
    notes = spans(played)
    moved = True
    while moved:
        moved = False
        for _, on, off in notes:
            if on <= t < off:
                t, moved = off, True
    return t


def step_silence(tokens, from_s: float) -> float:
    """The same on the codec's decoding of a token stream (seconds from its start)."""
    notes = [(n.start, n.end) for n in codec.tokens_to_step_notes(tokens)]
    x, moved = round(from_s * codec.STEPS_PER_SECOND, 6), True
    while moved:
        moved = False
        for s, e in notes:
            if s <= x < e:
                x, moved = e, True
    return x / codec.STEPS_PER_SECOND


def answer_starts_are_outside(log, notes_at: list[tuple[list, float]], wait: float) -> None:
    """No answer starts while a note of a call sounds or within ``wait`` of its end."""
    for t, a in log:
        if isinstance(a, StartAnswer):
            for notes, offset in notes_at:
                for n in notes:
                    assert not n.start + offset <= a.at < n.end + offset + wait, (a.at, n)


# --- settings --------------------------------------------------------------------------------

def test_settings_defaults():
    s = DuetSettings()
    assert (s.wait, s.min_call_notes, s.min_call_s, s.min_answer, s.max_answer, s.grace,
            s.barge_in, s.follow) == (0.6, 2, 0.3, 2.0, 16.0, 2.0, "stop", True)
    assert s.answer_length(1.0) == 2.0 and s.answer_length(7.5) == 7.5
    assert s.answer_length(40.0) == 16.0
    assert DuetSettings(wait=1, min_call_notes=3.0).min_call_notes == 3


@pytest.mark.parametrize("field, value, allowed", [
    ("wait", -1, "a number of seconds from 0.05 to 10"),
    ("wait", "0.6", "a number of seconds from 0.05 to 10"),
    ("wait", float("nan"), "a number of seconds from 0.05 to 10"),
    ("min_call_notes", 1.5, "a whole number from 1 to 100"),
    ("min_call_notes", True, "a whole number from 1 to 100"),
    ("min_answer", 0, "a number of seconds from 0.5 to 120"),
    ("max_answer", 1000, "a number of seconds from 0.5 to 120"),
    ("grace", 11, "a number of seconds from 0 to 10"),
    ("barge_in", "interrupt", "one of stop, finish, overlap"),
    ("follow", "yes", "true or false"),
])
def test_settings_validation_names_the_field_and_what_is_allowed(field, value, allowed):
    with pytest.raises(LivepianoError) as e:
        DuetSettings(**{field: value})
    assert str(e.value) == f"duet setting '{field}' is {value!r} but must be {allowed}."


def test_settings_min_answer_not_above_max_answer():
    with pytest.raises(LivepianoError, match="'min_answer' is 10 but must be at most "
                                             r"max_answer \(8\)"):
        DuetSettings(min_answer=10, max_answer=8)
    with pytest.raises(LivepianoError, match="unknown duet setting 'wiat'; known duet settings "
                                             "are wait, min_call_notes"):
        DuetSettings.from_mapping({"wiat": 1})
    assert DuetSettings.from_mapping({"barge_in": "overlap"}).barge_in == "overlap"


def test_bad_player_event_kind():
    with pytest.raises(ValueError, match="one of on, off, pedal"):
        Duet().on_player_event("sustain", 1, 0.0)


# --- the call ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", EXCERPTS, ids=lambda p: p.stem)
def test_answer_starts_exactly_wait_after_the_phrase_end_never_during_the_call(path):
    calls = [cut(path, 0.5, 3.0), cut(path, 5.0, 6.0), cut(path, 12.0, 9.0)]
    offsets, events, t = [], [], 100.0
    for notes in calls:
        offsets.append(t)
        events += timeline(notes, t)
        t = phrase_end(notes, t) + 25.0  # past any answer's cap: no barge-in here
    duet = Duet()
    log = drive(duet, events, until=t)
    answer_starts_are_outside(log, list(zip(calls, offsets)), 0.6)
    starts = of(log, StartAnswer)
    assert len(starts) == len(calls)
    for notes, offset, start in zip(calls, offsets, starts):
        end = phrase_end(notes, offset)
        assert start.at == end + 0.6
        assert start.call.start == offset and start.call.end == end
        assert start.call.notes == len(notes)
        assert start.length_s == min(max(end - offset, 2.0), 16.0)
        assert start.control is None  # an unconditioned model: nothing to follow
    # It started the moment it was due (the driver ticks at the deadline), not later.
    assert [t for t, a in log if isinstance(a, StartAnswer)] == [s.at for s in starts]
    # With no model events, each answer ends at its cap, and the turn comes back.
    stops = of(log, StopAnswer)
    assert [(s.reason, s.at) for s in stops] == [("cap", a.at + a.length_s + 2.0) for a in starts]
    assert len(of(log, Listen)) == len(calls) and duet.state == LISTEN


@pytest.mark.parametrize("path", EXCERPTS[:2], ids=lambda p: p.stem)
def test_a_key_held_through_a_long_silence_blocks_the_answer(path):
    notes = cut(path, 2.0, 4.0)
    events = timeline(notes, 10.0)
    end = phrase_end(notes, 10.0)
    events += [(end - 0.5, "on", 30, 70), (end + 30.0, "off", 30, 0)]  # a low key held 30 s
    events.sort(key=lambda e: (e[0], e[1] == "on"))
    duet = Duet()
    log = drive(duet, events, until=end + 40.0, grid=0.05)
    [start] = of(log, StartAnswer)
    assert start.at == end + 30.0 + 0.6
    assert log[0][0] > end + 30.0 and isinstance(log[0][1], StartAnswer)


@pytest.mark.parametrize("path", EXCERPTS, ids=lambda p: p.stem)
def test_raw_keys_and_the_pedal_the_pedal_down_blocks_the_answer(path):
    """Raw key presses (pedal not folded in) and CC64 messages, as a keyboard sends them: the
    call ends when the last key is up and the pedal is up, even after a long pedalled
    silence."""
    raw, controls = codec.read_midi(path.read_bytes())
    lo, hi = 3.0, 9.0
    keys = [n for n in raw if lo <= n.start < hi]
    last_key = max(n.end for n in keys)
    pedal = [(c.time, "pedal", c.value, 0) for c in controls
             if c.number == codec.SUSTAIN_CC and lo <= c.time <= last_key]
    pedal_up = last_key + 1.5
    events = timeline(keys, 0.0) + pedal + [(last_key + 0.1, "pedal", 127, 0),
                                            (pedal_up, "pedal", 0, 0)]
    events.sort(key=lambda e: e[0])
    duet = Duet(conditioned=True)
    log = drive(duet, events, until=pedal_up + 5.0)
    [start] = of(log, StartAnswer)
    assert start.at == pedal_up + 0.6
    # Follow: the control vector is that of the call with the pedal applied as the codec does.
    first = min(n.start for n in keys)
    pedal_events = [(t, v) for t, kind, v, _ in events if kind == "pedal"]
    ccs = [codec.ControlChange(64, 127 if v >= 64 else 0, t - first) for t, v in pedal_events
           if t >= first]
    before = [v for t, v in pedal_events if t < first]
    if before and before[-1] >= 64:
        ccs.insert(0, codec.ControlChange(64, 127, 0.0))
    moved = [codec.Note(n.pitch, n.velocity, n.start - first, n.end - first) for n in keys]
    expected = codec.control_vector(codec.notes_to_tokens(codec.apply_sustain(moved, ccs)))
    np.testing.assert_array_equal(start.control, expected)


def test_pedal_in_a_silence_moves_the_phrase_end():
    duet = Duet()
    events = [(0.0, "on", 60, 80), (0.2, "on", 64, 80), (0.5, "off", 60, 0), (0.5, "off", 64, 0),
              (0.9, "pedal", 127, 0), (1.0, "pedal", 0, 0)]
    log = drive(duet, events, until=5.0)
    [start] = of(log, StartAnswer)
    # Nothing was played for 0.4 s, then the pedal went down and up: that is playing.
    assert start.at == 1.0 + 0.6 and start.call.end == 1.0


def test_end_of_call_control_answers_at_once():
    notes = cut(EXCERPTS[0], 0.5, 5.0)
    events = timeline(notes, 0.0)
    # Mid-call, keys down: the call ends at the control.
    mid = 2.503
    duet = Duet()
    log = drive(duet, [e for e in events if e[0] <= mid], until=mid + 0.05, controls=[mid])
    [start] = of(log, StartAnswer)
    assert start.at == mid and log[0][0] == mid
    assert start.call.end == mid and start.length_s == 2.503
    assert duet.state == ANSWER and not duet.quiet  # the keys held then may go on sounding
    # Their note-offs during the answer are no barge-in.
    for t, kind, pitch, _ in events:
        if kind == "off" and mid < t and pitch in duet.keys_down:
            assert duet.on_player_event("off", pitch, t) == []
    assert duet.state == ANSWER
    # After the last release, before the wait: the call ends at the release, the answer now.
    end = phrase_end(notes, 0.0)
    duet = Duet()
    log = drive(duet, events, until=end + 1.0, controls=[end + 0.25])
    [start] = of(log, StartAnswer)
    assert start.at == end + 0.25 and start.call.end == end
    # A control with no call is nothing.
    duet = Duet()
    assert duet.on_end_of_call_control(3.0) == [] and duet.tick(10.0) == []


def test_short_calls_are_ignored():
    cases = {
        "one stray note": [(0.0, "on", 60, 80), (0.25, "off", 60, 0)],
        "one note held long": [(0.0, "on", 60, 80), (2.0, "off", 60, 0)],
        "a two-key slip": [(0.0, "on", 60, 80), (0.01, "on", 61, 40), (0.08, "off", 61, 0),
                           (0.1, "off", 60, 0)],
        "two notes in 0.29 s": [(0.0, "on", 60, 80), (0.1, "off", 60, 0), (0.12, "on", 62, 80),
                                (0.29, "off", 62, 0)],
    }
    for name, events in cases.items():
        duet = Duet()
        log = drive(duet, events, until=5.0)
        assert not of(log, StartAnswer), name
        [ignored] = of(log, IgnoreCall)
        assert "call too short" in ignored.reason and duet.call is None, name
        # The next call is measured from its own first note, not from the ignored one.
        later = [(6.0, "on", 60, 80), (6.2, "on", 64, 80), (6.5, "off", 60, 0),
                 (6.5, "off", 64, 0)]
        log = drive(duet, later, until=10.0)
        [start] = of(log, StartAnswer)
        assert start.call.start == 6.0 and start.at == 6.5 + 0.6, name
    # Exactly the minimum is answered: two notes, 0.3 s (a held chord is a call).
    duet = Duet()
    log = drive(duet, [(0.0, "on", 60, 80), (0.0, "on", 64, 80), (0.3, "off", 60, 0),
                       (0.3, "off", 64, 0)], until=2.0)
    assert len(of(log, StartAnswer)) == 1
    # The control is deliberate: it answers a single note.
    duet = Duet()
    log = drive(duet, [(0.0, "on", 60, 80), (0.1, "off", 60, 0)], until=1.0, controls=[0.3])
    [start] = of(log, StartAnswer)
    assert start.at == 0.3 and start.length_s == 2.0
    # A stricter minimum, from the settings.
    duet = Duet(DuetSettings(min_call_notes=3, min_call_s=1.0))
    log = drive(duet, [(0.0, "on", 60, 80), (0.2, "on", 62, 80), (0.4, "on", 64, 80),
                       (0.9, "off", 60, 0), (0.9, "off", 62, 0), (0.9, "off", 64, 0)], until=3.0)
    assert not of(log, StartAnswer) and "shorter than 1 s" in of(log, IgnoreCall)[0].reason


@pytest.mark.parametrize("seconds, clamp", [(0.6, (2.0, 16.0)), (5.0, (2.0, 16.0)),
                                            (22.0, (2.0, 16.0)), (5.0, (6.0, 8.0)),
                                            (10.0, (3.0, 8.0))])
def test_answer_length_follows_the_call_clamped(seconds, clamp):
    path = EXCERPTS[0] if seconds > 20 else EXCERPTS[1]
    notes = cut(path, 0.2, seconds)
    call_s = phrase_end(notes, 0.0)
    duet = Duet(DuetSettings(min_answer=clamp[0], max_answer=clamp[1]))
    log = drive(duet, timeline(notes, 0.0), until=call_s + 1.0)
    [start] = of(log, StartAnswer)
    assert start.length_s == min(max(call_s, clamp[0]), clamp[1])
    assert clamp[0] <= start.length_s <= clamp[1]


def test_a_note_stamped_before_the_answer_but_heard_after_it_barges_in():
    """The listener stamps on arrival; the engine thread may tick between the arrival and the
    drain of its inbox."""
    duet = Duet()
    for t, kind, pitch in [(0.0, "on", 60), (0.4, "on", 62), (1.0, "off", 60), (1.0, "off", 62)]:
        duet.on_player_event(kind, pitch, t)
    [start] = duet.tick(1.6)
    stop, listen = duet.on_player_event("on", 65, 1.5995)
    assert stop == StopAnswer("barge-in", 1.6, ()) and listen == Listen(1.6)
    assert duet.call.start == 1.5995 and duet.state == LISTEN


# --- the answer --------------------------------------------------------------------------------

def _answering(mode: str, answer_path: Path, call_s: float, **kw):
    """A duet that has just started to answer a call of about ``call_s`` seconds (cut from the
    Debussy excerpt) with the tokens of ``answer_path``: (duet, model, start, now)."""
    notes = cut(DATA / "debussy_etude7.mid", 0.0, call_s)
    duet = Duet(DuetSettings(barge_in=mode, **kw))
    model = ModelStream(midi_file_tokens(answer_path))
    end = phrase_end(notes, 0.0)
    log = drive(duet, timeline(notes, 0.0), until=end + 0.6, model=model)
    [start] = of(log, StartAnswer)
    assert start.at == end + 0.6 and model.played
    return duet, model, start, end + 0.6


def _play_until(duet, model, t0, t1, grid=0.01):
    """The clock runs from t0 to t1; the model plays while the duet lets it."""
    log, t = [], t0
    while t < t1:
        t = min(t + grid, t1)
        for a in duet.tick(t):
            log.append(a)
            if isinstance(a, StartAnswer):
                model.start(t)
        log += model.run(duet, t)
    return log


@pytest.mark.parametrize("path", EXCERPTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("call_s", [3.0, 7.0])
def test_answer_ends_at_the_first_pause_after_its_length_or_at_the_cap(path, call_s):
    duet, model, start, now = _answering("stop", path, call_s)
    log = _play_until(duet, model, now, now + 20.0)
    stop, listen = log
    target = start.at + start.length_s
    pause = first_silence(model.played, target)
    if pause <= target + 2.0:
        # The first moment from the target on with none of its notes sounding.
        assert stop.reason == "natural" and stop.release == ()
        assert stop.at == pytest.approx(pause, abs=1e-9)
    else:
        assert stop.reason == "cap" and stop.at == target + 2.0
        assert list(stop.release) == sounding(model.played, stop.at) and stop.release
    # Nothing of the answer lies beyond its end but the token that ended it.
    assert all(t <= stop.at + 1e-9 for t, tok in model.played[:-1])
    # The turn comes back at the answer's end (once its last note-off has sounded).
    assert listen == Listen(stop.at) and duet.state == LISTEN
    turn = duet.turns[0]
    assert (turn.stop_reason, turn.end, turn.over) == (stop.reason, stop.at, stop.at)
    assert turn.first_note is not None and turn.notes > 0


def test_the_natural_end_is_where_the_codec_sees_silence():
    """Both cases of the rule: a silence going on at the target ends the answer at the target,
    else the start of the first silent time-shift after it (Scarlatti: silent 3.96-4.06 s,
    4.37-4.48 s, 4.94-5.04 s into the excerpt)."""
    tokens = midi_file_tokens(DATA / "scarlatti_k525.mid")
    for target, expected in [(5.0, 5.0), (4.0, 4.0), (4.2, 4.37), (3.5, 3.96)]:
        assert step_silence(tokens, target) == pytest.approx(expected)
        duet = Duet()
        for t, kind, pitch in [(0.0, "on", 60), (0.1, "on", 64), (target, "off", 60),
                               (target, "off", 64)]:
            duet.on_player_event(kind, pitch, t)
        [start] = duet.tick(target + 0.6)
        assert start.length_s == target
        model = ModelStream(tokens)
        model.start(start.at)
        actions = []
        while not actions:
            actions = model.run(duet, model.t)
        [stop] = actions
        assert stop.reason == "natural" and stop.release == ()
        assert stop.at - start.at == pytest.approx(expected, abs=1e-9)


def test_tick_ends_a_stalled_answer_at_its_cap():
    duet = Duet()
    for t, kind, pitch in [(0.0, "on", 60), (0.5, "on", 62), (1.0, "off", 60), (1.0, "off", 62)]:
        duet.on_player_event(kind, pitch, t)
    assert duet.deadline() == 1.6
    [start] = duet.tick(1.6)
    assert duet.awaiting_first_note and duet.may_generate(1.6)
    duet.on_model_event(codec.velocity_event(20), 1.6)
    duet.on_model_event(codec.note_on(67), 1.6)
    assert not duet.awaiting_first_note and duet.deadline() == 1.6 + 2.0 + 2.0
    assert duet.tick(5.5) == []
    stop, listen = duet.tick(5.6)
    assert stop == StopAnswer("cap", 5.6, (67,)) and listen == Listen(5.6)
    # A late model token is no longer part of any answer.
    assert duet.on_model_event(codec.note_off(67), 5.7) == []
    assert duet.state == LISTEN and duet.deadline() is None


def test_a_note_past_the_cap_ends_the_answer_and_is_not_part_of_it():
    duet = Duet(DuetSettings(grace=0.5))
    for t, kind, pitch in [(0.0, "on", 60), (0.5, "on", 62), (1.0, "off", 60), (1.0, "off", 62)]:
        duet.on_player_event(kind, pitch, t)
    [start] = duet.tick(1.6)
    cap = 1.6 + 2.0 + 0.5
    assert duet.on_model_event(codec.note_on(70), 1.6) == []
    assert duet.on_model_event(codec.shift(100), 2.6) == []
    assert duet.on_model_event(codec.shift(100), 3.6) == []
    assert duet.on_model_event(codec.note_on(72), 4.0) == []
    [stop] = duet.on_model_event(codec.note_on(74), 4.2)
    assert stop == StopAnswer("cap", cap, (70, 72)) and duet.state == ENDING
    assert duet.deadline() == cap and duet.tick(4.05) == [] and duet.tick(cap) == [Listen(cap)]


# --- barge-in -----------------------------------------------------------------------------------

def test_barge_in_stop_silences_the_answer_at_once():
    duet, model, start, now = _answering("stop", DATA / "chopin_op10_12.mid", 6.0)
    _play_until(duet, model, now, now + 1.5)
    barge = now + 1.5 + 0.0037
    assert model.t > barge  # the model's look-ahead is past the barge-in
    stop, listen = duet.on_player_event("on", 72, barge, 90)
    assert stop.reason == "barge-in" and stop.at == barge and listen == Listen(barge)
    # Its voices sounding at that moment are to be released; later ones are taken back.
    assert list(stop.release) == sounding(model.played, barge)
    assert stop.release, "the excerpt has notes sounding mid-phrase"
    assert duet.state == LISTEN and not duet.may_generate(barge)
    assert model.run(duet, barge + 0.05) == []
    # The player's note starts the next call, answered in its turn.
    assert duet.call.start == barge and duet.call.notes == 1
    duet.on_player_event("on", 76, barge + 0.2, 90)
    duet.on_player_event("off", 72, barge + 0.4)
    duet.on_player_event("off", 76, barge + 0.5)
    assert duet.tick(barge + 1.09) == []
    [again] = duet.tick(barge + 1.1)
    assert isinstance(again, StartAnswer) and again.at == barge + 0.5 + 0.6


def test_barge_in_stop_during_the_answers_last_notes():
    """The answer has decided its end, but the stream runs ahead of the clock and its last
    notes are still to sound: a note-on then cuts them too."""
    for cut_before in (0.05, None):
        duet, model, start, t = _answering("stop", DATA / "scarlatti_k525.mid", 2.5)
        log = []
        while duet.state == ANSWER:
            t += 0.01
            log += duet.tick(t) + model.run(duet, t)
        [natural] = log
        assert natural.reason == "natural" and duet.state == ENDING and natural.at > t
        if cut_before is not None:
            stop, listen = duet.on_player_event("on", 50, natural.at - cut_before)
            assert stop.reason == "barge-in" and stop.at == natural.at - cut_before
            assert listen == Listen(stop.at) and duet.turns[0].stop_reason == "barge-in"
        else:  # after the end, a note-on is just the next call
            assert duet.on_player_event("on", 50, natural.at + 0.01) == [Listen(natural.at)]
            assert duet.call.start == natural.at + 0.01 and duet.state == LISTEN


def test_barge_in_finish_lets_the_answer_end_at_its_next_pause():
    duet, model, start, now = _answering("finish", DATA / "scarlatti_k525.mid", 9.0)
    _play_until(duet, model, now, now + 1.0)
    # The player comes in while the answer has a note sounding.
    barge = min(on for _, on, off in spans(model.played) if on >= now + 1.0) + 0.005
    assert sounding(model.played, barge)
    log = _play_until(duet, model, now + 1.0, barge)
    # (the stream is ahead of the clock: a pause it already played may end it at once)
    log += duet.on_player_event("on", 40, barge, 80)
    log += _play_until(duet, model, barge, barge + 0.1)
    duet.on_player_event("on", 43, barge + 0.1, 80)
    log += _play_until(duet, model, barge + 0.1, barge + 0.5)
    duet.on_player_event("off", 40, barge + 0.5)
    duet.on_player_event("off", 43, barge + 0.5)
    log += _play_until(duet, model, barge + 0.5, barge + 4.0)
    stop = next(a for a in log if isinstance(a, StopAnswer))
    # Not cut mid-note: it ends at its first silence from the barge-in on, long before its
    # 9-second target.
    assert stop.reason == "natural" and stop.release == ()
    assert stop.at == pytest.approx(first_silence(model.answers[0], barge), abs=1e-9)
    assert barge <= stop.at <= barge + 2.0 < start.at + start.length_s
    # The player's notes during the answer are the next call, answered after it.
    listen, again = [a for a in log if not isinstance(a, StopAnswer)][:2]
    assert listen == Listen(stop.at)
    assert again.at == max(barge + 0.5 + 0.6, stop.at) and again.call.start == barge
    assert again.call.notes == 2


def test_barge_in_finish_in_a_pause_of_the_answer_ends_it_there():
    """The stream runs ahead of the clock: when the player comes in during a silence of the
    answer (Scarlatti's staccato has many), that silence is the answer's end."""
    duet, model, start, now = _answering("finish", DATA / "scarlatti_k525.mid", 9.0)
    _play_until(duet, model, now, now + 1.0)
    barge = first_silence(model.played, now + 1.0)
    assert barge < model.t and not sounding(model.played, barge)
    stop, listen = duet.on_player_event("on", 40, barge, 80)
    assert stop == StopAnswer("natural", barge, ()) and listen == Listen(barge)
    assert duet.state == LISTEN and duet.call.start == barge


def test_barge_in_finish_has_a_cap():
    """With no pause in sight (Chopin's Op. 10/12), ``finish`` still ends ``grace`` after the
    barge-in, releasing what sounds."""
    duet, model, start, now = _answering("finish", DATA / "chopin_op10_12.mid", 12.0)
    _play_until(duet, model, now, now + 3.0)
    barge = now + 3.0
    duet.on_player_event("on", 40, barge, 80)
    log = _play_until(duet, model, barge, barge + 3.0)
    [stop, listen] = log
    assert stop.reason == "cap" and stop.at == barge + 2.0 and listen == Listen(stop.at)
    assert list(stop.release) == sounding(model.played, stop.at) and stop.release


def test_barge_in_overlap_plays_on_as_planned():
    path = DATA / "debussy_etude7.mid"
    quiet_duet, quiet_model, _, now = _answering("overlap", path, 5.0)
    undisturbed = _play_until(quiet_duet, quiet_model, now, now + 20.0)
    duet, model, start, now = _answering("overlap", path, 5.0)
    log = _play_until(duet, model, now, now + 1.0)
    over = [(now + 1.0 + 0.25 * k, "on" if k % 2 == 0 else "off", 60 + k // 2 * 2)
            for k in range(8)]
    for t, kind, pitch in over:
        log += _play_until(duet, model, now, t)
        log += duet.on_player_event(kind, pitch, t, 80)
        now = t
    log += _play_until(duet, model, now, now + 20.0)
    # The same answer, to the same end, as with nobody playing over it...
    assert log[:2] == undisturbed[:2] and isinstance(log[0], StopAnswer)
    assert model.answers[0] == quiet_model.answers[0]
    # ...and the player's phrase played over it is answered afterwards.
    starts = [a for a in log if isinstance(a, StartAnswer)]
    assert len(starts) == 1 and starts[0].call.notes == 4
    assert starts[0].at == max(over[-1][0] + 0.6, log[0].at)


# --- follow -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", EXCERPTS, ids=lambda p: p.stem)
def test_follow_gives_the_control_vector_of_the_call(path):
    notes = cut(path, 4.0, 6.0)
    duet = Duet(conditioned=True)
    log = drive(duet, timeline(notes, 50.0), until=60.0)
    [start] = of(log, StartAnswer)
    expected = codec.control_vector(codec.notes_to_tokens(notes))
    assert start.control.dtype == np.float32 and start.control.shape == (codec.CONTROL_DIM,)
    np.testing.assert_array_equal(start.control, expected)
    assert start.control[1:].sum() == pytest.approx(1.0)
    # Off with follow=False, and for an unconditioned model.
    for duet in (Duet(DuetSettings(follow=False), conditioned=True), Duet()):
        assert of(drive(duet, timeline(notes, 50.0), until=60.0), StartAnswer)[0].control is None


def test_follow_with_keys_still_down_at_the_control():
    notes = cut(EXCERPTS[2], 1.0, 4.0)
    stop_at = 2.0
    duet = Duet(conditioned=True)
    events = [e for e in timeline(notes, 0.0) if e[0] <= stop_at]
    [start] = of(drive(duet, events, until=stop_at, controls=[stop_at]), StartAnswer)
    held = [codec.Note(n.pitch, n.velocity, n.start, min(n.end, stop_at)) for n in notes
            if n.start <= stop_at]
    held = [n for n in held if n.end > n.start or n.end == stop_at]
    expected = codec.control_vector(codec.notes_to_tokens(held))
    np.testing.assert_array_equal(start.control, expected)


def test_player_events_from_the_listener():
    from livepiano.live.listener import PedalEncoder

    enc = PedalEncoder()
    duet = Duet()
    msgs = [(0.0, [0x90, 60, 80]), (0.1, [0xB0, 64, 127]), (0.2, [0x80, 60, 0]),
            (0.3, [0x90, 64, 80]), (0.4, [0x80, 64, 0]), (2.0, [0xB0, 64, 0])]
    for t, m in msgs:
        assert duet.on_player_events(enc.feed(m, t)) == []
        assert duet.tick(t + 0.59) == []  # the pedal holds the notes: the call goes on
    [start] = duet.tick(2.6)
    assert start.call.end == 2.0 and start.call.notes == 2


# --- properties over random timelines -------------------------------------------------------------

PITCHES = st.integers(min_value=58, max_value=63)
OPS = st.one_of(
    *[st.tuples(st.just("on"), PITCHES)] * 3,
    *[st.tuples(st.just("release"), st.integers(0, 5))] * 3,  # one of the keys down, if any
    st.tuples(st.just("off"), PITCHES),  # any key, down or not
    st.tuples(st.just("pedal"), st.booleans()),
    st.tuples(st.just("control"), st.just(0)),
    st.tuples(st.just("tick"), st.just(0)),
)
GAPS = st.sampled_from([0.0, 0.005, 0.05, 0.1, 0.2, 0.3, 0.59, 0.6, 0.61, 1.0, 2.5, 7.0, 20.0])


def random_model_tokens(seed: int, n: int = 600) -> list[int]:
    """A model's stream: a few voices at a time, now and then all released (a pause)."""
    rng = random.Random(seed)
    out, voices = [], []
    for _ in range(n):
        r = rng.random()
        if voices and (r < 0.3 or len(voices) > 3):
            out.append(codec.note_off(voices.pop(rng.randrange(len(voices)))))
        elif r < 0.55:
            p = rng.randint(48, 84)
            out.append(codec.note_on(p))
            voices.append(p)
        elif r < 0.6:
            out.append(codec.velocity_event(rng.randint(1, 32)))
        else:
            out.append(codec.shift(rng.choice([1, 3, 10, 25, 60, 100])))
    return out


class Referee:
    """Checks every action the duet returns against the rules, keeping its own view of the
    keys and the pedal."""

    def __init__(self, duet: Duet, uses_control: bool):
        self.duet = duet
        self.s = duet.settings
        self.uses_control = uses_control
        self.keys: set[int] = set()
        self.pedal = False
        self.last_event = -math.inf
        self.phase = "listen"  # listen -> answer (StartAnswer) -> stopped (StopAnswer) -> listen
        self.stops = 0
        self.answer: StartAnswer | None = None
        self.pressed_in_answer = False
        self.starts = 0
        self.listens = 0

    def event(self, kind, value, t):
        if kind == "on":
            self.keys.add(value)
        elif kind == "off":
            if value in self.keys:
                self.keys.discard(value)
                self.last_event = t
            return
        elif kind == "pedal":
            if value != self.pedal:
                self.pedal = value
                self.last_event = t
            return
        self.last_event = t
        if self.phase != "listen":
            self.pressed_in_answer = True

    def check(self, actions, t, control: bool = False):
        for a in actions:
            if isinstance(a, StartAnswer):
                assert self.phase == "listen", "an answer started during an answer"
                self.phase, self.stops, self.answer = "answer", 0, a
                self.pressed_in_answer = False
                self.starts += 1
                assert self.s.min_answer <= a.length_s <= self.s.max_answer
                if a.call.by_control is None:
                    assert not self.keys and not self.pedal, "answer during the call"
                    assert a.at >= self.last_event + self.s.wait - 1e-9
                    assert a.call.notes >= self.s.min_call_notes
                    assert a.call.length >= self.s.min_call_s - 1e-9
                else:
                    assert a.call.notes >= 1
                assert a.at <= t + 1e-9
            elif isinstance(a, StopAnswer):
                assert self.phase in ("answer", "stopped"), "a stop with no answer"
                assert self.stops == 0 or a.reason == "barge-in"
                assert self.answer.at <= a.at <= self.answer.at + self.answer.length_s \
                    + self.s.grace + 1e-9
                if a.reason == "natural":
                    assert a.release == ()
                    if self.s.barge_in != "finish":
                        assert a.at >= self.answer.at + self.answer.length_s - 1e-9
                self.phase = "stopped"
                self.stops += 1
            elif isinstance(a, Listen):
                assert self.phase == "stopped" and self.stops >= 1, "listen without a stop"
                self.phase = "listen"
                self.listens += 1
            else:
                assert isinstance(a, IgnoreCall)
                assert self.phase == "listen" or self.s.barge_in != "stop"
        # The duet's state agrees with the turns it announced.
        expected = {"listen": LISTEN, "answer": ANSWER, "stopped": ENDING}[self.phase]
        assert self.duet.state == expected
        if self.s.barge_in == "stop" and self.duet.state != LISTEN:
            # Never answering while a key pressed during the answer is down; and without the
            # control, never answering while any key is down at all.
            assert not self.pressed_in_answer
            if not self.uses_control:
                assert not self.keys, f"answering with keys {sorted(self.keys)} down"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(GAPS, OPS), min_size=5, max_size=80), mode=st.sampled_from(BARGE_IN),
       seed=st.integers(0, 2**16), min_call_notes=st.integers(1, 3),
       min_call_s=st.sampled_from([0.0, 0.3, 1.0]), wait=st.sampled_from([0.2, 0.6, 1.5]),
       clamp=st.sampled_from([(2.0, 16.0), (0.5, 1.0), (3.0, 3.0)]),
       grace=st.sampled_from([0.0, 0.5, 2.0]))
def test_turns_alternate_and_every_answer_ends(ops, mode, seed, min_call_notes, min_call_s,
                                               wait, clamp, grace):
    s = DuetSettings(wait=wait, min_call_notes=min_call_notes, min_call_s=min_call_s,
                     min_answer=clamp[0], max_answer=clamp[1], grace=grace, barge_in=mode)
    duet = Duet(s, conditioned=bool(seed % 2))
    ref = Referee(duet, uses_control=any(op[0] == "control" for _, op in ops))
    model = ModelStream(random_model_tokens(seed), lookahead=0.1)
    t = 0.0

    def advance(to):
        # Time passes on a 50 ms grid and at the duet's deadlines; the model plays meanwhile.
        nonlocal t
        while t < to:
            d = duet.deadline()
            t = min(to, t + 0.05, d if d is not None and d > t else math.inf)
            acts = duet.tick(t)
            for a in acts:
                if isinstance(a, StartAnswer):
                    model.start(t)
            ref.check(acts, t)
            ref.check(model.run(duet, t), t)

    for gap, (kind, value) in ops:
        advance(t + gap)
        if kind == "tick":
            continue
        if kind == "release":
            if not ref.keys:
                continue
            kind, value = "off", sorted(ref.keys)[value % len(ref.keys)]
        if kind == "control":
            acts = duet.on_end_of_call_control(t)
        else:
            ref.event(kind, value, t)
            acts = duet.on_player_event(kind, value, t, 80)
        for a in acts:
            if isinstance(a, StartAnswer):
                model.start(t)
        ref.check(acts, t)
        ref.check(model.run(duet, t), t)
    # The player lets go; every answer that started ends, and the turn comes back.
    for p in sorted(ref.keys):
        ref.event("off", p, t)
        ref.check(duet.on_player_event("off", p, t), t)
    ref.event("pedal", False, t)
    ref.check(duet.on_player_event("pedal", 0, t), t)
    advance(t + s.wait + s.max_answer + s.grace + 1.0)
    advance(t + s.wait + s.max_answer + s.grace + 1.0)  # an answer to the last call, if any
    assert duet.state == LISTEN and ref.phase == "listen"
    assert ref.starts == ref.listens == len(duet.turns)
    assert duet.deadline() is None
    event(f"answers: {min(len(duet.turns), 3)}{'+' if len(duet.turns) > 3 else ''}")
    for turn in duet.turns:
        event(f"an answer ended: {turn.stop_reason} ({mode})")
        assert turn.stop_reason in ("natural", "cap", "barge-in")
        assert turn.answer_start <= turn.end <= turn.over


@settings(max_examples=150, deadline=None)
@given(mode=st.sampled_from(BARGE_IN), seed=st.integers(0, 2**16),
       barge_after=st.floats(0.0, 25.0), lag=st.sampled_from([0.0, 0.001, 0.03]))
@example(mode="finish", seed=491, barge_after=0.0, lag=0.0)  # a pause after 3.6 + 0.1 s
def test_barge_in_at_any_moment(mode, seed, barge_after, lag):
    """A note-on at any moment of an answer: ``stop`` ends it there with exactly the voices then
    sounding; ``finish`` ends it at its first pause from then on, or ``grace`` later; ``overlap``
    changes nothing. The note is the start of the next call in every mode."""
    s = DuetSettings(barge_in=mode)
    duet = Duet(s)
    for t, kind, pitch in [(0.0, "on", 60), (0.2, "on", 64), (2.9, "off", 60), (3.0, "off", 64)]:
        duet.on_player_event(kind, pitch, t)
    model = ModelStream(random_model_tokens(seed))
    [start] = duet.tick(3.6)
    model.start(3.6)
    clock, barge, log = 3.6, 3.6 + barge_after, []
    while clock < barge - lag:  # the note arrives ``lag`` after the last tick
        clock = min(clock + 0.01, barge - lag)
        log += duet.tick(clock) + model.run(duet, clock)
    played = list(model.played)
    by_then = copy.deepcopy(duet)
    settled = by_then.tick(barge)  # what time alone does by the barge-in
    actions = duet.on_player_event("on", 70, barge, 90)
    assert duet.call is not None and duet.call.start == barge and duet.call.notes == 1
    if by_then.state == LISTEN:  # the answer was over by then: no barge-in
        assert actions == settled and duet.state == LISTEN
        return
    cap = start.at + start.length_s + s.grace
    if mode == "stop":
        stop = actions[0]
        end = log[0].at if log else math.inf  # a natural end decided before the barge-in
        assert stop.reason == "barge-in" and stop.at == barge < min(end, cap) + 1e-9
        assert list(stop.release) == sounding(played, barge)
        assert actions[1:] == [Listen(barge)] and duet.state == LISTEN
    elif mode == "overlap" or log:
        assert actions == [] and duet.state in (ANSWER, ENDING)
    else:
        while duet.state == ANSWER:
            clock += 0.01
            actions += duet.tick(clock) + model.run(duet, clock)
        stop = actions[0]
        played = model.answers[0]
        assert barge <= stop.at <= min(barge + s.grace, cap) + 1e-9
        if stop.reason == "natural":
            assert stop.release == () and stop.at == pytest.approx(first_silence(played, barge))
        else:
            assert stop.reason == "cap" and list(stop.release) == sounding(played, stop.at)


def test_taken_back_events_are_forgotten():
    """In ``overlap`` the engine loop takes back the look-ahead when the player plays and the
    model samples again: the duet's view of the answer follows."""
    duet = Duet(DuetSettings(barge_in="overlap"))
    for t, kind, pitch in [(0.0, "on", 60), (0.5, "on", 62), (1.0, "off", 60), (1.0, "off", 62)]:
        duet.on_player_event(kind, pitch, t)
    [start] = duet.tick(1.6)
    stream = [(1.6, codec.note_on(60)), (1.7, codec.shift(10)), (1.7, codec.note_on(64)),
              (1.8, codec.shift(10)), (1.8, codec.note_off(60)), (1.9, codec.shift(10)),
              (1.9, codec.note_on(67))]
    for t, tok in stream:
        assert duet.on_model_event(tok, t) == []
    assert duet.on_player_event("on", 72, 1.75) == []
    duet.on_take_back(1.7)  # 60 and 64 sounding again, 67 never played
    assert duet.turns[0].notes == 2
    # The model samples on differently: both notes end, then a pause after the target.
    again = [(1.75, codec.shift(5)), (1.75, codec.note_off(64)), (1.75, codec.note_off(60)),
             (2.75, codec.shift(100)), (3.75, codec.shift(100))]
    actions = []
    for t, tok in again:
        actions += duet.on_model_event(tok, t)
    [stop] = actions
    assert stop == StopAnswer("natural", start.at + start.length_s, ())
    # Taking everything back leaves an answer with no note yet.
    duet2 = Duet()
    duet2.on_player_event("on", 60, 0.0)
    duet2.on_player_event("on", 62, 0.5)
    duet2.on_player_event("off", 60, 1.0)
    duet2.on_player_event("off", 62, 1.0)
    duet2.tick(1.6)
    duet2.on_model_event(codec.note_on(60), 1.65)
    duet2.on_take_back(1.6)
    assert duet2.awaiting_first_note and duet2.turns[0].notes == 0


def test_a_real_engine_answers_in_turn(tiny_model):
    """The recipe the engine loop follows, in simulated time, with a real (small) model: the
    player's events prime the engine; at StartAnswer the silence is primed and time-shifts
    are masked until the answer's first note; each sampled token goes to the duet, and the
    one that ends the answer is taken back; at the cap the sounding voices are released."""
    from livepiano.live.listener import PlayerEvent, StreamPosition, player_tokens
    from livepiano.runtime.engine import Engine

    for seed, path in [(1, EXCERPTS[0]), (2, EXCERPTS[3])]:
        engine = Engine(tiny_model, seed=seed)
        duet = Duet()
        notes = cut(path, 1.0, 5.0)
        events = timeline(notes, 0.5)
        end = phrase_end(notes, 0.5)
        now, i, played, stops = 0.0, 0, [], []
        while now < end + 0.6 + 20.0 and not (stops and duet.state == LISTEN):
            now = round(now + 0.01, 6)
            while i < len(events) and events[i][0] <= now:
                t, kind, pitch, vel = events[i]
                ev = PlayerEvent(t, kind == "on", pitch, vel)
                duet.on_player_events([ev])
                engine.prime(player_tokens([ev], StreamPosition.of(engine), 0.0))
                i += 1
            for a in duet.tick(now):
                if isinstance(a, StartAnswer):
                    assert a.at == end + 0.6 and now == pytest.approx(a.at, abs=0.01)
                    behind = round((now - engine.seconds) * codec.STEPS_PER_SECOND)
                    engine.prime(codec.shifts(behind))  # the silence after the call
                    engine.shift_limit = 0  # the answer starts with a note
            while duet.may_generate(now) and engine.seconds < now + 0.1:
                before = engine.snapshot()
                tok = engine.sample()
                actions = duet.on_model_event(tok, engine.seconds)
                if not duet.awaiting_first_note:
                    engine.shift_limit = None
                if not actions:
                    played.append((engine.seconds, tok))
                    continue
                [stop] = actions
                stops.append(stop)
                engine.restore(before)  # the token that ended it is not played
                if stop.release:
                    engine.prime(codec.shifts(round((stop.at - engine.seconds) * 100)))
                    released = engine.release_all()
                    assert sorted(r - codec.NOTE_OFF for r in released) == list(stop.release)
            duet.tick(now)
        [start_turn] = duet.turns
        assert stops and stops[0].reason in ("natural", "cap")
        # It began with a note, at the answer's start.
        assert codec.kind(played[0][1]) in ("on", "velocity")
        assert start_turn.first_note == pytest.approx(start_turn.answer_start, abs=0.011)
        # Every note it played ended by the answer's end; nothing is left sounding.
        assert engine.sounding(own_only=True) == []
        assert all(t <= stops[0].at + 1e-9 for t, _ in played)
        assert stops[0].at <= start_turn.answer_start + start_turn.target + 2.0 + 1e-9


# --- DuetMode on the real engine loop, in simulated time ----------------------------------------

class _SimScheduler:
    """The scheduler's contract without its thread: a message leaves when the simulated clock
    reaches its deadline; ``take_back`` cancels what has not left and releases a note-on that
    has (as ``Scheduler._take_back`` does)."""

    def __init__(self, clock):
        self.clock = clock
        self.heap: list = []
        self.sent: list[tuple[float, list[int]]] = []
        self._sent_tags: dict = {}
        self._seq = 0

    def schedule(self, deadline, message, tag=None):
        self._seq += 1
        self.heap.append((deadline, self._seq, list(message), tag))
        self.heap.sort(key=lambda x: (x[0], x[1]))

    def take_back(self, tags):
        tags = set(tags)
        self.heap = [x for x in self.heap if x[3] not in tags]
        for tag in tags:
            m = self._sent_tags.pop(tag, None)
            if m is not None and m[0] & 0xF0 == 0x90 and m[2] > 0:
                self.sent.append((self.clock(), [0x80, m[1], 0]))

    def run_until(self, t):
        while self.heap and self.heap[0][0] <= t:
            deadline, _, m, tag = self.heap.pop(0)
            self.sent.append((max(deadline, self.clock() - 0.001), m))  # late by < 1 ms
            if tag is not None:
                self._sent_tags[tag] = m


def _sim_duet(model, events, until, *, settings=None, pedal=(), seed=3):
    """A real Engine in a real EngineLoop with a DuetMode, driven on a 1 ms grid as the
    engine thread would drive it: player events (time, kind, pitch, velocity) through the
    loop's inbox handling, pedal (time, down) through the mode's hook, sampling while the
    stream is less than the look-ahead ahead. Returns (mode, messages sent)."""
    from livepiano.live.duet_mode import DuetMode
    from livepiano.live.listener import PlayerEvent
    from livepiano.live.loop import EngineLoop
    from livepiano.runtime.engine import Engine

    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    sched = _SimScheduler(clock)
    mode = DuetMode(settings or DuetSettings())
    loop = EngineLoop(Engine(model, seed=seed), sched, origin=0.0, lookahead=0.1, mode=mode,
                      clock=clock)
    timed = sorted([(t, 0, (kind, pitch, vel)) for t, kind, pitch, vel in events]
                   + [(t, 1, down) for t, down in pedal], key=lambda x: (x[0], x[1]))
    i = 0
    for ms in range(int(until * 1000)):
        now[0] = t = ms / 1000
        sched.run_until(t)
        while i < len(timed) and timed[i][0] <= t:
            at, is_pedal, what = timed[i]
            if is_pedal:
                mode.pedal(what, at)
            else:
                kind, pitch, vel = what
                loop._take([PlayerEvent(at, kind == "on", pitch, vel if kind == "on" else 0)])
            i += 1
        mode.tick(t)
        while mode.may_generate(t) and loop.stream_time() - t < loop.lookahead:
            if loop.stream_time() < t:
                loop.forget_pending()
                loop.engine.prime(codec.shifts(int((t - loop.stream_time()) / STEP + 1)))
            loop._step(t)
    sched.run_until(until + 10)
    return mode, sched.sent


def _model_notes(sent):
    """(pitch, on, off or None) of the model's voices in ``sent``."""
    open_, notes = {}, []
    for t, m in sent:
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            open_.setdefault(m[1], []).append(len(notes))
            notes.append([m[1], t, None])
        elif m[0] & 0xF0 in (0x80, 0x90) and open_.get(m[1]):
            notes[open_[m[1]].pop(0)][2] = t
    return notes


def test_duet_mode_answers_after_the_wait_and_releases_everything(tiny_model):
    notes = cut(EXCERPTS[0], 1.0, 3.0)
    events = timeline(notes, 0.5)
    end = phrase_end(notes, 0.5)
    longest = DuetSettings().answer_length(end - 0.5) + DuetSettings().grace
    mode, sent = _sim_duet(tiny_model, events, end + 0.6 + longest + 0.3)
    played = _model_notes(sent)
    assert played and all(off is not None for _, _, off in played), "a model note hangs"
    first = min(on for _, on, _ in played)
    assert end + 0.6 <= first <= end + 0.6 + 0.011  # the opening was sampled ahead
    assert all(on > end for _, on, _ in played)
    [turn] = mode.duet.turns
    assert turn.stop_reason in ("natural", "cap") and turn.over is not None
    assert max(off for _, _, off in played) <= turn.end + 1e-9
    assert mode.loop.engine.sounding(own_only=True) == []


def test_duet_mode_starts_no_note_once_the_answer_has_its_length(tiny_model):
    """From its target length on, the answer only lets its voices go (the engine's
    ``notes_allowed``), so it ends at a pause rather than being cut at the cap; the next
    turn may play notes again."""
    notes = cut(EXCERPTS[0], 1.0, 3.0)
    events = timeline(notes, 0.5)
    end = phrase_end(notes, 0.5)
    longest = DuetSettings().answer_length(end - 0.5) + DuetSettings().grace
    mode, sent = _sim_duet(tiny_model, events, end + 0.6 + longest + 0.3)
    [turn] = mode.duet.turns
    played = _model_notes(sent)
    assert played and all(off is not None for _, _, off in played)
    target = turn.answer_start + turn.target
    assert max(on for _, on, _ in played) <= target + 0.011
    assert turn.over is not None and mode.loop.engine.notes_allowed


def test_duet_mode_a_pedal_held_in_the_silence_holds_the_answer(tiny_model):
    notes = cut(EXCERPTS[1], 2.0, 2.0)
    events = timeline(notes, 0.5)
    end = phrase_end(notes, 0.5)
    _, sent = _sim_duet(tiny_model, events, end + 4.0,
                        pedal=[(end + 0.2, True), (end + 1.7, False)])
    first = min(on for _, on, _ in _model_notes(sent))
    assert end + 1.7 + 0.6 <= first <= end + 1.7 + 0.6 + 0.011


@pytest.mark.parametrize("early", [0.03, 0.25])
def test_duet_mode_a_note_just_before_the_answer_takes_the_opening_back(tiny_model, early):
    notes = cut(EXCERPTS[2], 1.0, 2.0)
    events = timeline(notes, 0.5)
    end = phrase_end(notes, 0.5)
    late = end + 0.6 - early  # the opening has been sampled (OPENING_LEAD_S)
    events += [(late, "on", 60, 80), (late + 0.3, "off", 60, 0)]
    mode, sent = _sim_duet(tiny_model, events, late + 0.3 + 0.6 + 0.2)
    played = _model_notes(sent)
    # Nothing of the opening sounded; the call went on and was answered as one.
    assert played and min(on for _, on, _ in played) >= late + 0.3 + 0.6
    [turn] = mode.duet.turns
    assert turn.call_start == 0.5 and turn.call_end == late + 0.3


@pytest.mark.parametrize("barge_in", BARGE_IN)
def test_duet_mode_barge_in_at_any_moment_leaves_nothing_hanging(tiny_model, barge_in):
    notes = cut(EXCERPTS[3], 1.0, 2.0)
    events = timeline(notes, 0.5)
    end = phrase_end(notes, 0.5)
    for k, lag in enumerate((0.2, 0.57, 0.61, 1.3)):
        barge = end + 0.6 + lag - 0.6 * (k == 1)  # one barge-in comes during the wait
        call2 = [(barge + 0.05 * j, "on", 64 + j, 70) for j in range(3)]
        call2 += [(barge + 0.6, "off", 64 + j, 0) for j in range(3)]
        # (with overlap, the second call is answered after the first answer: up to 5 s)
        mode, sent = _sim_duet(tiny_model, events + call2, barge + 0.6 + 0.6 + 10.0,
                               settings=DuetSettings(barge_in=barge_in, max_answer=3.0),
                               seed=k)
        played = _model_notes(sent)
        assert all(off is not None for _, _, off in played), (barge_in, lag, played)
        assert mode.loop.engine.sounding(own_only=True) == []
        assert mode.duet.turns and all(t.over is not None for t in mode.duet.turns)
        if barge_in == "stop":  # silent at once: nothing of the first answer sounds on
            assert not [n for n in played if n[1] < barge and n[2] > barge + 0.002]
            assert not [n for n in played if barge < n[1] < barge + 0.6 + 0.6]


def test_play_settings_reach_the_duet_mode():
    from livepiano.live.modes import make_mode
    from livepiano.settings import schema

    s = schema.merge(schema.defaults(), {"mode": "duet", "wait": 0.8, "min_call": 0.5,
                                         "answer": "3-10", "barge_in": "finish",
                                         "follow": False})
    mode = make_mode(s)
    assert mode.name == "duet"
    assert (mode.settings.wait, mode.settings.min_call_s, mode.settings.min_answer,
            mode.settings.max_answer, mode.settings.barge_in, mode.settings.follow) == \
        (0.8, 0.5, 3.0, 10.0, "finish", False)
    assert make_mode(schema.defaults()).name == "continuous"
    assert schema.validate({"answer": [2, 16]})["answer"] == (2.0, 16.0)
    for bad in ("16-2", "2", "a-b", "0.1-3"):
        with pytest.raises(LivepianoError, match="'answer' .* MIN-MAX seconds"):
            schema.validate({"answer": bad})
    with pytest.raises(LivepianoError, match="'end_of_call_cc'"):
        schema.validate({"end_of_call_cc": 120})


def test_follow_asked_of_an_unconditioned_model_says_so_once(tiny_model):
    from livepiano.live.duet_mode import DuetMode
    from livepiano.live.loop import EngineLoop
    from livepiano.runtime.engine import Engine

    said = []
    mode = DuetMode(DuetSettings(), follow=True, say=said.append)
    EngineLoop(Engine(tiny_model), _SimScheduler(lambda: 0.0), origin=0.0, mode=mode,
               clock=lambda: 0.0)
    assert len(said) == 1 and "pitch classes only" in said[0]
    said.clear()
    EngineLoop(Engine(tiny_model), _SimScheduler(lambda: 0.0), origin=0.0,
               mode=DuetMode(DuetSettings(), follow=None, say=said.append), clock=lambda: 0.0)
    assert said == []


def test_end_of_call_cc_acts_on_the_press_and_passes_every_cc_on():
    from livepiano.live.session import _end_of_call_cc

    class Loop:
        def __init__(self):
            self.ends = []

        def hear_end_of_call(self, t):
            self.ends.append(t)

    loop, seen = Loop(), []
    hook = _end_of_call_cc(67, loop, lambda *a: seen.append(a))
    events = [(67, 127), (67, 127), (67, 0), (1, 100), (67, 90), (67, 100), (67, 10)]
    for t, (cc, value) in enumerate(events):
        hook(0, cc, value, float(t))
    # A button that sends only 127 presses each time; a pedal moving down is one press.
    assert loop.ends == [0.0, 1.0, 4.0]
    assert len(seen) == len(events)


def test_switching_modes_during_an_opening_gives_the_loop_its_look_ahead_back(tiny_model):
    from livepiano.live.modes import Continuous

    notes = cut(EXCERPTS[0], 1.0, 2.0)
    events = timeline(notes, 0.5)
    end = phrase_end(notes, 0.5)
    mode, _ = _sim_duet(tiny_model, events, end + 0.6 - 0.1)  # the opening is under way
    loop = mode.loop
    assert mode._ahead is not None and loop.lookahead > 0.1
    new = Continuous()
    new.attach(loop)
    assert loop.lookahead == 0.1


@pytest.mark.parametrize("follow", [True, False])
def test_follow_steers_the_answer_by_the_calls_pitch_classes_then_lets_go(tiny_model, follow):
    from livepiano.live.duet import pitch_classes

    notes = cut(EXCERPTS[0], 1.0, 3.0)
    events = timeline(notes, 0.5)
    end = phrase_end(notes, 0.5)
    settings = DuetSettings(follow=follow)
    # Mid-answer: the key bias is the call's pitch classes (its note-ons, as the codec
    # encodes the call), or nothing without follow.
    mode, _ = _sim_duet(tiny_model, events, end + 0.6 + 0.5, settings=settings)
    [turn] = mode.duet.turns
    engine = mode.loop.engine
    if follow:
        counts = np.bincount([n.pitch % 12 for n in notes], minlength=12)
        np.testing.assert_allclose(engine.key_bias, counts / counts.sum())
        assert pitch_classes(mode.log[0][1].call.tokens()) == tuple(counts)
    else:
        assert engine.key_bias is None
    # After the answer the turn is the player's, and the model is no longer steered.
    longest = settings.answer_length(end - 0.5) + settings.grace
    mode, _ = _sim_duet(tiny_model, events, end + 0.6 + longest + 0.3, settings=settings)
    assert mode.duet.turns[0].over is not None and mode.loop.engine.key_bias is None



def test_each_call_is_heard_from_a_fresh_state(tiny_model):
    notes = cut(EXCERPTS[0], 1.0, 3.0)
    events = timeline(notes, 0.5)
    end = phrase_end(notes, 0.5)
    # Mid-answer the model's state is what hearing the call and answering made it.
    mode, _ = _sim_duet(tiny_model, events, end + 0.6 + 0.5)
    assert mode.loop.engine.state()[0].any()
    # The turn back to the player: a fresh state for the next call.
    longest = DuetSettings().answer_length(end - 0.5) + DuetSettings().grace
    mode, _ = _sim_duet(tiny_model, events, end + 0.6 + longest + 0.3)
    assert mode.duet.turns[0].over is not None
    h, c = mode.loop.engine.state()
    assert not h.any() and not c.any()
