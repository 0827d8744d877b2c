"""Knobs: parameter curves, MIDI-learn, takeover, buttons and pads, the controls file."""

from __future__ import annotations

from pathlib import Path

import mido
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.live import controls
from livepiano.live.controls import Controls
from livepiano.settings import bindings, files, params
from livepiano.settings.params import Binding, Control

KNOBS = [n for n, p in params.PARAMS.items() if p.kind == params.KNOB]
NUMERIC = [n for n in KNOBS if params.PARAMS[n].curve is not None]


def cc(number, value, channel=0):
    return mido.Message("control_change", channel=channel, control=number, value=value)


def pad(note, velocity=100, channel=9):
    return mido.Message("note_on", channel=channel, note=note, velocity=velocity)


def pad_off(note, channel=9):
    return mido.Message("note_off", channel=channel, note=note)


def knob(number=21, channel=1):
    return Control("cc", channel, number)


def turn(controls, number, values, channel=0):
    """Send CC values one by one; all the changes they made."""
    out = []
    for v in values:
        out += controls.handle(cc(number, v, channel))
    return out


# --- curves ---------------------------------------------------------------------------------

def test_temperature_curve_ends_and_exact_centre():
    t = params.PARAMS["temperature"]
    assert t.value_at(0) == 0.1
    assert t.value_at(127) == 2.0
    assert t.value_at(64) == 1.0
    assert t.default == 1.0 and t.position(1.0) == 64.0


def test_temperature_curve_is_strictly_monotonic_and_broad_in_the_middle():
    t = params.PARAMS["temperature"]
    values = [t.value_at(q) for q in range(128)]
    assert all(a < b for a, b in zip(values, values[1:]))
    # the centre is easy to find by hand: five steps either side stay within 1.5 % of 1.0
    assert all(abs(t.value_at(q) - 1.0) <= 0.015 for q in range(59, 70))
    # the useful 0.7..1.3 takes a large part of the travel (a linear 0.1..2.0 knob: 32 %)
    useful = sum(1 for v in values if 0.7 <= v <= 1.3)
    assert useful >= 0.45 * 128


def test_every_knob_has_its_range_at_the_ends_and_its_default_inside():
    for name in NUMERIC:
        p = params.PARAMS[name]
        assert p.value_at(0) == p.curve.lo and p.value_at(127) == p.curve.hi
        assert p.curve.lo <= p.default <= p.curve.hi
    assert params.PARAMS["dynamics"].value_at(64) == 1.0
    assert params.PARAMS["duet_wait"].value_at(64) == 0.6  # the duet's default wait at the centre
    assert (params.PARAMS["dynamics"].curve.lo, params.PARAMS["dynamics"].curve.hi) == (0.5, 1.5)
    assert (params.PARAMS["duet_wait"].curve.lo, params.PARAMS["duet_wait"].curve.hi) == (0.2, 3.0)
    curve = params.PARAMS["answer_length"].curve
    assert (curve.lo, curve.hi) == (2, 16)


def test_key_knob_steps_through_every_preset_in_order():
    key = params.PARAMS["key"]
    seen = []
    for q in range(128):
        v = key.value_at(q)
        if not seen or seen[-1] != v:
            seen.append(v)
    assert seen == list(params.KEYS)
    assert params.KEYS[0] == "follow" and "C major" in params.KEYS and "A minor" in params.KEYS
    assert all(key.value_at(round(key.position(k))) == k for k in params.KEYS)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(NUMERIC), a=st.floats(0, 127), b=st.floats(0, 127))
def test_property_curves_are_monotonic_within_range_and_invertible(name, a, b):
    p = params.PARAMS[name]
    lo, hi = sorted((a, b))
    va, vb = p.value_at(lo), p.value_at(hi)
    assert p.curve.lo <= va <= vb <= p.curve.hi
    assert p.position(va) == pytest.approx(lo, abs=1e-6)


