"""The knobs wired into a play session, without JACK: a real engine (the tiny test model), the
real engine loop and scheduler, driven by hand on a fake clock; the example controls file; the
`controls` and `learn` commands' checks; the settings keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from jackserver import tiny_model  # noqa: F401 (a fixture)

from livepiano import LivepianoError
from livepiano.live import controls, knobs
from livepiano.live.loop import EngineLoop
from livepiano.live.modes import Continuous
from livepiano.live.scheduler import Scheduler
from livepiano.settings import bindings, files, params, schema

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "controls.yaml"
KNOB = params.Control("cc", 1, 21)


class Out:
    def __init__(self):
        self.sent = []

    def send_message(self, message):
        self.sent.append(list(message))


class Clock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def rig(model, bindings=(), tmp_path=None, **kw):
    """(knobs, loop, scheduler, out, clock): nothing runs; ``run(loop)`` drains its inbox."""
    from livepiano.runtime.engine import Engine

    clock = Clock()
    out = Out()
    scheduler = Scheduler(out, clock=clock)
    loop = EngineLoop(Engine(model, seed=3), scheduler, origin=0.0, lookahead=0.1, clock=clock)
    ctl = controls.Controls([params.Binding(c, p) for c, p in bindings] or
                     [params.Binding(KNOB, "temperature")], **kw)
    path = tmp_path / "controls.yaml" if tmp_path is not None else None
    return knobs.Knobs(ctl, loop, path=path, clock=clock), loop, scheduler, out, clock


def drain(loop):
    """Run what reached the engine loop's inbox, as its thread would."""
    while not loop.inbox.empty():
        loop._take(loop.inbox.get_nowait())


def drain_scheduler(scheduler):
    while not scheduler.inbox.empty():
        scheduler._take(scheduler.inbox.get_nowait())


def generate_ahead(loop, seconds):
    """Sample as the loop would if the clock stood still and the look-ahead were unbounded."""
    while loop.stream_time() < seconds:
        loop._step(loop.clock())


def test_the_example_controls_file_loads():
    found = bindings.read(EXAMPLE, missing_ok=False)
    assert found.takeover == "jump"
    bound = {b.param: b.control for b in found.bindings}
    assert bound["temperature"] == params.Control("cc", 1, 70)
    assert bound["panic"] == params.Control("note", 10, 43)
    assert {b.param for b in found.bindings} >= {"temperature", "density", "key", "dynamics",
                                                  "mode", "end_of_call", "panic", "learn"}
    assert len(controls.from_file(found).describe()) == len(found.bindings)


def test_a_temperature_knob_rewinds_the_unheard_look_ahead_without_a_reset(tiny_model):
    kn, loop, scheduler, _, clock = rig(tiny_model)
    generate_ahead(loop, 2.0)  # as if a long silence had been sampled far ahead
    steps_before = loop.engine.steps
    assert loop.stream_time() >= 2.0
    clock.t = 0.5
    kn.on_control(0, 21, 127, clock.t)  # the listener's hook -> loop.call
    assert loop.engine.temperature == 1.0  # nothing happens off the engine thread
    drain(loop)
    assert loop.engine.temperature == 2.0
    # the events beyond now + look-ahead were taken back, the rest kept: no reset
    assert loop.stream_time() <= clock.t + loop.lookahead
    assert 0 < loop.engine.steps < steps_before and loop.taken_back > 0
    h, c = loop.engine.state()
    assert np.abs(h).sum() > 0 and np.abs(c).sum() > 0
    assert kn.tick() == [("temperature 2.00", False)]
    assert kn.status() == "temperature 2.00"


def test_a_knob_change_wakes_the_main_thread_to_show_it(tiny_model):
    import threading

    kn, loop, _, _, clock = rig(tiny_model)
    woken = threading.Event()
    kn.notify = woken.set  # as the session does: its main thread waits on this
    kn.on_control(0, 21, 32, clock.t)
    assert not woken.is_set()  # not before the engine thread has applied it
    drain(loop)
    assert woken.is_set() and kn.tick() == [(kn.status(), False)]


