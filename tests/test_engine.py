"""Engine, eval, generate and bench on the tiny trained models of test_export.py (real ONNX
files, a real onnxruntime session; no mocks)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import mido
import numpy as np
import pytest
from test_export import PATTERN, build, write_pattern_midis  # noqa: E402  (tests/ is on sys.path)

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.core.midifile import midi_file_notes, midi_file_tokens

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture
def unc(tiny_models):
    return tiny_models["unc"]["onnx"]


@pytest.fixture
def cond(tiny_models):
    return tiny_models["cond"]["onnx"]


def _engine(path, **kw):
    from livepiano.runtime.engine import Engine

    return Engine(path, **kw)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


# --- no torch on the play path ---------------------------------------------------------------

def test_engine_and_generate_do_not_import_torch(unc, tmp_path):
    out = tmp_path / "g.mid"
    code = textwrap.dedent(f"""
        import sys
        import livepiano.runtime.engine, livepiano.tools.bench
        from livepiano.cli import main
        rc = main(["generate", "--model", {str(unc)!r}, "--seconds", "2", "--seed", "3",
                   "-o", {str(out)!r}])
        assert rc == 0, rc
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("TORCH" if bad else "CLEAN", bad[:3])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "CLEAN" in r.stdout, r.stdout
    assert out.is_file()


# --- stream view, priming ----------------------------------------------------------------------

def test_engine_reads_model_and_card(unc, cond):
    e = _engine(unc)
    assert not e.conditioned and e.control is None
    assert (e.layers, e.hidden) == (2, 32)
    assert e.meta["model"]["hidden"] == 32
    c = _engine(cond)
    assert c.conditioned and c.control_dim == codec.CONTROL_DIM
    assert c.control_layout == codec.CONTROL_LAYOUT


def test_prime_updates_the_view_of_the_stream(unc):
    e = _engine(unc)
    e.prime(PATTERN[:5])  # vel 20, on 60, shift 10, off 60, on 64
    assert e.sounding() == [64]
    assert e.steps == 10 and e.velocity_bin == 20 and e.events == 5
    assert e.voices() == [(64, 10, "player")]
    assert e.sounding(own_only=True) == []
    e.prime([codec.shift(3)])
    assert e.steps == 13
    e.reset()
    assert e.steps == 0 and e.sounding() == [] and e.velocity_bin == 0 and e.logits is None
    h, c = e.state()
    assert not h.any() and not c.any()


def test_prime_then_sample_equals_feeding_one_by_one(unc):
    tokens = PATTERN * 3 + PATTERN[:6]
    a = _engine(unc, seed=11)
    a.prime(tokens)
    b = _engine(unc, seed=11)
    for t in tokens:
        b.prime([t])
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
    for x, y in zip(a.state(), b.state()):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert (a.steps, a.sounding(), a.velocity_bin) == (b.steps, b.sounding(), b.velocity_bin)
    assert [a.sample() for _ in range(200)] == [b.sample() for _ in range(200)]


def test_long_prime_in_pieces_equals_one_call(unc, monkeypatch):
    import livepiano.runtime.engine as engine_module

    tokens = PATTERN * 40
    a = _engine(unc)
    a.prime(tokens)
    monkeypatch.setattr(engine_module, "PRIME_PIECE", 37)
    b = _engine(unc)
    b.prime(tokens)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
    assert (a.steps, a.events, a.sounding()) == (b.steps, b.events, b.sounding())


def test_sample_feeds_its_event_back(unc):
    """sample() = choose, then one step: the next logits are those of a session fed that event."""
    from livepiano.runtime.modelfile import open_session

    e = _engine(unc, seed=5)
    e.prime(PATTERN)
    tok = e.sample()
    sess = open_session(unc)
    z = np.zeros((2, 1, 32), np.float32)
    ref = sess.run(["logits"], {"token": np.asarray([PATTERN + [tok]]), "h": z, "c": z})[0]
    np.testing.assert_allclose(e.logits, ref[0, -1], atol=1e-5)
    assert e.events == len(PATTERN) + 1


