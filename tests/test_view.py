"""The stage view (``play --view``): the hand-off from the real-time threads (bounded, lossy,
never blocking), the server's refusals (token, host, origin, values the knobs' schema rejects,
files outside the page), and a real headless Chromium on the page during a session on
in-process ports: both players' notes arrive on the roll, the temperature control changes the
engine's temperature, a MIDI knob moves the control.

The browser tests need Chromium, its chromedriver and selenium: skipped without them, failed in
CI (tests/browser.py)."""

from __future__ import annotations

import http.client
import io
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

import pytest
from browser import Browser, need_browser
from jackserver import tiny_model  # noqa: F401 (a fixture)

from livepiano import LivepianoError
from livepiano.live.inprocess import MidiIn, MidiOut
from livepiano.live.session import Session
from livepiano.live.view import pages, stage
from livepiano.live.view.process import ViewServer
from livepiano.settings import params, schema
from livepiano.tools import pianoroll

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "livepiano" / "live" / "view" / "page"
KNOB_CC = 21


# --- a session on in-process ports, with the view ----------------------------------------------

def said(rig, *texts: str, timeout: float = 5.0) -> None:
    """Until the session has said each of ``texts`` (its main thread says a knob's change at
    its next turn)."""
    deadline = time.monotonic() + timeout
    while not all(t in rig.out.getvalue() for t in texts):
        assert time.monotonic() < deadline, (texts, rig.out.getvalue())
        time.sleep(0.05)


