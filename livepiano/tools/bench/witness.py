"""Witnesses beside a benchmark: bare processes, one held on each CPU, that only sleep to a
deadline every 2 ms at a real-time priority above the benchmark's and note how late they
woke, so that a benchmark can tell the machine's own stalls (a virtual CPU taken away by its
host, a kernel busy elsewhere) from lateness of its own making.

A witness runs as ``python -m livepiano.tools.bench.witness FILE CPU`` (numpy only, no model,
no threads); it stops on SIGTERM and leaves in FILE every wake-up later than 0.5 ms (its
deadline and lateness, on the system-wide monotonic clock that the benchmark's deadlines use)
and how many wake-ups it had in all. ``Witness`` starts them, stops them and reads them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PERIOD_S = 0.002
NOTED_S = 0.0005  # wake-ups at least this late are kept
CAPACITY = 1 << 20
PRIORITY = 4  # above the scheduler's SCHED_FIFO priority, so the benchmark cannot delay it


class Witness:
    """Start with ``start``; ``stop`` ends the processes and keeps what they saw: the late
    wake-ups of all of them (``deadline``, ``lateness`` arrays), ``wakes`` in all and the
    ``note`` saying where and at which priority they ran."""

    def __init__(self, cpus=None):
        if cpus is None:
            cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [-1]
        self.cpus = list(cpus)
        self._runs: list[tuple[subprocess.Popen, Path]] = []
        self.deadline = self.lateness = None
        self.wakes = 0
        self.note = "not run"

    def start(self) -> None:
        notes = []
        for cpu in self.cpus:
            fd, name = tempfile.mkstemp(prefix="livepiano-witness-", suffix=".npz")
            os.close(fd)
            process = subprocess.Popen(
                [sys.executable, "-m", "livepiano.tools.bench.witness", name, str(cpu)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            notes.append((process.stdout.readline() or "did not start").strip())
            self._runs.append((process, Path(name)))
        self.note = f"{len(self._runs)} on {len(self._runs)} CPUs, " + "; ".join(
            sorted(set(notes)))

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self._runs]

    def stop(self) -> "Witness":
        import numpy as np

        deadlines, latenesses = [np.zeros(0)], [np.zeros(0)]
        for process, _ in self._runs:
            process.send_signal(signal.SIGTERM)
        for process, path in self._runs:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            try:
                with np.load(path) as seen:
                    deadlines.append(seen["deadline"])
                    latenesses.append(seen["lateness"])
                    self.wakes += int(seen["wakes"])
            except (OSError, KeyError, ValueError):
                self.note += "; one left nothing"
            path.unlink(missing_ok=True)
        self._runs = []
        self.deadline, self.lateness = np.concatenate(deadlines), np.concatenate(latenesses)
        return self

    def stalled(self, deadline, lateness):
        """For each of a benchmark's late deadlines (arrays: deadline, lateness in seconds),
        whether a witness too was late at some moment while that deadline waited."""
        import numpy as np

        if self.deadline is None:
            return np.zeros(len(deadline), dtype=bool)
        return overlapping(np.asarray(deadline), np.asarray(lateness), self.deadline,
                         self.deadline + self.lateness)

    def minute_max(self, start: float, end: float) -> float:
        """The witness's largest lateness (seconds) among its deadlines in [start, end)."""
        if self.deadline is None or not len(self.deadline):
            return 0.0
        inside = (self.deadline >= start) & (self.deadline < end)
        return float(self.lateness[inside].max()) if inside.any() else 0.0


def overlapping(deadline, lateness, starts, ends):
    """For each [deadline, deadline + lateness], whether some [start, end) interval (sorted by
    start) overlaps it."""
    import numpy as np

    if not len(starts) or not len(deadline):
        return np.zeros(len(deadline), dtype=bool)
    order = np.argsort(starts)
    starts, ends = starts[order], np.maximum.accumulate(ends[order])
    before = np.searchsorted(starts, deadline + lateness, side="right")
    return np.where(before > 0, ends[np.maximum(before - 1, 0)], -np.inf) > deadline


def _run(path: str, cpu: int) -> None:
    import numpy as np

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    if cpu >= 0:
        os.sched_setaffinity(0, [cpu])
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PRIORITY))
        note = f"SCHED_FIFO priority {PRIORITY}"
    except (OSError, AttributeError):
        note = "normal priority (no real-time scheduling here: they may be late of their own)"
    deadline_at = np.zeros(CAPACITY)
    lateness = np.zeros(CAPACITY)
    n = wakes = 0
    print(note, flush=True)
    clock, sleep = time.monotonic, time.sleep
    deadline = clock()
    while not stop:
        deadline += PERIOD_S
        wait = deadline - clock()
        if wait > 0:
            sleep(wait)
        late = clock() - deadline
        wakes += 1
        if late >= NOTED_S and n < CAPACITY:
            deadline_at[n], lateness[n] = deadline, late
            n += 1
        if late > PERIOD_S:  # a stall: carry on from now, not with a burst of catch-up
            deadline = clock()
    np.savez(path, deadline=deadline_at[:n], lateness=lateness[:n], wakes=wakes)


if __name__ == "__main__":
    _run(sys.argv[1], int(sys.argv[2]))