def test_seed_determinism(unc):
    runs = []
    for seed in (7, 7, 8):
        e = _engine(unc, seed=seed, temperature=1.5)
        e.prime(PATTERN)
        runs.append([e.sample() for _ in range(300)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_the_trained_model_continues_the_pattern(unc):
    e = _engine(unc, seed=0, temperature=0.0)  # greedy
    e.prime(PATTERN * 2)
    got = [e.sample() for _ in range(len(PATTERN) * 2)]
    assert got == PATTERN * 2 or got[1:] == (PATTERN * 2)[1:] or \
        sum(a == b for a, b in zip(got, PATTERN * 2)) >= len(got) - 4


def test_snapshot_and_restore_take_events_back(unc):
    e = _engine(unc, seed=6, temperature=1.5)
    e.prime(PATTERN * 2 + PATTERN[:2])
    snap = e.snapshot()
    before = (e.logits, e.state(), e.steps, e.events, e.velocity_bin, e.voices(), e.mask())
    ahead = [e.sample() for _ in range(40)]
    assert e.events == before[3] + 40
    e.restore(snap)
    after = (e.logits, e.state(), e.steps, e.events, e.velocity_bin, e.voices(), e.mask())
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1][0], before[1][0])
    np.testing.assert_array_equal(after[1][1], before[1][1])
    assert after[2:6] == before[2:6]
    np.testing.assert_array_equal(after[6], before[6])
    # Going on from the snapshot is the same as never having looked ahead.
    fresh = _engine(unc, seed=99, temperature=1.5)
    fresh.prime(PATTERN * 2 + PATTERN[:2])
    e.rng = np.random.default_rng(99)
    assert [e.sample() for _ in range(40)] == [fresh.sample() for _ in range(40)]
    e.restore(snap)  # more than once
    assert e.events == before[3] and ahead


# --- masks ------------------------------------------------------------------------------------

def _check_stream(tokens, low, high, max_steps):
    """Replay sampled tokens; the masks must hold at every event."""
    sounding: dict[int, list[int]] = {}
    step = 0
    longest = 0
    for t in tokens:
        if t < codec.NOTE_OFF:
            assert low <= t <= high, f"note-on {t} outside {low}..{high}"
            sounding.setdefault(t, []).append(step)
        elif t < codec.TIME_SHIFT:
            voices = sounding.get(t - codec.NOTE_OFF)
            assert voices, f"note-off of silent pitch {t - codec.NOTE_OFF}"
            longest = max(longest, step - voices.pop(0))
        elif t < codec.VELOCITY:
            step += codec.shift_steps(t)
            for voices in sounding.values():
                for s in voices:
                    assert step - s <= max_steps, "a note outlived max_note_steps"
    return longest


def test_masks_hold_over_thousands_of_samples(unc):
    # A range that excludes 60 (which the model wants to play) and hot sampling.
    e = _engine(unc, seed=1, temperature=2.5, pitch_range=(62, 100))
    e.prime(PATTERN[:1])
    tokens = [e.sample() for _ in range(3000)]
    _check_stream(tokens, 62, 100, e.max_note_steps)
    kinds = codec.events_per_kind(tokens)
    assert kinds["on"] > 50 and kinds["off"] > 50  # the test saw notes, not just shifts
    p = e.probabilities()
    assert abs(p.sum() - 1) < 1e-9
    silent = [q for q in range(128) if q not in e.sounding(own_only=True)]
    assert not p[[codec.NOTE_OFF + q for q in silent]].any()
    assert not p[:62].any() and not p[101:128].any()


def test_default_range_is_the_piano(cond):
    e = _engine(cond, seed=2, temperature=3.0)
    e.control = codec.control_vector([30, 31, 100, 101] * 5)
    tokens = [e.sample() for _ in range(2000)]
    _check_stream(tokens, 21, 108, e.max_note_steps)


