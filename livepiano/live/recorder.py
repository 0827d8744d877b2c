"""What a play session records and where: the record path chosen and checked before playing,
the player's notes and the messages sent, journalled as they happen (``journal``), and the
two-track MIDI file (player, livepiano) made from the journal at the end or after a crash.

Threads: ``heard`` runs on the listener thread, ``sent`` on the scheduler thread; each only
adds a fixed-size record to the journal and bumps its own counter. ``save`` and everything
else belong to the session's main thread (or to ``livepiano recover``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import platformdirs

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.core.messages import NOTE_OFF, NOTE_ON
from livepiano.core.voices import pair_oldest
from livepiano.live import journal


def data_dir() -> Path:
    """The user's data folder for livepiano (sessions are saved under it)."""
    return platformdirs.user_data_path("livepiano", appauthor=False)


def sessions_dir() -> Path:
    return data_dir() / "sessions"


def default_recording() -> Path:
    return sessions_dir() / time.strftime("session-%Y%m%d-%H%M%S.mid")


def record_path(record: str | os.PathLike | None) -> tuple[Path, str | None]:
    """The file this session will be saved to, checked before anything plays: ``--record``
    (its folder must exist) or a new file in the data folder (created). An existing file is
    never overwritten: the next free name is used, and the second value says so."""
    if record:
        wanted = Path(record).expanduser()
        folder = wanted.parent
        if wanted.is_dir():
            raise LivepianoError(f"--record {record} is a folder; give a file name, e.g. "
                                 f"{wanted / 'session.mid'}.")
        if wanted.exists() and not wanted.is_file():
            raise LivepianoError(f"--record {record} is not a regular file; give the path "
                                 f"of a .mid file.")
        if folder.exists() and not folder.is_dir():
            raise LivepianoError(f"--record {record}: {folder} is a file, not a folder; "
                                 f"give a path in a folder.")
        if not folder.is_dir():
            raise LivepianoError(f"--record {record}: the folder {folder} does not exist; "
                                 f"create it or record elsewhere.")
    else:
        wanted = default_recording()
        try:
            wanted.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LivepianoError(f"cannot create the sessions folder {wanted.parent} "
                                 f"({e.strerror or e}); give --record FILE.mid.") from None
    path = journal.free_name(wanted)
    note = None
    if path != wanted:
        note = f"{wanted} exists; this session goes to {path.name} beside it"
    return path, note


def open_journal(path: Path, origin: float) -> journal.Journal:
    """The session's journal beside ``path``; creating it is the proof the folder takes
    files."""
    try:
        return journal.Journal(path, origin)
    except OSError as e:
        raise LivepianoError(f"cannot write the recording to {path.parent} "
                             f"({e.strerror or e}); record elsewhere with --record FILE.mid."
                             ) from None


class Recorder:
    """The player's notes (pedal applied, as the model heard them) and the messages the
    scheduler actually sent, with real times, into ``journal``."""

    def __init__(self, jr: journal.Journal):
        self.journal = jr
        self.origin = jr.origin
        self._in = 0  # bumped by the listener thread only
        self._out = 0  # bumped by the scheduler thread only

    def heard(self, events) -> None:
        add = self.journal.add
        for e in events:
            if e.on:
                self._in += 1
                add(journal.PLAYER, e.time, NOTE_ON, e.pitch, e.velocity)
            else:
                add(journal.PLAYER, e.time, NOTE_OFF, e.pitch, 0)

    def sent(self, t: float, message: list[int]) -> None:
        status = message[0]
        d1 = message[1] if len(message) > 1 else 0
        d2 = message[2] if len(message) > 2 else 0
        if status & 0xF0 == NOTE_ON and d2 > 0:
            self._out += 1
        self.journal.add(journal.MODEL, t, status, d1, d2)

    def notes_in(self) -> int:
        return self._in

    def notes_out(self) -> int:
        return self._out

    def save(self) -> Path:
        """The MIDI file from the journal; the journal goes once the file is there."""
        self.journal.close()
        saved = save_midi(journal.read(self.journal.path), self.journal.target)
        self.journal.discard()
        return saved


