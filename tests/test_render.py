"""Rendering through the real FluidSynth (installed here and in CI) and its one-line errors
when a soundfont is missing (--soundfont pointed at an empty folder in a subprocess, no
mocks). Without FluidSynth the built-in synth renders: tests/test_synth.py."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from jackserver import need

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.tools.render import find_soundfont, render_midi, wav_levels

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fluidsynth_program():
    """The fluidsynth program: skipped without it (one line saying what to install), a
    failure in CI, which installs it (tests/jackserver.py: need)."""
    need(shutil.which("fluidsynth") is not None,
         "needs the fluidsynth program (apt-get install fluidsynth fluid-soundfont-gm)")


def _small_midi(path: Path) -> Path:
    """Two seconds of a C major arpeggio and a chord."""
    notes = [codec.StepNote(p, 100, i * 25, i * 25 + 40) for i, p in enumerate((60, 64, 67, 72))]
    notes += [codec.StepNote(p, 90, 120, 200, i) for i, p in enumerate((48, 55, 60))]
    codec.step_notes_to_midi([("livepiano", notes)]).save(str(path))
    return path


@pytest.mark.usefixtures("fluidsynth_program")
def test_render_gives_a_sounding_wav_of_the_right_length(tmp_path):
    mid = _small_midi(tmp_path / "a.mid")
    r = render_midi(mid, tmp_path / "a.wav")
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 44100)
    # 2 s of notes, then FluidSynth's release tail (at most a few seconds).
    assert 2.0 <= r.levels.seconds <= 5.0
    assert not r.levels.silent
    assert -30 < r.levels.peak_dbfs <= 0 and r.levels.rms_dbfs < r.levels.peak_dbfs
    # Sound where the notes are, (nearly) silence long after the last one ends.
    with wave.open(str(tmp_path / "a.wav")) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2) / 32768
    assert np.abs(x[int(0.2 * 44100):int(1.8 * 44100)]).max() > 0.05
    assert str(r.wav) in r.describe() and "dBFS" in r.describe()


def test_wav_levels_of_a_known_sine(tmp_path):
    rate = 8000
    t = np.arange(rate * 2) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(tmp_path / "s.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    lv = wav_levels(tmp_path / "s.wav")
    assert lv.seconds == pytest.approx(2.0)
    assert lv.peak_dbfs == pytest.approx(20 * math.log10(0.5), abs=0.05)
    assert lv.rms_dbfs == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.05)


def test_soundfont_search_order(tmp_path, monkeypatch):
    sf = tmp_path / "mine.sf2"
    sf.write_bytes(b"RIFF\x04\x00\x00\x00sfbk")
    monkeypatch.setenv("LIVEPIANO_SOUNDFONT", str(sf))
    assert find_soundfont() == sf
    assert find_soundfont(tmp_path) == sf  # a folder is searched
    other = tmp_path / "other.sf2"
    other.write_bytes(b"RIFF\x04\x00\x00\x00sfbk")
    assert find_soundfont(other) == other  # --soundfont wins over the environment
    (tmp_path / "fake.sf2").write_text("not a soundfont")
    with pytest.raises(LivepianoError, match="not an SF2/SF3 soundfont"):
        find_soundfont(tmp_path / "fake.sf2")


def _cli(args, env_changes, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("LIVEPIANO_SOUNDFONT", None)
    env.update(env_changes)
    return subprocess.run([sys.executable, "-m", "livepiano.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=60, cwd=cwd, env=env)


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_missing_soundfont_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    # Checked before anything is generated, so no model is needed.
    r = _cli(["generate", "--model", tmp_path / "none.onnx", "--seconds", "1",
              "-o", tmp_path / "x.mid", "--wav", tmp_path / "x.wav", "--soundfont", empty],
             {}, tmp_path)
    line = _one_line_error(r)
    assert "no soundfont in" in line and "give the path of an .sf2 file" in line
    r = _cli(["generate", "--model", tmp_path / "none.onnx", "--seconds", "1",
              "-o", tmp_path / "x.mid", "--wav", tmp_path / "x.wav"],
             {"LIVEPIANO_SOUNDFONT": str(empty / "gone.sf2")}, tmp_path)
    assert "no soundfont at" in _one_line_error(r)
    assert not (tmp_path / "x.mid").exists()


@pytest.mark.usefixtures("fluidsynth_program")
def test_generate_wav_and_plot(tmp_path):
    """generate --wav --plot on a tiny model made here (no torch: a random ONNX LSTM)."""
    onnx = pytest.importorskip("onnx")
    model = _random_model(onnx, tmp_path / "tiny.onnx")
    r = _cli(["generate", "--model", model, "--seconds", "2", "--seed", "1",
              "-o", tmp_path / "g.mid", "--wav", tmp_path / "g.wav", "--plot", tmp_path / "g.png"],
             {}, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wav " in r.stdout and "dBFS" in r.stdout and "plot " in r.stdout
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert wav_levels(tmp_path / "g.wav").seconds >= 2.0


def _random_model(onnx, path: Path) -> Path:
    """A livepiano-shaped ONNX model (token, h, c -> logits, h_out, c_out) with one small
    random LSTM layer, built with onnx.helper."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    hidden, vocab = 16, codec.VOCAB_SIZE
    emb = rng.normal(0, 1, (vocab, hidden)).astype(np.float32)
    w = rng.normal(0, 0.3, (1, 4 * hidden, hidden)).astype(np.float32)
    r_ = rng.normal(0, 0.3, (1, 4 * hidden, hidden)).astype(np.float32)
    b = np.zeros((1, 8 * hidden), np.float32)
    out_w = rng.normal(0, 0.5, (hidden, vocab)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(emb, "emb"), (w, "W"), (r_, "R"), (b, "B"), (out_w, "out_w")]]
    nodes = [
        helper.make_node("Gather", ["emb", "token"], ["x_bt"]),             # [B,T,H]
        helper.make_node("Transpose", ["x_bt"], ["x_tb"], perm=[1, 0, 2]),  # [T,B,H]
        helper.make_node("LSTM", ["x_tb", "W", "R", "B", "", "h", "c"], ["y", "h_out", "c_out"],
                         hidden_size=hidden),                                # y [T,1,B,H]
        helper.make_node("Squeeze", ["y", "axis1"], ["y_tbh"]),
        helper.make_node("Transpose", ["y_tbh"], ["y_bth"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["y_bth", "out_w"], ["logits"]),
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("token", TensorProto.INT64, ["B", "T"]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, "B", hidden]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, "B", hidden])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "T", vocab]),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, "B", hidden]),
         helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [1, "B", hidden])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.usefixtures("fluidsynth_program")
def test_render_errors_are_one_line(tmp_path):
    r = _cli(["plot", tmp_path / "none.mid"], {}, tmp_path)
    _one_line_error(r)
    from livepiano.tools.render import render_midi as rm

    with pytest.raises(LivepianoError, match="does not exist"):
        rm(_small_midi(tmp_path / "b.mid"), tmp_path / "no" / "such" / "b.wav")
    with pytest.raises(LivepianoError, match="no MIDI file"):
        rm(tmp_path / "none.mid", tmp_path / "b.wav")
