"""`bench ensemble`: the pianist's keyboard part is `bench music`'s excerpt, and the bench runs
`livepiano play` for real over a private JACK server (a short session here).

The JACK test is marked ``jack``: skipped where jackd is missing, a failure when $CI is set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jackserver import jackd_available, need

from livepiano.core import codec
from livepiano.live.listener import PedalEncoder
from livepiano.tools.bench import ensemble, music

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
EXCERPTS = sorted(DATA.glob("*.mid"))


def _heard(timed) -> list[tuple[float, float, int]]:
    """The notes a session hears from ``timed`` messages (the listener's pedal rule)."""
    encoder, sounding, notes = PedalEncoder(), {}, []
    for t, m in timed:
        for ev in encoder.feed(m, t):
            if ev.on:
                sounding.setdefault(ev.pitch, []).append(t)
            elif sounding.get(ev.pitch):
                notes.append((sounding[ev.pitch].pop(0), t, ev.pitch))
    assert not any(sounding.values()), "a key or the pedal is left down at the end"
    return sorted(notes)


@pytest.mark.parametrize("path", EXCERPTS, ids=lambda p: p.stem)
def test_the_keyboard_plays_the_excerpt_bench_music_hears(path):
    notes = music.file_notes(path)
    start, seconds = music.ensemble_start(notes), 8.0
    want = sorted((s, e, p) for s, e, p, _ in music.excerpt(notes, start, seconds))
    timed = ensemble.excerpt_messages(path, start, seconds)
    assert [t for t, _ in timed] == sorted(t for t, _ in timed)
    assert timed[0][0] == pytest.approx(0.0)
    assert timed[-1][0] <= seconds + music.EXCERPT_TAIL_S + 1e-9
    got = _heard(timed)
    assert len(got) == len(want)
    for (s, e, p), (ws, we, wp) in zip(got, want):
        assert (p, s) == (wp, pytest.approx(ws, abs=1e-5))
        if we <= seconds:  # a note that ends inside the excerpt ends as in the performance
            assert e == pytest.approx(we, abs=1e-5)
        else:  # past it, a key struck again after the excerpt (not played) no longer ends it
            assert we - 1e-5 <= e <= seconds + music.EXCERPT_TAIL_S + 1e-5


def test_session_parts_are_set_from_the_pianists_first_note(tmp_path):
    steps = [codec.StepNote(60, 80, 150, 250), codec.StepNote(64, 80, 1050, 1450)]
    mine = [codec.StepNote(50, 70, 120, 160),  # before the pianist: not counted
            codec.StepNote(55, 70, 400, 700), codec.StepNote(67, 70, 1000, 1300),
            codec.StepNote(72, 70, 1200, 1250)]  # struck after the excerpt: not counted
    path = tmp_path / "s.mid"
    codec.step_notes_to_midi([("player", steps), ("livepiano", mine)]).save(str(path))
    pianist, model = ensemble.session_parts(path, seconds=10.0, tail=2.0)
    assert pianist == [pytest.approx((0.0, 1.0, 60)), pytest.approx((9.0, 12.0, 64))]
    assert model == [pytest.approx((2.5, 5.5, 55)), pytest.approx((8.5, 10.0, 67))]


def test_pieces_are_picked_by_name_or_number():
    pieces = [(c, Path(f)) for c, f in music.ENSEMBLE_PIECES]
    assert ensemble.choose_pieces(pieces, None) == pieces
    assert [c for c, _ in ensemble.choose_pieces(pieces, "contrapuntal,slow-pedalled")] == [
        "slow, pedalled", "contrapuntal"]
    assert [c for c, _ in ensemble.choose_pieces(pieces, "1, slow, pedalled")] == [
        "fast", "slow, pedalled"]
    with pytest.raises(Exception, match="no piece 'waltz'"):
        ensemble.choose_pieces(pieces, "waltz")


@pytest.mark.jack
def test_a_short_session_through_jack_is_measured_beside_the_simulated_one(tmp_path,
                                                                         reference_midi):
    need(jackd_available(), "jackd is not installed")
    folder, env = reference_midi
    keep = tmp_path / "kept"
    r = subprocess.run([sys.executable, "-m", "livepiano", "bench", "ensemble", "--reference",
                        str(folder), "--pieces", "1", "--seconds", "10", "--keep", str(keep),
                        "--json"], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    figures = json.loads(r.stdout)  # the whole of stdout
    assert figures["seconds"] == 10.0 and len(figures["pieces"]) == 1
    for key in (*music.ENSEMBLE_KEYS, "clash_max"):
        assert f"ens_{key}" in figures and f"sim_ens_{key}" in figures
        assert key in figures["ens_minus_sim"]
    assert figures["ens_clash"] is not None and figures["ens_key_lift"] is not None
    assert "real_ens_clash_excerpts" in figures
    [row] = figures["ens_performances"]
    assert row["notes"] > 0, "the model played nothing through JACK"
    # the pianist's notes reached the session (JACK may lose a few on a loaded machine)
    assert row["pianist_notes"] >= 0.9 * row["pianist_notes_played"] > 0
    # the session as play recorded it: the pianist's part and the model's
    kept = keep / f"continuous-{figures['pieces'][0]}.mid"
    mid = codec.parse_midi(kept.read_bytes())
    assert [t.name for t in mid.tracks][-2:] == ["player", "livepiano"]
