"""Piano-roll PNGs: the file is a valid PNG (parsed here by hand), and the pixels say what the
notes are: each track's hue at its notes' places, louder notes brighter, background elsewhere."""

from __future__ import annotations

import colorsys
import struct
import zlib

import numpy as np
import pytest

from livepiano.core import codec
from livepiano.tools.pianoroll import (
    BACKGROUND,
    HUES,
    MODEL,
    OTHER_HUES,
    PLAYER,
    layout_for,
    plot_midi,
    read_tracks,
    track_color,
)


def read_png(path) -> np.ndarray:
    """An 8-bit RGB, non-interlaced PNG -> [H, W, 3] uint8, checking every chunk's CRC and
    undoing the row filters (only filter 0 is expected from livepiano)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    w, h, depth, colour, compression, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filt, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(h, w, 3)


def hue(rgb) -> float:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    return h * 360


def _session(path, tracks):
    codec.step_notes_to_midi(tracks).save(str(path))
    return path


def _center(lay, pitch, start_s, end_s):
    y0, y1 = lay.row(pitch)
    return (y0 + y1 - 1) // 2, (lay.x(start_s) + lay.x(end_s)) // 2


def test_player_and_model_bars_have_their_hues_where_the_notes_are(tmp_path):
    mid = _session(tmp_path / "s.mid", [
        ("player", [codec.StepNote(60, 100, 0, 100)]),                # C4, 0..1 s
        ("livepiano", [codec.StepNote(72, 120, 150, 300),             # C5, 1.5..3 s
                       codec.StepNote(67, 30, 150, 300)]),            # G4, quiet
    ])
    info = plot_midi(mid, tmp_path / "s.png", 1200, 500)
    img = read_png(tmp_path / "s.png")
    assert img.shape == (500, 1200, 3)
    assert [t.name for t in info.tracks] == ["player", "livepiano"]

    lay = layout_for(read_tracks(mid), 1200, 500)
    y, x = _center(lay, 60, 0.0, 1.0)
    assert tuple(img[y, x]) == track_color(PLAYER, 100)
    assert abs(hue(img[y, x]) - HUES[PLAYER][0]) < 3
    y, x = _center(lay, 72, 1.5, 3.0)
    assert tuple(img[y, x]) == track_color(MODEL, 120)
    assert abs(hue(img[y, x]) - HUES[MODEL][0]) < 3
    # Velocity is brightness: the quiet note has the same hue, darker.
    yq, xq = _center(lay, 67, 1.5, 3.0)
    assert abs(hue(img[yq, xq]) - HUES[MODEL][0]) < 3
    assert int(img[yq, xq].max()) < int(img[y, x].max()) - 40
    # Where no note is: background (E4 is a white key; 2.5 s is between the second lines).
    y, x = _center(lay, 64, 2.2, 2.8)
    assert tuple(img[y, x]) == BACKGROUND
    # The player's bar ends where its note ends.
    y, _ = _center(lay, 60, 0, 1)
    assert tuple(img[y, lay.x(1.0) + 3]) != track_color(PLAYER, 100)
    # The pitch range is whole octaves around the notes, at least three of them.
    assert lay.low % 12 == 0 and lay.high % 12 == 11 and lay.low <= 60 and lay.high >= 72


def test_other_tracks_get_a_third_hue_and_names_are_matched_loosely(tmp_path):
    mid = _session(tmp_path / "t.mid", [
        ("Primer", [codec.StepNote(48, 90, 0, 50)]),
        ("model", [codec.StepNote(50, 90, 0, 50)]),
        ("strings", [codec.StepNote(52, 90, 0, 50)]),
    ])
    tracks = read_tracks(mid)
    assert [t.role for t in tracks] == ["player", "model", "other"]
    plot_midi(mid, tmp_path / "t.png")
    img = read_png(tmp_path / "t.png")
    lay = layout_for(tracks)
    hues = [hue(img[_center(lay, p, 0, 0.5)]) for p in (48, 50, 52)]
    expected = [HUES[PLAYER][0], HUES[MODEL][0], OTHER_HUES[0][0]]
    assert all(abs(h - e) < 3 for h, e in zip(hues, expected)), hues
    assert min(abs(a - b) for a, b in [(hues[0], hues[1]), (hues[0], hues[2]),
                                        (hues[1], hues[2])]) > 60


def test_legend_and_labels_are_drawn(tmp_path):
    mid = _session(tmp_path / "l.mid", [("player", [codec.StepNote(60, 100, 0, 400)])])
    plot_midi(mid, tmp_path / "l.png")
    img = read_png(tmp_path / "l.png")
    lay = layout_for(read_tracks(mid))
    legend = img[:lay.top, lay.left:lay.left + 300]
    assert (legend == track_color(PLAYER, 110)).all(axis=2).any()  # the swatch
    assert (legend.max(axis=2) > 120).sum() > 100  # text
    assert (img[:, :lay.left].max(axis=2) > 80).any()  # octave labels
    assert (img[lay.bottom:].max(axis=2) > 80).any()  # time labels


def test_an_empty_file_draws_an_empty_roll(tmp_path):
    import mido

    mid = mido.MidiFile()
    mid.tracks.append(mido.MidiTrack())
    mid.save(str(tmp_path / "e.mid"))
    info = plot_midi(tmp_path / "e.mid", tmp_path / "e.png", 600, 250)
    assert info.tracks == [] and read_png(tmp_path / "e.png").shape == (250, 600, 3)


def test_tempo_changes_are_applied(tmp_path):
    import mido

    mid = mido.MidiFile(ticks_per_beat=100)
    t0, t1 = mido.MidiTrack(), mido.MidiTrack()
    t0.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))   # 1 s per beat
    t0.append(mido.MetaMessage("set_tempo", tempo=250_000, time=100))   # from 1 s: 0.25 s/beat
    t1.append(mido.MetaMessage("track_name", name="player", time=0))
    t1.append(mido.Message("note_on", note=60, velocity=80, time=200))  # 1 s + 0.25 s
    t1.append(mido.Message("note_on", note=60, velocity=0, time=400))   # + 1 s
    mid.tracks += [t0, t1]
    mid.save(str(tmp_path / "tempo.mid"))
    (track,) = read_tracks(tmp_path / "tempo.mid")
    assert track.notes == [(60, 80, pytest.approx(1.25), pytest.approx(2.25))]


def test_plot_command(run_livepiano, tmp_path):
    mid = _session(tmp_path / "session.mid", [
        ("player", [codec.StepNote(60, 100, 0, 100)]),
        ("livepiano", [codec.StepNote(64, 100, 100, 200)])])
    r = run_livepiano("plot", mid)
    assert r.returncode == 0, r.stderr
    assert "player 1 notes, livepiano 1 notes" in r.stdout
    assert read_png(tmp_path / "session.png").shape == (500, 1200, 3)
    r = run_livepiano("plot", mid, "-o", tmp_path / "small.png", "--size", "640x300")
    assert r.returncode == 0 and read_png(tmp_path / "small.png").shape == (300, 640, 3)
    r = run_livepiano("plot", tmp_path / "missing.mid")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    (tmp_path / "bad.mid").write_bytes(b"not midi")
    r = run_livepiano("plot", tmp_path / "bad.mid")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_the_player_stays_visible_over_a_held_model_note(tmp_path):
    # The model's track comes first in the file and holds C4 for 3 s; the player strikes C4
    # for 0.5 s in the middle of it.
    mid = _session(tmp_path / "o.mid", [
        ("livepiano", [codec.StepNote(60, 100, 0, 300)]),
        ("player", [codec.StepNote(60, 100, 100, 150)])])
    plot_midi(mid, tmp_path / "o.png")
    img = read_png(tmp_path / "o.png")
    lay = layout_for(read_tracks(mid))
    assert tuple(img[_center(lay, 60, 1.0, 1.5)]) == track_color(PLAYER, 100)
    assert tuple(img[_center(lay, 60, 2.0, 2.5)]) == track_color(MODEL, 100)
