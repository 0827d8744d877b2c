"""MIDI files on disk -> bytes, ``mido.MidiFile``, notes or tokens, with one-line errors.

The codec stays pure (bytes in, tokens out); this is the one place that opens a file for it.
"""

from __future__ import annotations

import os

import mido

from livepiano.core import codec


def read_midi_file(path: str | os.PathLike) -> bytes:
    """The bytes of a MIDI file, or a one-line CodecError saying why they cannot be read."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise codec.CodecError(f"{name} is a folder; give a MIDI file.") from None
    except OSError as e:
        raise codec.CodecError(f"{name}: cannot read the file ({e.strerror or e}).") from None


def open_midi_file(path: str | os.PathLike) -> "mido.MidiFile":
    """A MIDI file from disk as a ``mido.MidiFile``, or a one-line CodecError."""
    return codec.parse_midi(read_midi_file(path), os.fspath(path))


def midi_file_notes(path: str | os.PathLike) -> list[codec.Note]:
    """The notes of a MIDI file on disk, sustain pedal applied (``codec.midi_to_notes``)."""
    return codec.midi_to_notes(read_midi_file(path), os.fspath(path))


def midi_file_tokens(path: str | os.PathLike) -> list[int]:
    """The token ids of a MIDI file on disk (``codec.midi_to_tokens``)."""
    return codec.midi_to_tokens(read_midi_file(path), os.fspath(path))

