"""In-process MIDI ports: what one client sends reaches the other, in order, through the same
``ports.Port`` opening (by name and virtual) that real MIDI systems go through."""

from __future__ import annotations

import threading

import pytest

from livepiano import LivepianoError
from livepiano.live import ports
from livepiano.live.inprocess import MidiIn, MidiOut


def _drain(client) -> list:
    out = []
    while (item := client.get_message()) is not None:
        out.append(item[0])
    return out


def test_a_virtual_output_reaches_the_input_that_opened_it_by_name():
    keys = MidiOut("pianist-t1")
    keys.open_virtual_port("keys")
    port = ports.Port("in", ports.INPROCESS, "pianist t1")  # matched as real names are
    try:
        assert port.name == "pianist-t1:keys"
        sent = [[0x90, 60 + i, 100] for i in range(50)] + [[0x80, 60, 0], [0xB0, 64, 127]]
        for m in sent:
            keys.send_message(m)
        assert _drain(port.client) == sent
        assert port.present()
    finally:
        port.close()
        keys.delete()
    keys.send_message([0x90, 1, 1])  # closed: reaches no one, raises nothing


def test_an_output_port_opened_by_name_reaches_a_virtual_input_from_another_thread():
    ear = MidiIn("ear-t2")
    ear.open_virtual_port("in")
    ear.ignore_types(sysex=True, timing=True, active_sense=True)
    out = ports.Port("out", ports.INPROCESS, "ear-t2")
    try:
        sender = threading.Thread(target=lambda: [out.client.send_message([0x90, p, 90])
                                                  for p in range(21, 109)] +
                                  [out.client.send_message([0xF8])])
        sender.start()
        sender.join(5)
        got = _drain(ear)
        assert got == [[0x90, p, 90] for p in range(21, 109)]  # in order; the clock ignored
    finally:
        out.close()
        ear.delete()


def test_a_missing_in_process_port_is_one_line_listing_the_ports():
    with pytest.raises(LivepianoError) as e:
        ports.Port("in", ports.INPROCESS, "nobody-here")
    assert "no MIDI input port matches 'nobody-here'" in str(e.value)
    assert "\n" not in str(e.value)
