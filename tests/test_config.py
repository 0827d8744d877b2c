"""The settings schema: defaults in one place, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livepiano import LivepianoError
from livepiano.settings import choices, files, schema


def test_defaults_come_from_the_schema():
    d = schema.defaults()
    assert set(d) == set(schema.SCHEMA)
    assert d["mode"] == "continuous" and d["temperature"] == 1.0 and d["lookahead_ms"] == 100


def test_a_bad_value_names_the_key_and_what_is_allowed():
    with pytest.raises(LivepianoError, match="'temperature' is 'hot' but must be a number"):
        schema.validate({"temperature": "hot"})
    with pytest.raises(LivepianoError, match="'mode' .* one of continuous"):
        schema.validate({"mode": "jazz"})
    with pytest.raises(LivepianoError, match="unknown setting 'tempo'"):
        schema.validate({"tempo": 3})


def test_merge_keeps_what_was_not_given():
    base = schema.validate({"temperature": 0.8})
    merged = schema.merge(base, {"temperature": None, "channel": 10})
    assert merged["temperature"] == 0.8 and merged["channel"] == 10
    with pytest.raises(LivepianoError, match="'channel'"):
        schema.merge(base, {"channel": 17})


def test_a_yaml_file_error_gives_the_line(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("temperature: 0.9\nout: FluidSynth\necho: true\n")
    s = files.load(good)
    assert s["temperature"] == 0.9 and s["out"] == "FluidSynth" and s["echo"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("temperature: 0.9\nlookahead_ms: 5000\n")
    with pytest.raises(LivepianoError, match=r"bad.yaml line 2: setting 'lookahead_ms'"):
        files.load(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("temperature: [1\n")
    with pytest.raises(LivepianoError, match="not valid YAML"):
        files.load(broken)


def test_every_mode_the_schema_allows_is_one_the_session_knows():
    from livepiano.live import modes

    assert set(choices.MODES) == set(modes.MODES)


# --- one schema for settings and knob bindings ---------------------------------------------

SETTINGS_AND_BINDINGS = """\
# my livepiano: a comment at the top
temperature: 0.9        # a bit safer
mode: duet

# the knobs
takeover: pickup        # my pots
bindings:
  # the left column
  - {param: temperature, cc: 70, channel: 1}     # K1
  - param: dynamics
    cc: 73
  # the pads
  - {param: panic, note: 43, channel: 10}        # pad 8