def test_control_vector_follows_the_codec_layout():
    v = params.knob_control(5.0, "C major")
    assert len(v) == codec.CONTROL_DIM and v[0] == pytest.approx(0.5)
    hist = v[1:]
    assert sum(hist) == pytest.approx(1.0)
    assert hist[0] == max(hist) and hist[7] == max(hist)  # tonic and fifth
    assert hist[1] == hist[3] == hist[6] == hist[8] == hist[10] == 0.0
    a_minor = params.key_histogram("A minor")
    assert [i for i, x in enumerate(a_minor) if x] == [i for i, x in enumerate(hist) if x]
    assert params.knob_control(100.0, "C major")[0] == 3.0  # the codec's cap
    follow = params.key_histogram("follow", heard=[60, 64, 67, 72])
    assert follow[0] == pytest.approx(0.5) and follow[4] == pytest.approx(0.25)
    assert params.key_histogram("follow") == [pytest.approx(1 / 12)] * 12


# --- learn and bindings ---------------------------------------------------------------------

def test_learn_binds_the_next_moved_control_not_a_snapshot():
    c = Controls()
    change = c.start_learn("temperature")
    assert change.param == "learn" and change.value == "temperature"
    # a controller reporting where its knobs are (one message each) binds nothing
    assert turn(c, 21, [40]) == [] and turn(c, 22, [90]) == [] and turn(c, 23, [90]) == []
    assert c.learning == "temperature" and c.bindings == {}
    # knob 22 moves: it is bound; the message that bound it is not applied
    [bound] = turn(c, 22, [91])
    assert bound.param == "bound" and bound.value == Binding(knob(22), "temperature")
    assert bound.replaced is None and "CC 22 on channel 1" in bound.text
    assert c.learning is None and c.values["temperature"] == 1.0
    # from now on it drives the temperature (jump: at once)
    [change] = turn(c, 22, [127])
    assert change.param == "temperature" and change.value == 2.0
    assert turn(c, 21, [0, 10]) == []  # unbound knobs do nothing


def test_learn_a_knob_already_seen_binds_on_its_first_change_and_ignores_repeats():
    c = Controls()
    turn(c, 30, [64], channel=4)
    c.start_learn("dynamics")
    assert turn(c, 30, [64], channel=4) == []  # the same value again: not moved
    [bound] = turn(c, 30, [65], channel=4)
    assert bound.value.control == Control("cc", 5, 30)


def test_learn_a_pad_for_a_button_but_never_for_a_knob():
    c = Controls()
    c.start_learn("temperature")
    assert c.handle(pad(36)) == []  # a pad cannot drive a knob: still learning
    assert c.learning == "temperature"
    c.start_learn("panic")
    assert c.handle(pad_off(36)) == []  # a release is not a press
    [bound] = c.handle(pad(36))
    assert bound.value == Binding(Control("note", 10, 36), "panic")
    assert c.handle(pad(36)) == [controls.Change("panic", True, "panic")]
    with pytest.raises(LivepianoError, match="pad .* only buttons"):
        c.bind(Control("note", 10, 40), "temperature")


def test_channel_mode_messages_are_never_learned_or_handled():
    c = Controls()
    c.start_learn("temperature")
    assert turn(c, 123, [0, 0, 127]) == [] and turn(c, 121, [0, 5]) == []
    assert c.learning == "temperature"


def test_rebinding_a_control_replaces_and_names_the_old_parameter():
    c = Controls()
    assert c.bind(knob(21), "temperature") is None
    assert c.bind(knob(21), "dynamics") == "temperature"
    assert c.bindings[knob(21)].param == "dynamics"
    c.start_learn("duet-wait")  # the command line may spell it with a hyphen
    [bound] = turn(c, 21, [3, 4])  # 3: the first value seen; 4: moved
    assert bound.replaced == "dynamics" and "instead of dynamics" in bound.text
    assert [b.param for b in c.bindings.values()] == ["duet_wait"]
    # one parameter may have several controls
    c.bind(knob(22), "duet_wait")
    assert c.controls_of("duet_wait") == [knob(21), knob(22)]
    with pytest.raises(LivepianoError, match="no parameter 'tempo'; the parameters are "
                                             "temperature, density"):
        c.start_learn("tempo")


