"""The training loop on a tiny cache made from the MAESTRO excerpts in tests/data."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from livepiano.learn import dataset  # noqa: E402 (after the skip when torch is missing)
from livepiano.learn.train import TrainConfig, lr_at, train  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("midi")
    names = sorted(p.name for p in DATA.glob("*.mid"))
    for name in names:
        shutil.copy(DATA / name, src / name)
    rows = ["midi_filename,split"] + [f"{n},{'validation' if i == 0 else 'train'}"
                                      for i, n in enumerate(names)]
    (src / "splits.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path_factory.mktemp("cache")
    dataset.prepare(src, out, workers=1, show_progress=False)
    return out


def tiny(cache: Path, out: Path, **kw) -> TrainConfig:
    base = dict(cache=str(cache), out=str(out), hidden=24, layers=2, embedding=16, dropout=0.1,
                batch=4, bptt=32, eval_segments=4, eval_every_minutes=999,
                checkpoint_every_minutes=999, threads=1, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_continues_exactly(cache, tmp_path):
    straight = tiny(cache, tmp_path / "straight.pt", max_steps=6)
    train(straight, resume=False, log=lambda *a: None)
    split = tiny(cache, tmp_path / "split.pt", max_steps=3)
    train(split, resume=False, log=lambda *a: None)
    split.max_steps = 6
    train(split, resume=True, log=lambda *a: None)

    a = torch.load(tmp_path / "straight.pt", weights_only=False)
    b = torch.load(tmp_path / "split.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    assert a["tokens"] == b["tokens"] > 0
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_checkpoint_records_what_export_needs(cache, tmp_path):
    cfg = tiny(cache, tmp_path / "run.pt", max_steps=2)
    result = train(cfg, resume=False, log=lambda *a: None)
    ckpt = torch.load(tmp_path / "run.pt", weights_only=False)
    assert ckpt["config"]["hidden"] == 24 and ckpt["config"]["layers"] == 2
    assert ckpt["config"]["control_dim"] == 13
    meta = ckpt["meta"]
    assert meta["data"]["train_files"] == 3
    assert meta["data"]["train_tokens"] > 1000
    assert meta["augment"] == {"stretch": [0.95, 1.05], "transpose": 4}
    assert math.isclose(meta["val_nll"], result["val_nll"], rel_tol=1e-6)
    assert ckpt["epochs"] == pytest.approx(ckpt["tokens"] / meta["data"]["train_tokens"])


def test_a_few_dozen_steps_beat_the_uniform_guess(cache, tmp_path):
    cfg = tiny(cache, tmp_path / "learn.pt", max_steps=40, lr=1e-2, dropout=0.0)
    result = train(cfg, resume=False, log=lambda *a: None)
    # Uniform guessing is ln 388 = 5.96 nats/event; an untrained or frozen model stays there.
    assert result["val_nll"] < math.log(388) - 0.4


def test_stops_after_the_scheduled_epochs(cache, tmp_path):
    cfg = tiny(cache, tmp_path / "epoch.pt", epochs=0.05)
    result = train(cfg, resume=False, log=lambda *a: None)
    train_tokens = dataset.TokenCache(cache).index["splits"]["train"]["tokens"]
    assert result["tokens"] >= 0.05 * train_tokens
    assert result["tokens"] < 0.05 * train_tokens + cfg.batch * cfg.bptt + 1


def test_learning_rate_falls_from_peak_to_floor():
    cfg = TrainConfig(lr=1e-3, min_lr_ratio=0.1, epochs=1.0)
    assert lr_at(cfg, 0, 1000) == pytest.approx(1e-3)
    assert lr_at(cfg, 500, 1000) == pytest.approx(0.55e-3)
    assert lr_at(cfg, 1000, 1000) == pytest.approx(1e-4)
    assert lr_at(cfg, 5000, 1000) == pytest.approx(1e-4)


def test_train_without_a_cache_is_one_clear_line(run_livepiano, tmp_path):
    r = run_livepiano("train", tmp_path / "nothing", "-o", tmp_path / "x.pt")
    assert r.returncode == 1
    assert r.stderr.startswith("livepiano: ") and "livepiano prepare" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
