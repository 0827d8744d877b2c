"""The session journal and the recorder on it: records survive a crash up to the last flush,
the MIDI file comes from the journal, record paths are checked before playing, and an
existing file is never overwritten."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import mido
import pytest
from jackserver import REPO, livepiano_env, read_only

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.live import journal
from livepiano.live.listener import PlayerEvent
from livepiano.live.recorder import (
    Recorder,
    open_journal,
    record_path,
    recover,
    recover_orphans,
)


def _recorder(path, origin=100.0) -> Recorder:
    return Recorder(open_journal(path, origin))


def test_recorder_writes_player_and_model_tracks(tmp_path):
    rec = _recorder(tmp_path / "s.mid")
    rec.heard([PlayerEvent(100.5, True, 60, 90), PlayerEvent(101.0, False, 60, 0)])
    rec.sent(100.7, [0x90, 72, 80])
    rec.sent(100.9, [0x80, 72, 0])
    rec.sent(101.0, [0xB0, 123, 0])
    assert (rec.notes_in(), rec.notes_out()) == (1, 1)
    path = rec.save()
    assert path == tmp_path / "s.mid"
    assert not journal.journal_path(path).exists()
    mid = mido.MidiFile(str(path))
    assert [t.name for t in mid.tracks] == ["player", "livepiano"]
    by_pitch = {n.pitch: n for n in codec.read_midi(path.read_bytes())[0]}
    player, model = by_pitch[60], by_pitch[72]
    assert (player.pitch, round(player.start, 2), round(player.end, 2)) == (60, 0.5, 1.0)
    assert (model.pitch, round(model.start, 2), round(model.end, 2)) == (72, 0.7, 0.9)


def test_journal_buffers_do_not_grow_and_are_not_tracked_by_the_gc(tmp_path):
    jr = journal.Journal(tmp_path / "s.mid", 0.0, capacity=64)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(1000):  # over 15 buffers' worth between two flushes
        jr.add(journal.MODEL, i * 0.01, 0x90, 60 + i % 12, 80)
    assert len(gc.get_objects()) - before < 20
    jr.flush()
    assert jr.records == 1000
    assert len(journal.read(jr.path).records) == 1000
    jr.discard()


def test_a_killed_session_is_recovered_up_to_its_last_flush(tmp_path):
    target = tmp_path / "s.mid"
    code = (f"import os, time\n"
            f"from livepiano.live import journal\n"
            f"jr = journal.Journal({str(target)!r}, 0.0)\n"
            f"for i in range(200):\n"
            f"    jr.add(journal.MODEL, i * 0.05, 0x90 if i % 2 == 0 else 0x80, 60, 80)\n"
            f"jr.flush()\n"
            f"jr.add(journal.MODEL, 11.0, 0x90, 61, 80)\n"  # never flushed: lost
            f"print('ready', flush=True)\n"
            f"time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.stdout.readline().strip() == "ready"
    jpath = journal.journal_path(target)
    assert journal.held(jpath) and journal.orphans(tmp_path) == []
    proc.kill()
    proc.wait(10)
    assert journal.orphans(tmp_path) == [jpath]
    said = []
    saved = recover_orphans([tmp_path], said.append)
    assert saved == [target] and not jpath.exists()
    assert "did not end cleanly" in said[0] and str(target) in said[0]
    notes = codec.read_midi(target.read_bytes())[0]
    assert len(notes) == 100 and max(n.end for n in notes) == pytest.approx(9.95, abs=0.02)


def test_recover_never_overwrites_and_refuses_a_running_session(tmp_path):
    target = tmp_path / "s.mid"
    jr = journal.Journal(target, 0.0)
    jr.add(journal.PLAYER, 1.0, 0x90, 60, 80)
    jr.flush()
    with pytest.raises(LivepianoError, match="running session"):
        recover(jr.path)
    jr._file.close()  # the session dies: its lock goes with its file
    target.write_bytes(b"somebody else's file")
    saved, contents = recover(jr.path)
    assert saved == tmp_path / "s-2.mid"
    assert target.read_bytes() == b"somebody else's file"
    assert len(contents.records) == 1


def test_record_path_is_checked_before_playing(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for bad, why in ((afile / "s.mid", "is a file"), (tmp_path / "missing" / "s.mid",
                                                       "does not exist"),
                     (tmp_path, "is a folder")):
        with pytest.raises(LivepianoError, match=why) as e:
            record_path(str(bad))
        assert "\n" not in str(e.value)
    existing = tmp_path / "take.mid"
    existing.write_bytes(b"an earlier take")
    path, note = record_path(str(existing))
    assert path == tmp_path / "take-2.mid" and "take-2.mid" in note
    path, note = record_path(str(tmp_path / "new.mid"))
    assert path == tmp_path / "new.mid" and note is None


_OPEN_IN = """
import sys
from pathlib import Path

from livepiano import LivepianoError
from livepiano.live.recorder import open_journal, record_path

folder = Path(sys.argv[1])
try:
    (folder / "probe").write_text("x")
    print("the folder takes files")
except OSError:
    pass
path, _ = record_path(str(folder / "s.mid"))
try:
    open_journal(path, 0.0)
    print("accepted")
except LivepianoError as e:
    print("refused:", e)
"""


def test_a_read_only_folder_fails_at_start(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only(folder) as wrap:
        done = subprocess.run(wrap([sys.executable, "-c", _OPEN_IN, folder]),
                              capture_output=True, text=True, timeout=60, cwd=REPO,
                              env=livepiano_env(os.environ))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refused: cannot write the recording to "
                                                   f"{folder} "), done.stdout
    assert list(folder.iterdir()) == []


def test_two_hours_of_journal_make_the_whole_midi_file(tmp_path):
    """A pre-filled journal as long as two hours of busy playing becomes the MIDI file, every
    note of it. (How long that takes is `livepiano bench soak`'s figure, not a test's.)"""
    rec = _recorder(tmp_path / "long.mid", origin=0.0)
    add = rec.journal.add
    t = 0.0
    for i in range(2 * 3600 * 20):  # 20 messages a second, both tracks
        t += 0.05
        track = i % 2
        add(track, t, 0x90 if i % 4 < 2 else 0x80, 40 + i % 48, 70)
        if i % 20000 == 0:
            rec.journal.flush(sync=False)
    path = rec.save()
    notes = codec.read_midi(path.read_bytes())[0]
    assert len(notes) == 2 * 3600 * 20 // 2
    assert max(n.end for n in notes) == pytest.approx(2 * 3600, abs=0.1)


def test_recover_command(tmp_path, run_livepiano):
    jr = journal.Journal(tmp_path / "take.mid", 0.0)
    jr.add(journal.PLAYER, 1.0, 0x90, 60, 80)
    jr.add(journal.PLAYER, 2.0, 0x80, 60, 0)
    jr.flush()
    jr._file.close()  # as a killed session leaves it
    done = run_livepiano("recover", jr.path)
    assert done.returncode == 0, done.stderr
    assert "recovered 2 s" in done.stdout and (tmp_path / "take.mid").is_file()
    again = run_livepiano("recover", jr.path)
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1
    assert "cannot read the journal" in again.stderr


def test_play_refuses_an_unwritable_record_path_before_anything_opens(tmp_path, run_livepiano):
    afile = tmp_path / "afile"
    afile.write_text("x")
    done = run_livepiano("play", "--record", afile / "s.mid", timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"livepiano: --record {afile / 's.mid'}: {afile} is a file, not a folder; give a path "
        f"in a folder."]
