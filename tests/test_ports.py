"""Port names, MIDI systems and their errors (no MIDI system needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from livepiano import LivepianoError
from livepiano.live import ports

FLUID = "FLUID Synth (1234):Synth input port (1234:0) 128:0"
THROUGH = "Midi Through:Midi Through Port-0 14:0"


def test_normalise_drops_case_spaces_and_punctuation():
    assert ports.normalize("FLUID Synth (1234)") == "fluidsynth1234"
    assert ports.normalize("Digital-Piano_MIDI 1") == "digitalpianomidi1"


def test_a_name_as_people_type_it_matches():
    names = [THROUGH, FLUID]
    assert ports.match("FluidSynth", names) == 1
    assert ports.match("fluid synth", names) == 1
    assert ports.match("through", names) == 0


def test_an_exact_name_wins_over_longer_names_containing_it():
    names = ["Piano 2", "Piano", "Digital Piano"]
    assert ports.match("Piano", names) == 1
    assert ports.match("piano", names) == 1  # exact but for case


def test_none_or_several_matches_name_the_ports():
    names = ["Digital Piano MIDI 1", "Digital Piano MIDI 2", THROUGH]
    with pytest.raises(LivepianoError) as e:
        ports.match("Digital Piano", names, "input")
    assert "several" in str(e.value) and "MIDI 1" in str(e.value) and "MIDI 2" in str(e.value)
    with pytest.raises(LivepianoError) as e:
        ports.match("Nord", names, "output")
    text = str(e.value)
    assert "'Nord'" in text and all(n in text for n in names) and "\n" not in text
    with pytest.raises(LivepianoError, match="ports are: none"):
        ports.match("Nord", [])


def test_own_ports_are_recognised():
    assert ports.own_port("livepiano:in") and ports.own_port("livepiano-01:out")
    assert ports.own_port("livepiano-list:x")
    assert ports.own_port("livepiano-guardian:guard")  # the guardian's port is never --in
    assert not ports.own_port("livepianos:in") and not ports.own_port("pianist:keys")


def test_api_from_option_environment_or_platform(monkeypatch):
    monkeypatch.delenv(ports.API_ENV, raising=False)
    assert ports.resolve_api("jack") == "jack"
    assert ports.resolve_api(None) == ports.platform_api()
    monkeypatch.setenv(ports.API_ENV, "JACK")
    assert ports.resolve_api(None) == "jack"
    monkeypatch.setenv(ports.API_ENV, "pulse")
    with pytest.raises(LivepianoError, match=ports.API_ENV + " is 'pulse'"):
        ports.resolve_api(None)


def test_an_api_this_rtmidi_lacks_says_which_it_has():
    import rtmidi

    missing = [n for n, i in ports._api_ids().items() if i not in rtmidi.get_compiled_api()]
    if not missing:
        pytest.skip("platform: this rtmidi has every API")
    with pytest.raises(LivepianoError, match="built without " + missing[0]):
        ports.resolve_api(missing[0])


@pytest.mark.skipif(Path("/dev/snd/seq").exists(),
                    reason="platform: this machine has an ALSA sequencer")
def test_no_alsa_is_one_clear_line_without_c_library_noise(capfd):
    with pytest.raises(LivepianoError) as e:
        ports.open_client("in", "alsa")
    assert "no ALSA sequencer" in str(e.value)
    assert capfd.readouterr().err == ""


def test_no_jack_server_is_one_clear_line_without_c_library_noise(capfd, monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "livepiano-test-nobody-" + os.urandom(4).hex())
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with pytest.raises(LivepianoError, match="no JACK server is running"):
        ports.open_client("out", "jack")
    assert capfd.readouterr().err == ""


def test_cli_ports_without_a_midi_system(run_livepiano):
    env_api = "jack"
    r = run_livepiano("ports", "--api", env_api)
    if r.returncode == 0:
        pytest.skip("platform: a JACK server is running here")
    assert r.returncode == 1
    assert r.stderr.startswith("livepiano: cannot open MIDI through jack")
    assert len(r.stderr.strip().splitlines()) == 1
