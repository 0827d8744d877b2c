"""Shared test helpers. Fixtures live in tests/data (see its README); nothing here needs
../shared or a network."""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture
def reference_midi(tmp_path):
    """(folder, env): tests/data's MIDI excerpts copied into a folder of their own, to pass
    as a bench's ``--reference``, and the environment to run the bench's command line of this
    checkout in, its cache in ``tmp_path`` and no MAESTRO folder set."""
    from livepiano.tools.bench import music

    folder = tmp_path / "midi"
    folder.mkdir()
    for p in sorted(DATA.glob("*.mid")):
        shutil.copy(p, folder / p.name)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop(music.DATA_ENV, None)
    return folder, env


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


# --- a skip in CI is a failure --------------------------------------------------------------
#
# .ci/run installs everything a test here can need: jackd, FluidSynth and its SoundFont, torch
# and onnx (the [train] extra). Where $CI is set, a test that skips for want of one of them
# (need(), pytest.importorskip, a skipif) fails instead, so a broken install can never pass for
# green. The one exception is a skip whose reason starts with PLATFORM: something no install
# gives (another operating system, a sound device, a MIDI system this machine happens to have).

PLATFORM = "platform: "


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


def _skip_reason(longrepr) -> str:
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def _excused(reason: str) -> bool:
    return reason.startswith(PLATFORM)


class SkippedInCI(pytest.Item):
    """Stands for a test module that skipped as a whole while being imported (e.g. a
    module-level ``pytest.importorskip``): it fails, saying why, and the run goes on."""

    def __init__(self, *, reason: str, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def runtest(self):
        pytest.fail(f"skipped in CI (CI installs what it needs): {self.reason}", pytrace=False)

    def reportinfo(self):
        return self.path, 0, self.name


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _in_ci():
        reason = _skip_reason(report.longrepr)
        if not _excused(reason):
            report.outcome, report.longrepr = "passed", None
            report.result = [SkippedInCI.from_parent(collector, name="skipped_in_ci",
                                                     reason=reason)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and _in_ci():
        reason = _skip_reason(report.longrepr)
        if not _excused(reason):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI (CI installs what it needs): {reason}"