def test_learn_button_steps_through_the_parameters_and_panic_still_works():
    c = Controls([Binding(knob(100), "learn"), Binding(Control("note", 10, 37), "panic")])
    [ch] = turn(c, 100, [127])
    assert ch.param == "learn" and ch.value == params.LEARN_ORDER[0] == "temperature"
    assert turn(c, 100, [0]) == []  # release
    [ch] = turn(c, 100, [127])
    assert ch.value == "density"
    assert c.handle(pad(37)) == [controls.Change("panic", True, "panic")]  # not learned
    assert c.learning == "density"
    turn(c, 5, [10])
    [bound] = turn(c, 5, [11])
    assert bound.value.param == "density" and c.learning is None
    # the next press starts again where we were; pressing past the last one stops learning
    turn(c, 100, [0, 127])
    assert c.learning == "density"
    for _ in range(len(params.LEARN_ORDER) - 2):
        turn(c, 100, [0, 127])
    assert c.learning == params.LEARN_ORDER[-1]
    [ch] = turn(c, 100, [0, 127])
    assert ch.value is None and c.learning is None
    assert c.cancel_learn().value is None


# --- takeover -------------------------------------------------------------------------------

def test_jump_sets_the_knob_position_at_once():
    c = Controls([Binding(knob(21), "temperature")])
    [ch] = turn(c, 21, [0])
    assert ch.value == 0.1 and ch.text == "temperature 0.10"
    assert turn(c, 21, [0]) == []  # no change, no message
    [ch] = turn(c, 21, [64])
    assert ch.value == 1.0


def test_pickup_ignores_the_knob_until_it_crosses_the_value():
    c = Controls([Binding(knob(21), "temperature")], takeover="pickup",
                 values={"temperature": 1.0})
    assert turn(c, 21, [10, 20, 30, 40, 50, 60, 63]) == []  # below: nothing
    assert c.values["temperature"] == 1.0
    assert c.hint == "temperature 1.00: turn CC 21 on channel 1 up to pick it up"
    assert turn(c, 21, [64]) == []  # reaches it: caught (the value is already there)
    assert c.hint is None
    [ch] = turn(c, 21, [70])  # now it drives
    assert ch.value == params.PARAMS["temperature"].value_at(70)


def test_pickup_engages_on_a_fast_turn_across_the_value():
    c = Controls([Binding(knob(21), "temperature")], takeover="pickup")
    c.set("temperature", 1.5)  # between two CC positions
    here = params.PARAMS["temperature"].position(1.5)
    assert here != int(here)
    assert turn(c, 21, [5, 40]) == []
    [ch] = turn(c, 21, [120])  # one message from below the value to above it
    assert ch.value == params.PARAMS["temperature"].value_at(120)
    # from above, back down across it: the knob is already caught and drives at once
    [ch] = turn(c, 21, [10])
    assert ch.value == params.PARAMS["temperature"].value_at(10)


def test_pickup_lets_go_when_the_value_is_set_elsewhere():
    c = Controls([Binding(knob(21), "temperature"), Binding(knob(22), "temperature")],
                 takeover="pickup")
    turn(c, 21, [60, 70, 80])  # caught at 64, now at 80
    assert c.values["temperature"] == params.PARAMS["temperature"].value_at(80)
    c.set("temperature", 0.5)  # e.g. a terminal key
    assert turn(c, 21, [90, 100]) == []  # must come back down to 0.5 first
    here = params.PARAMS["temperature"].position(0.5)
    assert turn(c, 21, [int(here) + 2]) == []
    [ch] = turn(c, 21, [int(here) - 1])
    assert ch.value == params.PARAMS["temperature"].value_at(int(here) - 1)
    # the second knob on the same parameter changes it: the first lets go
    turn(c, 22, [0, 120, 127])
    assert c.values["temperature"] == 2.0
    assert turn(c, 21, [30]) == []


