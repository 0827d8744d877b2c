"""Generating a performance offline (``livepiano generate``) and describing notes: rates,
durations, pitch and velocity ranges, for samples and for real playing alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from livepiano.core import codec
from livepiano.runtime import steering
from livepiano.runtime.engine import START_TOKEN, Engine
from livepiano.settings import schema


@dataclass
class Generated:
    primer: list[int]
    tokens: list[int]  # the generated part, ending with the release of every note
    primer_steps: int
    start_velocity_bin: int  # the velocity bin in force when generation began

    def primer_notes(self) -> list[codec.StepNote]:
        return codec.tokens_to_step_notes(self.primer)

    def generated_notes(self) -> list[codec.StepNote]:
        """The generated notes on the stream's time line (after the primer)."""
        lead = codec.shifts(self.primer_steps)
        if self.start_velocity_bin:
            lead.append(codec.velocity_event(self.start_velocity_bin))
        return codec.tokens_to_step_notes(lead + self.tokens)

    def midi(self):
        """A type-1 MIDI file: track "primer" (when there is one) and track "livepiano"."""
        tracks = []
        primer_notes = self.primer_notes()
        if primer_notes:
            tracks.append(("primer", primer_notes))
        tracks.append(("livepiano", self.generated_notes()))
        return codec.step_notes_to_midi(tracks)


def prepare(engine: Engine, primer: Sequence[int] = (), density: float | None = None) -> None:
    """``engine`` set up as `livepiano generate` samples: the settings' defaults with
    ``density`` (None: not given, so the primer's) for the steering, and a conditioned
    model's control from the primer (``steering.configure``)."""
    steering.configure(engine, schema.merge(schema.defaults(), {"density": density}),
                       primer=primer)


def generate(engine: Engine, seconds: float, primer: Sequence[int] = (),
             max_events: int | None = None) -> Generated:
    """Prime ``engine`` with ``primer`` (none: a start velocity event) as its own playing,
    which it continues, then sample until ``seconds`` of generated time have passed; every
    note still sounding is released at the end."""
    engine.reset()
    primer = [int(t) for t in primer] or [START_TOKEN]
    engine.prime(primer, own=True)
    primer_steps, start_bin = engine.steps, engine.velocity_bin
    goal = primer_steps + int(round(seconds * codec.STEPS_PER_SECOND))
    limit = max_events or max(10_000, int(seconds * 400))
    out: list[int] = []
    saved = engine.shift_limit
    try:
        while engine.steps < goal and len(out) < limit:
            engine.shift_limit = goal - engine.steps  # end exactly on time
            out.append(engine.sample())
    finally:
        engine.shift_limit = saved
    out.extend(engine.release_all())
    return Generated(primer, out, primer_steps, start_bin)


def describe_notes(notes: Sequence[codec.StepNote], seconds: float) -> dict:
    """Notes per second, pitch range and velocity spread of some notes."""
    if not notes:
        return {"notes": 0, "notes_per_s": 0.0, "pitch_min": None, "pitch_max": None,
                "velocity_min": None, "velocity_max": None, "velocity_std": None}
    pitches = np.array([n.pitch for n in notes])
    vels = np.array([n.velocity for n in notes], dtype=np.float64)
    return {"notes": len(notes), "notes_per_s": round(len(notes) / max(seconds, 1e-9), 2),
            "pitch_min": int(pitches.min()), "pitch_max": int(pitches.max()),
            "velocity_min": int(vels.min()), "velocity_max": int(vels.max()),
            "velocity_std": round(float(vels.std()), 1)}


