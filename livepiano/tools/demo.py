"""``livepiano demo``: a duet between a recorded pianist and the model, for someone with no
keyboard at hand -- through the same listener, engine and scheduler as ``livepiano play``, in
real time, on real MIDI ports.

    pianist (primer.mid, in calls) --MIDI port--> livepiano play --MIDI port--> ear
                                                  (duet mode)                  (answer times;
                                                                                live synth)

- The MIDI system: ALSA virtual ports where ``/dev/snd/seq`` opens, CoreMIDI on macOS, else a
  private JACK server (``livepiano.tools.jack``) that the demo starts and always stops, else
  livepiano's in-process ports (``livepiano.live.inprocess``: the same session code, no MIDI
  system), with one line saying so and what to install for real ports.
- The pianist plays the shipped primer (a MAESTRO excerpt, see ``examples/README.md``) in
  calls of a few seconds, each cut where the music breathes, and waits for the answer: until
  the model has played and then been quiet a moment, or a time-out.
- The ear is a MIDI input port that livepiano plays into: it stamps the model's notes as they
  arrive, for the answer latencies (a call's end -- the moment its last key or the pedal was
  released -- to the first note of the answer), and forwards them to what plays live audio
  where there is a sound device: FluidSynth (ALSA or CoreMIDI), else the built-in synth.
- Afterwards: ``demo.mid`` (tracks ``player`` and ``livepiano``, written by the session's
  recorder), ``demo.wav`` (rendered through FluidSynth where it is installed, else the
  built-in synth),
  ``demo.png`` with ``--plot``, and a short report.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from livepiano import LivepianoError
from livepiano.core import messages
from livepiano.core.shipped import shipped_file
from livepiano.core.voices import Voices
from livepiano.settings.schema import DUET

PRIMER = "primer.mid"
CLIENT = "livepiano-demo"  # the demo's MIDI clients: CLIENT-pianist, CLIENT-ear
PHRASE_S = 3.5  # the length a call aims at
PHRASE_WINDOW_S = 1.0  # ... cut at the widest gap between onsets within this of the aim
MIN_PHRASE_S = 1.5
JACK_GAP_S = 0.003  # messages on JACK at least this far apart (see listener.Listener)
RESEND_S = 0.05  # the end of a call is sent again this long after
QUIET_S = 0.8  # the answer is over when the model has been quiet this long
FIRST_NOTE_TIMEOUT_S = 3.0  # a call that gets no answer note by then is not waited on
# The duet's defaults, where the session's settings do not say (the settings schema's)
DUET_WAIT_S, MIN_ANSWER_S, MAX_ANSWER_S, GRACE_S = (
    DUET[k].default for k in ("wait", "min_answer", "max_answer", "grace"))
POLL_S = 0.001


# --- the primer, in calls ------------------------------------------------------------------

def primer_path() -> Path:
    """The shipped primer: inside the installed package (``livepiano/examples``), else in the
    repository's ``examples/``."""
    path = shipped_file("examples", PRIMER)
    if path is None:
        raise LivepianoError(f"the demo's primer examples/{PRIMER} is missing; reinstall "
                             f"livepiano.")
    return path


@dataclass
class Call:
    """A phrase of the primer: (seconds from its start, message bytes), ending with every key
    and the pedal released."""

    messages: list
    start: float  # where it begins in the primer (s)

    @property
    def length(self) -> float:
        return self.messages[-1][0] if self.messages else 0.0

    @property
    def notes(self) -> int:
        return sum(1 for _, m in self.messages if messages.kind(m) == "on")


def primer_events(path: str | os.PathLike) -> list[tuple[float, list[int]]]:
    """(seconds, bytes) of a MIDI file's notes and sustain pedal."""
    import mido

    out, t = [], 0.0
    for msg in mido.MidiFile(str(path)):
        t += msg.time
        if msg.type in ("note_on", "note_off") or (msg.type == "control_change"
                                                   and msg.control == 64):
            out.append((t, msg.bytes()))
    return out


