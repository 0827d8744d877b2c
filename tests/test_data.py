"""The token cache (prepare), its splits, and the training windows and evaluation segments."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.learn import dataset

DATA = Path(__file__).resolve().parent / "data"
MAESTRO = sorted(DATA.glob("*.mid"))
BAD = {"text.mid": "not a MIDI file", "truncated.mid": "corrupt or truncated",
       "empty.mid": "empty", "nonotes.mid": "no notes"}


def _golden(path: Path) -> np.ndarray:
    return np.array(path.with_suffix(".tokens").read_text().split(), dtype=np.int64)


@pytest.fixture
def corpus(tmp_path, write_bad_midi) -> Path:
    """A folder like a user's: the MAESTRO excerpts (one in a subfolder, one as .midi), a
    few tricky files, the four kinds of bad file and a stray non-MIDI file."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    for p in MAESTRO[:-1]:
        shutil.copy(p, root / p.name)
    shutil.copy(MAESTRO[-1], root / "sub" / (MAESTRO[-1].stem + ".midi"))
    for name in ("t02_tracks_channels", "t09_pedal_restrike", "t31_random_dense"):
        shutil.copy(DATA / "tricky" / f"{name}.mid", root / f"{name}.mid")
    write_bad_midi(root)
    (root / "notes.txt").write_text("not looked at")
    return root


def _golden_of(rel_name: str) -> np.ndarray:
    stem = Path(rel_name).stem
    path = DATA / f"{stem}.mid"
    return _golden(path if path.exists() else DATA / "tricky" / f"{stem}.mid")


def test_prepare_skips_bad_files_and_caches_the_rest(corpus, tmp_path):
    out = tmp_path / "cache"
    report = dataset.prepare(corpus, out, workers=1, show_progress=False)

    assert {name: why for name, why in report.skipped}.keys() == BAD.keys()
    for name, why in report.skipped:
        assert BAD[name] in why, (name, why)
    assert sum(report.files.values()) == len(MAESTRO) + 3

    index = json.loads((out / "index.json").read_text())
    assert index["vocab_size"] == codec.VOCAB_SIZE and index["split_from"] == "name hash"
    assert sorted(s["name"] for s in index["skipped"]) == sorted(BAD)
    seen = []
    for split in dataset.SPLITS:
        flat = np.load(out / f"{split}.npy")
        assert flat.dtype == np.uint16
        entries = index["splits"][split]["files"]
        assert index["splits"][split]["tokens"] == len(flat) == report.tokens[split]
        offset = 0
        for e in entries:
            assert e["offset"] == offset
            tokens = flat[e["offset"]:e["offset"] + e["length"]]
            assert tokens.tolist() == _golden_of(e["name"]).tolist(), e["name"]
            assert e["seconds"] == pytest.approx(codec.duration_steps(tokens.tolist()) / 100)
            assert dataset.hashed_split(e["name"]) == split
            offset += e["length"]
            seen.append(e["name"])
        assert offset == len(flat)
    assert f"sub/{MAESTRO[-1].stem}.midi" in seen

    cache = dataset.TokenCache(out)
    for split in dataset.SPLITS:
        for e, tokens in zip(cache.files(split), cache.file_tokens(split)):
            assert tokens.tolist() == _golden_of(e["name"]).tolist()


