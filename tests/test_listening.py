"""The model listens to what it heard: `generate --primer` aims at the primer's density and
gives a conditioned model the primer's density and pitch classes; continuous mode leans the
model's note-ons toward the pianist's latest pitch classes and gives a conditioned model the
pianist's density and pitch classes; a density (or key) the user set wins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livepiano.core import codec
from livepiano.live import controls, knobs
from livepiano.live.listener import PlayerEvent
from livepiano.live.loop import EngineLoop
from livepiano.live.mode import Continuous
from livepiano.live.modes import make_mode
from livepiano.runtime import steering
from livepiano.runtime.engine import Engine
from livepiano.runtime.offline import generate, prepare
from livepiano.settings import params, schema
from livepiano.tools.bench import music

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "performance_rnn.onnx"
ALONE = params.PARAMS["density"].default


def _primer(rate: float, pitches, seconds: float = 10.0) -> list[int]:
    """Tokens of notes at ``rate`` notes/s cycling through ``pitches``, 0.1 s each."""
    count = int(rate * seconds)
    notes = [codec.Note(pitches[i % len(pitches)], 80, i / rate, i / rate + 0.1)
             for i in range(count)]
    tokens = codec.notes_to_tokens(notes)
    rest = int(seconds * 100) - codec.duration_steps(tokens)
    return tokens + (codec.shifts(rest) if rest > 0 else [])


# --- Listening on its own --------------------------------------------------------------------

def test_listening_leans_toward_the_latest_note_ons_and_the_notes_still_sounding():
    lis = steering.Listening(lean_window=1.0, heard_window=5.0)
    assert lis.lean() is None and lis.rate(0.0) == 0.0
    lis.hear(0.0, 60)  # C, held on
    lis.hear(0.2, 67)
    lis.hear(0.3, 67, on=False)  # G let go
    lean = lis.lean()
    assert lean[0] == pytest.approx(2 / 3) and lean[7] == pytest.approx(1 / 3)
    assert lis.forget(1.5) == 2  # out of the lean window, still in the heard one
    lean = lis.lean()  # the note-ons are over a second old: the held C alone
    assert lean[0] == 1.0 and lean.sum() == pytest.approx(1.0)
    lis.hear(1.6, 60, on=False)
    assert lis.lean() is None  # nothing recent, nothing sounding
    # the control: the note-ons of the heard window, its density and pitch classes
    c = lis.control(1.6, alone=10.0)
    assert c[0] == pytest.approx(2 / 1.6 / 10) and c[1] == pytest.approx(0.5)
    lis.forget(6.0)
    c = lis.control(6.0, alone=10.0)  # silence: alone, flat
    assert c[0] == pytest.approx(1.0) and c[1] == pytest.approx(1 / 12)
    lis.density = 3.0
    lis.key = np.asarray(params.key_histogram("D major"))
    lis.hear(7.0, 61)
    c = lis.control(7.0, alone=10.0)
    assert c[0] == pytest.approx(0.3) and np.allclose(c[1:], lis.key)
    assert np.allclose(lis.lean(), lis.key)


# --- generate --primer ------------------------------------------------------------------------

def test_the_control_and_the_density_target_follow_the_primer():
    engine = Engine(SHIPPED, seed=1)
    assert engine.conditioned
    slow_c_e = _primer(2.5, [60, 64])
    prepare(engine, slow_c_e)
    assert engine.steering.target == pytest.approx(2.5, abs=0.1)
    assert engine.control[0] == pytest.approx(0.25, abs=0.01)
    assert engine.control[1] == pytest.approx(0.52) and engine.control[5] == pytest.approx(0.48)
    key = engine.key_bias  # 13 Cs and 12 Es
    assert key[0] == pytest.approx(0.52) and key[4] == pytest.approx(0.48)
    assert engine.probabilities()[codec.NOTE_ON + 61] < engine.probabilities()[codec.NOTE_ON + 60]

    engine = Engine(SHIPPED, seed=1)
    prepare(engine, _primer(18.0, [62, 66, 69]))
    assert engine.steering.target == pytest.approx(18.0, abs=0.5)
    assert engine.control[0] == pytest.approx(1.8, abs=0.05)
    assert engine.control[1 + 2] == pytest.approx(1 / 3)

    engine = Engine(SHIPPED, seed=1)  # --density wins over the primer's, its key stays
    prepare(engine, slow_c_e, density=12.0)
    assert engine.steering.target == 12.0 and engine.control[0] == pytest.approx(1.2)
    assert engine.control[1] == pytest.approx(0.52)

    engine = Engine(SHIPPED, seed=1)  # no primer: as before, the default and no key
    prepare(engine, ())
    assert engine.steering.target == ALONE and engine.key_bias is None
    assert np.allclose(engine.control, steering.conditioning(ALONE))


def test_a_continuation_plays_about_as_densely_as_its_primer():
    rates = {}
    for rate in (3.0, 16.0):
        primer = _primer(rate, [60, 64, 67, 72])
        engine = Engine(SHIPPED, seed=2)
        prepare(engine, primer)
        g = generate(engine, 20.0, primer)
        rates[rate] = len(g.generated_notes()) / 20.0
    assert rates[3.0] < 6.0 < 10.0 < rates[16.0], rates


# --- continuous mode -----------------------------------------------------------------------------

def _session(seed=1, **settings):
    engine = Engine(SHIPPED, seed=seed)
    s = dict(schema.defaults(), mode="continuous", **settings)
    steering.configure(engine, s, accompany=True)
    return music.SimSession(engine, make_mode(s))


def _pianist(pitches, start, seconds, rate=6.0):
    n = int(rate * seconds)
    return [(start + i / rate, start + i / rate + 0.3, pitches[i % len(pitches)], 70)
            for i in range(n)]


def test_continuous_mode_follows_the_pianists_recent_pitch_classes_and_density():
    sim = _session()
    assert isinstance(sim.loop.mode, Continuous) and sim.loop.mode.listening is not None
    c_g = _pianist([48, 55, 60, 67], 0.0, 10.0)
    fs_cs = _pianist([54, 61, 66, 73], 10.0, 10.0, rate=12.0)
    events = music.player_events(c_g + fs_cs)
    sim.run_until(9.9, events)
    engine = sim.loop.engine
    lean = engine.key_bias
    assert lean[0] + lean[7] == pytest.approx(1.0)
    assert engine.control[1] + engine.control[1 + 7] == pytest.approx(1.0)
    assert engine.control[0] == pytest.approx(0.6, abs=0.1)  # 6 notes/s
    sim.run_until(19.9, [e for e in events if e.time > 9.9])
    lean = engine.key_bias
    assert lean[6] + lean[1] == pytest.approx(1.0)
    assert engine.control[1 + 6] + engine.control[1 + 1] == pytest.approx(1.0)
    assert engine.control[0] == pytest.approx(1.2, abs=0.15)  # 12 notes/s
    # the model's note-ons went toward what the pianist played
    mine = [p % 12 for s, _, p in sim.out.notes(20.0) if 11.0 <= s < 20.0]
    assert np.mean([pc in (1, 6) for pc in mine]) > 0.6, mine
    # after the pianist's silence the lean goes and the control is the lone one again
    sim.run_until(30.0, [e for e in events if e.time > 19.9])
    assert engine.key_bias is None
    assert np.allclose(engine.control, steering.conditioning(ALONE))


def test_listening_moves_the_models_notes_toward_the_pianists():
    shares = {}
    for listen in (False, True):
        sim = _session(seed=4, listen=listen)
        sim.run_until(20.0, music.player_events(_pianist([50, 57, 62, 66], 0.0, 20.0)))
        mine = [p % 12 for s, _, p in sim.out.notes(20.0) if s >= 2.0]
        shares[listen] = np.mean([pc in (2, 9, 6) for pc in mine])
    assert shares[True] > shares[False] + 0.2, shares


def test_a_density_the_user_set_wins_in_continuous_mode():
    sim = _session(density=4.0)
    sim.run_until(10.0, music.player_events(_pianist([60, 64, 67], 0.0, 10.0, rate=12.0)))
    assert sim.loop.engine.control[0] == pytest.approx(0.4)
    assert sim.loop.engine.control[1] == pytest.approx(1 / 3)  # the key is still the pianist's


class _Clock:
    t = 0.0

    def __call__(self):
        return self.t


class _Out:
    def send_message(self, message):
        pass


def test_the_density_and_key_knobs_win_over_what_continuous_mode_hears():
    from livepiano.live.scheduler import Scheduler

    clock = _Clock()
    s = dict(schema.defaults(), mode="continuous")
    engine = Engine(SHIPPED, seed=1)
    steering.configure(engine, s, accompany=True)
    loop = EngineLoop(engine, Scheduler(_Out(), clock=clock), origin=0.0, clock=clock,
                      mode=make_mode(s))
    ctl = controls.Controls([params.Binding(params.Control("cc", 1, 22), "density"),
                             params.Binding(params.Control("cc", 1, 23), "key")])
    kn = knobs.Knobs(ctl, loop, clock=clock)

    def drain():
        while not loop.inbox.empty():
            loop._take(loop.inbox.get_nowait())

    clock.t = 1.0
    loop.hear([PlayerEvent(0.9, True, 60, 80), PlayerEvent(1.0, True, 67, 80)])
    drain()
    assert engine.control[0] == pytest.approx(0.2)  # 2 notes in its first second
    kn.message([0xB0, 22, 0])  # density knob to its lowest: 0.5 notes/s
    drain()
    assert engine.control[0] == pytest.approx(0.05) and engine.steering.target == 0.5
    key = params.PARAMS["key"]
    kn.message([0xB0, 23, round(key.position("E major"))])
    drain()
    assert np.allclose(engine.control[1:], params.key_histogram("E major"))
    assert np.allclose(engine.key_bias, params.key_histogram("E major"))
    clock.t = 2.0
    loop.hear([PlayerEvent(2.0, True, 61, 80)])  # the pianist plays on: the knobs still win
    drain()
    assert engine.control[0] == pytest.approx(0.05)
    assert np.allclose(engine.key_bias, params.key_histogram("E major"))
    kn.message([0xB0, 23, round(key.position(params.FOLLOW))])  # follow: the pianist again
    drain()
    assert engine.key_bias[1] > 0 and engine.key_bias[4] == 0.0