def split_calls(events, phrase_s: float = PHRASE_S) -> list[Call]:
    """Cut a performance into calls of about ``phrase_s`` seconds: each cut is at the note-on
    after the widest gap between onsets within ``PHRASE_WINDOW_S`` of the aim (where the music
    breathes). A call starts with the pedal as the performance has it there and ends with
    every key it struck released (and the pedal up) at the cut."""
    onsets = sorted({t for t, m in events if messages.kind(m) == "on"})
    if not onsets:
        return []
    end = events[-1][0]
    cuts, start = [], onsets[0]
    while True:
        aim = start + phrase_s
        later = [i for i, o in enumerate(onsets) if o >= start + MIN_PHRASE_S]
        if not later or end - start < phrase_s + MIN_PHRASE_S:
            cuts.append((start, end))
            break
        window = [i for i in later if abs(onsets[i] - aim) <= PHRASE_WINDOW_S]
        i = (max(window, key=lambda j: onsets[j] - onsets[j - 1]) if window
             else min(later, key=lambda j: abs(onsets[j] - aim)))
        cuts.append((start, onsets[i]))
        start = onsets[i]
    calls = []
    for a, b in cuts:
        pedal = False
        for t, m in events:
            if t >= a:
                break
            if m[0] & 0xF0 == messages.CONTROL:
                pedal = m[2] >= 64
        msgs = [(0.0, [messages.CONTROL, messages.SUSTAIN, 127])] if pedal else []
        down = Voices("oldest")
        for t, m in events:
            if not a <= t < b:
                continue
            kind = messages.kind(m)
            if kind == "on":
                down.on(m[1])
            elif kind == "off":
                if not down.off(m[1]):
                    continue  # a key struck before this call
            else:
                pedal = m[2] >= 64
            msgs.append((t - a, list(m)))
        release = b - a
        if pedal:
            msgs.append((release, [messages.CONTROL, messages.SUSTAIN, 0]))
        msgs.extend((release, [messages.NOTE_OFF, p, 0]) for p in sorted(down.keys()))
        if any(messages.kind(m) == "on" for _, m in msgs):
            calls.append(Call(msgs, a))
    return calls


# --- the MIDI system -----------------------------------------------------------------------

def _install_line() -> str:
    """What to install (or load) for real MIDI ports on this OS."""
    if sys.platform.startswith("win"):
        return ("Windows MIDI has no virtual ports for the demo's pianist; run the demo under "
                "WSL with JACK (`sudo apt install jackd2`)")
    if sys.platform == "darwin":
        return "CoreMIDI refused to open a client; check Audio MIDI Setup"
    return ("install JACK with `sudo apt install jackd2` (Fedora: `sudo dnf install "
            "jack-audio-connection-kit`; Arch: `sudo pacman -S jack2`), or load the ALSA "
            "sequencer (`sudo modprobe snd-seq`)")


def fallback_line() -> str:
    """The one line that says the demo runs on in-process ports, and how to get real ones."""
    return (f"no MIDI system here (no ALSA sequencer, CoreMIDI or jackd), so the pianist and "
            f"livepiano meet on in-process ports; for real MIDI ports, {_install_line()}.")


def _alsa_seq_present() -> bool:
    return os.path.exists("/dev/snd/seq")