def test_pickup_first_message_exactly_on_the_value_engages():
    c = Controls([Binding(knob(21), "dynamics")], takeover="pickup")
    assert turn(c, 21, [64]) == []  # on the value: caught, no change
    [ch] = turn(c, 21, [65])
    assert ch.param == "dynamics"


def test_pickup_on_the_stepped_key_knob_engages_when_it_reaches_the_preset():
    c = Controls([Binding(knob(21), "key")], takeover="pickup", values={"key": "G major"})
    assert turn(c, 21, [0, 10]) == []
    [ch] = turn(c, 21, [127])  # across G major in one message
    assert ch.value == "B minor"


def test_scale_moves_from_the_value_toward_the_end_the_knob_turns_to():
    c = Controls([Binding(knob(21), "temperature")], takeover="scale")
    assert turn(c, 21, [100]) == []  # first message: only the position
    [ch] = turn(c, 21, [110])
    # the value (at 64) moves by (127 - 64) / (127 - 100) of the knob's 10 steps
    expected = 64 + 10 * (127 - 64) / (127 - 100)
    assert ch.value == pytest.approx(params.PARAMS["temperature"].value_at(expected))
    [ch] = turn(c, 21, [127])
    assert ch.value == 2.0  # both reach the end together
    # down from the top: 127 -> 0 takes the value to the bottom, half-way halves the position
    [ch] = turn(c, 21, [63])
    assert params.PARAMS["temperature"].position(ch.value) == pytest.approx(127 * 63 / 127)
    [ch] = turn(c, 21, [0])
    assert ch.value == 0.1


def test_scale_keeps_small_steps_on_a_stepped_knob():
    c = Controls([Binding(knob(21), "key")], takeover="scale", values={"key": "follow"})
    turn(c, 21, [0])
    changes = turn(c, 21, range(1, 128))
    assert [ch.value for ch in changes] == list(params.KEYS[1:])


def test_a_binding_may_override_the_takeover():
    c = Controls([Binding(knob(21), "temperature", "jump"), Binding(knob(22), "dynamics")],
                 takeover="pickup")
    assert turn(c, 21, [0])[0].value == 0.1
    assert turn(c, 22, [0]) == []


@settings(max_examples=300, deadline=None)
@given(start=st.floats(0.1, 2.0), first=st.integers(0, 127),
       moves=st.lists(st.integers(0, 127), max_size=30))
def test_property_pickup_never_changes_the_value_before_a_crossing(start, first, moves):
    p = params.PARAMS["temperature"]
    c = Controls([Binding(knob(21), "temperature")], takeover="pickup")
    c.set("temperature", start)
    here = p.position(start)
    values = [first] + moves
    engaged_at = None
    if abs(first - here) <= 0.5:
        engaged_at = 0
    else:
        for i in range(1, len(values)):
            if min(values[i - 1], values[i]) <= here <= max(values[i - 1], values[i]):
                engaged_at = i
                break
    for i, v in enumerate(values):
        changes = turn(c, 21, [v])
        if engaged_at is None or i < engaged_at:
            assert changes == [] and c.values["temperature"] == start
        else:
            assert c.values["temperature"] == p.value_at(v)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(NUMERIC), start=st.floats(0, 1),
       moves=st.lists(st.integers(0, 127), min_size=1, max_size=30))
def test_property_scale_follows_the_direction_and_stays_in_range(name, start, moves):
    p = params.PARAMS[name]
    c = Controls([Binding(knob(21), name)], takeover="scale")
    c.set(name, p.curve.value(start))
    for prev, v in zip([None] + moves, moves):
        before = c.values[name]
        turn(c, 21, [v])
        after = c.values[name]
        assert p.curve.lo <= after <= p.curve.hi
        if prev is not None and v > prev:
            assert after >= before
        elif prev is not None and v < prev:
            assert after <= before
        if prev is not None and v == 127 and prev != 127:
            assert after == p.curve.hi
        if prev is not None and v == 0 and prev != 0:
            assert after == p.curve.lo


# --- buttons and pads -----------------------------------------------------------------------

