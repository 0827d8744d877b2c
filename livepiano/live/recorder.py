"""The session's recording: the player's and the model's messages with their times, saved as a
two-track MIDI file; and where recordings go by default."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from livepiano.core import codec, messages
from livepiano.core.voices import Voices
from livepiano.live.listener import PlayerEvent


@dataclass
class Recorder:
    """What was played, with real times: the player's notes (pedal applied, as the model
    heard them) and the messages the scheduler actually sent. Appends come from the listener
    callback and the scheduler thread (list.append is atomic)."""

    origin: float
    player: list = field(default_factory=list)  # PlayerEvent
    model: list = field(default_factory=list)  # (time, message)

    def heard(self, events: list[PlayerEvent]) -> None:
        self.player.extend(events)

    def sent(self, t: float, message: list[int]) -> None:
        self.model.append((t, message))

    def notes_in(self) -> int:
        return sum(1 for e in list(self.player) if e.on)

    def notes_out(self) -> int:
        return sum(1 for _, m in list(self.model) if messages.kind(m) == "on")

    @staticmethod
    def _step_notes(events) -> list[codec.StepNote]:
        """(time, on, pitch, velocity) -> notes on the 10 ms grid; a voice ends at the first
        note-off of its pitch, unreleased voices at the last event."""
        voices = Voices("oldest")
        notes: list[codec.StepNote] = []
        for t, on, pitch, velocity in events:
            step = codec.quantize(max(t, 0.0))
            if on:
                voices.on(pitch, step, velocity)
                continue
            for v in voices.off(pitch, step):
                notes.append(codec.StepNote(pitch, v.data, v.start, max(step, v.start + 1)))
        last = voices.last or 0
        for v in voices.end():
            notes.append(codec.StepNote(v.key, v.data, v.start, max(last, v.start + 1)))
        notes.sort(key=lambda n: (n.start, n.pitch))
        return notes

    def midi(self):
        player = [(e.time - self.origin, e.on, e.pitch, e.velocity) for e in list(self.player)]
        model = []
        for t, m in list(self.model):
            kind = messages.kind(m)
            if kind is not None:
                model.append((t - self.origin, kind == "on", m[1], m[2] if kind == "on" else 0))
        return codec.step_notes_to_midi([("player", self._step_notes(player)),
                                         ("livepiano", self._step_notes(model))])

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.midi().save(str(path))
        return path


def data_dir() -> Path:
    """The user's data folder for livepiano (sessions are saved under it)."""
    return platformdirs.user_data_path("livepiano", appauthor=False)


def default_recording() -> Path:
    return data_dir() / "sessions" / time.strftime("session-%Y%m%d-%H%M%S.mid")