def choose_system(api: str | None = None):
    """(api, JackServer or None): ALSA virtual ports where the sequencer opens, CoreMIDI on
    macOS, else a private JACK server (started here; the caller stops it), else in-process
    ports."""
    from livepiano.live import ports
    from livepiano.tools.jack import JackServer, jackd_path

    def opens(name: str) -> bool:
        try:
            ports.open_client("in", name, CLIENT + "-probe").delete()
            return True
        except LivepianoError:
            return False

    if api is None:
        if sys.platform == "darwin" and opens("coremidi"):
            return "coremidi", None
        if sys.platform.startswith("linux") and _alsa_seq_present() and opens("alsa"):
            return "alsa", None
        if jackd_path() is None:
            return ports.INPROCESS, None
        api = "jack"
    api = ports.resolve_api(api)
    if api == ports.INPROCESS:
        return api, None
    if api == "jack":
        if jackd_path() is None:
            raise LivepianoError(f"--api jack needs jackd, which is not installed; "
                                 f"{_install_line()}.")
        return "jack", JackServer(prefix=CLIENT).start()
    if not opens(api):
        hint = {"alsa": "no ALSA sequencer is reachable (/dev/snd/seq; `sudo modprobe "
                        "snd-seq`)",
                "coremidi": "CoreMIDI refused to open a client"}.get(api, "it is not there")
        other = " leave out --api to use a private JACK server," if jackd_path() else (
            " leave out --api to use in-process ports,")
        raise LivepianoError(f"--api {api}: {hint};{other} or pick another --api.")
    return api, None


def _port_name(api: str, role: str, short: str) -> str:
    """A virtual port's name: CoreMIDI lists virtual ports by their own name only, so there it
    is the client's (which the session's port query names); elsewhere ``client:short``."""
    return CLIENT + role if api == "coremidi" else short


# --- the ear: what livepiano sends ---------------------------------------------------------

class Ear:
    """A virtual MIDI input that livepiano's output is connected to: stamps the model's
    messages as they arrive and forwards them to ``synth`` (a MidiOut) when there is one."""

    def __init__(self, api: str, synth=None):
        from livepiano.live import ports

        self.client = ports.open_client("in", api, CLIENT + "-ear")
        self.client.ignore_types(sysex=True, timing=True, active_sense=True)
        self.client.open_virtual_port(_port_name(api, "-ear", "in"))
        self.synth = synth
        self.messages: list[tuple[float, list[int]]] = []
        self.sounding = Voices("oldest")
        self.last = 0.0  # arrival of the last message
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="demo-ear", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        get = self.client.get_message
        while not self._stop:
            item = get()
            if item is None:
                time.sleep(POLL_S)
                continue
            now = time.monotonic()
            m = item[0]
            if self.synth is not None:
                self.synth.send_message(m)
            if messages.kind(m) is not None:
                self.sounding.message(m)
            elif len(m) >= 3 and m[0] & 0xF0 == messages.CONTROL \
                    and m[1] == messages.ALL_NOTES_OFF:
                self.sounding.clear()
            self.messages.append((now, list(m)))
            self.last = now

    def first_note_after(self, t: float, before: float = float("inf")) -> float | None:
        for at, m in list(self.messages):
            if t <= at < before and messages.kind(m) == "on":
                return at
        return None

    def quiet_since(self, t: float) -> bool:
        """Nothing sounding and no message for QUIET_S, having played after ``t``."""
        now = time.monotonic()
        return (self.first_note_after(t) is not None and not self.sounding
                and now - self.last >= QUIET_S)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2.0)
        for step in (self.client.close_port, self.client.delete):
            try:
                step()
            except Exception:  # noqa: BLE001 - closing anyway
                pass


# --- the pianist ----------------------------------------------------------------------------

@dataclass
class Played:
    start: float  # monotonic time of the call's first message
    end: float  # ... of its last (the last key or the pedal released)
    notes: int
    answer: float | None = None  # monotonic time of the answer's first note