def test_player_notes_are_not_released_by_the_engine(unc):
    e = _engine(unc, seed=4, temperature=2.0)
    e.prime([codec.velocity_event(20), 70])  # the player holds 70
    for _ in range(500):
        assert e.sample() != codec.note_off(70)
    assert 70 in e.sounding() and 70 not in e.sounding(own_only=True)


def test_forced_note_off_after_max_note_steps(unc):
    # The pattern holds each note 10-20 steps; a 5-step limit must cut every one of them.
    e = _engine(unc, seed=3, max_note_steps=5)
    e.prime(PATTERN * 2)
    tokens = [e.sample() for _ in range(1500)]
    longest = _check_stream(tokens, 21, 108, 5)
    assert longest == 5  # some note was held to the limit and then released
    assert codec.duration_steps(tokens) > 300  # time goes on: the limit does not stall the stream
    assert len(tokens) > 0 and codec.events_per_kind(tokens)["on"] > 20


def test_forced_note_off_is_returned_when_due(unc):
    # 30 is a pitch the model never played: its note-off has a tiny probability.
    for seed, temperature in ((0, 0.0), (1, 1.0), (2, 3.0)):
        e = _engine(unc, seed=seed, max_note_steps=3, temperature=temperature)
        e.prime(PATTERN[:1])
        e.feed(30)  # the engine's own note
        assert e.probabilities()[codec.note_off(30)] < 0.5
        e.feed(codec.shift(3))
        assert e.sample() == codec.note_off(30)
        assert e.sounding() == [] and e.steps == 3


def test_shift_never_carries_a_note_past_the_limit(unc):
    e = _engine(unc, seed=0, max_note_steps=7)
    e.feed(60)
    e.feed(codec.shift(4))
    mask = e.mask()
    assert mask[codec.shift(3)] and not mask[codec.shift(4)] and not mask[codec.shift(100)]


def test_with_notes_not_allowed_the_engine_only_lets_its_voices_go(unc):
    """``notes_allowed = False`` (a duet answer winding down): no note-on and no velocity
    event is sampled, the engine's voices still get their note-offs, and time goes on."""
    e = _engine(unc, seed=4, max_note_steps=300)
    while not e.sounding(own_only=True):
        e.sample()
    e.notes_allowed = False
    mask = e.mask()
    assert not mask[codec.NOTE_ON:codec.NOTE_OFF].any() and not mask[codec.VELOCITY:].any()
    tail = [e.sample() for _ in range(400)]
    assert all(codec.kind(t) in ("off", "shift") for t in tail)
    assert e.sounding(own_only=True) == []
    # a shift limit of 0 with nothing sounding would leave nothing: notes come back then
    e.shift_limit = 0
    assert e.mask()[codec.NOTE_ON:codec.NOTE_OFF].any()
    e.shift_limit, e.notes_allowed = None, True
    assert e.mask()[codec.NOTE_ON + 60] and e.mask()[codec.VELOCITY + 1]


# --- temperature and control ----------------------------------------------------------------

def test_temperature_lowers_entropy(unc):
    ent = {}
    for temp in (0.1, 2.0):
        e = _engine(unc, seed=0, temperature=temp)
        e.prime(PATTERN * 2)
        values = []
        for _ in range(200):
            values.append(_entropy(e.probabilities()))
            e.sample()
        ent[temp] = float(np.mean(values))
    assert ent[0.1] < ent[2.0] - 0.5
    e = _engine(unc)
    e.temperature = 0.7
    assert e.temperature == 0.7
    with pytest.raises(LivepianoError):
        e.temperature = -1