def test_a_toggle_button_flips_on_each_press():
    c = Controls([Binding(knob(64, channel=2), "mode")])
    [ch] = turn(c, 64, [127], channel=1)
    assert (ch.param, ch.value, ch.text) == ("mode", "duet", "mode duet")
    assert turn(c, 64, [0], channel=1) == []  # release
    assert turn(c, 64, [127], channel=1)[0].value == "continuous"
    # a button that sends only presses (127 each time) still flips on each
    assert turn(c, 64, [127], channel=1)[0].value == "duet"
    # values below 64 are "released", from 64 up "pressed"
    assert turn(c, 64, [63], channel=1) == []
    assert turn(c, 64, [64], channel=1)[0].value == "continuous"
    assert turn(c, 64, [127], channel=0) == []  # another channel: another control


def test_momentary_buttons_act_on_the_press_only():
    c = Controls([Binding(knob(20), "end_of_call"), Binding(knob(19), "panic")])
    assert turn(c, 20, [127]) == [controls.Change("end_of_call", True, "end of call")]
    assert turn(c, 20, [0]) == []
    assert turn(c, 19, [100, 0, 0, 90]) == [controls.Change("panic", True, "panic")] * 2


def test_pads_press_on_note_on_and_ignore_releases():
    c = Controls([Binding(Control("note", 10, 36), "mode"),
                  Binding(Control("note", 10, 38), "end_of_call")])
    assert c.handle(pad(36))[0].value == "duet"
    assert c.handle(pad_off(36)) == []
    assert c.handle(pad(36, velocity=0)) == []  # a note-on with velocity 0 is a release
    assert c.handle(pad(36))[0].value == "continuous"
    assert c.handle(pad(38)) == [controls.Change("end_of_call", True, "end of call")]
    assert c.handle(pad(38, channel=0)) == []  # channel 1: not bound


def test_raw_bytes_and_mido_messages_mean_the_same():
    a = Controls([Binding(knob(21), "temperature"), Binding(Control("note", 10, 36), "panic")])
    b = Controls([Binding(knob(21), "temperature"), Binding(Control("note", 10, 36), "panic")])
    assert a.handle(cc(21, 90)) == b.handle([0xB0, 21, 90])
    assert a.handle(pad(36)) == b.handle(bytes([0x99, 36, 100]))
    assert b.handle([0x89, 36, 0]) == [] and b.handle([0xE0, 0, 64]) == []
    assert a.handle(mido.Message("pitchwheel", pitch=100)) == []
    assert b.handle([0xF8]) == []


def test_set_checks_the_value_and_names_the_parameter():
    c = Controls()
    assert c.set("temperature", 0.8) == controls.Change("temperature", 0.8, "temperature 0.80")
    with pytest.raises(LivepianoError, match="'temperature' is 3 but must be a number from "
                                             "0.1 to 2"):
        c.set("temperature", 3)
    with pytest.raises(LivepianoError, match="'key' is 'H major' but must be one of follow"):
        c.set("key", "H major")
    with pytest.raises(LivepianoError, match="'panic'.*momentary"):
        c.set("panic", True)
    with pytest.raises(LivepianoError, match="takeover is 'smooth' but must be one of jump, "
                                             "pickup, scale"):
        Controls(takeover="smooth")
    assert Controls(values={"mode": "duet"}).values["mode"] == "duet"


# --- the bindings in a file ----------------------------------------------------------------

def test_yaml_round_trip_through_a_real_file(tmp_path):
    c = Controls([Binding(knob(21), "temperature"), Binding(knob(7, channel=16), "dynamics",
                                                            "scale"),
                  Binding(Control("note", 10, 36), "panic"), Binding(knob(64, 2), "mode")],
                 takeover="pickup")
    path = c.save(tmp_path / "deep" / "controls.yaml")  # the folder is made
    text = path.read_text()
    assert text.startswith("# livepiano: settings and knob bindings")
    assert yaml.safe_load(text)["takeover"] == "pickup"
    again = controls.load(path)
    assert again.bindings == c.bindings and again.takeover == "pickup"
    assert again.describe() == c.describe()
    assert again.describe()[0].startswith("temperature") and "(pickup)" in again.describe()[0]
    assert "(scale)" in again.describe()[1]
    # learn, save, load: the binding persists (what `livepiano learn` does)
    again.start_learn("key")
    turn(again, 22, [1, 2])
    bindings.save(path, again.bindings.values())
    assert controls.load(path).bindings[knob(22)].param == "key"
    assert controls.load(path).takeover == "pickup"  # saving the bindings alone keeps the takeover
    assert list(tmp_path.joinpath("deep").iterdir()) == [path]  # no temporary left behind


