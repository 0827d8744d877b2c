"""The session's recording as it is played: an append-only journal of fixed-size records next
to the session's MIDI file, written to disk about every second, turned into that MIDI file at
the end and recoverable from disk after a crash.

    listener thread --add(player note)--+
                                        +--> Journal buffer --flush() (main thread)--> file
    scheduler thread --add(model msg)---+

Nothing of the recording lives in Python objects that grow with the session: each record is
packed into one of two preallocated bytearrays (a lock guards the buffer in use for a few
microseconds), and the main thread swaps them and writes the full one out, so the garbage
collector never has more to walk an hour in than a minute in. The journal file is held with
an exclusive ``flock`` while its session runs; a journal that nobody holds belongs to a
session that did not end cleanly (killed, crashed, power cut) and is recovered.

File layout: a 1024-byte header (magic, the wall-clock start, the MIDI file it is for), then
records of 12 bytes: seconds since the session's origin (float64), the track (0: the player's
notes, pedal applied; 1: what livepiano sent), and the message's three bytes. A record cut off
by a crash is ignored.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

from livepiano import LivepianoError

MAGIC = b"livepiano journal 1\n"
HEADER_SIZE = 1024
_HEADER = struct.Struct("<20sdH")  # magic, wall-clock start (Unix time), target path length
RECORD = struct.Struct("<dBBBB")
PLAYER, MODEL = 0, 1
SUFFIX = ".journal"
CAPACITY = 1 << 15  # records per buffer: ~16 s of a 2,000 messages/s flood between flushes
FLUSH_S = 1.0  # how often the session's main thread flushes

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; recovery is then by `livepiano recover` only
    fcntl = None


def journal_path(target: str | os.PathLike) -> Path:
    """The journal beside the MIDI file ``target``: ``NAME.mid.journal``."""
    target = Path(target)
    return target.with_name(target.name + SUFFIX)


def free_name(target: str | os.PathLike) -> Path:
    """``target`` when neither it nor its journal exists, else ``NAME-2.mid``, ``NAME-3.mid``..."""
    target = Path(target)
    candidate, n = target, 1
    while candidate.exists() or journal_path(candidate).exists():
        n += 1
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
    return candidate


class Journal:
    """The journal of one session, open for appending. ``add`` is safe from any thread;
    ``flush`` and ``close`` belong to the session's main thread."""

    def __init__(self, target: str | os.PathLike, origin: float, capacity: int = CAPACITY):
        self.target = Path(target)
        self.path = journal_path(self.target)
        self.origin = origin
        self._size = RECORD.size
        self._capacity = capacity
        self._buf = bytearray(capacity * self._size)
        self._spare = bytearray(capacity * self._size)
        self._n = 0
        self._lock = threading.Lock()  # the buffer in use and its count
        self._io = threading.Lock()  # the file: one writer at a time, records in order
        self.records = 0  # written to the file so far
        # Never an existing journal (that is another session's); appended to only, so
        # whatever is added to the file from outside stays in it.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._file = os.fdopen(fd, "wb")  # open as long as the session
        try:
            if fcntl is not None:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            name = str(self.target.resolve()).encode("utf-8")
            header = _HEADER.pack(MAGIC, time.time(), len(name)) + name
            if len(header) > HEADER_SIZE:
                raise LivepianoError(f"the path {self.target} is too long for the journal; "
                                     f"record to a shorter path.")
            self._file.write(header.ljust(HEADER_SIZE, b"\0"))
            self._file.flush()
            os.fsync(self._file.fileno())
        except BaseException:
            self._file.close()
            self.path.unlink(missing_ok=True)
            raise

    # --- any thread -----------------------------------------------------------------------

    def add(self, track: int, t: float, status: int, data1: int, data2: int) -> None:
        """One message at ``t`` on the session clock; no allocation that outlives the call."""
        with self._lock:
            if self._n == self._capacity:  # more than a buffer between two flushes
                with self._io:
                    self._write(self._buf, self._n)
                self._n = 0
            RECORD.pack_into(self._buf, self._n * self._size, t - self.origin, track,
                             status, data1, data2)
            self._n += 1

    # --- the main thread ------------------------------------------------------------------

    def flush(self, sync: bool = True) -> None:
        """Write out what was added since the last flush (and ``fsync`` it)."""
        with self._io:
            with self._lock:
                buf, n = self._buf, self._n
                self._buf, self._spare, self._n = self._spare, buf, 0
            self._write(buf, n)
            if sync:
                os.fsync(self._file.fileno())

    def _write(self, buf: bytearray, n: int) -> None:
        if n:
            with memoryview(buf) as view:
                self._file.write(view[:n * self._size])
            self._file.flush()
            self.records += n

    def close(self) -> None:
        """Flush and close (the lock goes with it); the file stays until ``discard``."""
        if self._file.closed:
            return
        self.flush()
        self._file.close()

    def discard(self) -> None:
        """The MIDI file is saved: the journal is not needed any more."""
        self.close()
        self.path.unlink(missing_ok=True)


# --- reading ---------------------------------------------------------------------------------

class Contents:
    """What a journal holds: its target MIDI file, the wall-clock start and the records as a
    numpy structured array (fields t, track, status, data1, data2)."""

    def __init__(self, target: Path, started: float, records):
        self.target = target
        self.started = started
        self.records = records

    def seconds(self) -> float:
        return float(self.records["t"].max()) if len(self.records) else 0.0


DTYPE = [("t", "<f8"), ("track", "u1"), ("status", "u1"), ("data1", "u1"), ("data2", "u1")]


def read(path: str | os.PathLike) -> Contents:
    import numpy as np

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LivepianoError(f"cannot read the journal {path} ({e.strerror or e}); give the "
                             f"path of a NAME.mid.journal file.") from None
    if len(data) < HEADER_SIZE or not data.startswith(MAGIC):
        raise LivepianoError(f"{path} is not a livepiano journal; give a NAME.mid.journal file.")
    _, started, length = _HEADER.unpack_from(data)
    target = Path(data[_HEADER.size:_HEADER.size + length].decode("utf-8", "replace"))
    whole = (len(data) - HEADER_SIZE) // RECORD.size * RECORD.size
    records = np.frombuffer(data, dtype=np.dtype(DTYPE), offset=HEADER_SIZE,
                            count=whole // RECORD.size)
    return Contents(target, started, records)


def held(path: str | os.PathLike) -> bool:
    """Is a running session writing this journal? (False where there are no locks.)"""
    if fcntl is None:
        return False
    try:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return False
    except OSError:
        return False


def orphans(folder: str | os.PathLike) -> list[Path]:
    """The journals in ``folder`` that no running session holds: sessions that did not end."""
    folder = Path(folder)
    if fcntl is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*" + SUFFIX) if p.is_file() and not held(p))
