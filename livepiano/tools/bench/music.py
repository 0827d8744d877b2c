"""`livepiano bench music`: the musical shape of what the model plays over minutes, beside real
playing -- free generation, continuous mode under a real pianist, and a long duet.

Figures per 10-s window (note-ons per second), the median note length, the share of notes
held 5 s or more and the pitch 5th/95th percentiles, for:

- ``gen_*``: free generation through ``Engine`` (as `livepiano generate`), ``--seeds`` runs of
  ``--seconds`` each;
- ``acc_*``: continuous mode on a simulated clock, driven through ``EngineLoop.turn`` -- the
  loop, look-ahead and take-back code of `livepiano play` -- with a MAESTRO validation
  performance (60 s at about 8-10 notes/s) as the pianist;
- ``duet_*``: a 10-minute duet on the simulated clock (``DuetMode``, the state kept across
  calls as in play), calls cut in turn from validation performances; each answer's note rate
  against its call's;
- ``ens_*``: the ensemble, continuous mode beside validation performances of different
  character (ENSEMBLE_PIECES, 120 s each) on the simulated clock: clash, harmony, sync and
  key beside the pianist, each against its chance (``bench.measures``), and the model's note
  lengths; ``real_ens_*`` the same figures of real performances' two hands (split at
  middle C, the left hand in the model's place);
- ``cont_*``: continuations, ``CONTINUATIONS`` primers of 20 s cut from validation
  performances continued for 20 s as `livepiano generate --primer` does, against the
  primer, the performance's own next 20 s (``real_cont_*``) and another file's primer;
- ``real_*``: the same figures of real playing, from a fixed-seed sample of the validation
  split (or ``--reference DIR``), cached in the user's cache folder.

``--parts`` picks the parts (all by default).

The simulated clock stands still while the engine works, as on an infinitely fast machine:
the figures are the model's and the loop's behaviour, not this machine's speed.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from livepiano import LivepianoError
from livepiano.tools.bench import measures
from livepiano.tools.bench.common import cut_calls

WINDOW_S = 10.0
HELD_S = 5.0  # a note this long or longer counts as held
REFERENCE_FILES = 16  # validation performances sampled for the real figures
REFERENCE_SEED = 0
REFERENCE_VERSION = 2  # of what the cached reference holds
ACCOMPANY_S = 60.0
PIANIST_RATE = (8.0, 10.0)  # notes/s of the pianist's 60 s in continuous mode
DUET_S = 600.0
CALL_GAP_S = 0.3  # silence between an answer's end and the next call
# The ensemble's pianists: (character, MAESTRO v3 file of the validation split); 120 s from
# each one's first note. A reference folder without them gives its first files instead.
ENSEMBLE_PIECES = (
    ("fast", "2011/MIDI-Unprocessed_01_R1_2011_MID--AUDIO_R1-D1_06_Track06_wav.midi"),
    ("slow, pedalled", "2015/MIDI-Unprocessed_R1_D2-21-22_mid--AUDIO-from_mp3_22_R1_2015_wav"
                       "--4.midi"),
    ("contrapuntal", "2011/MIDI-Unprocessed_14_R1_2011_MID--AUDIO_R1-D6_02_Track02_wav.midi"),
    ("classical", "2004/MIDI-Unprocessed_XP_19_R1_2004_01-02_ORIG_MID--AUDIO_19_R1_2004_01_"
                  "Track01_wav.midi"),
    ("fast classical", "2015/MIDI-Unprocessed_R1_D1-1-8_mid--AUDIO-from_mp3_03_R1_2015_wav"
                       "--3.midi"),
)
ENSEMBLE_S = 120.0
EXCERPT_TAIL_S = 2.0  # an excerpt's notes end at most this long after it
CONTINUATIONS = 24
PRIMER_S = 20.0  # each primer, and what is compared after it
CONTINUATION_SEED = 0
MIN_PART_NOTES = 10  # a primer or a real continuation with fewer is passed over
PARTS = ("gen", "acc", "duet", "ens", "cont")
# beside the repository, as the README's `livepiano prepare` example has it
DEFAULT_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "maestro-v3.0.0"
DATA_ENV = "LIVEPIANO_MAESTRO"


def add_arguments(p) -> None:
    """This benchmark's own options (``--seconds`` and ``--seeds`` for free generation)."""
    p.add_argument("--seconds", type=float, default=None,
                   help="seconds of each free generation (music; default: 300), of each "
                        "session (ensemble; default: 120)")
    p.add_argument("--seeds", type=int, default=3,
                   help="free generations, seeds 1..N (music; default: 3)")
    p.add_argument("--parts", default=",".join(PARTS), metavar="PART,...",
                   help=f"which parts to run (music; default: all of {','.join(PARTS)})")
    p.add_argument("--duet-seeds", type=int, default=1, metavar="N",
                   help="also play the 10-minute duet with seeds 2..N and give the drift's "
                        "median over the seeds (music; default: 1, seed 1 alone)")
    p.add_argument("--ensemble-midi", default=None, metavar="DIR",
                   help="save each ensemble session there as a MIDI file, tracks player and "
                        "livepiano (music)")
    p.add_argument("--reference", default=None, metavar="MIDI_DIR",
                   help="real playing to compare with and to take the pianist from: a MAESTRO "
                        "folder (its validation split) or any folder of MIDI files (music, "
                        "ensemble; "
                        f"default: ${DATA_ENV}, else {DEFAULT_DATA})")


