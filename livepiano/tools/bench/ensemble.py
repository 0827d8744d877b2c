"""``livepiano bench ensemble``: `bench music`'s ensemble figures measured through JACK, with the
real command a pianist runs, beside the same figures on `bench music`'s simulated clock.

For each of `bench music`'s ensemble pianists (``music.ensemble_pieces``; the same excerpt, from
its first note, ``music.ensemble_start``), on a private JACK server (``livepiano.tools.jack``):

    pianist ("Digital Piano:MIDI 1") --JACK MIDI--> livepiano play --JACK MIDI--> FluidSynth
    (a child process playing the                    --api jack --mode continuous   (-m jack -a jack)
     excerpt's notes and sustain pedal)             --record FILE.mid

``livepiano play`` runs in a subprocess with the default settings (no settings file, no knob
bindings), is stopped with SIGINT after the excerpt, and its recorded session (tracks player
and livepiano) is measured with ``bench.measures`` exactly as `bench music` measures its
simulated sessions: the pianist's notes as the session heard them (the pedal applied), the
model's as its scheduler sent them, over the excerpt's first ``--seconds`` from the pianist's
first note. Where FluidSynth or its soundfont is missing, a port that takes the notes and plays
nothing stands in its place (said in ``synth``).

The pianist sends its messages at least JACK_GAP_S apart, as the demo's does (python-rtmidi's
JACK input garbles messages that arrive in one period), and at real-time priority where
allowed, so its timing is a keyboard's to a few milliseconds; ``pianist_late_ms_max`` says how
late its worst message left. The sessions take real time: ``--seconds`` plus about 5 s each.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from livepiano import LivepianoError
from livepiano.core import messages
from livepiano.core.voices import Voices
from livepiano.tools.bench import measures, music

PIANIST_CLIENT, PIANIST_PORT = "Digital Piano", "MIDI 1"  # what a keyboard calls itself
SYNTH_QUERY = "FluidSynth"  # the mission's --out
SINK_CLIENT, SINK_PORT = "Synth", "in"  # in FluidSynth's place where it is missing
JACK_SERVER_PREFIX = "livepiano-bench"
JACK_GAP_S = 0.003  # as the demo's pianist (livepiano.tools.demo)
START_TIMEOUT_S = 90.0  # a busy machine loads the model slowly
STOP_TIMEOUT_S = 60.0
AFTER_S = 0.3  # the session runs on this long after the pianist's last message
SETTINGS_ENV = "LIVEPIANO_CONFIG"
SUMMARY_KEYS = (*music.ENSEMBLE_KEYS, "clash_max")

# The pianist, and the stand-in synth, each in a child process: python-rtmidi's JACK ports
# free their buffers while JACK's process callback may still use them, which now and then
# crashes the process that closes them (seen in the tests); a child's crash ends only it.
_CHILD = r"""
import os, sys, time
import rtmidi
role, client, port, gap = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
if role == "sink":
    midi = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=client)
    midi.open_virtual_port(port)
    print("ready", flush=True)
    sys.stdin.read()
    os._exit(0)
midi = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=client)
midi.open_virtual_port(port)
timed = []
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "go":
        break
    at, data = line.split()
    timed.append((float(at), list(bytes.fromhex(data))))
try:  # a keyboard's timing is the hardware's: keep this one's from the machine's other work
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
except (AttributeError, OSError):
    pass
t0 = time.monotonic()
last, late = t0 - 1.0, 0.0
for at, data in timed:
    due = max(t0 + at, last + gap)
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    midi.send_message(data)
    last = time.monotonic()
    late = max(late, last - due)
