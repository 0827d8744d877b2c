"""Folders of MIDI files -> a token cache with splits; windows and segments for training.

The cache is a folder with one ``SPLIT.npy`` per split (uint16 token ids, the files one after
another) and ``index.json`` naming each file's offset, length and duration. It is small
enough to travel (MAESTRO v3: see the README) and is read back with memory mapping.
"""

from __future__ import annotations

import csv
import json
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from livepiano import LivepianoError
from livepiano.core import codec, players
from livepiano.core.midifile import midi_file_tokens

SPLITS = ("train", "validation", "test")
SEGMENT_STEPS = 30 * codec.STEPS_PER_SECOND  # 30-second examples, as Magenta's pipeline
MIDI_SUFFIXES = (".mid", ".midi")
CACHE_VERSION = 1


def find_midi_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())


def hashed_split(relative_name: str) -> str:
    """80/10/10 by a hash of the file's name, so a file keeps its split when others are
    added or removed."""
    h = zlib.crc32(relative_name.encode("utf-8")) % 100
    return "train" if h < 80 else "validation" if h < 90 else "test"


def maestro_splits(root: Path) -> dict[str, str] | None:
    """{relative midi path: split} from a MAESTRO-style CSV in ``root``, if there is one."""
    for csv_path in sorted(root.glob("*.csv")):
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"midi_filename", "split"} <= set(reader.fieldnames):
                continue
            return {row["midi_filename"]: row["split"] for row in reader}
    return None


def _encode(path: str) -> tuple[str, np.ndarray | None, str]:
    try:
        tokens = midi_file_tokens(path)
    except codec.CodecError as e:
        return path, None, str(e).split(": ", 1)[-1]
    except Exception as e:  # one bad file must never stop a long run
        return path, None, f"unreadable ({type(e).__name__}: {e})"
    if not tokens:
        return path, None, "no notes"
    return path, np.asarray(tokens, dtype=np.uint16), ""


@dataclass
class PrepareReport:
    files: dict[str, int]
    tokens: dict[str, int]
    seconds: dict[str, float]
    skipped: list[tuple[str, str]]
    bytes: int