def test_prepare_is_deterministic(corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    dataset.prepare(corpus, a, workers=1, show_progress=False)
    dataset.prepare(corpus, b, workers=2, show_progress=False)
    ia, ib = (json.loads((p / "index.json").read_text()) for p in (a, b))
    assert ia["splits"] == ib["splits"] and ia["skipped"] == ib["skipped"]
    for split in dataset.SPLITS:
        assert (a / f"{split}.npy").read_bytes() == (b / f"{split}.npy").read_bytes()


def test_hashed_split_is_stable_and_roughly_80_10_10():
    # Pinned: a file must keep its split across runs, machines and Python hash seeds.
    assert [dataset.hashed_split(n) for n in ("a.mid", "d.mid", "song3.mid", "2004/y.midi")] \
        == ["train", "validation", "test", "validation"]
    names = [f"piece_{i:04d}.mid" for i in range(2000)]
    counts = {s: 0 for s in dataset.SPLITS}
    for n in names:
        counts[dataset.hashed_split(n)] += 1
    assert 1500 < counts["train"] < 1700 and 120 < counts["validation"] < 280 \
        and 120 < counts["test"] < 280


def test_maestro_csv_decides_splits(corpus, tmp_path):
    wanted = {MAESTRO[0].name: "test", MAESTRO[1].name: "validation", MAESTRO[2].name: "test",
              f"sub/{MAESTRO[-1].stem}.midi": "train", "t09_pedal_restrike.mid": "validation"}
    # the CSV must overrule the hash for at least one file, or this test proves nothing
    assert any(dataset.hashed_split(n) != s for n, s in wanted.items())
    with open(corpus / "maestro-v3.0.0.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["canonical_composer", "canonical_title", "split", "year",
                               "midi_filename", "audio_filename", "duration"])
        w.writeheader()
        for name, split in wanted.items():
            w.writerow({"canonical_composer": "x", "canonical_title": "y", "split": split,
                        "year": 2004, "midi_filename": name, "audio_filename": "a.wav",
                        "duration": 1.0})
    out = tmp_path / "cache"
    dataset.prepare(corpus, out, workers=1, show_progress=False)
    index = json.loads((out / "index.json").read_text())
    assert index["split_from"] == "csv"
    got = {e["name"]: split for split in dataset.SPLITS for e in index["splits"][split]["files"]}
    for name, split in wanted.items():
        assert got[name] == split, name
    # files the CSV does not name fall back to the hash
    for name in ("t02_tracks_channels.mid", "t31_random_dense.mid"):
        assert got[name] == dataset.hashed_split(name)


def test_prepare_errors(tmp_path, write_bad_midi):
    with pytest.raises(LivepianoError, match="no .mid or .midi"):
        dataset.prepare(tmp_path, tmp_path / "c", workers=1, show_progress=False)
    with pytest.raises(LivepianoError, match="not a folder"):
        dataset.prepare(tmp_path / "missing", tmp_path / "c", workers=1, show_progress=False)
    write_bad_midi(tmp_path)
    with pytest.raises(LivepianoError, match="none of the 4"):
        dataset.prepare(tmp_path, tmp_path / "c", workers=1, show_progress=False)


def test_token_cache_rejects_a_non_cache(tmp_path):
    with pytest.raises(LivepianoError, match="not a token cache"):
        dataset.TokenCache(tmp_path)
    (tmp_path / "index.json").write_text("{nope")
    with pytest.raises(LivepianoError, match="unreadable"):
        dataset.TokenCache(tmp_path)


# --- the command line, as a user runs it ------------------------------------------------------