# --- shape of a set of notes ---------------------------------------------------------------

def window_rates(starts: Sequence[float], seconds: float, window: float = WINDOW_S) -> list[float]:
    """Note-ons per second in each full ``window`` of ``[0, seconds)``."""
    full = int(seconds // window)
    if full <= 0:
        return []
    counts = np.bincount(np.clip((np.asarray(starts, float) // window).astype(int), 0, None),
                         minlength=full)[:full]
    return [float(c) / window for c in counts]


def shape(notes: Sequence[tuple[float, float, int]], seconds: float) -> dict:
    """(start s, end s, pitch) notes -> window rates, median length, held share, pitches."""
    if not notes:
        return {"windows": window_rates([], seconds), "duration_median_s": None,
                "held_over_5s_share": 0.0, "pitch_p5": None, "pitch_p95": None, "notes": 0}
    a = np.asarray(notes, dtype=float)
    dur = a[:, 1] - a[:, 0]
    return {"windows": window_rates(a[:, 0], seconds),
            "duration_median_s": float(np.median(dur)),
            "held_over_5s_share": float(np.mean(dur >= HELD_S - 1e-6)),
            "pitch_p5": float(np.percentile(a[:, 2], 5)),
            "pitch_p95": float(np.percentile(a[:, 2], 95)), "notes": len(a)}


def drift_ratio(windows: Sequence[float]) -> float | None:
    """Median of the last third of the windows over the median of the first third."""
    third = len(windows) // 3
    if third < 1:
        return None
    first, last = np.median(windows[:third]), np.median(windows[-third:])
    return float(last / first) if first > 0 else None


def _r(x, digits=3):
    return None if x is None else round(float(x), digits)


# --- real playing ---------------------------------------------------------------------------

def data_folder(reference: str | None) -> Path:
    root = Path(reference or os.environ.get(DATA_ENV) or DEFAULT_DATA).expanduser()
    if not root.is_dir():
        raise LivepianoError(f"no folder of MIDI files at {root}; give --reference DIR "
                             f"(e.g. the MAESTRO v3 folder) or set ${DATA_ENV}.")
    return root


def reference_files(root: Path, count: int = REFERENCE_FILES) -> list[Path]:
    """A fixed-seed sample of the validation split (of every file without a MAESTRO CSV)."""
    from livepiano.learn.dataset import find_midi_files, maestro_splits

    files = find_midi_files(root)
    splits = maestro_splits(root)
    if splits is not None:
        files = [p for p in files if splits.get(p.relative_to(root).as_posix()) == "validation"]
    if not files:
        raise LivepianoError(f"no MIDI files (validation split) under {root}; give --reference "
                             f"a folder with some.")
    files = sorted(files)
    return sorted(random.Random(REFERENCE_SEED).sample(files, min(count, len(files))))


def file_notes(path: Path) -> list[tuple[float, float, int, int]]:
    from livepiano.core.midifile import midi_file_notes

    notes = midi_file_notes(path)
    return sorted((n.start, n.end, n.pitch, n.velocity) for n in notes if n.end > n.start)


def _pianist_window(notes, seconds: float) -> float | None:
    """The start of the ``seconds`` of ``notes`` whose rate is nearest the middle of
    PIANIST_RATE, every 10-s window of it at least half that rate; None if there is none."""
    starts = np.asarray([n[0] for n in notes])
    lo, hi = PIANIST_RATE
    best, best_err = None, None
    for a in np.arange(0.0, max(starts[-1] - seconds, 0.0), 5.0):
        rates = window_rates(starts[(starts >= a) & (starts < a + seconds)] - a, seconds)
        total = float(np.mean(rates)) if rates else 0.0
        if not lo <= total <= hi or min(rates) < lo / 2:
            continue
        err = abs(total - (lo + hi) / 2)
        if best_err is None or err < best_err:
            best, best_err = float(a), err
    return best


def _cache_path(key: str) -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("livepiano")) / f"bench-music-reference-{key}.json"


def real_reference(root: Path, say: Callable[[str], None] = print) -> dict:
    """The ``real_*`` figures and the pianist's excerpt (file, start), cached by file list."""
    files = reference_files(root)
    listed = "\n".join(f"{p}:{p.stat().st_size}" for p in files)
    key = hashlib.sha256(f"{REFERENCE_VERSION}\n{listed}".encode()).hexdigest()[:16]
    cache = _cache_path(key)
    if cache.is_file():
        try:
            return json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    say(f"reference    reading {len(files)} validation performances under {root} (cached after)")
    windows, durations, held, p5s, p95s, pitches = [], [], [], [], [], []
    hands = []
    pianist = None
    for path in files:
        notes = file_notes(path)
        if not notes:
            continue
        hands.append(real_ensemble(notes))
        seconds = max(n[1] for n in notes)
        s = shape([(a, b, p) for a, b, p, _ in notes], seconds)
        windows += s["windows"]
        durations += [b - a for a, b, _, _ in notes]
        held.append(s["held_over_5s_share"])
        p5s.append(s["pitch_p5"])
        p95s.append(s["pitch_p95"])
        pitches += [p for _, _, p, _ in notes]
        if pianist is None:
            start = _pianist_window(notes, ACCOMPANY_S)
            if start is not None:
                pianist = {"file": str(path), "start_s": start}
    if not windows:
        raise LivepianoError(f"the sampled files under {root} hold no 10-s window of notes; "
                             f"give --reference a folder of longer performances.")
    ref = {
        "real_files": len(held),
        "real_window_p5": _r(np.percentile(windows, 5), 2),
        "real_window_median": _r(np.median(windows), 2),
        "real_window_p95": _r(np.percentile(windows, 95), 2),
        "real_window_p99": _r(np.percentile(windows, 99), 2),
        "real_duration_median_s": _r(np.median(durations)),
        "real_held_over_5s_share_median": _r(np.median(held), 4),
        "real_held_over_5s_share_p95": _r(np.percentile(held, 95), 4),
        "real_pitch_p5_p95": [_r(np.percentile(pitches, 5), 1), _r(np.percentile(pitches, 95), 1)],
        "real_pitch_bounds": [_r(min(p5s), 1), _r(max(p95s), 1)],
        **ensemble_summary(hands, "real_ens_"),
        "pianist": pianist,
        "files": [str(p) for p in files],
    }
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(ref), encoding="utf-8")
    except OSError:
        pass
    return ref


# --- the engine as the commands build it ----------------------------------------------------

def session_engine(model_path, seed: int | None, *, accompany: bool = False):
    """An ``Engine`` with the settings' defaults, as `play` and `generate` build theirs."""
    from livepiano.runtime import steering
    from livepiano.runtime.engine import Engine
    from livepiano.settings import schema

    s = schema.defaults()
    engine = Engine(model_path, temperature=s["temperature"], seed=seed)
    steering.configure(engine, s, accompany=accompany)
    return engine


# --- free generation ------------------------------------------------------------------------

def free_generation(model_path, seconds: float, seeds: Sequence[int],
                    make_engine: Callable | None = None) -> dict:
    """``gen_*`` figures of ``seeds`` free generations of ``seconds`` each."""
    from livepiano.runtime.offline import generate

    make_engine = make_engine or (lambda seed: session_engine(model_path, seed))
    runs, notes_all, us = [], [], []
    for seed in seeds:
        engine = make_engine(seed)
        t0 = time.perf_counter()
        g = generate(engine, seconds)
        took = time.perf_counter() - t0
        us.append(took / max(len(g.tokens), 1) * 1e6)
        if not runs:
            steer_us = steering_cost(g.tokens)
        notes = [(n.start_seconds, n.end_seconds, n.pitch) for n in g.generated_notes()]
        s = shape(notes, seconds)
        s["drift_ratio"] = drift_ratio(s["windows"])
        s["seed"] = seed
        runs.append(s)
        notes_all += notes
    windows = [w for r in runs for w in r["windows"]]
    pooled = shape(notes_all, seconds)
    drifts = [r["drift_ratio"] for r in runs if r["drift_ratio"] is not None]
    return {
        "gen_seconds": seconds, "gen_seeds": list(seeds),
        "gen_window_max": _r(max(windows), 2) if windows else None,
        "gen_window_median": _r(np.median(windows), 2) if windows else None,
        "gen_window_min": _r(min(windows), 2) if windows else None,
        "gen_drift_ratio": _r(max(drifts)) if drifts else None,
        "gen_duration_median_s": _r(pooled["duration_median_s"]),
        "gen_held_over_5s_share": _r(max(r["held_over_5s_share"] for r in runs), 4),
        "gen_pitch_p5_p95": [_r(pooled["pitch_p5"], 1), _r(pooled["pitch_p95"], 1)],
        "gen_us_per_event": _r(np.median(us), 1),
        "steer_us_per_event": _r(steer_us, 1),
        "gen_runs": [{"seed": r["seed"], "windows": [round(w, 1) for w in r["windows"]],
                      "drift_ratio": _r(r["drift_ratio"]),
                      "duration_median_s": _r(r["duration_median_s"])} for r in runs],
    }


def steering_cost(tokens: Sequence[int]) -> float:
    """Microseconds per event that the density steering adds to a sample (its logits offset,
    the sum with the logits, and hearing the event), over a real stream of events."""
    from livepiano.core import codec
    from livepiano.runtime.steering import DensitySteering

    st = DensitySteering(10.0)
    logits = np.zeros(codec.VOCAB_SIZE, np.float32)
    step = 0
    t0 = time.perf_counter()
    for tok in tokens:
        _ = logits + st.logits_offset(step)
        st.heard(tok, step, True)
        if codec.TIME_SHIFT <= tok < codec.VELOCITY:
            step += tok - codec.TIME_SHIFT + 1
    return (time.perf_counter() - t0) / max(len(tokens), 1) * 1e6


def listening_cost(model_path, part) -> float | None:
    """Microseconds that continuous mode's listening takes per batch of the player's events
    (hearing them, the lean and the control), on the engine thread, over a real part."""
    from livepiano.live.modes import make_mode
    from livepiano.settings import schema

    settings = dict(schema.defaults(), mode="continuous")
    sim = SimSession(session_engine(model_path, 1, accompany=True), make_mode(settings))
    mode = sim.loop.mode
    if getattr(mode, "listening", None) is None:
        return None
    events = player_events(part)
    t0 = time.perf_counter()
    for ev in events:
        mode.heard([ev], ev.time)
    return (time.perf_counter() - t0) / max(len(events), 1) * 1e6


# --- the simulated clock --------------------------------------------------------------------

class SimOutput:
    """The scheduler's part in a simulated session: the messages the loop schedules leave
    when the simulated clock reaches their deadline; ``take_back`` cancels those not yet
    sent (a note-on already sent gets its note-off at once, as the real scheduler does)."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.sent: list[tuple[float, list[int]]] = []
        self._heap: list = []
        self._seq = 0
        self._sent_tags: dict = {}

    def schedule(self, deadline: float, message: list[int], tag=None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, list(message), tag))

    def send_now(self, message: list[int]) -> None:
        self.sent.append((self.clock(), list(message)))

    def take_back(self, tags) -> None:
        tags = set(tags)
        kept = [item for item in self._heap if item[3] not in tags]
        if len(kept) < len(self._heap):
            self._heap = kept
            heapq.heapify(self._heap)
        for tag in tags:
            m = self._sent_tags.pop(tag, None)
            if m is not None and m[0] & 0xF0 == 0x90 and m[2] > 0:
                self.send_now([0x80 | (m[0] & 0x0F), m[1], 0])

    def call(self, fn: Callable) -> None:
        fn(self)

    def flush(self, until: float) -> None:
        while self._heap and self._heap[0][0] <= until:
            deadline, _, m, tag = heapq.heappop(self._heap)
            self.sent.append((deadline, m))
            if tag is not None:
                self._sent_tags[tag] = m
                if len(self._sent_tags) > 4096:
                    self._sent_tags.pop(next(iter(self._sent_tags)))

    def notes(self, until: float, velocity: bool = False) -> list[tuple]:
        """(start, end, pitch) of the notes sent, with their velocity when ``velocity``; one
        still sounding ends at ``until``."""
        open_: dict[int, list[tuple[float, int]]] = {}
        out = []
        for t, m in sorted(self.sent, key=lambda x: x[0]):
            on = m[0] & 0xF0 == 0x90 and m[2] > 0
            off = m[0] & 0xF0 == 0x80 or (m[0] & 0xF0 == 0x90 and m[2] == 0)
            if on:
                open_.setdefault(m[1], []).append((t, m[2]))
            elif off and open_.get(m[1]):
                start, vel = open_[m[1]].pop(0)
                out.append((start, t, m[1], vel))
        out += [(t, until, p, vel) for p, ts in open_.items() for t, vel in ts]
        return sorted(n if velocity else n[:3] for n in out)


class SimSession:
    """An ``EngineLoop`` on a simulated clock: the player's events go into its inbox at their
    times and ``EngineLoop.turn`` runs until it would wait, then the clock moves on."""

    def __init__(self, engine, mode, lookahead: float = 0.1):
        from livepiano.live.loop import EngineLoop

        self.now = 0.0
        self.out = SimOutput(lambda: self.now)
        self.loop = EngineLoop(engine, self.out, origin=0.0, lookahead=lookahead, mode=mode,
                               clock=lambda: self.now)
        self.sampled = 0

    def run_until(self, t_end: float, events: Sequence = ()) -> None:
        """Play ``events`` (PlayerEvent, times on this clock, sorted) and the model until
        ``t_end``."""
        i = 0
        while True:
            while i < len(events) and events[i].time <= self.now:
                j = i
                while j < len(events) and events[j].time <= self.now:
                    j += 1
                self.loop.hear(list(events[i:j]))
                i = j
            wait = 0.0
            while wait == 0.0:
                before = self.loop.engine.events
                wait = self.loop.turn()
                if wait is None:
                    raise LivepianoError("the simulated engine loop stopped.")
                self.sampled += max(self.loop.engine.events - before, 0)
            nxt = self.now + max(wait, 0.001)
            if i < len(events):
                nxt = min(nxt, max(events[i].time, self.now + 1e-6))
            if self.now >= t_end:
                break
            nxt = min(nxt, t_end)
            self.out.flush(nxt)
            self.now = nxt


def player_events(notes, offset: float = 0.0):
    from livepiano.live.listener import PlayerEvent

    evs = [PlayerEvent(a + offset, True, p, v) for a, _, p, v in notes]
    evs += [PlayerEvent(b + offset, False, p, 0) for _, b, p, _ in notes]
    return sorted(evs, key=lambda e: (e.time, e.on))


def excerpt(notes, start: float, seconds: float):
    """The notes starting in ``[start, start + seconds)``, shifted to ``start`` = 0, each
    ending at most EXCERPT_TAIL_S after the excerpt."""
    return [(s - start, min(e, start + seconds + EXCERPT_TAIL_S) - start, p, v)
            for s, e, p, v in notes if start <= s < start + seconds]


def continuous_session(model_path, part, seconds: float, seed: int = 1) -> "SimSession":
    """Continuous mode as `livepiano play` runs it (the settings' defaults), ``part`` (an
    excerpt's notes) as the pianist, for ``seconds`` on the simulated clock."""
    from livepiano.live.modes import make_mode
    from livepiano.settings import schema

    engine = session_engine(model_path, seed, accompany=True)
    sim = SimSession(engine, make_mode(dict(schema.defaults(), mode="continuous")))
    sim.run_until(seconds, player_events(part))
    return sim


def accompaniment(model_path, pianist: dict, seed: int = 1, seconds: float = ACCOMPANY_S) -> dict:
    """``acc_*`` figures: continuous mode with ``seconds`` of a real performance as the
    pianist."""
    a = pianist["start_s"]
    part = excerpt(file_notes(Path(pianist["file"])), a, seconds)
    t0 = time.perf_counter()
    sim = continuous_session(model_path, part, seconds, seed)
    took = time.perf_counter() - t0
    model = sim.out.notes(seconds)
    ms = shape(model, seconds)
    ps = shape([(s, e, p) for s, e, p, _ in part], seconds)
    ratios = [m / p for m, p in zip(ms["windows"], ps["windows"]) if p > 0]
    return {
        "acc_seconds": seconds, "acc_pianist": f"{Path(pianist['file']).name} from {a:g} s",
        "acc_player_windows": [round(w, 1) for w in ps["windows"]],
        "acc_model_windows": [round(w, 1) for w in ms["windows"]],
        "acc_model_over_player_max": _r(max(ratios), 2) if ratios else None,
        "acc_model_over_player_median": _r(np.median(ratios), 2) if ratios else None,
        "acc_held_over_5s": _r(ms["held_over_5s_share"], 4),
        "acc_duration_median_s": _r(ms["duration_median_s"]),
        "acc_pitch_p5_p95": [_r(ms["pitch_p5"], 1), _r(ms["pitch_p95"], 1)],
        "acc_sampled_per_s": _r(sim.sampled / seconds, 1),
        "acc_taken_back_per_s": _r(sim.loop.taken_back / seconds, 1),
        "acc_wall_s": _r(took, 1),
    }


# --- the ensemble: continuous mode beside performances of different character --------------

ENSEMBLE_KEYS = ("clash", "clash_chance", "harmony_lift", "sync_lift", "key_lift",
                 "duration_ratio", "short_share")


def real_ensemble(notes, seconds: float | None = None) -> dict:
    """``measures.ensemble`` of a real performance's hands: the left in the model's place."""
    three = [(s, e, p) for s, e, p, _ in notes]
    left, right = measures.hands(three)
    if seconds is None:
        seconds = max((e for _, e, _ in three), default=0.0)
    return measures.ensemble(left, right, seconds)


def ensemble_summary(rows: Sequence[dict], prefix: str) -> dict:
    """The median over ``rows`` (``measures.ensemble`` results) of each ENSEMBLE_KEYS figure,
    as ``prefix + key``; the worst clash as ``prefix + "clash_max"``."""
    out = {}
    for key in ENSEMBLE_KEYS:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[prefix + key] = _r(np.median(values)) if values else None
    clashes = [r["clash"] for r in rows if r.get("clash") is not None]
    out[prefix + "clash_max"] = _r(max(clashes)) if clashes else None
    return out


def ensemble_pieces(root: Path, ref: dict) -> list[tuple[str, Path]]:
    """(character, file) of the ensemble's pianists: ENSEMBLE_PIECES where the folder has
    them, else the reference files."""
    found = [(c, root / f) for c, f in ENSEMBLE_PIECES if (root / f).is_file()]
    if len(found) == len(ENSEMBLE_PIECES):
        return found
    return [(Path(f).stem, Path(f)) for f in ref["files"][:len(ENSEMBLE_PIECES)]]


def ensemble_start(notes) -> float:
    """Where an ensemble pianist's excerpt begins in its performance (``file_notes``): at its
    first note."""
    return notes[0][0]


def piece_name(character: str) -> str:
    """An ensemble piece's character as a file name's part: "slow, pedalled" ->
    "slow-pedalled"."""
    return character.replace(",", "").replace(" ", "-")


def _rounded(figures: dict) -> dict:
    return {k: _r(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


def save_session(path: Path, player, model) -> None:
    """A session's MIDI file as `livepiano play` records one: tracks "player" and
    "livepiano", notes as (start s, end s, pitch, velocity)."""
    from livepiano.core import codec

    def steps(notes):
        return [codec.StepNote(p, v, codec.quantize(s), max(codec.quantize(e), codec.quantize(s)
                                                           + 1)) for s, e, p, v in notes]
    path.parent.mkdir(parents=True, exist_ok=True)
    codec.step_notes_to_midi([("player", steps(player)), ("livepiano", steps(model))]).save(
        str(path))


def ensemble(model_path, pieces: Sequence[tuple[str, Path]], seed: int = 1,
             seconds: float = ENSEMBLE_S, midi_dir: Path | None = None) -> dict:
    """``ens_*`` figures: continuous mode beside each of ``pieces`` for ``seconds`` (from its
    first note), each figure against its chance and beside the piece's own two hands; each
    session saved into ``midi_dir`` when given."""
    rows, out_rows = [], []
    t0 = time.perf_counter()
    for character, path in pieces:
        notes = file_notes(path)
        if not notes:
            continue
        part = excerpt(notes, ensemble_start(notes), seconds)
        sim = continuous_session(model_path, part, seconds, seed)
        model = sim.out.notes(seconds)
        pianist = [(s, e, p) for s, e, p, _ in part]
        f = measures.ensemble(model, pianist, seconds)
        if midi_dir is not None:
            save_session(Path(midi_dir) / f"ensemble-{piece_name(character)}.mid", part,
                         sim.out.notes(seconds, velocity=True))
        real = real_ensemble(part, seconds)
        rows.append(f)
        out_rows.append({"piece": character, "file": path.name,
                         "pianist_rate": _r(len(part) / seconds, 2),
                         "model_rate": _r(len(model) / seconds, 2),
                         **_rounded(f),
                         **{f"real_{k}": _r(real[k], 4) if real[k] is not None else None
                            for k in ENSEMBLE_KEYS}})
    took = time.perf_counter() - t0
    result = {"ens_seconds": seconds, **ensemble_summary(rows, "ens_"),
              "ens_performances": out_rows, "ens_wall_s": _r(took, 1)}
    if pieces:
        notes = file_notes(pieces[0][1])
        cost = listening_cost(model_path,
                              excerpt(notes, ensemble_start(notes), seconds) if notes else [])
        result["listen_us_per_batch"] = _r(cost, 1)
    result.update({f"real_ens_{k}_excerpts": v for k, v in ensemble_summary(
        [{k: r[f"real_{k}"] for k in ENSEMBLE_KEYS} for r in out_rows], "").items()})
    return result


# --- continuations: generate --primer against what the pianist played next ------------------

def continuation_primers(root: Path, count: int = CONTINUATIONS, seconds: float = PRIMER_S,
                         exclude: Sequence[Path] = ()) -> list[dict]:
    """``count`` excerpts of ``2 * seconds`` from as many validation performances (fixed
    seed), each half holding at least MIN_PART_NOTES notes: {file, start_s, primer, after}
    (notes as (start, end, pitch, velocity) from 0 and from ``seconds``)."""
    from livepiano.learn.dataset import find_midi_files, maestro_splits

    files = find_midi_files(root)
    splits = maestro_splits(root)
    if splits is not None:
        files = [p for p in files if splits.get(p.relative_to(root).as_posix()) == "validation"]
    skip = {Path(p).resolve() for p in exclude}
    files = [p for p in sorted(files) if p.resolve() not in skip]
    rng = random.Random(CONTINUATION_SEED)
    rng.shuffle(files)
    out = []
    for path in files:
        if len(out) >= count:
            break
        notes = file_notes(path)
        if not notes:
            continue
        last = notes[-1][0]
        for _ in range(8):
            if last <= 2 * seconds:
                break
            a = round(rng.uniform(0.0, last - 2 * seconds), 2)
            primer = [(s - a, min(e, a + seconds) - a, p, v) for s, e, p, v in notes
                      if a <= s < a + seconds]
            b = a + seconds
            after = [(s - b, min(e, b + seconds) - b, p, v) for s, e, p, v in notes
                     if b <= s < b + seconds]
            if len(primer) >= MIN_PART_NOTES and len(after) >= MIN_PART_NOTES:
                out.append({"file": path, "start_s": a, "primer": primer, "after": after})
                break
    return out


def primer_tokens(primer, seconds: float = PRIMER_S) -> list[int]:
    """The tokens of a primer's notes, its silence to ``seconds`` included (the continuation
    starts where the performance's own next notes do)."""
    from livepiano.core import codec

    tokens = codec.notes_to_tokens([codec.Note(p, v, s, e) for s, e, p, v in primer])
    rest = int(round(seconds * codec.STEPS_PER_SECOND)) - codec.duration_steps(tokens)
    return tokens + (codec.shifts(rest) if rest > 0 else [])


def continue_primer(model_path, tokens: Sequence[int], seconds: float, seed: int):
    """The notes (start, end, pitch; from the primer's end) of ``seconds`` generated after
    ``tokens`` as `livepiano generate --primer` makes them (default settings)."""
    from livepiano.runtime.engine import Engine
    from livepiano.runtime.offline import generate, prepare
    from livepiano.settings import schema

    engine = Engine(model_path, temperature=schema.defaults()["temperature"], seed=seed)
    prepare(engine, tokens)
    g = generate(engine, seconds, tokens)
    lead = g.primer_steps / 100.0
    return [(n.start_seconds - lead, n.end_seconds - lead, n.pitch) for n in g.generated_notes()]


def continuations(model_path, primers: Sequence[dict], seconds: float = PRIMER_S) -> dict:
    """``cont_*`` (the model's continuations) and ``real_cont_*`` (the performances' own next
    ``seconds``) figures, each against its primer and against the next primer's file."""
    mine, real, rows = [], [], []
    t0 = time.perf_counter()
    for i, item in enumerate(primers):
        primer = [(s, e, p) for s, e, p, _ in item["primer"]]
        other = [(s, e, p) for s, e, p, _ in primers[(i + 1) % len(primers)]["primer"]]
        after = [(s, e, p) for s, e, p, _ in item["after"]]
        cont = continue_primer(model_path, primer_tokens(item["primer"], seconds), seconds,
                               seed=i + 1)
        m = measures.continuation(primer, cont, other, seconds, seconds)
        r = measures.continuation(primer, after, other, seconds, seconds)
        mine.append(m)
        real.append(r)
        rows.append({"file": item["file"].name, "start_s": item["start_s"],
                     "primer_rate": _r(m["primer_rate"], 2), "rate": _r(m["rate"], 2),
                     "real_rate": _r(r["rate"], 2), "key_cosine": _r(m["key_cosine"]),
                     "real_key_cosine": _r(r["key_cosine"]),
                     "duration_ratio": _r(m["duration_ratio"], 2),
                     "real_duration_ratio": _r(r["duration_ratio"], 2)})
    took = time.perf_counter() - t0
    out = {"cont_primers": len(rows), "cont_seconds": seconds}
    for prefix, figures in (("cont_", measures.continuations(mine)),
                            ("real_cont_", measures.continuations(real))):
        out.update({prefix + k: _r(v) for k, v in figures.items()})
    out["cont_rows"] = rows
    out["cont_wall_s"] = _r(took, 1)
    return out


# --- the long duet --------------------------------------------------------------------------

def long_duet(model_path, files: Sequence[str], seed: int = 1, seconds: float = DUET_S) -> dict:
    """``duet_*`` figures: calls and answers for ``seconds`` on the simulated clock, one
    engine and one ``DuetMode`` throughout (the state kept across calls, as in play)."""
    from livepiano.live.modes import make_mode
    from livepiano.settings import schema

    settings = dict(schema.defaults(), mode="duet")
    performances = [n for n in (file_notes(Path(f)) for f in files[:6]) if n]
    calls = cut_calls(performances, settings["wait"], seconds=seconds, between=CALL_GAP_S)
    engine = session_engine(model_path, seed, accompany=True)
    mode = make_mode(settings)
    sim = SimSession(engine, mode)
    duet = mode.duet
    rows = []
    t0 = time.perf_counter()
    sim.run_until(0.3)
    for call in calls:
        if sim.now >= seconds:
            break
        start = sim.now
        events = player_events(call, start)
        phrase_end = start + max(e for _, e, _, _ in call)
        answered = len(duet.turns)
        sim.run_until(phrase_end, events)
        limit = phrase_end + settings["wait"] + settings["answer"][1] + 6.0
        while sim.now < limit:
            sim.run_until(sim.now + 0.05)
            if len(duet.turns) > answered and duet.state == "listen" \
                    and duet.turns[-1].over is not None:
                break
        sim.run_until(sim.now + CALL_GAP_S)
        mine = [n for n in sim.out.notes(sim.now) if phrase_end < n[0] < sim.now]
        call_len = max(e for _, e, _, _ in call)
        row = {"call_rate": len(call) / max(call_len, 1e-9), "answer_rate": None}
        if mine:
            span = max(max(e for _, e, _ in mine) - mine[0][0], 0.5)
            row["answer_rate"] = len(mine) / span
        rows.append(row)
    took = time.perf_counter() - t0
    ratios = [r["answer_rate"] / r["call_rate"] for r in rows if r["answer_rate"]]
    third = len(ratios) // 3
    drift = (float(np.median(ratios[-third:]) / np.median(ratios[:third]))
             if third >= 1 else None)
    model = sim.out.notes(sim.now)
    return {
        "duet_seconds": _r(sim.now, 1), "duet_calls": len(rows), "duet_answered": len(ratios),
        "duet_answer_over_call_median": _r(np.median(ratios), 2) if ratios else None,
        "duet_answer_over_call_p10_p90": ([_r(np.percentile(ratios, 10), 2),
                                           _r(np.percentile(ratios, 90), 2)] if ratios else None),
        "duet_drift_ratio": _r(drift),
        "duet_held_over_5s": _r(shape(model, sim.now)["held_over_5s_share"], 4),
        "duet_wall_s": _r(took, 1),
    }


def duet_spread(runs: Sequence[dict]) -> dict:
    """The long duet's drift and answer/call median over runs of different seeds: one run's
    drift compares two thirds of about 30 answers each and moves a lot from seed to seed."""
    drifts = [r["duet_drift_ratio"] for r in runs]
    medians = [r["duet_answer_over_call_median"] for r in runs]
    known = [d for d in drifts if d is not None]
    return {"duet_drift_ratio_seeds": drifts,
            "duet_drift_ratio_median": _r(np.median(known)) if known else None,
            "duet_answer_over_call_median_seeds": medians,
            "duet_answer_over_call_median_median": _r(np.median([m for m in medians
                                                                 if m is not None]), 2)}


# --- the command ----------------------------------------------------------------------------

def _parts(text: str | None) -> list[str]:
    names = [t.strip() for t in (text or ",".join(PARTS)).split(",") if t.strip()]
    wrong = [n for n in names if n not in PARTS]
    if wrong or not names:
        raise LivepianoError(f"--parts takes some of {','.join(PARTS)}, not "
                             f"{text!r}.")
    return names


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def bench(args) -> dict:
    from livepiano.runtime.modelfile import resolve_model

    say = getattr(args, "say", print)
    path = resolve_model(getattr(args, "model", None))
    seconds = float(getattr(args, "seconds", None) or 300.0)
    seeds = max(1, int(getattr(args, "seeds", None) or 3))
    parts = _parts(getattr(args, "parts", None))
    if not seconds >= 30.0:
        raise LivepianoError(f"--seconds must be at least 30 (three 10-s windows), "
                             f"not {seconds:g}.")
    root = data_folder(getattr(args, "reference", None))
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    ref = real_reference(root, say)
    say(f"model        {path}")
    say(f"real         {ref['real_files']} validation performances: note-ons per 10-s window "
        f"p5 {ref['real_window_p5']} / p50 {ref['real_window_median']} / p95 "
        f"{ref['real_window_p95']} / p99 {ref['real_window_p99']} per s; median note "
        f"{ref['real_duration_median_s']} s; held >= 5 s: median file "
        f"{ref['real_held_over_5s_share_median']:.2%}, p95 file "
        f"{ref['real_held_over_5s_share_p95']:.2%}; pitch p5-p95 {ref['real_pitch_p5_p95']}; "
        f"hands (left beside right): clash {_pct(ref['real_ens_clash'])} (chance "
        f"{_pct(ref['real_ens_clash_chance'])}), lifts harmony {ref['real_ens_harmony_lift']} "
        f"/ sync {ref['real_ens_sync_lift']} / key {ref['real_ens_key_lift']}; median note "
        f"left/right {ref['real_ens_duration_ratio']}, under 0.1 s "
        f"{_pct(ref['real_ens_short_share'])}")
    result = {k: v for k, v in ref.items() if k.startswith("real_")}
    result["model"] = str(path)
    result["parts"] = parts
    if "gen" in parts:
        gen = free_generation(path, seconds, list(range(1, seeds + 1)))
        result.update(gen)
        say(f"generate     {seeds} x {seconds:g} s: windows max {gen['gen_window_max']} / "
            f"median {gen['gen_window_median']} / min {gen['gen_window_min']} notes/s; drift "
            f"{gen['gen_drift_ratio']}; median note {gen['gen_duration_median_s']} s; held "
            f">= 5 s {gen['gen_held_over_5s_share']:.2%}; pitch p5-p95 "
            f"{gen['gen_pitch_p5_p95']}; {gen['gen_us_per_event']} µs/event in all, of which "
            f"the steering {gen['steer_us_per_event']} µs")
    if "acc" in parts and ref.get("pianist"):
        acc = accompaniment(path, ref["pianist"])
        result.update(acc)
        say(f"continuous   pianist {acc['acc_pianist']}: windows {acc['acc_player_windows']}; "
            f"model {acc['acc_model_windows']} notes/s; model/pianist max "
            f"{acc['acc_model_over_player_max']}; held >= 5 s {acc['acc_held_over_5s']:.2%}; "
            f"median note {acc['acc_duration_median_s']} s; sampled "
            f"{acc['acc_sampled_per_s']}/s, taken back {acc['acc_taken_back_per_s']}/s")
    elif "acc" in parts:
        say("continuous   skipped: no 60 s at 8-10 notes/s in the reference files")
    if "ens" in parts:
        pieces = ensemble_pieces(root, ref)
        ens = ensemble(path, pieces, midi_dir=getattr(args, "ensemble_midi", None))
        result.update(ens)
        for row in ens["ens_performances"]:
            say(f"ensemble     {row['piece']:<15} pianist {row['pianist_rate']} notes/s, model "
                f"{row['model_rate']}: clash {_pct(row['clash'])} (chance "
                f"{_pct(row['clash_chance'])}, hands {_pct(row['real_clash'])}); lifts "
                f"harmony {row['harmony_lift']} / sync {row['sync_lift']} / key "
                f"{row['key_lift']}; median note {row['duration_ratio']} x the pianist's, "
                f"under 0.1 s {_pct(row['short_share'])}")
        say(f"ensemble     median of {len(ens['ens_performances'])} x {ENSEMBLE_S:g} s: clash "
            f"{_pct(ens['ens_clash'])} (worst {_pct(ens['ens_clash_max'])}; chance "
            f"{_pct(ens['ens_clash_chance'])}); lifts harmony {ens['ens_harmony_lift']} / sync "
            f"{ens['ens_sync_lift']} / key {ens['ens_key_lift']}; median note "
            f"{ens['ens_duration_ratio']} x the pianist's; under 0.1 s "
            f"{_pct(ens['ens_short_share'])}; listening {ens.get('listen_us_per_batch')} µs "
            f"per batch of the pianist's events")
    if "cont" in parts:
        exclude = [p for _, p in ensemble_pieces(root, ref)] if "ens" in parts else []
        cont = continuations(path, continuation_primers(root, exclude=exclude))
        result.update(cont)
        say(f"continue     {cont['cont_primers']} primers of {PRIMER_S:g} s (real next "
            f"{PRIMER_S:g} s in brackets): density corr {cont['cont_density_corr']} "
            f"({cont['real_cont_density_corr']}), |log2 error| {cont['cont_density_log2_err']} "
            f"({cont['real_cont_density_log2_err']}); key cosine {cont['cont_key_cosine']} "
            f"({cont['real_cont_key_cosine']}), with another file's primer "
            f"{cont['cont_key_cosine_other']} ({cont['real_cont_key_cosine_other']}); median "
            f"note / primer's {cont['cont_duration_ratio']} ({cont['real_cont_duration_ratio']})")
    if "duet" in parts:
        duet = long_duet(path, ref["files"])
        result.update(duet)
        say(f"duet         {duet['duet_calls']} calls in {duet['duet_seconds']} s: answer/call "
            f"note rate median {duet['duet_answer_over_call_median']} (p10-p90 "
            f"{duet['duet_answer_over_call_p10_p90']}); drift {duet['duet_drift_ratio']}")
        duet_seeds = max(1, int(getattr(args, "duet_seeds", None) or 1))
        if duet_seeds > 1:
            more = [duet] + [long_duet(path, ref["files"], seed=k)
                             for k in range(2, duet_seeds + 1)]
            spread = duet_spread(more)
            result.update(spread)
            say(f"duet         seeds 1-{duet_seeds}: drift median "
                f"{spread['duet_drift_ratio_median']} (each {spread['duet_drift_ratio_seeds']}); "
                f"answer/call median of medians {spread['duet_answer_over_call_median_median']}")
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result["loadavg_1m"] = [_r(load0, 2), _r(load1, 2)]
    say(f"machine      load average {load0:.2f} at the start, {load1:.2f} at the end "
        f"(wall-clock figures are under that load)")
    return result
