"""`livepiano inspect`, run as a user runs it: a real subprocess of this checkout."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from livepiano.core import codec

DATA = Path(__file__).resolve().parent / "data"
FIXTURES = sorted(DATA.glob("*.mid")) + sorted((DATA / "tricky").glob("*.mid"))


@pytest.fixture(scope="module")
def inspected(run_livepiano):
    """`inspect FILE --tokens` for every fixture, a few at a time (each is a fresh Python)."""
    with ThreadPoolExecutor(4) as pool:
        procs = pool.map(lambda p: run_livepiano("inspect", p, "--tokens"), FIXTURES)
        return dict(zip(FIXTURES, procs))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_inspect_tokens_prints_exactly_the_golden_line(path, inspected, golden):
    proc = inspected[path]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == " ".join(map(str, golden(path))) + "\n"
    assert proc.stderr == ""


def test_inspect_summary(run_livepiano, golden):
    path = DATA / "chopin_op10_12.mid"
    tokens = golden(path)
    proc = run_livepiano("inspect", path)
    assert proc.returncode == 0, proc.stderr
    fields = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            fields[parts[0]] = parts[1:]
    seconds = codec.duration_steps(tokens) / codec.STEPS_PER_SECOND
    counts = codec.events_per_kind(tokens)
    assert fields["duration"] == [f"{seconds:.2f}", "s"]
    assert int(fields["notes"][0]) == counts["on"]
    assert int(fields["events"][0]) == len(tokens)
    assert float(fields["events/s"][0]) == pytest.approx(len(tokens) / seconds, abs=0.05)
    assert int(fields["note-on"][0]) == counts["on"]
    assert int(fields["note-off"][0]) == counts["off"]
    assert int(fields["time-shift"][0]) == counts["shift"]
    assert int(fields["velocity"][0]) == counts["velocity"]


@pytest.mark.parametrize("tokens_flag", [True, False], ids=["tokens", "summary"])
def test_inspect_bad_files_fail_with_one_line(tmp_path, run_livepiano, tokens_flag, write_bad_midi):
    for path in write_bad_midi(tmp_path) + [tmp_path / "missing.mid"]:
        proc = run_livepiano("inspect", path, *(["--tokens"] if tokens_flag else []))
        assert proc.returncode != 0, path.name
        assert proc.stdout == "", path.name
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("livepiano: "), (path.name, proc.stderr)
        assert path.name in lines[0]
        assert "Traceback" not in proc.stderr