time.sleep(0.05)  # JACK takes the last messages in its next cycle
print(f"done {len(timed)} {late * 1000:.2f}", flush=True)
sys.stdin.read()  # the port stays until the session has stopped: no "input gone"
os._exit(0)
"""


# --- the pianist's part -----------------------------------------------------------------------

def excerpt_messages(path: Path, start: float, seconds: float,
                     tail: float = music.EXCERPT_TAIL_S) -> list[tuple[float, list[int]]]:
    """(seconds from ``start``, message) of a performance's note and sustain-pedal messages as
    a keyboard plays the excerpt `bench music` hears (``music.excerpt``): the keys struck in
    ``[start, start + seconds)`` and the pedal as the performance has it, until ``tail`` after
    the excerpt, when the pedal comes up and every key still down is released."""
    from livepiano.tools.demo import primer_events

    events = primer_events(path)
    end, cut = start + seconds, start + seconds + tail
    pedal = False
    for t, m in events:
        if t >= start:
            break
        if messages.kind(m) is None:
            pedal = m[2] >= 64
    out = [(0.0, [messages.CONTROL, messages.SUSTAIN, 127])] if pedal else []
    down = Voices("oldest")
    for t, m in events:
        if t < start:
            continue
        if t >= cut:
            break
        kind = messages.kind(m)
        if kind == "on":
            if t >= end:
                continue
            down.on(m[1])
        elif kind == "off":
            if not down.off(m[1]):
                continue  # a key struck before the excerpt, or after it
        else:
            if (m[2] >= 64) == pedal:
                continue
            pedal = m[2] >= 64
        out.append((t - start, list(m)))
    if pedal:
        out.append((cut - start, [messages.CONTROL, messages.SUSTAIN, 0]))
    out.extend((cut - start, [messages.NOTE_OFF, p, 0]) for p in sorted(down.keys()))
    return out


class _Child:
    """The pianist (an output port playing timed messages) or the stand-in synth (an input
    port that takes everything), in a child process on the JACK server ``env`` names."""

    def __init__(self, role: str, client: str, port: str, env: dict, timeout: float = 20.0):
        from livepiano.tools.jack import die_with_parent

        self.name = f"{client}:{port}"
        self._err = tempfile.TemporaryFile("w+")  # libjack's chatter must not fill a pipe
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, role, client, port, f"{JACK_GAP_S:g}"], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True,
            preexec_fn=die_with_parent())
        if self._line(timeout) != "ready":
            err = self.close()
            raise LivepianoError(f"the {role}'s JACK port {self.name} did not open: "
                                 f"{err.strip()[-300:] or 'no reason given'}")

    def _line(self, timeout: float) -> str | None:
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        return got[0].strip() if got else None

    def play(self, timed: list[tuple[float, list[int]]], timeout: float) -> tuple[int, float]:
        """Play ``timed`` from now; (messages sent, the worst lateness of one, in ms)."""
        for at, m in timed:
            self.proc.stdin.write(f"{at:.6f} {bytes(m).hex()}\n")
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self._line(timeout)
        if not line or not line.startswith("done "):
            raise LivepianoError(f"the pianist stopped before the end of its excerpt "
                                 f"({self.close().strip()[-300:] or 'no reason given'}).")
        _, sent, late = line.split()
        return int(sent), float(late)

    def close(self) -> str:
        """End the child; its stderr."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._err.seek(0)
        err = self._err.read()
        self._err.close()
        return err


# --- the synth ----------------------------------------------------------------------------------

class Synth:
    """FluidSynth on the JACK server (MIDI in, audio out to the server's playback ports), or,
    where it or a soundfont is missing, a port that takes the notes (``sink``)."""

    def __init__(self, env: dict, say=print):
        from livepiano.tools.render import GAIN, find_fluidsynth, find_soundfont

        self.proc = self.sink = self._err = None
        exe = find_fluidsynth()
        soundfont = None
        if exe is not None:
            try:
                soundfont = find_soundfont(None, sf2_only=True)
            except LivepianoError:
                soundfont = None
        if exe is None or soundfont is None:
            self.sink = _Child("sink", SINK_CLIENT, SINK_PORT, env)
            self.query = self.sink.name
            self.describe = (f"a port that takes the notes ({self.sink.name}): FluidSynth or a "
                             f"soundfont is not installed")
            say(f"synth        {self.describe}")
            return
        self.query = SYNTH_QUERY
        self.describe = f"FluidSynth ({exe} -m jack -a jack, {soundfont})"
        self._err = tempfile.TemporaryFile("w+")  # its warnings must not fill a pipe
        self.proc = subprocess.Popen(
            [exe, "-q", "-j", "-g", f"{GAIN:g}", "-m", "jack", "-a", "jack",
             "-o", "synth.sample-rate=48000", str(soundfont)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=self._err, start_new_session=True)  # our Ctrl-C is not its
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._err.seek(0)
                raise LivepianoError(f"FluidSynth exited at start: {self._err.read()[-300:]}")
            if any("fluidsynth" in p.lower() and p.endswith(tuple(f"midi_{i:02d}"
                                                                  for i in range(4)))
                   for p in _jack_ports(env)):
                say(f"synth        {self.describe}")
                return
            time.sleep(0.1)
        self.close()
        raise LivepianoError("FluidSynth's JACK MIDI port did not appear in 30 s.")

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        if self._err is not None:
            self._err.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        try:  # its shell keeps it running (stdin); "quit" ends it
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _jack_ports(env: dict) -> list[str]:
    exe = shutil.which("jack_lsp")
    if exe is None:  # rtmidi's view, in this process
        from livepiano.live import ports

        return ports.list_ports("jack")[1]
    out = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=10)
    return out.stdout.splitlines()


