"""Shared test helpers. Fixtures live in tests/data (see its README); nothing here needs
../shared or a network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def golden():
    """golden(midi_path) -> the note_seq token ids stored beside it (NAME.tokens)."""
    def read(midi_path) -> list[int]:
        return [int(t) for t in Path(midi_path).with_suffix(".tokens").read_text().split()]
    return read


@pytest.fixture(scope="session")
def run_livepiano():
    """run_livepiano(*args) runs the real `livepiano` command line of this checkout in a
    subprocess and returns the CompletedProcess (text stdout/stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    def run(*args, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "livepiano.cli", *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    return run


@pytest.fixture(scope="session")
def write_bad_midi():
    """write_bad_midi(folder) writes the four kinds of bad MIDI file every reader must survive
    (a text file named .mid, a truncated MIDI, an empty file, a valid MIDI with no notes) and
    returns their paths."""
    import mido

    def write(folder: Path) -> list[Path]:
        (folder / "text.mid").write_text("this is a text file, not MIDI\n")
        (folder / "truncated.mid").write_bytes((DATA / "chopin_op10_12.mid").read_bytes()[:1000])
        (folder / "empty.mid").write_bytes(b"")
        mid = mido.MidiFile(type=1)
        mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0),
                                          mido.Message("control_change", control=64, value=127,
                                                       time=10)]))
        mid.save(folder / "nonotes.mid")
        return [folder / n for n in ("text.mid", "truncated.mid", "empty.mid", "nonotes.mid")]
    return write


def pytest_collection_modifyitems(config, items):
    # Real-time tests on real JACK ports share this machine with whatever else runs: a host
    # stall can starve a period or a client. Each gets one more try; a second failure fails
    # the run (and the first is reported as a rerun).
    for item in items:
        if item.get_closest_marker("jack") is not None:
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=1))