def _one_line_error(proc):
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("livepiano: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_prepare_reports_splits_and_skipped_files(corpus, tmp_path, run_livepiano):
    out = tmp_path / "cache"
    proc = run_livepiano("prepare", corpus, "-o", out, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    index = json.loads((out / "index.json").read_text())
    for split in dataset.SPLITS:
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(split))
        assert f"{index['splits'][split]['tokens']:,} tokens" in line
    assert f"skipped {len(BAD)} file(s)" in proc.stdout
    for name in BAD:
        assert name in proc.stdout


def test_cli_prepare_folder_without_midi_fails_cleanly(tmp_path, run_livepiano):
    (tmp_path / "readme.txt").write_text("no music here")
    _one_line_error(run_livepiano("prepare", tmp_path, "-o", tmp_path / "cache"))
    _one_line_error(run_livepiano("prepare", tmp_path / "missing", "-o", tmp_path / "cache"))


def test_cli_prepare_folder_of_only_bad_files_fails_cleanly(tmp_path, run_livepiano,
                                                           write_bad_midi):
    write_bad_midi(tmp_path)
    proc = run_livepiano("prepare", tmp_path, "-o", tmp_path / "cache", "--workers", "1")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("livepiano: none of the 4")


# --- segments and windows ---------------------------------------------------------------------

def test_segments_cut_30_second_pieces():
    tokens = np.concatenate([_golden(p) for p in MAESTRO])  # about 97 s of music
    pieces = dataset.segments(tokens)
    total = codec.duration_steps(tokens.tolist())
    assert len(pieces) == -(-total // dataset.SEGMENT_STEPS)
    assert np.concatenate(pieces).tolist() == tokens.tolist()
    elapsed = 0
    for k, piece in enumerate(pieces):
        before = elapsed + dataset.elapsed_steps(piece)[:-1]
        # every event of piece k happens in [30 k, 30 (k + 1)) seconds
        assert before.min() >= k * dataset.SEGMENT_STEPS
        assert before.max() < (k + 1) * dataset.SEGMENT_STEPS
        elapsed += codec.duration_steps(piece.tolist())


def test_segments_small_cases():
    assert dataset.segments(np.array([], dtype=np.int64)) == []
    tokens = np.array([codec.velocity_event(3), codec.note_on(60), *codec.shifts(250),
                       codec.note_off(60)])
    pieces = dataset.segments(tokens, steps=100)
    # events at 0 s and 2.5 s in 1 s pieces: the second piece would be a lone 1 s shift and
    # is dropped; the third starts with the 0.5 s that passes in it before the note-off
    assert [p.tolist() for p in pieces] == [[codec.velocity_event(3), codec.note_on(60),
                                             codec.shift(100)],
                                            [codec.shift(50), codec.note_off(60)]]
    # an event at 0.99 s is in the first piece, one at exactly 1 s in the second
    tokens = np.array([codec.velocity_event(3), codec.note_on(60), codec.shift(99),
                       codec.note_on(62), codec.shift(1), codec.note_off(60), codec.note_off(62)])
    assert [p.tolist() for p in dataset.segments(tokens, steps=100)] == [tokens[:5].tolist(),
                                                                       tokens[5:].tolist()]


def _files_flat(token_lists):
    flat = np.concatenate([np.asarray(t, dtype=np.uint16) for t in token_lists])
    entries, offset = [], 0
    for t in token_lists:
        entries.append({"name": str(len(entries)), "offset": offset, "length": len(t)})
        offset += len(t)
    return flat, entries


def _find(window, sources):
    """(file index, semitones) such that the window's note-on/velocity events, moved back
    by the semitones, are a contiguous run of that file's note-on/velocity events."""
    def keep(t):
        t = np.asarray(t)
        return t[(t < codec.NOTE_OFF) | (t >= codec.VELOCITY)]
    w = keep(window)
    hits = []
    for k in range(-12, 13):
        back = np.where(w < codec.NOTE_OFF, w - k, w)
        for i, src in enumerate(sources):
            s = keep(src)
            if len(back) > len(s):
                continue
            if not len(back):
                hits.append((i, k))
                continue
            view = np.lib.stride_tricks.sliding_window_view(s, len(back))
            if (view == back).all(axis=1).any():
                hits.append((i, k))
    return hits


@pytest.fixture(scope="module")
def sources():
    return [_golden(p) for p in MAESTRO]


def test_windows_stay_in_one_file_and_are_deterministic(sources):
    flat, files = _files_flat(sources)
    a = dataset.WindowSampler(flat, files, seed=7)
    b = dataset.WindowSampler(flat, files, seed=7)
    c = dataset.WindowSampler(flat, files, seed=8)
    wa = [a.window() for _ in range(25)]
    wb = [b.window() for _ in range(25)]
    wc = [c.window() for _ in range(25)]
    assert all(x.tolist() == y.tolist() for x, y in zip(wa, wb))
    assert any(x.tolist() != y.tolist() for x, y in zip(wa, wc))
    used = set()
    for w in wa:
        assert w.dtype == np.int64 and len(w) >= 2
        assert ((0 <= w) & (w < codec.VOCAB_SIZE)).all()
        hits = _find(w, sources)
        assert hits, "window is not a piece of one file"
        used.add(hits[0][0])
    assert len(used) > 1


def test_window_state_replays():
    flat, files = _files_flat([_golden(p) for p in MAESTRO])
    s = dataset.WindowSampler(flat, files, seed=3)
    s.window()
    state = s.state()
    first = [s.window().tolist() for _ in range(3)]
    s.set_state(state)
    assert [s.window().tolist() for _ in range(3)] == first


def test_windows_without_augmentation_are_exact_slices(sources):
    flat, files = _files_flat(sources)
    s = dataset.WindowSampler(flat, files, seed=1, stretch=None, transpose=0)
    for _ in range(30):
        w = s.window()
        assert any(w.tolist() == flat[e["offset"]:e["offset"] + e["length"]][i:i + len(w)].tolist()
                   for e in files for i in np.flatnonzero(
                       flat[e["offset"]:e["offset"] + e["length"]] == w[0]))


@pytest.mark.parametrize("stretch", [(0.95, 1.05), None], ids=["stretched", "plain"])
def test_window_events_happen_within_30_seconds(stretch, sources):
    flat, files = _files_flat(sources)
    s = dataset.WindowSampler(flat, files, seed=5, stretch=stretch, steps=1000)
    longest = 0
    for _ in range(60):
        w = s.window()
        before = dataset.elapsed_steps(w)[:-1]
        events = before[w < codec.TIME_SHIFT]
        assert events.size == 0 or events.max() <= 1000
        longest = max(longest, int(dataset.elapsed_steps(w)[-1]))
    assert longest > 900  # windows are as long as asked, not short pieces


def test_windows_last_at_most_the_asked_time(sources):
    flat, files = _files_flat(sources)
    for stretch in ((0.95, 1.05), None):
        s = dataset.WindowSampler(flat, files, seed=5, stretch=stretch, steps=1000)
        assert max(codec.duration_steps(s.window().tolist()) for _ in range(60)) <= 1000


def test_window_transpositions_keep_notes_on_the_piano():
    def piece(pitches):
        out = []
        for p in pitches:
            out += [codec.velocity_event(10), codec.note_on(p), codec.shift(30), codec.note_off(p)]
        return out
    low = piece([21, 40, 60, 45] * 30)        # may only go up
    high = piece([108, 90, 70, 95] * 30)      # may only go down
    mid = piece([60, 64, 67, 72] * 30)        # anything within +-4
    flat, files = _files_flat([low, high, mid])
    s = dataset.WindowSampler(flat, files, seed=11, steps=1000, transpose=4)
    edge = {21: set(), 108: set()}
    middle = set()
    for _ in range(200):
        w = s.window()
        notes = w[w < codec.TIME_SHIFT] % 128
        assert notes.min() >= codec.PIANO_LOW and notes.max() <= codec.PIANO_HIGH
        hits = _find(w, [low, high, mid])
        assert hits
        i, k = hits[0]
        assert -4 <= k <= 4
        if i == 2:
            middle.add(k)
        elif {21, 108} & {int(p) - k for p in notes}:
            edge[21 if i == 0 else 108].add(k)
    # a window holding the lowest key was moved up only, one holding the highest down only
    assert edge[21] and min(edge[21]) >= 0 and max(edge[21]) > 0
    assert edge[108] and max(edge[108]) <= 0 and min(edge[108]) < 0
    assert len(middle) > 4


def test_windows_with_cache_dtype_and_no_stretch_transpose_down():
    """uint16 cache arrays, no stretch: a downward transposition must still work."""
    tokens = [codec.velocity_event(10), codec.note_on(100), codec.shift(30),
              codec.note_off(100)] * 50
    flat, files = _files_flat([tokens])
    s = dataset.WindowSampler(flat, files, seed=0, stretch=None, steps=500, transpose=4)
    seen = set()
    for _ in range(40):
        w = s.window()
        seen |= set((w[w < codec.NOTE_OFF]).tolist())
    assert min(seen) < 100 <= max(seen) <= codec.PIANO_HIGH
