"""The soak benchmark's parts: the witnesses that tell the machine's stalls from the
instrument's own lateness, and a short soak from start to saved file."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from livepiano.core.shipped import shipped_file
from livepiano.tools.bench.soak import soak
from livepiano.tools.bench.witness import Witness, overlapping


def test_overlapping_finds_the_intervals_that_meet():
    deadline = np.array([1.0, 2.0, 3.0, 5.0])
    lateness = np.array([0.1, 0.1, 0.5, 0.1])
    starts = np.array([3.4, 1.05, 4.0])
    ends = np.array([3.6, 1.06, 4.9])
    assert overlapping(deadline, lateness, starts, ends).tolist() == [True, False, True, False]
    assert overlapping(deadline, lateness, np.zeros(0), np.zeros(0)).tolist() == [False] * 4


def test_a_witness_that_is_held_up_says_when_and_for_how_long():
    witness = Witness()
    witness.start()
    try:
        time.sleep(0.2)
        held = time.monotonic()
        os.kill(witness.pids[0], signal.SIGSTOP)
        time.sleep(0.05)
        resumed = time.monotonic()
        os.kill(witness.pids[0], signal.SIGCONT)
        time.sleep(0.2)
    finally:
        witness.stop()
    assert witness.wakes > 100 * len(witness.cpus)
    # The held witness noted a wake-up whose deadline fell while it was held and which came
    # only after it was let go: at least as late as it was held after that deadline. (Other
    # stalls of this machine may be noted too, and be larger.)
    deadline, lateness = witness.deadline, witness.lateness
    spans = (deadline >= held - 0.003) & (deadline <= resumed) & (deadline + lateness >= resumed)
    assert spans.any(), list(zip(deadline, lateness))
    # A benchmark deadline inside that hold was in a machine stall; one after the witnesses
    # stopped was not.
    during = float(deadline[spans][0]) + 0.001
    late = witness.stalled([during, resumed + 1.0], [0.002, 0.002])
    assert late.tolist() == [True, False]


def test_a_short_soak_reports_every_minute_figure_and_saves():
    model = shipped_file("models", "performance_rnn.onnx")
    r = soak(model, 0.1)
    m = r["minutes"][0]
    assert m["deadlines"] > 50 and m["p99_us"] is not None and "machine_max_us" in m
    assert r["notes_in"] > 0 and r["notes_out"] > 0
    assert r["save_s"] > 0 and r["save_two_hours_s"] > 0 and r["witness_wakes"] > 1000
    assert 0 <= r["late_over_1ms_in_machine_stalls"] <= r["late_over_1ms"]
    assert not os.path.exists(r["saved"])