# --- one session ------------------------------------------------------------------------------

def play_env(jack_env: dict, folder: Path) -> dict:
    """``livepiano play``'s environment: the private JACK server, this livepiano package first
    on the path, and the default settings (no settings file, no knob bindings, no API choice of
    the user's)."""
    import livepiano

    env = dict(jack_env)
    root = str(Path(livepiano.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    for key in ("LIVEPIANO_MIDI_API", "LIVEPIANO_CONTROLS"):
        env.pop(key, None)
    env[SETTINGS_ENV] = str(folder / "no-settings" / "livepiano.yaml")
    return env


def play_command(model: Path, synth_query: str, record: Path) -> list[str]:
    """The mission's command: continuous mode over JACK, the pianist's keyboard in, the synth
    out, recorded; every other setting its default."""
    return [sys.executable, "-m", "livepiano.cli", "play", "--api", "jack",
            "--in", PIANIST_CLIENT, "--out", synth_query, "--mode", "continuous",
            "--record", str(record), "--model", str(model)]


class _Lines:
    """A child's text stream read on a thread (a full pipe must never stall the session)."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.playing = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if "playing (" in line:
                self.playing.set()

    def join(self) -> str:
        self._thread.join(10)
        return "\n".join(self.lines)


_SAVED = re.compile(r"session saved to (.+?)\. \d+ notes in")
_LATENESS = re.compile(r"lateness p99 ([0-9.]+) ms")


def run_session(jack_env: dict, model: Path, synth: Synth, timed, record: Path) -> dict:
    """One continuous session of ``livepiano play`` beside the pianist playing ``timed``:
    {saved (the session's MIDI file), sent, pianist_late_ms_max, lateness_p99_ms, stderr}."""
    pianist = _Child("pianist", PIANIST_CLIENT, PIANIST_PORT, jack_env)
    proc = None
    try:
        proc = subprocess.Popen(play_command(model, synth.query, record),
                                env=play_env(jack_env, record.parent), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        err = _Lines(proc.stderr)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not err.playing.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
        if not err.playing.is_set():
            _end(proc)
            raise LivepianoError(f"livepiano play did not start: {err.join()[-500:]}")
        length = timed[-1][0] if timed else 0.0
        sent, late = pianist.play(timed, timeout=length + 60.0)
        time.sleep(AFTER_S)
        if proc.poll() is not None:
            raise LivepianoError(f"livepiano play ended during the session: {err.join()[-500:]}")
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _end(proc)
            raise LivepianoError(f"livepiano play did not stop within {STOP_TIMEOUT_S:g} s of "
                                 f"SIGINT: {err.join()[-500:]}") from None
        text = err.join()
        if proc.returncode != 0:
            raise LivepianoError(f"livepiano play exited with status {proc.returncode}: "
                                 f"{text[-500:]}")
    finally:
        if proc is not None and proc.poll() is None:
            _end(proc)
        pianist.close()
    saved = _SAVED.search(text)
    lateness = _LATENESS.search(text)
    return {"saved": Path(saved.group(1)) if saved else record, "sent": sent,
            "pianist_late_ms_max": late,
            "lateness_p99_ms": float(lateness.group(1)) if lateness else None,
            "stderr": text}


def _end(proc) -> None:
    proc.kill()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def session_parts(path: Path, seconds: float, tail: float = music.EXCERPT_TAIL_S):
    """(pianist, model) notes (start, end, pitch) of a recorded session, from the pianist's
    first note, as `bench music` sets its simulated sessions: the pianist's notes struck in
    ``[0, seconds)``, each ending at most ``tail`` after; the model's struck in that time,
    one still sounding at ``seconds`` ending there."""
    from livepiano.tools.pianoroll import MODEL, PLAYER, read_tracks

    tracks = read_tracks(path)
    player = [n for t in tracks if t.role == PLAYER for n in t.notes]
    model = [n for t in tracks if t.role == MODEL for n in t.notes]
    if not player:
        raise LivepianoError(f"{path}: the session holds none of the pianist's notes; did the "
                             f"pianist's port reach livepiano?")
    t0 = min(n[2] for n in player)
    pianist = sorted((s - t0, min(e - t0, seconds + tail), p) for p, _, s, e in player
                     if s - t0 < seconds)
    mine = sorted((s - t0, min(e - t0, seconds), p) for p, _, s, e in model
                  if 0.0 <= s - t0 < seconds)
    return pianist, mine


# --- the command ------------------------------------------------------------------------------

def choose_pieces(pieces, wanted: str | None):
    """The pieces ``--pieces`` names (``music.piece_name`` of the character, e.g.
    "slow-pedalled", or a 1-based number, comma-separated), in the ensemble's order."""
    if not wanted:
        return list(pieces)
    names = [music.piece_name(c) for c, _ in pieces]

    def index(item: str) -> int | None:
        if item.isdigit() and 1 <= int(item) <= len(pieces):
            return int(item) - 1
        name = music.piece_name(item)
        return names.index(name) if name in names else None

    items = [w.strip() for w in wanted.split(",")]
    picked, i = set(), 0
    while i < len(items):
        if not items[i]:
            i += 1
            continue
        # the longest run of items that names a piece: a character may hold a comma
        for j in range(len(items), i, -1):
            k = index(", ".join(items[i:j]))
            if k is not None:
                picked.add(k)
                i = j
                break
        else:
            raise LivepianoError(f"--pieces: no piece {items[i]!r}; the pieces are "
                                 f"{', '.join(names)} (or 1-{len(pieces)}).")
    return [pieces[i] for i in sorted(picked)]


def _r(x, digits=4):
    return None if x is None else round(float(x), digits)


def ensemble_through_jack(model: Path, pieces, seconds: float, keep: Path | None = None,
                          say=print) -> dict:
    """``ens_*`` figures (as `bench music`'s) of real ``livepiano play`` sessions over JACK
    beside each of ``pieces``; the sessions' MIDI files copied into ``keep`` when given."""
    from livepiano.tools.jack import JackServer

    rows, figures = [], []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="livepiano-bench-ensemble-") as tmp, \
            JackServer(prefix=JACK_SERVER_PREFIX) as jack:
        synth = Synth(jack.env, say)
        try:
            for character, path in pieces:
                notes = music.file_notes(path)
                if not notes:
                    continue
                start = music.ensemble_start(notes)
                part = music.excerpt(notes, start, seconds)
                timed = excerpt_messages(path, start, seconds)
                name = music.piece_name(character)
                say(f"session      {character}: {path.name} from {start:g} s, {len(part)} notes "
                    f"in {seconds:g} s; about {timed[-1][0] + 5:.0f} s")
                s = run_session(jack.env, model, synth, timed,
                                Path(tmp) / f"continuous-{name}.mid")
                pianist, mine = session_parts(s["saved"], seconds)
                f = measures.ensemble(mine, pianist, seconds)
                figures.append(f)
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(s["saved"], keep / f"continuous-{name}.mid")
                rows.append({"piece": character, "file": path.name,
                             "pianist_rate": _r(len(pianist) / seconds, 2),
                             "model_rate": _r(len(mine) / seconds, 2),
                             **{k: _r(v) if isinstance(v, float) else v for k, v in f.items()},
                             "pianist_notes_played": len(part),
                             "pianist_late_ms_max": s["pianist_late_ms_max"],
                             "lateness_p99_ms": s["lateness_p99_ms"]})
                row = rows[-1]
                say(f"through JACK {character:<15} pianist {row['pianist_rate']} notes/s "
                    f"({row['pianist_notes']} of {len(part)} heard), model {row['model_rate']}: "
                    f"clash {_pct(row['clash'])} (chance {_pct(row['clash_chance'])}); lifts "
                    f"harmony {row['harmony_lift']} / sync {row['sync_lift']} / key "
                    f"{row['key_lift']}; median note {row['duration_ratio']} x the pianist's, "
                    f"under 0.1 s {_pct(row['short_share'])}; scheduler p99 "
                    f"{row['lateness_p99_ms']} ms")
        finally:
            synth.close()
    return {"ens_seconds": seconds, **music.ensemble_summary(figures, "ens_"),
            "ens_performances": rows, "synth": synth.describe,
            "ens_wall_s": _r(time.monotonic() - t_start, 1)}


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def bench(args) -> dict:
    from livepiano.runtime.modelfile import resolve_model
    from livepiano.tools.bench.common import card_summary
    from livepiano.tools.jack import jackd_path

    say = getattr(args, "say", None) or (lambda text: print(text, flush=True))
    model = resolve_model(getattr(args, "model", None))
    seconds = float(getattr(args, "seconds", None) or music.ENSEMBLE_S)
    if not seconds >= 1.0:
        raise LivepianoError(f"--seconds must be at least 1, not {seconds:g}.")
    if jackd_path() is None:
        raise LivepianoError("bench ensemble plays over a private JACK server, and jackd is "
                             "not installed (Debian/Ubuntu: `sudo apt install jackd2`).")
    keep = getattr(args, "keep", None)
    keep = Path(keep).expanduser() if keep else None
    root = music.data_folder(getattr(args, "reference", None))
    ref = music.real_reference(root, say)
    pieces = choose_pieces(music.ensemble_pieces(root, ref), getattr(args, "pieces", None))
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    say(f"model        {model}{card_summary(model)}")
    say(f"command      livepiano play --api jack --in \"{PIANIST_CLIENT}\" --out <synth> --mode "
        f"continuous --record FILE.mid (defaults otherwise), {len(pieces)} x {seconds:g} s")
    result: dict = {"model": str(model), "seconds": seconds,
                    "pieces": [music.piece_name(c) for c, _ in pieces]}
    result.update(ensemble_through_jack(model, pieces, seconds, keep, say))
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    say(f"through JACK median of {len(result['ens_performances'])}: clash "
        f"{_pct(result['ens_clash'])} (worst {_pct(result['ens_clash_max'])}; chance "
        f"{_pct(result['ens_clash_chance'])}); lifts harmony {result['ens_harmony_lift']} / "
        f"sync {result['ens_sync_lift']} / key {result['ens_key_lift']}; median note "
        f"{result['ens_duration_ratio']} x the pianist's; under 0.1 s "
        f"{_pct(result['ens_short_share'])}")
    if not getattr(args, "no_sim", False):
        sim = music.ensemble(model, pieces, seconds=seconds)
        result.update({f"sim_{k}": v for k, v in sim.items()
                       if k.startswith("ens_") and k != "ens_wall_s"})
        result.update({k: v for k, v in sim.items() if k.startswith("real_ens_")})
        result["ens_minus_sim"] = {
            k: (_r(result[f"ens_{k}"] - result[f"sim_ens_{k}"])
                if None not in (result[f"ens_{k}"], result[f"sim_ens_{k}"]) else None)
            for k in SUMMARY_KEYS}
        say(f"simulated    median of {len(sim['ens_performances'])} (`bench music`'s ensemble, "
            f"seed 1): clash {_pct(sim['ens_clash'])} (worst {_pct(sim['ens_clash_max'])}); "
            f"lifts harmony {sim['ens_harmony_lift']} / sync {sim['ens_sync_lift']} / key "
            f"{sim['ens_key_lift']}; median note {sim['ens_duration_ratio']} x; under 0.1 s "
            f"{_pct(sim['ens_short_share'])}")
        say("JACK - sim   " + ", ".join(f"{k} {v:+.3f}" if v is not None else f"{k} -"
                                        for k, v in result["ens_minus_sim"].items()))
    else:
        say("simulated    not run (--no-sim): `livepiano bench music --parts ens` gives the "
            "ens_* keys to compare")
    load2 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result["loadavg_1m"] = [_r(load0, 2), _r(load1, 2), _r(load2, 2)]
    say(f"machine      load average {load0:.2f} at the start, {load1:.2f} after the sessions, "
        f"{load2:.2f} at the end")
    if keep is not None:
        say(f"kept         the sessions' MIDI files in {keep}")
    return result


def add_arguments(p) -> None:
    """This benchmark's own options (``--seconds``, ``--model`` and ``--reference`` are
    shared)."""
    p.add_argument("--pieces", default=None, metavar="PIECE,...",
                   help="which ensemble pieces, by name or number (ensemble; default: all)")
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="copy each session's MIDI file there as continuous-PIECE.mid "
                        "(ensemble)")
    p.add_argument("--no-sim", action="store_true",
                   help="leave out bench music's simulated figures beside them (ensemble)")

