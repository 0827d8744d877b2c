"""Sampling that holds up for minutes: density steering on a synthetic over-eager model (a
real ONNX file whose logits always favour note-ons), and continuous mode on a simulated
clock through the real EngineLoop with the shipped model: no stuck note across take-backs,
the accompanist following the pianist's density, take-back no longer pushing density."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livepiano.core import codec
from livepiano.live.listener import PlayerEvent
from livepiano.live.mode import Continuous
from livepiano.runtime import steering
from livepiano.runtime.engine import Engine
from livepiano.runtime.offline import generate
from livepiano.settings import params, schema
from livepiano.tools.bench import music

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "performance_rnn.onnx"
DATA = Path(__file__).parent / "data"


def eager_model(path: Path) -> Path:
    """An ONNX model in livepiano's shape whose next-event logits ignore the state: note-ons
    of middle C..B strongly favoured, short time-shifts next, the rest unlikely. Left alone
    it plays far more than 30 notes/s."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    layers, hidden = 1, 4
    row = np.full(codec.VOCAB_SIZE, -4.0, np.float32)
    row[codec.NOTE_ON + 60:codec.NOTE_ON + 72] = 2.0
    row[codec.NOTE_OFF:codec.TIME_SHIFT] = 0.0
    row[codec.TIME_SHIFT:codec.TIME_SHIFT + 5] = 1.5
    table = np.tile(row, (codec.VOCAB_SIZE, 1))
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "token"], ["logits"], axis=0),
         helper.make_node("Identity", ["h"], ["h_out"]),
         helper.make_node("Identity", ["c"], ["c_out"])],
        "eager",
        [helper.make_tensor_value_info("token", TensorProto.INT64, [1, "T"]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [layers, 1, hidden]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [layers, 1, hidden])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "T", codec.VOCAB_SIZE]),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [layers, 1, hidden]),
         helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [layers, 1, hidden])],
        initializer=[numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _rates(tokens_or_notes, seconds):
    notes = tokens_or_notes
    return music.window_rates([n.start_seconds for n in notes], seconds)


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    return eager_model(tmp_path_factory.mktemp("eager") / "eager.onnx")


def test_density_steering_holds_an_over_eager_model_near_its_target(eager):
    alone = generate(Engine(eager, seed=1), 20)
    assert min(_rates(alone.generated_notes(), 20)) > 30.0  # what it does unsteered

    engine = Engine(eager, seed=1)
    engine.steering = steering.DensitySteering(8.0)
    g = generate(engine, 90)
    rates = _rates(g.generated_notes(), 90)
    assert all(4.0 <= r <= 12.0 for r in rates[1:]), rates
    assert 6.5 <= float(np.median(rates)) <= 9.5, rates


def test_steering_state_is_part_of_the_snapshot(eager):
    engine = Engine(eager, seed=2)
    engine.steering = steering.DensitySteering(8.0)
    engine.prime([codec.velocity_event(16)])
    for _ in range(300):
        engine.sample()
    snap = engine.snapshot()
    engine.rng = np.random.default_rng(5)
    ahead = [engine.sample() for _ in range(200)]
    bias_after = engine.steering.bias(engine.steps, update=False)
    assert engine.steering.snapshot() != snap.steering  # 200 events moved the controller
    engine.restore(snap)
    assert engine.steering.snapshot() == snap.steering
    # Taken back and sampled again with the same random draws: the same events, the same
    # controller, as if the first 200 had never been.
    engine.rng = np.random.default_rng(5)
    again = [engine.sample() for _ in range(200)]
    assert again == ahead
    assert engine.steering.bias(engine.steps, update=False) == bias_after


def test_truncate_keeps_the_nucleus():
    w = np.array([1.0, 0.5, 0.3, 0.1, 0.05, 0.0])
    steering.truncate(w, top_p=0.8)
    assert w.tolist() == [1.0, 0.5, 0.3, 0.0, 0.0, 0.0]  # 1.5 of 1.95 is under 80 %
    w = np.array([1.0, 0.5, 0.3, 0.1, 0.05])
    steering.truncate(w, min_p=0.2)
    assert w.tolist() == [1.0, 0.5, 0.3, 0.0, 0.0]


def test_configure_reads_the_settings_schema(eager):
    engine = Engine(eager, seed=0)
    s = schema.defaults()
    steering.configure(engine, s, accompany=True)
    assert s["density"] is None  # not set: alone, the knob's default
    assert engine.steering.target == params.PARAMS["density"].default
    assert engine.steering.follow == s["accompany_ratio"]
    steering.configure(engine, dict(s, density=12.0))
    assert engine.steering.target == 12.0 and engine.steering.follow is None
    assert engine.top_p == s["top_p"]
    steering.configure(engine, dict(s, steer=False))
    assert engine.steering is None


# --- continuous mode on a simulated clock, the shipped model --------------------------------

def _pianist(rate: float, seconds: float, start: float = 0.0, pitch0: int = 60):
    """Notes of a pianist at ``rate`` notes/s: a C major scale up and down, 0.2 s each."""
    scale = [0, 2, 4, 5, 7, 9, 11, 12, 11, 9, 7, 5, 4, 2]
    count = int(rate * seconds)
    return [(start + i / rate, start + i / rate + 0.2, pitch0 + scale[i % len(scale)], 70)
            for i in range(count)]


def _session(seed: int, accompany: bool = True, steer: bool = True):
    engine = Engine(SHIPPED, seed=seed)
    steering.configure(engine, dict(schema.defaults(), steer=steer), accompany=accompany)
    return music.SimSession(engine, Continuous())


def test_take_backs_and_kept_silences_leave_no_stuck_note():
    notes = music.file_notes(DATA / "chopin_op10_12.mid")[:200]
    sim = _session(seed=3)
    sim.run_until(20.0, music.player_events(notes))
    assert sim.loop.taken_back > 100  # the take-back path really ran
    sounding: dict[int, list[float]] = {}  # pitch -> start times of its voices, oldest first
    longest = 0.0
    for t, m in sorted(sim.out.sent, key=lambda x: x[0]):
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            sounding.setdefault(m[1], []).append(t)
        elif sounding.get(m[1]):
            longest = max(longest, t - sounding[m[1]].pop(0))
    # what still sounds at the end started less than the engine's cap ago
    left = [t for ts in sounding.values() for t in ts]
    assert all(sim.now - t <= 5.0 + 0.11 for t in left), sounding
    assert longest <= 5.0 + 0.11


def test_the_accompanist_follows_the_pianists_density():
    slow = _pianist(3.0, 20.0)
    fast = _pianist(14.0, 20.0, start=20.0)
    sim = _session(seed=1)
    sim.run_until(40.0, music.player_events(slow + fast))
    rates = music.window_rates([n[0] for n in sim.out.notes(40.0)], 40.0)
    assert rates[1] <= 2 * 3.0, rates  # beside 3 notes/s
    assert rates[3] >= 1.5 * rates[1], rates  # and more beside 14
    assert rates[3] <= steering_target() + 4.0, rates


def steering_target() -> float:
    return steering.alone_density(schema.defaults())


def test_take_back_no_longer_pushes_density():
    notes = music.file_notes(DATA / "chopin_op10_12.mid")
    total = {}
    for keep in (False, True):
        count = 0
        for seed in (1, 2):
            sim = _session(seed, steer=False)
            sim.loop.keep_silence = keep
            sim.run_until(20.0, music.player_events([n for n in notes if n[0] < 20.0]))
            count += len(sim.out.notes(20.0))
        total[keep] = count
    assert total[True] < 0.85 * total[False], total


def test_player_event_type_is_what_the_listener_hands_over():
    ev = music.player_events([(0.0, 0.5, 60, 80)])
    assert ev == [PlayerEvent(0.0, True, 60, 80), PlayerEvent(0.5, False, 60, 0)]


def test_striking_a_blip_again_costs_as_releasing_it():
    s = steering.DensitySteering(10.0)
    s.heard(codec.NOTE_ON + 60, 0, True)
    s.heard(codec.TIME_SHIFT + 4, 0, True)
    offset = s.logits_offset(5, update=False)
    assert offset[codec.NOTE_ON + 60] == pytest.approx(
        offset[codec.NOTE_ON + 62] + steering.BLIP_PENALTY)
    assert s.logits_offset(20, update=False)[codec.NOTE_ON + 60] == pytest.approx(
        s.logits_offset(20, update=False)[codec.NOTE_ON + 62])


def test_releasing_a_blip_costs_more_than_releasing_a_young_note():
    from livepiano.runtime.steering import BLIP_PENALTY, YOUNG_PENALTY, DensitySteering

    s = DensitySteering(10.0)
    s.heard(60, 0, True)
    assert s.logits_offset(5)[codec.NOTE_OFF + 60] == BLIP_PENALTY  # 50 ms old
    assert s.logits_offset(20)[codec.NOTE_OFF + 60] == YOUNG_PENALTY  # 200 ms
    assert s.logits_offset(50)[codec.NOTE_OFF + 60] == 0.0  # 500 ms
    assert BLIP_PENALTY < YOUNG_PENALTY < 0



def test_a_note_on_gains_where_the_player_has_just_struck():
    s = steering.DensitySteering(10.0)
    for step in range(10):  # the engine busier than its target: note-ons cost
        for pitch in (40, 43, 47):
            s.heard(codec.NOTE_ON + pitch, step, True)
        s.heard(codec.TIME_SHIFT, step, True)
    plain = s.logits_offset(10, update=False)[codec.NOTE_ON + 60]
    assert plain < 0
    s.heard(codec.NOTE_ON + 64, 10, False)  # the player strikes at step 10
    after = s.logits_offset(10, update=False)
    assert after[codec.NOTE_ON + 60] == pytest.approx(steering.SYNC_GAIN)
    assert after[codec.VELOCITY + 5] == pytest.approx(steering.SYNC_GAIN)
    kept = s.snapshot()
    s.heard(codec.NOTE_ON + 67, 10, True)  # the engine has struck too: a chord of its own
    assert s.logits_offset(10, update=False)[codec.NOTE_ON + 60] == 0.0
    s.heard(codec.TIME_SHIFT, 10, True)  # the next step: the steering's own bias again
    assert s.logits_offset(11, update=False)[codec.NOTE_ON + 60] < 0
    s.heard(codec.NOTE_ON + 50, 11, True)  # the engine strikes alone: no gain
    assert s.logits_offset(11, update=False)[codec.NOTE_ON + 60] == 0.0
    s.restore(kept)  # a take-back to just after the player's strike
    assert s.logits_offset(10, update=False)[codec.NOTE_ON + 60] == pytest.approx(
        steering.SYNC_GAIN)
    s.heard(codec.TIME_SHIFT, 10, True)  # the loop strikes a step or two after the player
    for step in range(11, 11 + steering.SYNC_STEPS + 2):
        gain = steering.SYNC_GAIN if step - 10 <= steering.SYNC_STEPS else 0.0
        assert s.logits_offset(step, update=False)[codec.NOTE_ON + 60] == pytest.approx(
            s.bias(step, update=False) + gain, abs=1e-5), step


def _struck_with(model_notes, pianist_notes, within: float = 0.03) -> tuple[int, int]:
    """(the model's note-ons within ``within`` s after one of the pianist's, all of them)."""
    onsets = np.array(sorted(n[0] for n in pianist_notes))
    starts = np.array([n[0] for n in model_notes])
    k = np.searchsorted(onsets, starts + 1e-9, side="right") - 1
    gap = np.where(k >= 0, starts - onsets[np.maximum(k, 0)], np.inf)
    return int(np.sum(gap <= within)), len(starts)


def _beside(name: str, seconds: float, join: bool = True, late: float = 0.004):
    """The model's notes in continuous mode (as `play` sets it up) beside ``seconds`` of
    tests/data's ``name``, and that excerpt; the loop hears each of the player's events
    ``late`` s after it was played, as it does through a MIDI port."""
    from livepiano.live.modes import make_mode

    notes = music.file_notes(DATA / name)
    part = music.excerpt(notes, notes[0][0], seconds)
    engine = Engine(SHIPPED, seed=1)
    steering.configure(engine, schema.defaults(), accompany=True)
    sim = music.SimSession(engine, make_mode(dict(schema.defaults(), mode="continuous")))
    sim.loop.join_onsets = join
    sim.loop.clock = lambda: sim.now + late
    sim.run_until(seconds, music.player_events(part))
    return sim.out.notes(seconds), part


def test_the_accompanist_strikes_with_the_pianist(monkeypatch):
    """Inside a silence it had chosen, the model may strike when the pianist does (the loop
    samples its note-ons there, the steering favours them): more of its notes begin with the
    pianist's than with either half alone, and no more of them are blips than a pianist's."""
    def figures(join: bool, gain: float) -> tuple[float, float]:
        monkeypatch.setattr(steering, "SYNC_GAIN", gain)
        struck = total = short = 0
        for name in ("chopin_op10_12.mid", "scarlatti_k525.mid"):
            model, part = _beside(name, 30.0, join)
            a, b = _struck_with(model, part)
            struck, total = struck + a, total + b
            short += sum(e - s < 0.1 for s, e, _ in model)
        return struck / total, short / total

    both, short = figures(True, steering.SYNC_GAIN)
    assert both >= figures(False, steering.SYNC_GAIN)[0] + 0.06
    assert both >= figures(True, 0.0)[0] + 0.06
    assert short <= 0.45  # only note-ons join: letting a release join too made it 0.55


def test_the_loop_never_schedules_a_note_in_the_past():
    """The model striking with the player answers a note-on whose step is already past by
    the time the loop hears it: its notes go out after the loop's clock, never late."""
    from livepiano.live.modes import make_mode

    notes = music.file_notes(DATA / "scarlatti_k525.mid")
    part = music.excerpt(notes, notes[0][0], 20.0)
    engine = Engine(SHIPPED, seed=1)
    steering.configure(engine, schema.defaults(), accompany=True)
    sim = music.SimSession(engine, make_mode(dict(schema.defaults(), mode="continuous")))
    sim.loop.clock = lambda: sim.now + 0.004  # it hears each event 4 ms after it was played
    scheduled = []
    schedule = sim.out.schedule

    def record(deadline, message, tag=None):
        scheduled.append((deadline, sim.loop.clock()))
        schedule(deadline, message, tag)

    sim.out.schedule = record
    sim.run_until(20.0, music.player_events(part))
    assert len(scheduled) > 200
    assert all(deadline >= now for deadline, now in scheduled)
