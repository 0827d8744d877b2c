"""`bench music`'s ensemble and continuation parts on the MAESTRO excerpts in tests/data, and
its --json output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from livepiano.core import codec
from livepiano.tools.bench import measures, music

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
SHIPPED = REPO / "models" / "performance_rnn.onnx"


def test_the_ensemble_plays_beside_each_piece_and_sets_its_figures_against_chance(tmp_path):
    pieces = [("etude", DATA / "chopin_op10_12.mid"), ("prelude", DATA / "rachmaninoff_op32_8.mid")]
    r = music.ensemble(SHIPPED, pieces, seconds=20.0, midi_dir=tmp_path)
    assert [p["piece"] for p in r["ens_performances"]] == ["etude", "prelude"]
    for row in r["ens_performances"]:
        assert row["model_rate"] > 0 and 0.0 <= row["clash"] <= 1.0
        assert row["harmony_lift"] > 0 and row["real_clash"] is not None
    clashes = sorted(p["clash"] for p in r["ens_performances"])
    assert r["ens_clash"] == pytest.approx(sum(clashes) / 2, abs=1e-3)  # the median of two
    assert r["ens_clash_max"] == pytest.approx(clashes[-1], abs=1e-3)
    assert r["listen_us_per_batch"] > 0
    # each session saved as play records one: the pianist's part and the model's
    mid = codec.parse_midi((tmp_path / "ensemble-etude.mid").read_bytes())
    assert [t.name for t in mid.tracks][-2:] == ["player", "livepiano"]


def test_the_real_figures_are_the_hands_of_the_performance():
    notes = music.file_notes(DATA / "scarlatti_k525.mid")
    left, right = measures.hands([(s, e, p) for s, e, p, _ in notes])
    seconds = max(e for _, e, _, _ in notes)
    assert music.real_ensemble(notes) == measures.ensemble(left, right, seconds)


def test_continuations_against_the_real_next_seconds(reference_midi):
    primers = music.continuation_primers(reference_midi[0], count=3, seconds=8.0)
    assert len(primers) == 3 and len({p["file"] for p in primers}) == 3
    for p in primers:
        assert all(0.0 <= n[0] < 8.0 for n in p["primer"] + p["after"])
        tokens = music.primer_tokens(p["primer"], 8.0)
        # the silence up to the cut included (a note struck in its last 5 ms takes a step more)
        assert 800 <= codec.duration_steps(tokens) <= 801
    r = music.continuations(SHIPPED, primers, seconds=8.0)
    assert r["cont_primers"] == 3
    for key in ("density_corr", "density_log2_err", "key_cosine", "key_cosine_other",
                "duration_ratio"):
        assert f"cont_{key}" in r and f"real_cont_{key}" in r
    assert 0.0 < r["cont_key_cosine"] <= 1.0 and 0.0 < r["real_cont_key_cosine"] <= 1.0
    assert all(row["rate"] > 0 for row in r["cont_rows"])


def test_json_holds_stdout_alone(reference_midi):
    folder, env = reference_midi
    r = subprocess.run([sys.executable, "-m", "livepiano", "bench", "music", "--parts", "gen",
                        "--seconds", "30", "--seeds", "1", "--reference", str(folder), "--json"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    figures = json.loads(r.stdout)  # the whole of stdout
    assert figures["parts"] == ["gen"] and "gen_window_max" in figures
    assert "real_ens_clash" in figures and "ens_clash" not in figures
    assert "generate" in r.stderr  # the readable report went to stderr
    bad = subprocess.run([sys.executable, "-m", "livepiano", "bench", "music", "--parts", "x",
                          "--reference", str(folder)], capture_output=True, text=True, cwd=REPO,
                         env=env, timeout=120)
    assert bad.returncode != 0 and "--parts" in bad.stderr


def test_the_duets_drift_over_seeds_is_their_median():
    runs = [{"duet_drift_ratio": d, "duet_answer_over_call_median": m}
            for d, m in ((1.3, 0.9), (0.9, 1.0), (None, 1.2), (1.0, 0.96))]
    spread = music.duet_spread(runs)
    assert spread["duet_drift_ratio_seeds"] == [1.3, 0.9, None, 1.0]
    assert spread["duet_drift_ratio_median"] == 1.0  # the runs without a drift left out
    assert spread["duet_answer_over_call_median_median"] == pytest.approx(0.98)