def test_density_and_key_on_an_unconditioned_model_say_so_once(tiny_model):
    kn, loop, *_ = rig(tiny_model, [(params.Control("cc", 1, 22), "density"),
                                    (params.Control("cc", 1, 23), "key")])
    assert not loop.engine.conditioned
    for number, value in ((22, 10), (22, 20), (23, 70)):
        kn.message([0xB0, number, value])
    drain(loop)
    lines = kn.tick()
    notices = [t for t, said in lines if "unconditioned" in t]
    assert len(notices) == 1 and lines[0][1] is True
    assert loop.engine.control is None


def test_dynamics_scales_the_velocities_the_loop_sends(tiny_model):
    kn, loop, scheduler, *_ = rig(tiny_model, [(params.Control("cc", 1, 24), "dynamics")])
    kn.message([0xB0, 24, 0])
    drain(loop)
    assert loop.velocity_scale == 0.5
    generate_ahead(loop, 3.0)
    drain_scheduler(scheduler)
    velocities = [m[2] for _, _, m, _ in scheduler._heap if m[0] & 0xF0 == 0x90]
    assert velocities and max(velocities) <= 64


def test_panic_releases_what_sounds_and_the_session_goes_on(tiny_model):
    kn, loop, scheduler, out, clock = rig(tiny_model, [(params.Control("note", 10, 43), "panic")])
    scheduler._take((None, [0x90, 60, 100], None))  # sounding now (an echoed note)
    generate_ahead(loop, 2.0)
    drain_scheduler(scheduler)
    assert scheduler.pending() > 0
    kn.message([0x99, 43, 100])  # the pad
    drain(loop)
    assert loop.engine.sounding(own_only=True) == []
    drain_scheduler(scheduler)
    assert scheduler.pending() == 0 and not scheduler.sounding
    assert [0x80, 60, 0] in out.sent and [0xB0, 123, 0] in out.sent
    # not the final panic: the scheduler still plays what comes next
    scheduler._take((None, [0x90, 62, 90], None))
    assert out.sent[-1] == [0x90, 62, 90]
    assert ("panic", False) in kn.tick()


def test_a_binding_learned_during_play_is_saved_from_the_main_thread(tiny_model, tmp_path):
    kn, loop, *_ = rig(tiny_model, tmp_path=tmp_path)
    kn.learn("dynamics")
    drain(loop)
    kn.message([0xB0, 30, 10])  # first value of an unseen CC: no binding
    kn.message([0xB0, 30, 12])
    drain(loop)
    assert not (tmp_path / "controls.yaml").exists()  # the engine thread wrote nothing
    lines = kn.tick()
    assert lines[0] == ("learn dynamics: move a knob or fader", True)
    assert lines[1][0].endswith(f"saved to {tmp_path / 'controls.yaml'}") and lines[1][1]
    saved = bindings.read(tmp_path / "controls.yaml")
    assert {(b.control, b.param) for b in saved.bindings} == {
        (KNOB, "temperature"), (params.Control("cc", 1, 30), "dynamics")}


def test_the_mode_toggle_swaps_the_loops_mode(tiny_model):
    made = []

    class Other(Continuous):
        name = "duet"

    def make(name, say):
        made.append(name)
        return Other() if name == "duet" else Continuous()

    kn, loop, *_ = rig(tiny_model, [(params.Control("note", 10, 36), "mode")])
    kn.make_mode = make
    kn.message([0x99, 36, 100])
    drain(loop)
    assert loop.mode.name == "duet" and made == ["duet"]
    kn.message([0x99, 36, 100])
    drain(loop)
    assert loop.mode.name == "continuous"


