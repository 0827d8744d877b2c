"""The settings schema: defaults in one place, errors that name the key."""

from __future__ import annotations

import pytest

from livepiano import LivepianoError, config


def test_defaults_come_from_the_schema():
    d = config.defaults()
    assert set(d) == set(config.SCHEMA)
    assert d["mode"] == "continuous" and d["temperature"] == 1.0 and d["lookahead_ms"] == 100


def test_a_bad_value_names_the_key_and_what_is_allowed():
    with pytest.raises(LivepianoError, match="'temperature' is 'hot' but must be a number"):
        config.validate({"temperature": "hot"})
    with pytest.raises(LivepianoError, match="'mode' .* one of continuous"):
        config.validate({"mode": "jazz"})
    with pytest.raises(LivepianoError, match="unknown setting 'tempo'"):
        config.validate({"tempo": 3})


def test_merge_keeps_what_was_not_given():
    base = config.validate({"temperature": 0.8})
    merged = config.merge(base, {"temperature": None, "channel": 10})
    assert merged["temperature"] == 0.8 and merged["channel"] == 10
    with pytest.raises(LivepianoError, match="'channel'"):
        config.merge(base, {"channel": 17})


def test_a_yaml_file_error_gives_the_line(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("temperature: 0.9\nout: FluidSynth\necho: true\n")
    s = config.load(good)
    assert s["temperature"] == 0.9 and s["out"] == "FluidSynth" and s["echo"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("temperature: 0.9\nlookahead_ms: 5000\n")
    with pytest.raises(LivepianoError, match=r"bad.yaml line 2: setting 'lookahead_ms'"):
        config.load(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("temperature: [1\n")
    with pytest.raises(LivepianoError, match="not valid YAML"):
        config.load(broken)


def test_every_mode_the_schema_allows_is_one_the_session_knows():
    from livepiano import live

    assert set(config.MODES) == set(live.MODES)