def test_an_empty_or_missing_file_has_no_bindings(tmp_path):
    assert controls.load(tmp_path / "nothing.yaml").bindings == {}
    assert bindings.read(tmp_path / "nothing.yaml").exists is False
    with pytest.raises(LivepianoError, match="no such controls file"):
        bindings.read(tmp_path / "nothing.yaml", missing_ok=False)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert controls.load(empty).bindings == {} and controls.load(empty).takeover == "jump"
    path = Controls().save(tmp_path / "none.yaml")
    assert controls.load(path).bindings == {}
    assert "bindings: []" in path.read_text()


def test_a_file_with_settings_and_bindings_gives_the_bindings(tmp_path):
    path = tmp_path / "livepiano.yaml"
    path.write_text("temperature: 0.8\nmode: duet\ntakeover: scale\n"
                    "bindings:\n  - {param: panic, note: 43, channel: 10}\n")
    found = bindings.read(path)
    assert found.takeover == "scale"
    assert found.bindings == [Binding(Control("note", 10, 43), "panic")]


@pytest.mark.parametrize("body, pattern", [
    ("takeover: pickup\nbindings:\n  - {param: temperature, cc: 21, channel: 1}\n"
     "  - {param: tempo, cc: 22, channel: 1}\n",
     r"line 4: 'param' is 'tempo' but must be one of temperature, density, key"),
    ("bindings:\n  - param: temperature\n    cc: 200\n",
     r"line 3: 'cc' is 200 but must be a whole number from 0 to 119"),
    ("bindings:\n  - {param: temperature, cc: 21, channel: 0}\n",
     r"line 2: 'channel' is 0 but must be a whole number from 1 to 16"),
    ("bindings:\n  - {param: temperature, cc: 21.5}\n",
     r"line 2: 'cc' is 21.5 but must be a whole number"),
    ("bindings:\n\n  - {param: panic, cc: 21, note: 36}\n",
     r"line 3: a binding has exactly one of 'cc' .* and 'note'"),
    ("bindings:\n  - {param: panic}\n", r"line 2: a binding has exactly one of 'cc'"),
    ("bindings:\n  - {cc: 3}\n", r"line 2: a binding needs 'param' \(one of temperature"),
    ("bindings:\n  - {param: temperature, note: 36, channel: 10}\n",
     r"line 2: 'note' binds a pad, which drives only buttons \(mode, end_of_call, panic, "
     r"learn\), not the knob 'temperature'"),
    ("bindings:\n  - {param: temperature, cc: 21}\n  - {param: dynamics, cc: 21, channel: 1}\n",
     r"line 3: CC 21 on channel 1 is bound twice \(here and on line 2\)"),
    ("takeover: smooth\n", r"line 1: setting 'takeover' is 'smooth' but must be one of jump, "
                           r"pickup, scale"),
    ("bindings:\n  - {param: panic, cc: 3, speed: 2}\n",
     r"line 2: unknown key 'speed' in a binding; known keys are param, cc, note, channel"),
    ("takeover: jump\nbinding:\n  - {param: panic, cc: 3}\n",
     r"line 2: unknown setting 'binding' \(did you mean 'bindings'\?\); known settings are "),
    ("bindings: {param: panic}\n",
     r"line 1: setting 'bindings' is \{'param': 'panic'\} but must be a list of"),
    ("bindings:\n  - temperature\n", r"line 2: a binding is 'temperature' but must be a mapping"),
    ("- 1\n- 2\n", r"line 1: a controls file is a mapping"),
    ("takeover: jump\nbindings:\n  - {param: panic, cc: 3\n",
     r"line 4: not valid YAML"),
    ("bindings:\n  - {param: panic, cc: 3, takeover: [1}\n", r"line 2: not valid YAML"),
    ("bindings: []\ntemperature: 0.5\nbindings:\n  - {param: panic, cc: 3}\n",
     r"line 3: 'bindings' is given twice \(also on line 1\); keep one"),
    # a controls file is a file of the one schema: its settings are checked too
    ("temperature: hot\nbindings: []\n", r"line 1: setting 'temperature' is 'hot'"),
])
def test_a_bad_file_names_the_line_the_key_and_what_is_allowed(tmp_path, body, pattern):
    path = tmp_path / "controls.yaml"
    path.write_text(body)
    with pytest.raises(LivepianoError, match=pattern) as info:
        controls.load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_an_unreadable_file_is_one_clear_line(tmp_path):
    path = tmp_path / "controls.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(LivepianoError, match="cannot read the controls file"):
        controls.load(path)
    with pytest.raises(LivepianoError, match="cannot save the knob bindings"):
        bindings.save(path, [])  # not UTF-8: left alone, not overwritten
    assert path.read_bytes() == b"\xff\xfe\x00bad"
    with pytest.raises(LivepianoError, match="cannot save the knob bindings"):
        bindings.save(path / "below-a-file.yaml", [])


