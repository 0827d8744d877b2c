"""The guardian's side of things without a MIDI system: what it would send, and the shared
map the scheduler keeps for it."""

from __future__ import annotations

import threading
import time

from livepiano.core.messages import ALL_NOTES_OFF, ALL_SOUND_OFF, SUSTAIN
from livepiano.live.guardian import Sounding, silence
from livepiano.live.scheduler import Scheduler


class Out:
    def __init__(self):
        self.sent = []

    def send_message(self, m):
        self.sent.append(list(m))


def test_the_scheduler_keeps_the_shared_map_of_what_sounds():
    sounding = Sounding()
    try:
        out = Out()
        sched = Scheduler(out, channel=2, mirror=sounding)
        thread = threading.Thread(target=sched.run, daemon=True)
        thread.start()
        for m in ([0x92, 60, 90], [0x92, 60, 80], [0x92, 64, 70], [0x95, 30, 50],
                  [0x82, 64, 0], [0x92, 62, 0]):
            sched.send_now(m)
        deadline = time.monotonic() + 5
        while len(out.sent) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        state = bytes(sounding.map)
        messages = silence(state, 2)
        offs = [m for m in messages if m[0] & 0xF0 == 0x80]
        assert sorted(map(tuple, offs)) == [(0x82, 60, 0), (0x82, 60, 0), (0x85, 30, 0)]
        ccs = [(m[0] & 0x0F, m[1]) for m in messages if m[0] & 0xF0 == 0xB0]
        assert ccs == [(ch, cc) for ch in (2, 5) for cc in (ALL_SOUND_OFF, ALL_NOTES_OFF,
                                                            SUSTAIN)]
        sched.stop()  # the scheduler's panic: the guardian would send only the controllers
        thread.join(5)
        assert [m for m in silence(bytes(sounding.map), 2) if m[0] & 0xF0 == 0x80] == []
    finally:
        sounding.close()


def test_the_guardian_imports_no_model_runtime():
    import os
    import subprocess
    import sys

    code = ("import sys, livepiano.live.guardian as g; g.silence(bytes(g.SIZE), 0); import rtmidi; "
            "print(' '.join(m for m in ('numpy', 'onnxruntime', 'torch', 'yaml', 'mido') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.getcwd()), timeout=60, check=True)
    assert done.stdout.strip() == ""


def test_a_note_is_in_the_shared_map_before_it_is_sent_and_leaves_it_after():
    # What the guardian would see if the session died inside send_message: the note about to
    # start is already there, the note being released is still there.
    sounding = Sounding()
    try:
        seen = []

        class Watching(Out):
            def send_message(self, m):
                seen.append([tuple(x) for x in silence(bytes(sounding.map), 0)
                             if x[0] & 0xF0 == 0x80])
                super().send_message(m)

        out = Watching()
        sched = Scheduler(out, channel=0, mirror=sounding)
        thread = threading.Thread(target=sched.run, daemon=True)
        thread.start()
        sched.send_now([0x90, 60, 90])
        sched.send_now([0x80, 60, 0])
        deadline = time.monotonic() + 5
        while len(out.sent) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen[:2] == [[(0x80, 60, 0)], [(0x80, 60, 0)]]
        assert [m for m in silence(bytes(sounding.map), 0) if m[0] & 0xF0 == 0x80] == []
        sched.stop()
        thread.join(5)
    finally:
        sounding.close()