@dataclass
class Pianist:
    """Plays calls into a virtual MIDI output port and waits for the answers."""

    api: str
    duet: bool
    ear: Ear
    synth: object = None  # a MidiOut: the pianist heard live too (channel 2)
    # the duet's times (the session's settings): its wait, answer range and grace
    wait: float = DUET_WAIT_S
    answer_range: tuple = (MIN_ANSWER_S, MAX_ANSWER_S)
    grace: float = GRACE_S
    say: object = None  # say(text): a line about each call and its answer
    played: list = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        from livepiano.live import ports

        self.client = ports.open_client("out", self.api, CLIENT + "-pianist")
        self.client.open_virtual_port(_port_name(self.api, "-pianist", "keys"))
        self.gap = JACK_GAP_S if self.api == "jack" else 0.0
        self._down = Voices("oldest")
        self._pedal = False

    def send(self, m: list[int]) -> None:
        self.client.send_message(m)
        if self.synth is not None:
            self.synth.send_message([(m[0] & 0xF0) | 1] + m[1:])
        if messages.kind(m) is not None:
            self._down.message(m)
        elif m[0] & 0xF0 == messages.CONTROL:
            self._pedal = m[2] >= 64

    def play(self, call: Call) -> Played | None:
        """One call in real time; None when stopped in the middle (keys released)."""
        t0 = time.monotonic()
        last = t0 - 1.0
        for at, m in call.messages:
            wait = max(t0 + at, last + self.gap) - time.monotonic()
            if wait > 0 and self.stopped.wait(wait):
                self.release()
                return None
            self.send(m)
            last = time.monotonic()
        # The release once more, a moment later: under load JACK may hand the listener several
        # messages in one period, which python-rtmidi 1.5.8 can garble (see listener.Listener),
        # and a lost pedal-up would hold the call open. A repeated pedal-up or note-off is
        # ignored by the listener, so this costs nothing when all went well.
        if not self.stopped.wait(RESEND_S):
            for at, m in call.messages:
                if at >= call.length and (messages.kind(m) == "off"
                                          or m[0] & 0xF0 == messages.CONTROL and m[2] < 64):
                    time.sleep(self.gap)
                    self.client.send_message(m)
        return Played(t0, last, call.notes)

    def wait_answer(self, p: Played, call_s: float, hard_end: float) -> None:
        """Until the answer is over: the model played after the call and has been quiet
        QUIET_S; or no answer note in FIRST_NOTE_TIMEOUT_S; or the longest answer the duet
        gives (continuous mode: the model never stops, so a pause as long as the call)."""
        length = self.answer_length(call_s)
        if self.duet:
            limit = p.end + self.wait + length + self.grace + QUIET_S
        else:
            limit = p.end + self.wait + length
        limit = min(limit, hard_end)
        while not self.stopped.wait(0.02):
            now = time.monotonic()
            if now >= limit:
                return
            if not self.duet:
                continue
            if self.ear.first_note_after(p.end) is None:
                if now >= p.end + self.wait + FIRST_NOTE_TIMEOUT_S:
                    return
            elif self.ear.quiet_since(p.end):
                return

    def answer_length(self, call_s: float) -> float:
        lo, hi = self.answer_range
        return min(max(call_s, lo), hi)

    def perform(self, calls: list[Call], seconds: float) -> None:
        """Calls while the time allows (at least one), each followed by its answer: a call
        starts when it and an answer of the duet's target length fit in ``seconds``; the last
        answer may run on by the duet's grace."""
        t0 = time.monotonic()
        hard_end = t0 + seconds + self.grace + QUIET_S
        for i, call in enumerate(calls):
            answer = self.wait + self.answer_length(call.length)
            if i and time.monotonic() + call.length + answer > t0 + seconds:
                break
            p = self.play(call)
            if p is None:
                return
            self.played.append(p)
            self.wait_answer(p, call.length, hard_end)
            if self.stopped.is_set():
                return
            if self.say is not None:
                self.say(self._describe(len(self.played), call, p))

    def _describe(self, n: int, call: Call, p: Played) -> str:
        first = self.ear.first_note_after(p.end)
        notes = sum(1 for at, m in list(self.ear.messages)
                    if at >= p.end and messages.kind(m) == "on")
        text = (f"call {n}: {call.notes} notes, {call.length:.1f} s (primer at "
                f"{call.start:.1f} s); ")
        if first is None:
            return text + "no answer"
        return text + f"answered {(first - p.end) * 1000:.0f} ms after its end, {notes} notes"

    def release(self) -> None:
        for pitch in sorted(self._down.keys()):
            self.send([messages.NOTE_OFF, pitch, 0])
        if self._pedal:
            self.send([messages.CONTROL, messages.SUSTAIN, 0])

    def close(self) -> None:
        for step in (self.client.close_port, self.client.delete):
            try:
                step()
            except Exception:  # noqa: BLE001 - closing anyway
                pass