def step_notes(t, is_on, pitch, velocity) -> codec.NoteArrays:
    """A track's note events (arrays, in the order played) -> notes on the 10 ms grid, sorted
    by (start, pitch): a voice ends at the first note-off of its pitch that follows it (the
    "oldest" rule), unreleased voices at the last event; a note lasts at least one step."""
    step = (np.maximum(t, 0.0) * codec.STEPS_PER_SECOND + 0.5).astype(np.int64)
    is_on = np.asarray(is_on, dtype=bool)
    ends = pair_oldest(pitch, is_on)
    ons = np.flatnonzero(is_on)
    closer = ends[ons]
    released = closer >= 0
    start = step[ons]
    last = int(step.max()) if len(step) else 0
    end = np.maximum(np.where(released, step[np.maximum(closer, 0)], last), start + 1)
    # Notes of one pitch starting in one step keep the order in which they ended.
    ended = np.where(released, closer, len(step) + ons)
    notes = codec.NoteArrays(np.asarray(pitch, dtype=np.int64)[ons],
                             np.asarray(velocity, dtype=np.int64)[ons], start, end,
                             np.zeros(len(ons), dtype=np.int64))
    keep = np.lexsort((ended, notes.pitch, start))
    return codec.NoteArrays(*(column[keep] for column in notes))


def session_midi(records) -> bytes:
    """The bytes of the two-track MIDI file (player, livepiano) of a journal's records."""
    tracks = []
    for track, name in ((journal.PLAYER, "player"), (journal.MODEL, "livepiano")):
        r = records[records["track"] == track]
        kind = r["status"] & 0xF0
        r = r[(kind == NOTE_ON) | (kind == NOTE_OFF)]
        on = ((r["status"] & 0xF0) == NOTE_ON) & (r["data2"] > 0)
        tracks.append((name, step_notes(r["t"], on, r["data1"], r["data2"])))
    return codec.step_notes_to_smf(tracks)


def save_midi(contents: journal.Contents, target: Path) -> Path:
    """Write the MIDI file of ``contents`` to ``target`` (or, when that exists by now, to the
    next free name), whole or not at all: a crash while saving leaves the journal."""
    data = session_midi(contents.records)
    target = Path(target)
    partial = target.with_name(f".{target.name}.saving")
    with open(partial, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    while True:
        try:
            os.link(partial, target)  # unlike a rename, never replaces a file that is there
            break
        except FileExistsError:
            target = _next_free(target)
        except OSError:  # a file system without hard links
            if target.exists():
                target = _next_free(target)
                continue
            os.replace(partial, target)
            return target
    partial.unlink(missing_ok=True)
    return target


def _next_free(target: Path) -> Path:
    n = 2
    while True:
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def recover(path: str | os.PathLike) -> tuple[Path, journal.Contents]:
    """Turn the journal of a session that did not end into its MIDI file, beside the journal
    (the name it was to have, or the next free one); the journal is then removed."""
    path = Path(path)
    if journal.held(path):
        raise LivepianoError(f"{path} is being written by a running session; recover it "
                             f"after that session ends.")
    contents = journal.read(path)
    name = path.name[:-len(journal.SUFFIX)] if path.name.endswith(journal.SUFFIX) else (
        path.name + ".mid")
    try:
        saved = save_midi(contents, path.with_name(name))
    except OSError as e:
        raise LivepianoError(f"cannot write the recovered session beside {path} "
                             f"({e.strerror or e}); copy the journal to a writable folder "
                             f"and run `livepiano recover` there.") from None
    path.unlink(missing_ok=True)
    return saved, contents


def recover_orphans(folders, say) -> list[Path]:
    """Recover every journal in ``folders`` that no running session holds, saying so."""
    saved = []
    for folder in dict.fromkeys(Path(f) for f in folders):
        for path in journal.orphans(folder):
            try:
                out, contents = recover(path)
            except LivepianoError as e:
                say(f"could not recover an unfinished session: {e}")
                continue
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(contents.started))
            say(f"recovered the session of {when} that did not end cleanly "
                f"({contents.seconds():.0f} s): saved to {out}")
            saved.append(out)
    return saved
