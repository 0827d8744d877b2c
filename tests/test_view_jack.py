"""`livepiano play --view` and `livepiano demo --view` as real subprocesses on JACK, with a
headless Chromium on the page: the page shows both parts, every note within 0.2 s of the moment
livepiano heard or sent it (one machine, one wall clock: the page's drawing time against the
session's clock).

Marked ``jack``: skipped where jackd or the browser is missing, but a failure when $CI is set."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from browser import Browser, need_browser
from jackserver import (
    DATA,
    Capture,
    JackServer,
    Pianist,
    die_with_parent,
    excerpt,
    jackd_available,
    livepiano_env,
    need,
    start_livepiano,
    tiny_model,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.jack
EXCERPT = DATA / "chopin_op10_12.mid"
WITHIN_MS = 200.0


def _lags(seen: dict) -> dict[str, list[float]]:
    """Per part, how long after its time each note was first drawn (ms)."""
    return {who: sorted(drawn - (seen["origin"] + t) for t, drawn, _ in seen["seen"][who])
            for who in ("p", "m")}


def _collect(b: Browser) -> dict:
    return b.js("return {seen: livepiano.seen, origin: livepiano.originEpochMs}")


class Lines:
    """A child's stderr, read line by line in a thread (kept, and searchable as it comes)."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float, proc) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line like {pattern!r}:\n{self.text()}")

    def text(self) -> str:
        self._thread.join(0.5)
        return "".join(self.lines)


def _stop(proc, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError("livepiano did not stop") from None


def _assert_within(seen: dict, what: str) -> dict:
    lags = _lags(seen)
    for who, part in (("p", "the pianist's"), ("m", "the model's")):
        assert len(lags[who]) >= 10, f"{what}: only {len(lags[who])} of {part} note events drawn"
        assert lags[who][0] > -5, (what, who, lags[who][:5])  # never before their time
        assert lags[who][-1] <= WITHIN_MS, f"{what}: {part} notes drawn up to " \
                                           f"{lags[who][-1]:.0f} ms late: {lags[who][-10:]}"
    print(f"{what}: " + "; ".join(
        f"{who} {len(v)} events drawn after p50 {v[len(v) // 2]:.0f} ms, max {v[-1]:.0f} ms"
        for who, v in lags.items()))
    return lags


def test_play_view_on_jack_shows_both_parts_within_0_2_s(tiny_model, tmp_path):
    need(jackd_available(), "jackd is not installed")
    need_browser()
    with JackServer() as jack:
        pianist, cap = Pianist("pianist-view", "keys"), Capture("capture-view", jack.env)
        proc = start_livepiano(jack.env, "play", "--api", "jack", "--in", "pianist-view",
                               "--out", "capture-view", "--model", tiny_model, "--record",
                               tmp_path / "s.mid", "--seed", 1, "--view", "--view-port", 0)
        err = Lines(proc.stderr)
        try:
            url = err.wait_for(r"the view: (http://\S+)", 60, proc).group(1)
            jack.wait_connected(proc, "pianist-view:keys", "capture-view:input")
            with Browser() as b:
                b.driver.get(url)
                b.wait("window.livepiano && livepiano.frames > 0", 20, "its first frames")
                pianist.play(excerpt(EXCERPT, 8.0))
                time.sleep(1.0)
                seen = _collect(b)
        finally:
            _stop(proc)
            pianist.close()
            cap.close()
    assert proc.returncode == 0, err.text()
    _assert_within(seen, "play --view")


def test_demo_view_on_jack_shows_both_parts_within_0_2_s(tmp_path):
    need(jackd_available(), "jackd is not installed")
    need_browser()
    env = livepiano_env(os.environ)
    env.pop("JACK_DEFAULT_SERVER", None)  # the demo starts its own
    proc = subprocess.Popen(
        [sys.executable, "-m", "livepiano.cli", "demo", "--api", "jack", "--seconds", "20",
         "--no-wav", "--seed", "3", "-o", str(tmp_path), "--view", "--view-port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=die_with_parent())
    err = Lines(proc.stderr)
    try:
        url = err.wait_for(r"the view: (http://\S+)", 60, proc).group(1)
        with Browser() as b:
            b.driver.get(url)
            b.wait("window.livepiano && livepiano.frames > 0", 20, "its first frames")
            b.wait("document.getElementById('mode').textContent === 'duet'", 10, "duet mode")
            turns = set()
            while proc.poll() is None:  # the duet's turn as the page shows it, while it plays
                turns.add(b.js("return document.getElementById('turn').textContent"))
                time.sleep(0.1)
            seen = _collect(b)
            latency = b.js("return document.getElementById('latency').textContent")
    finally:
        _stop(proc, 90)
    out = proc.stdout.read()
    assert proc.returncode == 0, err.text() + out
    assert {"listening", "answering"} <= turns, turns
    assert re.fullmatch(r"last answer after \d+\.\d\d s", latency), latency
    _assert_within(seen, "demo --view")