# --- live audio -----------------------------------------------------------------------------

def _audio_driver() -> tuple | None:
    """FluidSynth's audio driver options for this machine's sound device, None without one."""
    if sys.platform == "darwin":
        return ("-a", "coreaudio")
    if not sys.platform.startswith("linux"):
        return None
    run = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
    if (run / "pulse" / "native").exists() or (run / "pipewire-0").exists():
        return ("-a", "pulseaudio")
    snd = Path("/dev/snd")
    if snd.is_dir() and any(p.name.startswith("pcm") and p.name.endswith("p")
                            for p in snd.iterdir()):
        return ("-a", "alsa")
    return None


class LiveSynth:
    """FluidSynth playing to the sound device, fed through a MIDI port (ALSA or CoreMIDI);
    ``port`` is a MidiOut connected to it. ``start`` returns None where that fails."""

    def __init__(self, proc, port):
        self.proc, self.port = proc, port

    @classmethod
    def start(cls, api: str, soundfont, audio: tuple = (), timeout: float = 8.0):
        """FluidSynth with its MIDI input on ``api`` and ``audio`` options (default: its own
        default audio driver); None where it does not come up."""
        import subprocess

        from livepiano.live import ports
        from livepiano.tools.render import GAIN, find_fluidsynth, find_soundfont

        exe = find_fluidsynth()
        if exe is None:
            return None
        try:
            sf = find_soundfont(soundfont)
        except LivepianoError:
            return None
        driver = {"alsa": "alsa_seq", "coremidi": "coremidi", "jack": "jack"}[api]
        name = CLIENT + "-synth"
        proc = subprocess.Popen(
            [exe, "-q", "-g", f"{GAIN:g}", "-m", driver, "-o", f"midi.{driver}.id={name}",
             *audio, str(sf)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = None
        try:
            out = ports.open_client("out", api, CLIENT + "-to-synth")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                hits = [i for i, n in enumerate(out.get_ports())
                        if ports.normalize(name) in ports.normalize(n)]
                if hits:
                    out.open_port(hits[0])
                    return cls(proc, out)
                time.sleep(0.1)
        except LivepianoError:
            pass
        if out is not None:
            out.delete()
        cls._end(proc)
        return None

    @staticmethod
    def _end(proc) -> None:
        import subprocess

        try:  # its shell keeps it running (stdin); "quit" ends it
            proc.stdin.write(b"quit\n")
            proc.stdin.close()
            proc.wait(3)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        try:
            for m in messages.release((), range(16)):  # All Notes Off, pedal up
                self.port.send_message(m)
            time.sleep(1.0)  # let the last notes ring out
            self.port.close_port()
            self.port.delete()
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        self._end(self.proc)


def _builtin_audio(soundfont):
    """The built-in synth on the default audio device, or None where there is no device."""
    from livepiano.live.audio import BuiltinSynth

    try:
        return BuiltinSynth(soundfont).start()
    except LivepianoError:
        return None


# --- the demo ---------------------------------------------------------------------------------

STUCK_S = 60.0  # beyond --seconds and the last answer: the session is stuck, give up


def _watchdog(finished: threading.Event, after: float, jack, log) -> None:
    """The demo must end by itself: if the session has not returned long after its time (a
    MIDI system that hung), stop the JACK server and leave, rather than run on."""
    if finished.wait(after):
        return
    log.write(f"livepiano demo: the session did not stop {after:.0f} s after it began; giving "
              f"up.\n")
    log.flush()
    if jack is not None:
        jack.stop()
    os._exit(1)

@dataclass
class Result:
    code: int
    mode: str
    system: str
    played: list
    lateness_p99_ms: float | None
    notes_in: int
    notes_out: int
    midi: Path
    wav: str | None = None
    png: str | None = None
    live_audio: str | None = None  # what played it live (FluidSynth, the built-in synth)
    stop_reason: str | None = None
    wait: float = DUET_WAIT_S

    def report(self) -> list[str]:
        answered = [p for p in self.played if p.answer is not None]
        lat = [(p.answer - p.end) * 1000 for p in answered]
        n = len(self.played)
        lines = [f"demo ({self.mode} mode, {self.system}): {n} call{'s' if n != 1 else ''} "
                 f"played, {len(answered)} answered"]
        if lat:
            lines.append(f"answer latency: median {statistics.median(lat):.0f} ms, max "
                         f"{max(lat):.0f} ms (a call's last key or pedal up to the answer's "
                         f"first note, on the ports; the duet waits {self.wait * 1000:.0f} ms "
                         f"of silence first)" if self.mode == "duet" else
                         f"answer latency: median {statistics.median(lat):.0f} ms, max "
                         f"{max(lat):.0f} ms (a call's end to the model's next note)")
        else:
            lines.append("answer latency: no answers")
        lines.append("scheduler lateness: " + (f"p99 {self.lateness_p99_ms:.2f} ms"
                                               if self.lateness_p99_ms is not None
                                               else "not reported"))
        lines.append(f"notes: {self.notes_in} in (the pianist), {self.notes_out} out (the model)")
        if self.live_audio:
            lines.append(f"audio: played live through {self.live_audio}")
        lines.append(f"midi: {self.midi} (tracks player, livepiano)")
        if self.wav:
            lines.append(f"wav: {self.wav}")
        if self.png:
            lines.append(f"png: {self.png}")
        return lines


def _track_notes(path: Path) -> tuple[int, int]:
    import mido

    counts = {}
    for track in mido.MidiFile(str(path)).tracks:
        counts[track.name] = sum(1 for m in track if m.type == "note_on" and m.velocity > 0)
    return counts.get("player", 0), counts.get("livepiano", 0)


def run(seconds: float = 45.0, out_dir: str | os.PathLike = ".", *, plot: bool = False,
        api: str | None = None, model: str | None = None, seed: int | None = None,
        soundfont: str | None = None, wav: bool = True, mode: str | None = None,
        view: dict | None = None, log=sys.stderr) -> Result:
    """The demo; ``view``: the stage view's settings (``view``, ``view_port``, ``view_host``;
    None or a missing one: the schema's default)."""
    from livepiano.live import modes
    from livepiano.live.session import Session
    from livepiano.settings import schema
    from livepiano.tools.render import renderer_line

    if not seconds > 0:
        raise LivepianoError(f"--seconds must be more than 0, not {seconds}.")
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LivepianoError(f"cannot create the folder {out_dir} ({e.strerror}).") from None
    calls = split_calls(primer_events(primer_path()))
    from livepiano.runtime.modelfile import resolve_model

    model = str(resolve_model(model))  # a missing model is said before any port opens
    if wav:  # a missing or broken soundfont is said before any port opens
        renderer_line(soundfont)
    if mode is None:
        mode = "duet" if "duet" in modes.MODES else "continuous"
    elif mode not in modes.MODES:
        raise LivepianoError(f"the demo's mode is one of {', '.join(modes.MODES)}, not {mode!r}.")

    view_settings = schema.merge({}, dict(view or {}))  # a bad one is said before any port

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)  # setup and teardown, as Ctrl-C
    jack = synth = ear = pianist = None
    sound, live_audio = None, None  # where the ear and the pianist send what is heard live
    try:
        api, jack = choose_system(api)
        system = (f"JACK, a private server '{jack.name}'" if jack is not None
                  else {"alsa": "ALSA", "coremidi": "CoreMIDI",
                        "inprocess": "in-process ports"}.get(api, api))
        if api == "inprocess":
            log.write(f"livepiano demo: {fallback_line()}\n")
        # The private JACK server runs on the dummy driver: FluidSynth has nothing to play
        # on there; the built-in synth plays on the default audio device where there is one.
        audio = _audio_driver()
        if api in ("alsa", "coremidi") and audio is not None:
            synth = LiveSynth.start(api, soundfont, audio)
        if synth is not None:
            sound, live_audio = synth.port, "FluidSynth"
        else:
            synth = _builtin_audio(soundfont)
            if synth is not None:
                sound, live_audio = synth, "the built-in synth"
        ear = Ear(api, sound)
        settings = schema.defaults()
        settings.update(view_settings)
        # demo.mid is made anew each run, as demo.wav and demo.png are (a session never
        # overwrites a file: it would pick another name)
        (out_dir / "demo.mid").unlink(missing_ok=True)
        settings.update({"api": api, "in": CLIENT + "-pianist", "out": CLIENT + "-ear",
                         "mode": mode, "record": str(out_dir / "demo.mid"), "seed": seed,
                         "model": model})
        pianist = Pianist(api, mode == "duet", ear, sound,
                          wait=settings.get("wait", DUET_WAIT_S),
                          answer_range=tuple(settings.get("answer",
                                                          (MIN_ANSWER_S, MAX_ANSWER_S))))
        play = Session(settings, out=log, status=log.isatty())
        pianist.say = play.say

        def perform():
            try:
                while not play.playing.wait(0.05):
                    if pianist.stopped.is_set():
                        return
                time.sleep(0.5)  # the session's threads settle
                pianist.perform(calls, seconds)
                time.sleep(0.3)
            finally:
                play.request_stop("the demo is over")

        log.write(f"livepiano demo: {system}; the pianist plays {PRIMER} in calls, the model "
                  f"answers ({mode}); about {seconds:g} s.\n")
        thread = threading.Thread(target=perform, name="demo-pianist", daemon=True)
        thread.start()
        finished = threading.Event()
        threading.Thread(target=_watchdog, args=(finished, seconds + STUCK_S, jack, log),
                         name="demo-watchdog", daemon=True).start()
        try:
            code = play.run()
        finally:
            finished.set()
            pianist.stopped.set()
            thread.join(5.0)
        for p in pianist.played:
            nxt = next((q.start for q in pianist.played if q.start > p.end), float("inf"))
            p.answer = ear.first_note_after(p.end, nxt)
    finally:
        for part in (pianist, ear, synth):
            if part is not None:
                part.close()
        if jack is not None:
            jack.stop()
        signal.signal(signal.SIGTERM, old_term)
    midi = out_dir / "demo.mid"
    late = play.lateness["lateness_us_p99"] / 1000 if play.lateness else None
    notes_in, notes_out = _track_notes(midi) if midi.is_file() else (0, 0)
    result = Result(code, mode, system, pianist.played, late,
                    notes_in, notes_out, midi, live_audio=live_audio,
                    stop_reason=play.stop_reason, wait=pianist.wait)
    if wav and midi.is_file():
        from livepiano.tools.render import render_midi

        try:
            result.wav = render_midi(midi, out_dir / "demo.wav", soundfont).describe()
        except LivepianoError as e:
            result.wav = f"not rendered ({e})"
    if plot and midi.is_file():
        from livepiano.tools.pianoroll import plot_midi

        result.png = plot_midi(midi, out_dir / "demo.png").describe()
    return result
