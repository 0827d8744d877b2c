"""The training loop on a tiny cache made from the MAESTRO excerpts in tests/data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tinytrain import make_cache, tiny  # noqa: E402

from livepiano import LivepianoError  # noqa: E402 (after the skip when torch is missing)
from livepiano.learn import dataset  # noqa: E402
from livepiano.learn.plan import TrainConfig, lr_at  # noqa: E402
from livepiano.learn.train import train  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("midi"), tmp_path_factory.mktemp("cache"))


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
    assert a["tokens_seen"] == b["tokens_seen"] > 0
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
    assert ckpt["epochs"] == pytest.approx(ckpt["tokens_seen"] / meta["data"]["train_tokens"])


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
    cfg = TrainConfig(lr=1e-3, min_lr_ratio=0.1, warmup=0.0)
    assert lr_at(cfg, 0.0) == pytest.approx(1e-3)
    assert lr_at(cfg, 0.5) == pytest.approx(0.55e-3)
    assert lr_at(cfg, 1.0) == pytest.approx(1e-4)
    assert lr_at(cfg, 5.0) == pytest.approx(1e-4)


def test_learning_rate_warms_up_then_decays_once():
    cfg = TrainConfig(lr=1e-3, min_lr_ratio=0.1, warmup=0.1, decay="linear")
    assert lr_at(cfg, 0.0) == pytest.approx(1e-4)
    assert lr_at(cfg, 0.05) == pytest.approx(0.55e-3)
    assert lr_at(cfg, 0.1) == pytest.approx(1e-3)
    assert lr_at(cfg, 0.55) == pytest.approx(0.55e-3)
    assert lr_at(cfg, 1.0) == pytest.approx(1e-4)
    rates = [lr_at(TrainConfig(warmup=0.02), p / 100) for p in range(101)]
    peak = rates.index(max(rates))
    assert all(a <= b for a, b in zip(rates[:peak], rates[1:peak + 1]))
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:]))  # no restarts


def test_train_without_a_cache_is_one_clear_line(run_livepiano, tmp_path):
    r = run_livepiano("train", tmp_path / "nothing", "-o", tmp_path / "x.pt")
    assert r.returncode == 1
    assert r.stderr.startswith("livepiano: ") and "livepiano prepare" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_run_from_other_weights_counts_their_tokens_and_plans_its_own(cache, tmp_path):
    first = train(tiny(cache, tmp_path / "first.pt", max_steps=3), resume=False,
                  log=lambda *a: None)
    cfg = tiny(cache, tmp_path / "second.pt", init_from=str(tmp_path / "first.pt"),
               epochs=0.05, hidden=99, layers=3)
    second = train(cfg, resume=False, log=lambda *a: None)
    ckpt = torch.load(tmp_path / "second.pt", weights_only=False)
    assert ckpt["config"]["hidden"] == 24 and ckpt["config"]["layers"] == 2  # the weights' shape
    assert ckpt["meta"]["init_from"]["tokens_seen"] == first["tokens"] > 0
    assert ckpt["meta"]["schedule"]["start_tokens"] == first["tokens"]
    train_tokens = dataset.TokenCache(cache).index["splits"]["train"]["tokens"]
    ran = second["tokens"] - first["tokens"]
    assert 0.05 * train_tokens <= ran < 0.05 * train_tokens + cfg.batch * cfg.bptt + 1


def test_a_weights_only_file_is_not_resumed_but_started_from(cache, tmp_path):
    train(tiny(cache, tmp_path / "w.pt", max_steps=1), resume=False, log=lambda *a: None)
    ckpt = torch.load(tmp_path / "w.pt", weights_only=False)
    del ckpt["optimizer"], ckpt["resume"]
    torch.save(ckpt, tmp_path / "w.pt")
    with pytest.raises(LivepianoError, match=r"holds weights only.*--init-from"):
        train(tiny(cache, tmp_path / "w.pt", max_steps=2), log=lambda *a: None)


def test_a_plan_over_minutes_ends_at_the_floor_when_the_time_is_up(cache, tmp_path):
    cfg = tiny(cache, tmp_path / "timed.pt", plan="minutes", minutes=0.05, lr=1e-2,
               min_lr_ratio=0.1)
    result = train(cfg, resume=False, log=lambda *a: None)
    ckpt = torch.load(tmp_path / "timed.pt", weights_only=False)
    assert ckpt["meta"]["schedule"]["plan_seconds"] == pytest.approx(3.0)
    assert ckpt["resume"]["seconds"] >= 3.0 and result["step"] > 0
    # The rate of the last step: the floor, give or take the last step's share of the time.
    assert ckpt["optimizer"]["param_groups"][0]["lr"] < 0.2 * cfg.lr


def test_a_plan_over_minutes_without_minutes_is_one_clear_line(cache, tmp_path):
    with pytest.raises(LivepianoError, match=r"give --minutes too\.$"):
        train(tiny(cache, tmp_path / "x.pt", plan="minutes"), log=lambda *a: None)


def test_windows_drawn_ahead_in_other_processes_train_the_same_weights(cache, tmp_path):
    # Windows of at most 64 tokens are used up every second step: many draws in 12 steps.
    inline = train(tiny(cache, tmp_path / "inline.pt", max_steps=12, window_tokens=64,
                        loader_workers=0), resume=False, log=lambda *a: None)
    ahead = train(tiny(cache, tmp_path / "ahead.pt", max_steps=12, window_tokens=64,
                       loader_workers=2), resume=False, log=lambda *a: None)
    assert inline["tokens"] == ahead["tokens"]
    for name, tensor in inline["model"].state_dict().items():
        assert torch.equal(tensor, ahead["model"].state_dict()[name]), name