def test_control_is_applied_and_checked(cond, unc):
    e = _engine(cond, seed=0)
    e.prime(PATTERN)
    plain = e.logits
    e.reset()
    e.control = np.full(codec.CONTROL_DIM, 0.9, np.float32)
    e.prime(PATTERN)
    steered = e.logits
    assert np.abs(plain - steered).max() > 1e-5  # exactly 0 if the control were not fed
    e.control = None
    e.reset()
    e.prime(PATTERN)
    np.testing.assert_allclose(e.logits, plain, atol=1e-6)
    with pytest.raises(LivepianoError, match="13 values"):
        e.control = [1.0, 2.0]
    with pytest.raises(LivepianoError, match="unconditioned"):
        _engine(unc).control = np.zeros(codec.CONTROL_DIM)


def test_key_bias_steers_note_ons_and_leaves_the_model_alone(unc):
    from livepiano.runtime import engine as E

    c_and_e = [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]  # PATTERN is a C major triad: G is out
    e = _engine(unc, seed=0, pitch_range=(0, 127))
    e.prime(PATTERN)
    plain_logits, plain = e.logits, e.probabilities()
    e.key_bias = c_and_e
    np.testing.assert_array_equal(e.logits, plain_logits)  # what is sampled, not the state
    np.testing.assert_allclose(e.key_bias, np.array(c_and_e) / 2)
    steered = e.probabilities()
    ons = slice(codec.NOTE_ON, codec.NOTE_OFF)
    in_key = np.array([c_and_e[p % 12] == 1 for p in range(128)])
    # Out-of-key note-ons are pushed down by the floor, in-key ones are not pushed at all;
    # the rest of the distribution keeps its proportions.
    ratio = steered[ons] / np.maximum(plain[ons], 1e-300)
    floor = E.KEY_BIAS_FLOOR / (1 / 2 + E.KEY_BIAS_FLOOR)
    np.testing.assert_allclose(ratio[~in_key] / ratio[in_key].max(),
                               floor ** E.KEY_BIAS_STRENGTH, rtol=1e-4)
    rest = np.r_[codec.NOTE_OFF:codec.VOCAB_SIZE]
    np.testing.assert_allclose(steered[rest] / steered[rest].sum(),
                               plain[rest] / plain[rest].sum(), rtol=1e-5, atol=1e-12)
    # Sampled: the share of out-of-key note-ons drops.
    shares = {}
    for key in (None, c_and_e):
        e = _engine(unc, seed=1, pitch_range=(0, 127))
        e.key_bias = key
        e.prime(PATTERN)
        pitches = [t for t in (e.sample() for _ in range(3000)) if t < codec.NOTE_OFF]
        shares[key is None] = np.mean([c_and_e[p % 12] == 0 for p in pitches])
    assert shares[True] > 0.2 and shares[False] < shares[True] * 0.5
    e.key_bias = None
    assert e.key_bias is None
    e.key_bias = [0] * 12  # no notes heard: no key
    assert e.key_bias is None
    for bad in ([1, 2, 3], [-1] + [1] * 11, [float("nan")] * 12):
        with pytest.raises(LivepianoError, match="12 pitch-class weights"):
            e.key_bias = bad


# --- model path -----------------------------------------------------------------------------