def prepare(data_dir: str | os.PathLike, cache_dir: str | os.PathLike, workers: int | None = None,
            show_progress: bool = True) -> PrepareReport:

    root = Path(data_dir)
    if not root.is_dir():
        raise LivepianoError(f"{root} is not a folder; give the folder that holds the MIDI files.")
    files = find_midi_files(root)
    if not files:
        raise LivepianoError(f"no .mid or .midi files under {root}; point prepare at a folder "
                             f"of MIDI files.")
    csv_splits = maestro_splits(root)
    rel = {p: p.relative_to(root).as_posix() for p in files}

    def split_of(p: Path) -> str:
        if csv_splits is not None and rel[p] in csv_splits:
            return csv_splits[rel[p]]
        return hashed_split(rel[p])

    out = Path(cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[Path, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    workers = workers or min(2, os.cpu_count() or 1)
    bar = tqdm(total=len(files), desc="prepare", unit="file", disable=not show_progress)
    done = 0
    total_tokens = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for path, tokens, why in pool.map(_encode, [str(p) for p in files], chunksize=4):
            done += 1
            if tokens is None:
                skipped.append((rel[Path(path)], why))
            else:
                results[Path(path)] = tokens
                total_tokens += len(tokens)
            bar.set_postfix_str(f"{total_tokens / 1e6:.1f}M tokens, {len(skipped)} skipped",
                                refresh=False)
            bar.update(1)
    bar.close()
    if not results:
        raise LivepianoError(f"none of the {len(files)} MIDI files under {root} could be read; "
                             f"see the list of skipped files above.")

    index = {"version": CACHE_VERSION, "vocab_size": codec.VOCAB_SIZE, "source": str(root),
             "split_from": "csv" if csv_splits is not None else "name hash", "splits": {},
             "skipped": [{"name": n, "reason": r} for n, r in skipped]}
    report = PrepareReport({}, {}, {}, skipped, 0)
    for split in SPLITS:
        members = [p for p in files if p in results and split_of(p) == split]
        arrays = [results[p] for p in members]
        flat = np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)
        np.save(out / f"{split}.npy", flat)
        entries, offset = [], 0
        for p, a in zip(members, arrays):
            secs = codec.duration_steps(a.tolist()) / codec.STEPS_PER_SECOND
            entries.append({"name": rel[p], "offset": offset, "length": int(len(a)),
                            "seconds": round(secs, 2)})
            offset += len(a)
        index["splits"][split] = {"files": entries, "tokens": int(len(flat))}
        report.files[split] = len(entries)
        report.tokens[split] = int(len(flat))
        report.seconds[split] = sum(e["seconds"] for e in entries)
    (out / "index.json").write_text(json.dumps(index, indent=1))
    report.bytes = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    return report


class TokenCache:
    """A prepared cache: ``cache.tokens(split)`` is the split's token array (memory-mapped),
    ``cache.files(split)`` its file entries."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        index_path = self.path / "index.json"
        if not index_path.is_file():
            raise LivepianoError(f"{self.path} is not a token cache (no index.json); "
                                 f"make one with `livepiano prepare DATA_DIR -o {self.path}`.")
        try:
            self.index = json.loads(index_path.read_text())
        except (OSError, ValueError) as e:
            raise LivepianoError(f"{index_path} is unreadable ({e}); run `livepiano prepare` "
                                 f"again.") from None
        if self.index.get("version") != CACHE_VERSION:
            raise LivepianoError(f"{self.path} was made by another version of livepiano; "
                                 f"run `livepiano prepare` again.")

    def tokens(self, split: str) -> np.ndarray:
        if split not in self.index["splits"]:
            raise LivepianoError(f"the cache has no split {split!r}; it has "
                                 f"{', '.join(self.index['splits'])}.")
        return np.load(self.path / f"{split}.npy", mmap_mode="r")

    def files(self, split: str) -> list[dict]:
        return self.index["splits"][split]["files"]

    def file_tokens(self, split: str) -> list[np.ndarray]:
        flat = self.tokens(split)
        return [np.asarray(flat[e["offset"]:e["offset"] + e["length"]]) for e in self.files(split)]


# --- examples ----------------------------------------------------------------------------

def elapsed_steps(tokens: np.ndarray) -> np.ndarray:
    """Steps elapsed before each token (int64), and one more entry for the end."""
    t = np.asarray(tokens, dtype=np.int64)
    steps = np.where((t >= codec.TIME_SHIFT) & (t < codec.VELOCITY), t - codec.TIME_SHIFT + 1, 0)
    return np.concatenate([[0], np.cumsum(steps)])


def segments(tokens: np.ndarray, steps: int = SEGMENT_STEPS) -> list[np.ndarray]:
    """Consecutive pieces of one performance, each holding the events of ``steps`` of
    time (an event belongs to the piece in which it happens)."""
    tokens = np.asarray(tokens)
    if not len(tokens):
        return []
    before = elapsed_steps(tokens)[:-1]
    piece = before // steps
    cuts = np.flatnonzero(np.diff(piece)) + 1
    return [s for s in np.split(tokens, cuts) if len(s) > 1]


class WindowSampler:
    """Random 30-second windows from a split, with augmentation on the tokens: a time
    stretch in ``stretch`` and a transposition of up to ``transpose`` semitones that keeps
    every note on the piano (intervals that would push a note off it are not drawn)."""

    def __init__(self, flat: np.ndarray, files: list[dict], seed: int = 0,
                 steps: int = SEGMENT_STEPS, stretch: tuple[float, float] = (0.95, 1.05),
                 transpose: int = 4, max_tokens: int | None = None):
        self.flat = np.asarray(flat)
        self.before = elapsed_steps(self.flat)
        self.bounds = [(e["offset"], e["offset"] + e["length"]) for e in files if e["length"] > 1]
        weights = np.array([b - a for a, b in self.bounds], dtype=np.float64)
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)
        self.steps = steps
        self.stretch = stretch
        self.transpose = transpose
        self.max_tokens = max_tokens

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def window(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """One window, drawn with ``rng`` (default: the sampler's own generator); training
        gives each lane its own generator so that a lane's stream of windows is the same
        however many processes share the lanes."""
        rng = rng or self.rng
        lo, hi = self.bounds[rng.choice(len(self.bounds), p=self.p)]
        start = int(rng.integers(lo, hi - 1))
        factor = float(rng.uniform(*self.stretch)) if self.stretch else 1.0
        # Stretching changes the length, so cut the source a little long and trim after.
        # A window holds the tokens whose time, the shifts included, ends within its length.
        want = int(self.steps / factor) + 1
        end = start + int(np.searchsorted(self.before[start + 1:hi + 1],
                                          self.before[start] + want, side="right"))
        end = max(start + 2, min(end, hi))
        tokens = np.asarray(self.flat[start:end], dtype=np.int64)
        if factor != 1.0:
            tokens = np.asarray(codec.stretch(tokens, factor), dtype=np.int64)
        cut = int(np.searchsorted(elapsed_steps(tokens)[1:], self.steps, side="right"))
        tokens = tokens[:max(2, cut)]
        if self.transpose:
            low, high = codec.transposition_range(tokens, self.transpose)
            if high >= low:
                semitones = int(rng.integers(low, high + 1))
                tokens = codec.transpose(tokens, semitones)
        if self.max_tokens:
            tokens = tokens[:self.max_tokens]
        return np.asarray(tokens, dtype=np.int64)


@dataclass(frozen=True)
class PlayerMix:
    """What a model that knows who played trains on: the share of windows played alone
    (every event its own), the share made a duet (``players.alternate_phrases``); the rest
    are accompaniment, the performance's hands split (``players.hand_flags``), the model
    playing either hand."""

    solo: float = 0.4
    duet: float = 0.2


class Window(NamedTuple):
    tokens: np.ndarray
    control: np.ndarray
    flags: np.ndarray | None  # player flags (None for a one-player model)


class LaneWindows:
    """The next window of a training lane, drawn from the lane's own generator state: the
    window, its control vector (all zeros for a ``control_dropout`` share when the model is
    conditioned), its player flags when the model knows who played (``mix``), and the
    generator's state after the draw. With ``workers`` the draws run ahead in other processes
    (stretching a window is Python work the training loop would wait for); the result depends
    only on the state given, so it is the same either way."""

    def __init__(self, cache: str | os.PathLike, *, steps: int, stretch, transpose: int,
                 max_tokens: int, seed: int, conditioned: bool, control_dropout: float,
                 mix: PlayerMix | None = None, workers: int = 0):
        self.args = (str(cache), steps, stretch, transpose, max_tokens, seed, conditioned,
                     control_dropout, mix)
        _lane_setup(*self.args)
        self.pool = None
        if workers > 0:
            import multiprocessing

            # spawn: the trainer has torch (and maybe CUDA) loaded, which fork does not survive
            self.pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"),
                                            initializer=_lane_setup, initargs=self.args)

    def draw(self, rng_state: dict):
        return _lane_draw(rng_state)

    def ahead(self, rng_state: dict):
        """A handle whose ``result()`` is ``draw(rng_state)``, started now when there are
        workers."""
        if self.pool is None:
            return _Now(rng_state)
        return self.pool.submit(_lane_draw, rng_state)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


class _Now:
    def __init__(self, rng_state: dict):
        self.rng_state = rng_state

    def result(self):
        return _lane_draw(self.rng_state)


_LANE: dict = {}


def _lane_setup(cache, steps, stretch, transpose, max_tokens, seed, conditioned,
                control_dropout, mix) -> None:
    tc = TokenCache(cache)
    _LANE.update(sampler=WindowSampler(tc.tokens("train"), tc.files("train"), seed=seed,
                                       steps=steps, stretch=stretch, transpose=transpose,
                                       max_tokens=max_tokens),
                 conditioned=conditioned, control_dropout=control_dropout, mix=mix,
                 max_tokens=max_tokens)


def two_players(window: np.ndarray, mix: PlayerMix,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, player flags) of a window as ``mix`` draws it: alone, a duet or one hand."""
    draw = rng.random()
    if draw < mix.solo:
        return window, np.zeros(len(window), np.int64)
    if draw < mix.solo + mix.duet:
        return players.alternate_phrases(window, rng)
    return window, players.hand_flags(window, own_hand=int(rng.integers(2)))


def _lane_draw(rng_state: dict):
    rng = np.random.default_rng()
    rng.bit_generator.state = rng_state
    window = _LANE["sampler"].window(rng)
    flags = None
    if _LANE["mix"] is not None:
        window, flags = two_players(window, _LANE["mix"], rng)
        if _LANE["max_tokens"]:
            window, flags = window[:_LANE["max_tokens"]], flags[:_LANE["max_tokens"]]
    if _LANE["conditioned"]:
        # What the model is told to sound like describes its own part.
        own = window if flags is None else players.own_tokens(window, flags)
        control = np.asarray(codec.control_vector(own), np.float32)
        if rng.random() < _LANE["control_dropout"]:
            control = np.zeros_like(control)
    else:
        control = np.zeros(0, np.float32)
    return Window(window, control, flags), rng.bit_generator.state