# the ports come after the knobs
out: FluidSynth   # the synth
answer: 2-8
"""


def _binding(kind, channel, number, param, takeover=None):
    from livepiano.settings.params import Binding, Control

    return Binding(Control(kind, channel, number), param, takeover)


def test_the_knob_keys_and_their_defaults_are_in_the_schema():
    d = schema.defaults()
    assert d["takeover"] == schema.SCHEMA["takeover"].default == "jump"
    assert d["bindings"] == schema.SCHEMA["bindings"].default == ()
    assert d["controls"] is None
    # the controls module takes its defaults from there, not from a copy
    from livepiano.settings import bindings

    assert bindings.ControlsFile("x").takeover == d["takeover"]
    assert bindings.read("/nonexistent/livepiano.yaml").bindings == list(d["bindings"])


def test_a_settings_and_bindings_file_round_trips(tmp_path):
    path = tmp_path / "livepiano.yaml"
    path.write_text(SETTINGS_AND_BINDINGS)
    s = files.load(path)
    assert (s["temperature"], s["mode"], s["out"], s["answer"]) == (0.9, "duet", "FluidSynth",
                                                                    (2.0, 8.0))
    assert s["takeover"] == "pickup"
    assert s["bindings"] == (_binding("cc", 1, 70, "temperature"),
                             _binding("cc", 1, 73, "dynamics"),
                             _binding("note", 10, 43, "panic"))
    assert s["channel"] == 1  # not in the file: the default
    from livepiano.settings import bindings

    bindings.save(path, s["bindings"], s["takeover"])  # written back as they are
    assert path.read_text() == SETTINGS_AND_BINDINGS
    assert files.load(path) == s


def test_saving_bindings_keeps_every_other_key_and_every_comment(tmp_path):
    from livepiano.live import controls
    from livepiano.settings import bindings, params

    path = tmp_path / "livepiano.yaml"
    path.write_text(SETTINGS_AND_BINDINGS)
    before = files.load(path)
    c = controls.load(path)
    c.start_learn("key")
    c.handle([0xB0, 22, 1])
    c.handle([0xB0, 22, 5])  # moved: bound
    c.bind(params.Control("cc", 1, 73), "density")  # a control rebound to another parameter
    bindings.save(path, c.bindings.values())
    text = path.read_text()
    after = files.load(path)
    assert {k: v for k, v in after.items() if k != "bindings"} == \
        {k: v for k, v in before.items() if k != "bindings"}
    assert set(after["bindings"]) == {_binding("cc", 1, 70, "temperature"),
                                      _binding("cc", 1, 73, "density"),
                                      _binding("note", 10, 43, "panic"),
                                      _binding("cc", 1, 22, "key")}
    # the lines of the entries that did not change are kept to the character, comments too,
    # and every other line is where it was
    old = SETTINGS_AND_BINDINGS.splitlines()
    gone = {"  - param: dynamics", "    cc: 73"}
    kept = [line for line in old if line not in gone]
    new = text.splitlines()
    it = iter(new)
    assert all(line in it for line in kept), text  # in the same order
    assert "  - {param: density, cc: 73, channel: 1}" in new
    assert new.index("  - {param: key, cc: 22, channel: 1}") == \
        new.index("  - {param: panic, note: 43, channel: 10}        # pad 8") + 1
    assert len(new) == len(kept) + 2


def test_saving_into_a_settings_file_without_bindings_appends_them(tmp_path):
    from livepiano.settings import bindings

    path = tmp_path / "livepiano.yaml"
    original = "# just settings\ntemperature: 1.2\nrecord: ~/s.mid   # keep me\n"
    path.write_text(original)
    path.chmod(0o640)
    bindings.save(path, [_binding("cc", 2, 7, "dynamics")])
    text = path.read_text()
    assert text.startswith(original) and text.endswith(
        "bindings:\n  - {param: dynamics, cc: 7, channel: 2}\n")
    assert "takeover" not in text  # only what was given is written
    s = files.load(path)
    assert s["temperature"] == 1.2 and s["record"] == "~/s.mid"
    assert path.stat().st_mode & 0o777 == 0o640  # the user's permissions stay
    # a file with no newline at its end, and a takeover added: each on its own line
    path.write_text("temperature: 1.2")
    bindings.save(path, [], "scale")
    assert files.read(path).values == {"temperature": 1.2, "takeover": "scale", "bindings": ()}


def test_a_file_that_cannot_be_read_back_is_never_overwritten(tmp_path):
    from livepiano.settings import bindings

    path = tmp_path / "livepiano.yaml"
    for body, pattern in (("temperature: [0.9\nbindings: []\n", "line 2: not valid YAML"),
                          ("bindings:\n  - {param: tempo, cc: 1}\n", "line 2: 'param'"),
                          ("{temperature: 1, bindings: []}\n", "one-line")):
        path.write_text(body)
        with pytest.raises(LivepianoError, match=pattern):
            bindings.save(path, [_binding("cc", 1, 5, "temperature")])
        assert path.read_text() == body
    assert [p.name for p in tmp_path.iterdir()] == ["livepiano.yaml"]  # no temporary left


def test_saving_through_a_symlink_writes_its_target(tmp_path):
    from livepiano.settings import bindings

    target = tmp_path / "dotfiles" / "livepiano.yaml"
    target.parent.mkdir()
    target.write_text("mode: duet\n")
    link = tmp_path / "livepiano.yaml"
    link.symlink_to(target)
    bindings.save(link, [_binding("cc", 1, 5, "temperature")])
    assert link.is_symlink()
    assert files.load(target)["bindings"] == (_binding("cc", 1, 5, "temperature"),)
    assert files.load(target)["mode"] == "duet"


def test_an_error_in_a_binding_names_its_line_in_a_settings_file(tmp_path):
    path = tmp_path / "livepiano.yaml"
    path.write_text(SETTINGS_AND_BINDINGS.replace("cc: 73", "cc: 130"))
    with pytest.raises(LivepianoError) as info:
        files.load(path)
    assert str(info.value) == (f"{path} line 11: 'cc' is 130 but must be a whole number from "
                               f"0 to 119.")
    # outside a file the same check speaks of the entry
    with pytest.raises(LivepianoError, match=r"^CC 5 on channel 1 is bound twice \(here and "
                                             r"on entry 1\)"):
        schema.validate({"bindings": [{"param": "panic", "cc": 5},
                                      {"param": "learn", "cc": 5}]})


def _env(tmp_path, **extra):
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), **extra}


def test_play_reads_the_default_file_when_it_is_there(tmp_path):
    env = _env(tmp_path)
    s = files.for_play(None, {}, env)
    assert s == dict(schema.defaults(), controls=str(tmp_path / "xdg/livepiano/livepiano.yaml"))
    default = tmp_path / "xdg" / "livepiano" / "livepiano.yaml"
    default.parent.mkdir(parents=True)
    default.write_text(SETTINGS_AND_BINDINGS)
    s = files.for_play(None, {"temperature": 1.5, "mode": None}, env)
    assert s["temperature"] == 1.5 and s["mode"] == "duet"  # the command line wins
    assert len(s["bindings"]) == 3 and s["controls"] == str(default)
    # $LIVEPIANO_CONFIG names another default; --config a file that must be there
    other = tmp_path / "other.yaml"
    other.write_text("mode: continuous\n")
    s = files.for_play(None, {}, _env(tmp_path, LIVEPIANO_CONFIG=str(other)))
    assert s["mode"] == "continuous" and s["bindings"] == () and s["controls"] == str(other)
    assert files.for_play(other, {}, env)["controls"] == str(other)
    with pytest.raises(LivepianoError, match=r"missing.yaml: there is no such settings file"):
        files.for_play(tmp_path / "missing.yaml", {}, env)


def test_the_bindings_file_can_be_another_one(tmp_path):
    settings = tmp_path / "s.yaml"
    settings.write_text("temperature: 0.7\ntakeover: scale\n"
                        "bindings:\n  - {param: panic, cc: 1}\n")
    knobs = tmp_path / "knobs.yaml"
    knobs.write_text("bindings:\n  - {param: temperature, cc: 70}\n")
    env = _env(tmp_path)
    # --controls: the bindings from there; the takeover the settings file's, as that has none
    s = files.for_play(settings, {"controls": str(knobs)}, env)
    assert s["temperature"] == 0.7 and s["takeover"] == "scale"
    assert s["bindings"] == (_binding("cc", 1, 70, "temperature"),)
    assert s["controls"] == str(knobs)
    knobs.write_text("takeover: jump\nbindings: []\n")  # its own takeover travels with it
    assert files.for_play(settings, {"controls": str(knobs)}, env)["takeover"] == "jump"
    s = files.for_play(settings, {"controls": str(knobs), "takeover": "pickup"}, env)
    assert s["takeover"] == "pickup"  # and --takeover wins over both
    # $LIVEPIANO_CONTROLS, under --controls
    env_knobs = tmp_path / "env.yaml"
    env = _env(tmp_path, LIVEPIANO_CONTROLS=str(env_knobs))
    assert files.for_play(settings, {}, env)["controls"] == str(env_knobs)
    assert files.for_play(settings, {}, env)["bindings"] == ()  # not there yet: none
    assert files.for_play(settings, {"controls": str(knobs)}, env)["controls"] == str(knobs)
    # a controls: key, relative to the settings file
    (tmp_path / "conf").mkdir()
    inner = tmp_path / "conf" / "s.yaml"
    inner.write_text("controls: pads.yaml\n")
    (tmp_path / "conf" / "pads.yaml").write_text("bindings:\n  - {param: panic, note: 1, "
                                                 "channel: 10}\n")
    s = files.for_play(inner, {}, _env(tmp_path))
    assert s["controls"] == str(tmp_path / "conf" / "pads.yaml")
    assert s["bindings"] == (_binding("note", 10, 1, "panic"),)


def test_a_controls_file_is_a_settings_file_that_holds_only_the_knobs():
    from livepiano.settings import params

    example = files.read(Path(__file__).resolve().parent.parent / "examples" /
                          "controls.yaml")
    assert set(example.values) == {"takeover", "bindings"}
    settings = files.load(Path(__file__).resolve().parent.parent / "examples" /
                           "settings.yaml")
    assert settings["bindings"] and all(isinstance(b, params.Binding)
                                        for b in settings["bindings"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 119), st.sampled_from(["temperature", "density",
                                                                 "key", "dynamics"])),
                min_size=1, max_size=6))
def test_property_learning_again_and_again_never_loses_a_setting_or_a_comment(tmp_path_factory,
                                                                              learned):
    from livepiano.live import controls
    from livepiano.settings import bindings, params

    path = tmp_path_factory.mktemp("p") / "livepiano.yaml"
    path.write_text(SETTINGS_AND_BINDINGS)
    before = files.load(path)
    comments = [line for line in SETTINGS_AND_BINDINGS.splitlines()
                if line.lstrip().startswith("#")]
    c = controls.load(path)
    for number, param in learned:  # one save per learned knob, as `learn` does
        c.bind(params.Control("cc", 3, number), param)
        bindings.save(path, c.bindings.values())
        after = files.load(path)
        assert set(after["bindings"]) == set(c.bindings.values())
        assert {k: v for k, v in after.items() if k != "bindings"} == \
            {k: v for k, v in before.items() if k != "bindings"}
        lines = path.read_text().splitlines()
        assert all(line in lines for line in comments)