def test_pickup_ignores_the_knob_and_the_status_line_says_how_to_catch_it(tiny_model):
    kn, loop, *_ = rig(tiny_model, takeover="pickup")
    kn.message([0xB0, 21, 10])
    kn.message([0xB0, 21, 20])
    drain(loop)
    assert loop.engine.temperature == 1.0
    assert "turn CC 21 on channel 1 up" in kn.status()
    kn.message([0xB0, 21, 70])  # crosses the centre (1.0)
    drain(loop)
    assert loop.engine.temperature == pytest.approx(params.PARAMS["temperature"].value_at(70))
    assert kn.status().startswith("temperature")


def test_terminal_keys_l_then_a_number_learn_that_parameter(tiny_model):
    kn, loop, *_ = rig(tiny_model)
    keys = knobs.KeyReader(kn, stream=None)
    keys.key("l")
    assert kn.text.startswith("learn which? 1 temperature  2 density")
    keys.key("4")
    drain(loop)
    assert kn.controls.learning == "dynamics"
    keys.key("l")
    keys.key("x")  # anything else cancels
    drain(loop)
    assert kn.controls.learning is None


def test_the_settings_schema_has_the_knob_keys(tmp_path):
    s = schema.validate({"controls": "~/c.yaml", "control_in": "MPK", "takeover": "pickup",
                         "bindings": [{"param": "panic", "note": 43, "channel": 10}]})
    assert (s["controls"], s["control_in"], s["takeover"]) == ("~/c.yaml", "MPK", "pickup")
    assert s["bindings"] == (params.Binding(params.Control("note", 10, 43), "panic"),)
    bad = tmp_path / "s.yaml"
    bad.write_text("temperature: 0.9\ntakeover: sideways\n")
    with pytest.raises(LivepianoError, match=r"s.yaml line 2: setting 'takeover' is 'sideways' "
                                             r"but must be one of jump, pickup, scale\.$"):
        files.load(bad)
    listed = tmp_path / "l.yaml"
    listed.write_text("- temperature\n")
    with pytest.raises(LivepianoError, match="l.yaml line 1: a settings file is a mapping"):
        files.load(listed)


def test_the_session_loads_the_bindings_file_first(tmp_path):
    broken = tmp_path / "c.yaml"
    broken.write_text("takeover: jump\nbindings:\n  - {param: tempo, cc: 1}\n")
    settings = dict(schema.defaults(), controls=str(broken))
    with pytest.raises(LivepianoError, match=r"c.yaml line 3: 'param' is 'tempo'"):
        knobs.SessionKnobs(settings)
    good = tmp_path / "g.yaml"
    good.write_text("takeover: scale\nbindings:\n  - {param: key, cc: 3}\n")
    sk = knobs.SessionKnobs(files.for_play(good, {"temperature": 3.0}, {}))
    assert sk.controls.takeover == "scale" and sk.controls.values["temperature"] == 2.0
    assert sk.path == good and list(sk.controls.bindings) == [params.Control("cc", 1, 3)]
    sk = knobs.SessionKnobs(files.for_play(good, {"takeover": "pickup"}, {}))
    assert sk.controls.takeover == "pickup"
    # what a save merges into is what the session starts from: the file, not the dict
    sk = knobs.SessionKnobs(dict(schema.defaults(), controls=str(good)))
    assert list(sk.controls.bindings) == [params.Control("cc", 1, 3)]