def test_the_default_file_is_the_settings_file_in_the_users_config_folder(tmp_path):
    home = Path("/home/ann")
    assert bindings.default_path({}, "linux", home) == home / ".config/livepiano/livepiano.yaml"
    assert bindings.default_path({"XDG_CONFIG_HOME": "/x"}, "linux", home) == \
        Path("/x/livepiano/livepiano.yaml")
    assert bindings.default_path({}, "darwin", home) == \
        home / "Library/Application Support/livepiano/livepiano.yaml"
    assert bindings.default_path({"APPDATA": "C:/Users/ann/AppData/Roaming"}, "win32", home) == \
        Path("C:/Users/ann/AppData/Roaming/livepiano/livepiano.yaml")
    assert bindings.default_path({"LIVEPIANO_CONFIG": str(tmp_path / "s.yaml")}, "linux", home) == \
        tmp_path / "s.yaml"
    # the bindings elsewhere: $LIVEPIANO_CONTROLS wins over $LIVEPIANO_CONFIG
    assert bindings.default_path({"LIVEPIANO_CONFIG": str(tmp_path / "s.yaml"),
                           "LIVEPIANO_CONTROLS": str(tmp_path / "c.yaml")}, "linux", home) == \
        tmp_path / "c.yaml"


def test_load_uses_the_default_path(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("LIVEPIANO_CONTROLS", raising=False)
    monkeypatch.delenv("LIVEPIANO_CONFIG", raising=False)
    monkeypatch.setattr(files.sys, "platform", "linux")
    Controls([Binding(knob(21), "temperature")]).save(bindings.default_path())
    assert (tmp_path / "livepiano" / "livepiano.yaml").is_file()
    assert controls.load().bindings[knob(21)].param == "temperature"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["cc", "note"]), st.integers(1, 16),
                          st.integers(0, 119), st.sampled_from(list(params.PARAMS)),
                          st.sampled_from([None, *controls.TAKEOVERS])), max_size=12),
       st.sampled_from(controls.TAKEOVERS))
def test_property_any_bindings_survive_the_file(tmp_path_factory, rows, takeover):
    c = Controls(takeover=takeover)
    for kind, channel, number, name, how in rows:
        if kind == "note" and params.PARAMS[name].kind == params.KNOB:
            continue
        c.bind(Control(kind, channel, number), name, how)
    path = c.save(tmp_path_factory.mktemp("c") / "controls.yaml")
    again = controls.load(path)
    assert again.bindings == c.bindings and again.takeover == takeover