def test_default_model_path(monkeypatch, unc, tmp_path):
    from livepiano.runtime.modelfile import default_model_path, resolve_model

    monkeypatch.setenv("LIVEPIANO_MODEL", str(unc))
    assert default_model_path() == Path(unc)
    assert resolve_model(None) == Path(unc)
    monkeypatch.setenv("LIVEPIANO_MODEL", str(tmp_path / "none.onnx"))
    with pytest.raises(LivepianoError, match="no model at"):
        default_model_path()
    with pytest.raises(LivepianoError, match="no model at"):
        _engine(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    with pytest.raises(LivepianoError, match="not a usable ONNX model"):
        _engine(junk)


# --- eval -------------------------------------------------------------------------------------

def test_batched_scoring_equals_one_segment_at_a_time(unc):
    from livepiano.learn.evaluate import score_segments
    from livepiano.runtime.modelfile import open_session

    rng = np.random.default_rng(0)
    segs = [np.asarray((PATTERN * 10)[int(rng.integers(0, 11)):][:n])
            for n in (5, 40, 77, 2, 120, 33)]
    sess = open_session(unc)
    z = np.zeros((2, 1, 32), np.float32)
    total, events = 0.0, 0
    for s in segs:
        lg = sess.run(["logits"], {"token": s[None, :-1], "h": z, "c": z})[0][0].astype(np.float64)
        top = lg.max(-1, keepdims=True)
        logp = lg - top - np.log(np.exp(lg - top).sum(-1, keepdims=True))
        total -= logp[np.arange(len(s) - 1), s[1:]].sum()
        events += len(s) - 1
    got_total, got_events = score_segments(sess, segs, batch=4, chunk=16)
    assert got_events == events == sum(len(s) - 1 for s in segs)
    assert got_total == pytest.approx(total, rel=1e-5)


def test_eval_beats_uniform_on_a_folder_and_a_cache(tiny_models, unc, tmp_path):
    from livepiano.learn import dataset
    from livepiano.learn.evaluate import evaluate

    folder = tiny_models["midis"]
    r = evaluate(unc, folder, limit=2)
    assert r.files == 2 and r.segments >= 4 and r.split is None
    assert r.nll < 1.5 < math.log(codec.VOCAB_SIZE)
    assert r.perplexity == pytest.approx(math.exp(r.nll))
    # A cache made by `prepare` from a folder with a MAESTRO-style CSV: its test split is used.
    src = write_pattern_midis(tmp_path / "maestro", count=2, repeats=80)
    (src / "maestro.csv").write_text(
        "midi_filename,split\npattern_0.mid,test\npattern_1.mid,train\n")
    dataset.prepare(src, tmp_path / "cache", workers=1, show_progress=False)
    r = evaluate(unc, tmp_path / "cache", split="test")
    assert r.files == 1 and r.split == "test" and r.nll < 1.5
    r_csv = evaluate(unc, src, split="test")  # the MIDI folder itself: its CSV's split
    assert r_csv.files == 1 and r_csv.nll == pytest.approx(r.nll, rel=1e-6)
    # an untrained view of the same data: the real MAESTRO excerpts are far less predictable
    real = evaluate(unc, DATA)
    assert real.nll > r.nll + 1.0


def test_cli_eval(unc, tiny_models, run_livepiano, tmp_path):
    r = run_livepiano("eval", unc, tiny_models["midis"], "--json")
    assert r.returncode == 0, r.stderr
    assert "NLL" in r.stdout and "perplexity" in r.stdout and "segments" in r.stdout
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    assert figures["nll"] < math.log(codec.VOCAB_SIZE) and figures["segments"] >= 6
    bad = run_livepiano("eval", unc, tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0


# --- generate ---------------------------------------------------------------------------------

def _released(path: Path) -> tuple[int, list[str]]:
    """(note-ons, track names) of a MIDI file; asserts every note-on has its note-off."""
    mid = mido.MidiFile(path)
    ons = 0
    names = []
    for track in mid.tracks:
        open_ = {}
        for msg in track:
            if msg.type == "track_name":
                names.append(msg.name)
            if msg.type == "note_on" and msg.velocity > 0:
                open_[(msg.channel, msg.note)] = open_.get((msg.channel, msg.note), 0) + 1
                ons += 1
            elif msg.type in ("note_off", "note_on"):
                key = (msg.channel, msg.note)
                assert open_.get(key), f"note-off without a note-on: {msg}"
                open_[key] -= 1
        assert not any(open_.values()), f"notes left sounding: {open_}"
    return ons, names


def test_generate_api_releases_everything(unc):
    from livepiano.runtime.offline import describe_notes, generate

    e = _engine(unc, seed=9, temperature=1.0)
    g = generate(e, 4.0, PATTERN[:2])  # the primer leaves 60 sounding: the player's note
    assert codec.duration_steps(g.tokens) == 400  # exactly the seconds asked for
    assert e.sounding(own_only=True) == []
    notes = g.generated_notes()
    assert notes and all(n.start >= g.primer_steps for n in notes)
    stats = describe_notes(notes, 4.0)
    assert stats["notes"] == len(notes) and 21 <= stats["pitch_min"] <= stats["pitch_max"] <= 108


def test_cli_generate_with_primer(unc, run_livepiano, tmp_path):
    out = tmp_path / "out.mid"
    primer = DATA / "chopin_op10_12.mid"
    r = run_livepiano("generate", "--model", unc, "--seconds", "5", "--seed", "1",
                      "--primer", primer, "-o", out)
    assert r.returncode == 0, r.stderr
    for word in ("notes/s", "pitch range", "velocity"):
        assert word in r.stdout
    ons, names = _released(out)
    assert names == ["primer", "livepiano"]
    notes = midi_file_notes(out)
    primer_notes = midi_file_notes(primer)
    assert ons > len(primer_notes)
    primer_end = max(n.end for n in primer_notes)
    generated = [n for n in notes if n.instrument == 1]
    assert generated and min(n.start for n in generated) >= primer_end - 0.011
    assert max(n.end for n in notes) >= primer_end + 4.9  # 5 s generated after the primer


def test_cli_generate_compares_with_real_playing(unc, run_livepiano, tmp_path):
    r = run_livepiano("generate", "--model", unc, "--seconds", "2", "--seed", "1",
                      "--compare", DATA, "-o", tmp_path / "c.mid")
    assert r.returncode == 0, r.stderr
    header = [line for line in r.stdout.splitlines() if "medians" in line]
    assert header and "all files" in header[0]
    assert any(line.startswith("velocity std") and len(line.split()) == 4
               for line in r.stdout.splitlines())


def test_describe_data_gives_each_segment_its_velocity(tmp_path):
    from livepiano.learn.evaluate import describe_data

    # 40 s of one velocity (bin 25 = 97), set once at the start: the second segment has no
    # velocity event of its own and must not fall back to a default.
    tokens = [codec.velocity_event(25)] + [60, codec.shift(50), codec.note_off(60)] * 80
    codec.tokens_to_midi(tokens).save(tmp_path / "one.mid")
    d = describe_data(tmp_path, split=None)
    assert d["segments"] == 2 and d["files"] == 1
    assert d["velocity_min"] == d["velocity_max"] == codec.bin_to_velocity(25)
    assert d["pitch_min"] == d["pitch_max"] == 60 and d["notes_per_s"] == pytest.approx(2.0)


def test_cli_generate_without_primer_and_errors(unc, run_livepiano, tmp_path):
    out = tmp_path / "plain.mid"
    r = run_livepiano("generate", "--model", unc, "--seconds", "3", "--seed", "2", "-o", out)
    assert r.returncode == 0, r.stderr
    ons, names = _released(out)
    assert names == ["livepiano"] and ons > 0
    tokens = midi_file_tokens(out)
    assert codec.duration_steps(tokens) <= 300  # ends on time, every note released
    missing = run_livepiano("generate", "--model", tmp_path / "none.onnx", "-o", out)
    assert missing.returncode == 1 and "no model at" in missing.stderr
    assert "Traceback" not in missing.stderr


# --- bench --------------------------------------------------------------------------------------

def test_cli_bench_model_json(unc, run_livepiano):
    r = run_livepiano("bench", "model", "--model", unc, "--json", "--steps", "2000")
    assert r.returncode == 0, r.stderr
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("step_us_p50", "step_us_p99", "step_us_max", "prime_tokens_per_s",
                "realtime_factor"):
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, key
    assert figures["step_us_p50"] <= figures["step_us_p99"] <= figures["step_us_max"]
    assert figures["steps"] >= 2000
    unknown = run_livepiano("bench", "nothing")
    assert unknown.returncode != 0