def test_learning_during_play_saves_into_the_settings_file_and_keeps_it(tiny_model, tmp_path):
    path = tmp_path / "livepiano.yaml"
    body = ("# tonight\ntemperature: 0.8   # safe\nmode: duet\ntakeover: scale\n"
            "bindings:\n  - {param: temperature, cc: 21, channel: 1}   # the big knob\n"
            "out: fluid\n")
    path.write_text(body)
    settings = files.for_play(path, {"takeover": "pickup"}, {})  # --takeover: tonight only
    sk = knobs.SessionKnobs(settings)
    kn, loop, *_ = rig(tiny_model)
    kn = knobs.Knobs(sk.controls, loop, path=sk.path, clock=kn.clock)
    kn.learn("dynamics")
    drain(loop)
    kn.message([0xB0, 30, 10])
    kn.message([0xB0, 30, 12])
    drain(loop)
    assert kn.tick()[-1] == (f"CC 30 on channel 1 now drives dynamics; saved to {path}", True)
    text = path.read_text()
    assert text == body.replace("\nout: fluid", "\n  - {param: dynamics, cc: 30, channel: 1}"
                                               "\nout: fluid")
    again = files.load(path)
    assert again["takeover"] == "scale"  # the session's --takeover was not saved
    assert (again["temperature"], again["mode"], again["out"]) == (0.8, "duet", "fluid")


def test_controls_and_learn_commands(run_livepiano, tmp_path):
    r = run_livepiano("controls", "--controls", EXAMPLE)
    assert r.returncode == 0, r.stderr
    assert f"file           {EXAMPLE}" in r.stdout and "takeover       jump" in r.stdout
    assert "temperature    CC 70 on channel 1 (jump)" in r.stdout
    r = run_livepiano("controls", "--controls", tmp_path / "none.yaml")
    assert r.returncode == 0 and "no bindings yet" in r.stdout and "(not there yet)" in r.stdout
    # learn fails fast, before any port opens, on a bad parameter or a bad file
    r = run_livepiano("learn", "tempo", "--controls", tmp_path / "none.yaml")
    assert r.returncode == 1 and "no parameter 'tempo'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("takeover: sideways\n")
    r = run_livepiano("learn", "temperature", "--controls", bad)
    assert r.returncode == 1 and "bad.yaml line 1" in r.stderr and "Traceback" not in r.stderr
    # play: a bad binding in the settings file is one line naming it, before any port opens
    bad.write_text("temperature: 0.9\nbindings:\n  - {param: temperature, cc: 21}\n"
                   "  - {param: panic, cc: 21}\n")
    r = run_livepiano("play", "--config", bad, "--api", "jack", "--in", "no-such-port")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"livepiano: {bad} line 4: CC 21 on channel 1 is bound twice "
                                f"(here and on line 3); a control drives one parameter.")


def test_the_commands_find_the_bindings_where_play_does(tmp_path, monkeypatch, capsys):
    from livepiano import cli

    settings = tmp_path / "mine.yaml"
    settings.write_text("temperature: 0.9\ntakeover: pickup\n"
                        "bindings:\n  - {param: dynamics, cc: 7, channel: 2}\n")
    monkeypatch.setenv("LIVEPIANO_CONFIG", str(settings))
    monkeypatch.delenv("LIVEPIANO_CONTROLS", raising=False)
    assert cli.main(["controls"]) == 0
    out = capsys.readouterr().out
    assert f"file           {settings}\n" in out and "takeover       pickup" in out
    assert "dynamics       CC 7 on channel 2 (pickup)" in out
    # $LIVEPIANO_CONTROLS: the bindings from there instead
    monkeypatch.setenv("LIVEPIANO_CONTROLS", str(EXAMPLE))
    assert cli.main(["controls"]) == 0
    out = capsys.readouterr().out
    assert f"file           {EXAMPLE}" in out and "temperature    CC 70 on channel 1" in out
    assert "takeover       jump" in out  # the example gives its own
    assert "CC 7 on channel 2" not in out
    # and --controls over both
    assert cli.main(["controls", "--controls", str(tmp_path / "new.yaml")]) == 0
    assert "no bindings yet" in capsys.readouterr().out
    # a broken settings file is said in one line, for `controls` as for `play`
    monkeypatch.delenv("LIVEPIANO_CONTROLS")
    settings.write_text("temperature: 0.9\nmode: jazz\n")
    assert cli.main(["controls"]) == 1
    err = capsys.readouterr().err
    assert err == (f"livepiano: {settings} line 2: setting 'mode' is 'jazz' but must be one of "
                   f"continuous, duet.\n")


