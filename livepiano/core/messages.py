"""MIDI channel messages as livepiano sends and reads them: the status bytes, and the one
builder of the messages that silence a synth (note-offs for what sounds, then All Notes Off
and pedal up on every channel used).

Messages are plain lists ``[status | channel, data1, data2]``, as python-rtmidi takes them.
Status bytes here are MIDI's; the codec's ``NOTE_ON``/``NOTE_OFF`` are token offsets, so live
code names these ``messages.NOTE_ON`` and never imports them bare.
"""

from __future__ import annotations

from typing import Iterable

from rtmidi.midiconstants import (
    ALL_NOTES_OFF,
    ALL_SOUND_OFF,
    CONTROL_CHANGE,
    NOTE_OFF,
    NOTE_ON,
    SUSTAIN,
)

CONTROL = CONTROL_CHANGE
__all__ = ["ALL_NOTES_OFF", "ALL_SOUND_OFF", "CONTROL", "NOTE_OFF", "NOTE_ON", "SUSTAIN", "kind",
           "release"]


def kind(message) -> str | None:
    """"on", "off" (a note-on of velocity 0 is an off) or None for anything but a note."""
    if len(message) < 3:
        return None
    status = message[0] & 0xF0
    if status == NOTE_ON:
        return "on" if message[2] > 0 else "off"
    if status == NOTE_OFF:
        return "off"
    return None


def release(sounding: Iterable[tuple[int, int]], channels: Iterable[int] = (),
            sound_off: bool = False) -> list[list[int]]:
    """Note-off for each ``(channel, pitch)`` voice in ``sounding`` (one per voice: each
    note-on gets its own), then All Notes Off and pedal up on those channels and ``channels``;
    with ``sound_off`` All Sound Off first (for a sender that is gone and cannot release what
    a synth still holds later)."""
    voices = sorted(sounding)
    messages = [[NOTE_OFF | ch, pitch, 0] for ch, pitch in voices]
    for ch in sorted({ch for ch, _ in voices} | set(channels)):
        if sound_off:
            messages.append([CONTROL | ch, ALL_SOUND_OFF, 0])
        messages.append([CONTROL | ch, ALL_NOTES_OFF, 0])
        messages.append([CONTROL | ch, SUSTAIN, 0])
    return messages