class Rig:
    """A play session on in-process ports with the view on a free port: a pianist (a virtual
    output the session listens to) and an ear (what it plays into). ``run(body)`` plays the
    session on this (the main) thread -- it handles signals -- and ``body(rig)`` in another,
    then stops it."""

    count = 0

    def __init__(self, model, tmp_path: Path, **settings):
        Rig.count += 1
        name = f"view-t{Rig.count}"
        self.keys = MidiOut(f"pianist-{name}")
        self.keys.open_virtual_port("keys")
        self.ear = MidiIn(f"ear-{name}")
        self.ear.open_virtual_port("in")
        controls = tmp_path / "controls.yaml"
        controls.write_text(f"bindings:\n  - {{param: temperature, cc: {KNOB_CC}, channel: 1}}\n")
        self.settings = schema.defaults()
        self.settings.update({"api": "inprocess", "in": f"pianist-{name}", "out": f"ear-{name}",
                              "record": str(tmp_path / "session.mid"), "model": str(model),
                              "seed": 7, "realtime": "off", "controls": str(controls),
                              "view": True, "view_port": 0})
        self.settings.update(settings)
        self.out = io.StringIO()
        self.session = Session(self.settings, out=self.out, status=False)

    @property
    def engine(self):
        return self.session.knobs.loop.engine

    @property
    def url(self) -> str:
        return self.session.view.url

    def run(self, body, timeout: float = 120.0) -> None:
        failed: list = []

        def go():
            try:
                if not self.session.playing.wait(30):
                    raise AssertionError("the session did not start: " + self.out.getvalue())
                body(self)
            except BaseException as e:  # noqa: BLE001 - raised again on the main thread
                failed.append(e)
            finally:
                self.session.request_stop("the test is over")

        thread = threading.Thread(target=go, daemon=True)
        thread.start()
        timer = threading.Timer(timeout, self.session.request_stop, ("the test took too long",))
        timer.start()
        try:
            self.session.run()
        finally:
            timer.cancel()
            thread.join(30)
            self.keys.delete()
            self.ear.delete()
        if failed:
            raise failed[0]

    def play(self, notes: int = 30, every: float = 0.1, low: int = 55) -> None:
        """The pianist plays a rising and falling line, a note every ``every`` seconds."""
        for i in range(notes):
            pitch = low + (i % 12 if (i // 12) % 2 == 0 else 11 - i % 12)
            self.keys.send_message([0x90, pitch, 70 + i % 40])
            time.sleep(every * 0.8)
            self.keys.send_message([0x80, pitch, 0])
            time.sleep(every * 0.2)


def request(url: str, method: str = "GET", body=None, headers: dict | None = None,
            raw: bytes | None = None) -> tuple[int, str]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def base(url: str) -> str:
    return url.split("?")[0].rstrip("/")


# --- the hand-off, without a session ----------------------------------------------------------

class FakeLoop:
    def __init__(self):
        self.origin = 100.0
        self.calls = []
        self.clock = lambda: 100.0

    def call(self, fn):
        self.calls.append(fn)


class FakeScheduler:
    lateness = deque([0.0001] * 50)


class Event:
    def __init__(self, t, on, pitch, velocity):
        self.time, self.on, self.pitch, self.velocity = t, on, pitch, velocity


def test_the_hand_off_never_blocks_and_keeps_a_bounded_tail():
    st = stage.Stage(FakeLoop(), FakeScheduler(), clock=lambda: 101.0)
    t0 = time.perf_counter()
    for i in range(100_000):  # far more than it keeps, nobody draining
        st.sent(100.0 + i * 1e-5, [0x90, 60 + i % 12, 80])
    took = time.perf_counter() - t0
    assert took < 1.0  # one append each (~1 µs), whatever the view does
    assert len(st._events) == stage.EVENTS_KEPT  # the newest kept, the oldest gone
    line = st.frame(101.0, {"late_p99_ms": 0.2})
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line for the pipe
    first = json.loads(line)
    # ms from the session's origin; the newest events kept
    assert len(first["ev"]) == stage.EVENTS_KEPT
    assert first["ev"][0][:2] == ["m", round((100_000 - stage.EVENTS_KEPT) * 0.01)]
    assert first["ev"][-1][:2] == ["m", 1000]
    assert first["now"] == 1000 and first["st"]["late_p99_ms"] == 0.2
    assert json.loads(st.frame(101.0))["ev"] == []  # drained


def test_the_server_keeps_the_history_and_resyncs_a_page_that_falls_behind():
    counts = []
    pg = pages.Pages(on_count=counts.append)
    page = pg.connect()
    assert counts == [1]
    pg.feed({"now": 1000, "origin_epoch_ms": 5e11, "ev": [["m", 900, 60, 80]],
             "st": {"mode": "duet"}})
    whole = json.loads(page.next(0.1))  # a new page gets a whole frame first
    assert whole["reset"] and whole["origin_epoch_ms"] == 5e11 and whole["history_s"] == 20
    assert whole["ev"] == [["m", 900, 60, 80]] and whole["st"]["out_per_s"] == 0.5
    assert [p["name"] for p in whole["params"]] == [*params.SETTABLE, *params.PRESSABLE]
    temperature = whole["params"][0]
    assert temperature["values"][64] == pytest.approx(1.0) and len(temperature["values"]) == 128

    # the page stops reading: its queue fills, frames are dropped, nothing waits
    pg.feed({"now": 1500, "ev": [["p", 1500, 64, 90]], "st": {}})
    for i in range(pages.PAGE_FRAMES + 5):
        pg.feed({"now": 1600 + i, "ev": [], "st": {}})
    assert page.dropped > 0
    frames = []
    while (f := page.next(0.01)) not in (False, None):
        frames.append(json.loads(f))
    # behind: what it had queued went, a whole frame (with the notes it missed) came next
    resyncs = [f for f in frames if f.get("reset")]
    assert len(resyncs) == 1 and ["p", 1500, 64, 90] in resyncs[0]["ev"]
    assert len(frames) < pages.PAGE_FRAMES
    # the history keeps the last 20 s (and a little)
    pg.feed({"now": 30_000, "ev": [["p", 30_000, 65, 90]], "st": {}})
    assert list(pg.history) == [["p", 30_000, 65, 90]]
    pg.disconnect(page)
    assert counts == [1, 0]


def test_a_note_off_and_all_notes_off_reach_the_view_and_nothing_else_does():
    st = stage.Stage(FakeLoop(), FakeScheduler(), clock=lambda: 101.0)
    st.sent(100.1, [0x90, 60, 0])  # a note-on of velocity 0 ends a note
    st.sent(100.2, [0x80, 61, 0])
    st.sent(100.3, [0xB0, 123, 0])  # All Notes Off (a panic)
    st.sent(100.4, [0xB0, 64, 0])  # pedal up: not drawn
    st.heard([Event(100.5, False, 62, 0)])
    assert json.loads(st.frame(101.0))["ev"] == [["m", 100, 60, 0], ["m", 200, 61, 0],
                                                 ["m", 300, -1, 0], ["p", 500, 62, 0]]


# --- the page's files ----------------------------------------------------------------------------

def test_the_page_ships_inside_the_package_and_nothing_else_is_served():
    pyproject = (REPO / "pyproject.toml").read_text()
    packages = re.search(r"^packages = \[(.*?)\]", pyproject, re.S | re.M).group(1)
    assert '"livepiano.live.view"' in packages
    data = re.search(r'^"livepiano\.live\.view" = \[(.*)\]$', pyproject, re.M).group(1)
    patterns = [p.strip().strip('"') for p in data.split(",")]
    files = sorted(p.name for p in PAGE.iterdir())
    assert files == ["index.html", "view.css", "view.js"]
    assert all(any(Path("page", f).match(p) for p in patterns) for f in files)
    html = (PAGE / "index.html").read_text()
    assert "//" not in re.sub(r"<!--.*?-->", "", html).replace("://", "")  # no CDN, no URL
    assert not re.search(r"https?://", (PAGE / "view.js").read_text())


def test_the_page_draws_in_the_colours_of_livepiano_plot():
    js = (PAGE / "view.js").read_text()
    hues = re.search(r"const HUES = \{ p: \[(\d+), ([\d.]+)\], m: \[(\d+), ([\d.]+)\] \}", js)
    assert hues, "view.js: HUES not found"
    h = [float(x) for x in hues.groups()]
    assert (h[0], h[1]) == pianoroll.HUES[pianoroll.PLAYER]
    assert (h[2], h[3]) == pianoroll.HUES[pianoroll.MODEL]
    assert f"const BACKGROUND = [{', '.join(map(str, pianoroll.BACKGROUND))}]" in js
    css = (PAGE / "view.css").read_text()
    for var, role in (("player", pianoroll.PLAYER), ("model", pianoroll.MODEL)):
        assert f"--{var}: rgb({', '.join(map(str, pianoroll.track_color(role, 127)))})" in css
    assert f"--bg: rgb({', '.join(map(str, pianoroll.BACKGROUND))})" in css


def test_a_taken_port_is_one_line_before_anything_plays():
    first = ViewServer("127.0.0.1", 0)
    try:
        with pytest.raises(LivepianoError) as e:
            ViewServer("127.0.0.1", first.port)
        assert "--view-port" in str(e.value) and "\n" not in str(e.value)
    finally:
        first.close()


def test_the_view_settings_are_checked_by_the_schema():
    assert schema.check({"view": True, "view_port": 0, "view_host": "0.0.0.0"})
    for bad in ({"view_port": 70000}, {"view_port": "80"}, {"view_host": "a b"},
                {"view": "yes"}):
        with pytest.raises(LivepianoError):
            schema.check(bad)


# --- a session: refusals ------------------------------------------------------------------------

def test_on_another_address_every_request_needs_the_token_and_bad_values_change_nothing(
        tiny_model, tmp_path):
    rig = Rig(tiny_model, tmp_path, view_host="0.0.0.0")

    def body(rig):
        url = rig.url
        token = re.search(r"\?token=([\w-]+)$", url).group(1)
        root = f"http://127.0.0.1:{rig.session.view.port}"
        for path in ("/", "/view.js", "/view.css", "/events", "/nothing"):
            assert request(root + path)[0] == 403, path
            assert request(root + path + "?token=wrong")[0] == 403, path
        code, text = request(root + "/set", "POST", {"name": "temperature", "value": 0.5})
        assert code == 403 and "token" in text and text.count("\n") == 1
        assert rig.engine.temperature == 1.0

        q = f"?token={token}"
        code, html = request(root + "/" + q)
        assert code == 200 and f"view.js{q}" in html  # the page's own links carry it
        assert request(root + "/view.js" + q)[0] == 200
        for path in ("/../pyproject.toml", "/page/view.js", "/livepiano/live/view/server.py",
                     "/etc/passwd", "/view.js/"):
            assert request(root + path + q)[0] == 404, path

        values = dict(rig.session.knobs.values())
        for bad, words in (({"name": "temperature", "value": 9}, "from 0.1 to 2"),
                           ({"name": "temperature", "value": "0.5"}, "a number"),
                           ({"name": "temperature", "value": True}, "a number"),
                           ({"name": "temperature", "value": None}, "a number"),
                           ({"name": "key", "value": "H major"}, "one of"),
                           ({"name": "mode", "value": "solo"}, "continuous"),
                           ({"name": "record", "value": "/tmp/x.mid"}, "cannot be"),
                           ({"name": "panic", "value": 1}, "cannot be"),
                           ({"name": 3, "value": 1}, "a text"),
                           ({"name": "temperature"}, "JSON like"),
                           ({"name": "temperature", "value": 1, "x": 2}, "JSON like")):
            code, text = request(root + "/set" + q, "POST", bad)
            assert code == 400, (bad, text)
            assert text.count("\n") == 1 and (words in text or "can set" in text), (bad, text)
        assert request(root + "/set" + q, "POST", raw=b"{not json")[0] == 400
        assert request(root + "/press" + q, "POST", {"name": "learn"})[0] == 400
        assert request(root + "/set" + q, "POST", {"name": "temperature", "value": 0.5},
                       headers={"Content-Type": "text/plain"})[0] == 415
        assert request(root + "/set" + q, "POST", {"name": "temperature", "value": 0.5},
                       headers={"Origin": "http://evil.example"})[0] == 403
        time.sleep(0.3)  # anything wrongly let through would have reached the engine by now
        assert rig.session.knobs.values() == values  # nothing changed
        assert rig.engine.temperature == 1.0

        assert request(root + "/set" + q, "POST", {"name": "temperature", "value": 0.5}) == \
            (200, '{"ok":true}\n')
        deadline = time.monotonic() + 5
        while rig.engine.temperature != 0.5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rig.engine.temperature == 0.5
        said(rig, "temperature 0.50")  # said as a knob's change is

    rig.run(body)
    assert "the view: http://" in rig.out.getvalue() and "?token=" in rig.out.getvalue()


def test_on_this_machine_a_request_for_another_host_name_is_refused(tiny_model, tmp_path):
    rig = Rig(tiny_model, tmp_path)

    def body(rig):
        assert "token" not in rig.url
        port = rig.session.view.port
        for host, code in ((f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200),
                           (f"evil.example:{port}", 403), ("", 403)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.putrequest("GET", "/", skip_host=True)
            if host:
                conn.putheader("Host", host)
            conn.endheaders()
            assert conn.getresponse().status == code, host
            conn.close()

    rig.run(body)


# --- a session: the page in a real browser --------------------------------------------------------

def test_the_page_shows_both_players_and_its_temperature_control_steers_the_engine(
        tiny_model, tmp_path):
    need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    rig = Rig(tiny_model, tmp_path)
    seen: dict = {}

    def body(rig):
        with Browser() as b:
            b.driver.get(rig.url)
            b.wait("window.livepiano && livepiano.frames > 0 && livepiano.status.values",
                   what="its first frames")
            assert b.js("return document.getElementById('mode').textContent") == "continuous"
            pianist = threading.Thread(target=rig.play, kwargs={"notes": 30})
            pianist.start()
            b.wait("livepiano.seen.p.length >= 40 && livepiano.seen.m.length >= 10", 30,
                   "both players' notes")
            pianist.join()
            colours = b.roll_colours()
            assert colours["p"] > 200 and colours["m"] > 50, colours  # drawn, both hues
            seen.update(b.js("return {seen: livepiano.seen, origin: livepiano.originEpochMs}"))

            slider = b.driver.find_element(By.ID, "control-temperature")
            assert slider.get_attribute("value") == "64"  # the knob's centre: 1.0
            slider.send_keys(Keys.ARROW_LEFT * 24)
            shown = b.wait("document.querySelector('#control-temperature + output, "
                           "label[for=control-temperature] output').value")
            position = int(slider.get_attribute("value"))
            assert position == 40
            wanted = params.PARAMS["temperature"].value_at(position)
            deadline = time.monotonic() + 5
            while abs(rig.engine.temperature - wanted) > 1e-3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert rig.engine.temperature == pytest.approx(wanted, abs=1e-3)
            assert shown == f"{wanted:.2f}"

            # a MIDI knob moves the control (and the page leaves it alone meanwhile)
            rig.keys.send_message([0xB0, KNOB_CC, 127])
            b.wait("document.getElementById('control-temperature').value === '127'", 5,
                   "the knob's move")
            assert rig.engine.temperature == 2.0

            # the mode toggle and the panic button
            b.driver.find_element(By.ID, "control-mode-duet").click()
            b.wait("document.getElementById('mode').textContent === 'duet'", 5, "duet mode")
            b.wait("document.getElementById('turn').textContent === 'listening'", 5,
                   "the duet listening")
            b.driver.find_element(By.ID, "action-panic").click()
            b.wait("document.getElementById('error').hidden", 2)
            said(rig, "temperature 2.00", "mode duet", "panic")

    rig.run(body)
    # the notes drawn within 0.2 s of their time (same machine, one wall clock): nearly all
    # of them here, where the test may share the machine with anything (the JACK tests ask
    # it of every note)
    for who in ("p", "m"):
        lags = sorted(drawn - (seen["origin"] + t) for t, drawn, _ in seen["seen"][who])
        assert lags and lags[int(len(lags) * 0.95)] < 200 and lags[0] > -5, (who, lags)


# --- the seams the view uses, without a browser ---------------------------------------------------

def test_a_value_from_the_page_takes_the_knobs_path_and_rewinds_the_look_ahead(tiny_model):
    from test_knobs import drain, generate_ahead, rig

    kn, loop, _scheduler, _out, clock = rig(tiny_model, takeover="pickup")
    generate_ahead(loop, 2.0)
    clock.t = 0.5
    kn.set("Temperature", 0.5)  # checked here, applied on the engine thread
    assert loop.engine.temperature == 1.0
    drain(loop)
    assert loop.engine.temperature == 0.5 and kn.values()["temperature"] == 0.5
    assert loop.stream_time() <= clock.t + loop.lookahead and loop.taken_back > 0
    assert kn.tick() == [("temperature 0.50", False)]  # said as a knob's change is
    with pytest.raises(LivepianoError, match="must be a number from 0.1 to 2"):
        kn.set("temperature", 2.5)
    with pytest.raises(LivepianoError, match="not something the view can set"):
        kn.set("learn", True)
    assert loop.inbox.empty()  # nothing reached the engine
    kn.press("panic")
    drain(loop)
    assert kn.tick() == [("panic", False)]
    # the knob in pickup mode must reach the page's value before it takes over again
    kn.on_control(0, 21, 0, clock.t)
    drain(loop)
    assert loop.engine.temperature == 0.5


def test_the_duet_turn_and_the_last_answer_latency_as_the_view_shows_them(tiny_model):
    from livepiano.live.duet import DuetSettings
    from livepiano.live.duet_mode import DuetMode
    from livepiano.live.listener import PlayerEvent
    from livepiano.live.loop import EngineLoop
    from livepiano.live.scheduler import Scheduler
    from livepiano.runtime.engine import Engine

    now = [0.0]
    mode = DuetMode(DuetSettings(wait=0.6, min_answer=1.0, max_answer=1.5, grace=1.0))
    loop = EngineLoop(Engine(tiny_model, seed=2), Scheduler(None, clock=lambda: now[0]),
                      origin=0.0, lookahead=0.1, mode=mode, clock=lambda: now[0])
    call = []
    for i in range(6):
        call += [(0.2 + 0.2 * i, True, 60 + i), (0.45 + 0.2 * i, False, 60 + i)]  # legato
    call.sort()
    shown = []
    for ms in range(9000):
        now[0] = t = ms / 1000
        while call and call[0][0] <= t:
            at, on, pitch = call.pop(0)
            loop._take([PlayerEvent(at, on, pitch, 80 if on else 0)])
        while (wait := loop.turn()) is not None and wait <= 0:
            pass
        state = mode.shown(t)
        if not shown or shown[-1][1] != state["turn"]:
            shown.append((t, state["turn"], state["answer_latency_ms"]))
    turns = [turn for _, turn, _ in shown]
    assert turns[:3] == ["listening", "waiting", "answering"], shown
    assert turns[-1] == "listening" and "winding down" in turns, shown
    assert shown[1][0] == pytest.approx(1.45, abs=0.002)  # the last key up: the wait runs
    assert shown[2][0] == pytest.approx(1.45 + 0.6, abs=0.02)  # the wait is over
    assert shown[0][2] is None and 600 <= shown[-1][2] <= 700, shown  # the wait, then a note


def test_bench_timing_measures_with_a_page_open(tiny_model):
    need_browser()
    from livepiano.tools.bench.timing import timing

    opened, done = threading.Event(), threading.Event()

    def open_page(url):
        with Browser() as b:
            b.driver.get(url)
            b.wait("window.livepiano && livepiano.seen.m.length > 0", 60, "the model's notes")
            opened.set()
            done.wait(120)

    browsers = []

    def say(line):
        m = re.search(r"view\s+(http://\S+) -- waiting", line)
        if m:
            browsers.append(threading.Thread(target=open_page, args=(m.group(1),), daemon=True))
            browsers[-1].start()

    try:
        r = timing(tiny_model, deadlines=300, view_port=0, say=say, realtime_mode="off")
    finally:
        done.set()
        for t in browsers:
            t.join(30)
    assert browsers and opened.is_set()
    assert r["view"] and r["view_frames"] > 10 and r["deadlines"] >= 300


def test_bench_knobs_via_the_view_times_the_pages_path_to_the_sampler(tiny_model):
    from livepiano.tools.bench.knobs import latency

    said = []
    r = latency(tiny_model, changes=30, via="view", realtime_mode="off", wait_for_page=False,
                say=said.append)
    assert r["via"] == "view" and r["view"] and any("view " in line for line in said)
    assert r["measured"] >= 28, r  # each posted change reached the sampler
    assert 0 < r["knob_to_applied_ms_p50"] < r["knob_to_effect_ms_p50"] + 1e-9 < 1000