@pytest.fixture(scope="module")
def conditioned_model(tmp_path_factory):
    """A conditioned model built by hand (no torch, no training): its logits are a table
    lookup of the token plus the control vector times a matrix, its state passes through.
    Enough to see what the knobs feed its control input."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from livepiano.core import codec

    rng = np.random.default_rng(0)
    V, L, H, K = codec.VOCAB_SIZE, 1, 4, codec.CONTROL_DIM
    table = numpy_helper.from_array(rng.normal(size=(V, V)).astype(np.float32), "table")
    mix = numpy_helper.from_array(rng.normal(size=(K, V)).astype(np.float32), "mix")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "token"], ["looked"]),
         helper.make_node("MatMul", ["control", "mix"], ["steer"]),
         helper.make_node("Add", ["looked", "steer"], ["logits"]),
         helper.make_node("Identity", ["h"], ["h_out"]),
         helper.make_node("Identity", ["c"], ["c_out"])],
        "conditioned",
        [helper.make_tensor_value_info("token", TensorProto.INT64, ["B", "T"]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [L, "B", H]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [L, "B", H]),
         helper.make_tensor_value_info("control", TensorProto.FLOAT, ["B", "T", K])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "T", V]),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [L, "B", H]),
         helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [L, "B", H])],
        initializer=[table, mix])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("conditioned") / "cond.onnx"
    onnx.save(model, str(path))
    return path


def test_density_and_key_steer_a_conditioned_model_and_follow_listens(conditioned_model):
    from livepiano.live.listener import PlayerEvent

    kn, loop, _, _, clock = rig(conditioned_model, [(params.Control("cc", 1, 22), "density"),
                                                    (params.Control("cc", 1, 23), "key")])
    assert loop.engine.conditioned and loop.engine.control is None
    generate_ahead(loop, 2.0)
    key = params.PARAMS["key"]
    kn.message([0xB0, 23, 1])
    kn.message([0xB0, 23, round(key.position("A minor"))])
    drain(loop)
    assert kn.controls.values["key"] == "A minor"
    expected = params.knob_control(params.PARAMS["density"].default, "A minor")
    assert np.allclose(loop.engine.control, expected)
    assert loop.stream_time() <= clock.t + loop.lookahead  # rewound, as for the temperature
    kn.message([0xB0, 22, 127])
    drain(loop)
    assert loop.engine.control[0] == pytest.approx(3.0)  # 30 notes/s, capped as the codec does
    # follow: the player's recent note-ons make the histogram
    kn.message([0xB0, 23, 0])
    drain(loop)
    assert kn.controls.values["key"] == params.FOLLOW
    clock.t = 1.0
    kn.heard([PlayerEvent(1.0, True, 60, 80), PlayerEvent(1.0, True, 64, 80),
              PlayerEvent(1.1, False, 60, 0)])
    drain(loop)
    hist = loop.engine.control[1:]
    assert hist[0] == pytest.approx(0.5) and hist[4] == pytest.approx(0.5)
    # the notes older than 10 s are forgotten
    clock.t = 20.0
    kn.heard([PlayerEvent(20.0, True, 67, 80)])
    drain(loop)
    assert loop.engine.control[1 + 7] == pytest.approx(1.0)


def test_a_mode_that_cannot_be_built_is_said_and_the_toggle_stays(tiny_model):
    def make(name, say):
        raise LivepianoError("no duet here")

    kn, loop, *_ = rig(tiny_model, [(params.Control("note", 10, 36), "mode")])
    kn.make_mode = make
    kn.message([0x99, 36, 100])
    drain(loop)
    assert loop.mode.name == "continuous" and kn.controls.values["mode"] == "continuous"
    assert any("mode duet is not available in this session (no duet here)" in t
               for t, _ in kn.tick())
