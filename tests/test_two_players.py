"""A model that knows who played: the player input in torch, in the ONNX file and in the
engine; training that scores the model's own events only; networks grown from smaller ones."""

from __future__ import annotations

import numpy as np
import pytest

from livepiano.core import codec
from livepiano.core.players import OTHER, OWN

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from test_export import PATTERN, build, train_tiny  # noqa: E402
from tinytrain import make_cache, tiny  # noqa: E402


def _two_player_model(seed: int = 0):
    """A tiny conditioned model trained on PATTERN, given the player input with a nonzero
    embedding (as training would leave it)."""
    from livepiano.learn.network import PerformanceRNN, with_players

    model, ckpt = train_tiny(codec.CONTROL_DIM, steps=20, seed=seed)
    weights = with_players(model.state_dict(), model.config)
    torch.manual_seed(seed)
    weights["player_embed.weight"] = torch.randn_like(weights["player_embed.weight"])
    config = type(model.config)(**{**model.config.to_dict(), "players": 2})
    two = PerformanceRNN(config)
    two.load_state_dict(weights)
    two.eval()
    ckpt = {**ckpt, "config": config.to_dict(), "model": two.state_dict()}
    return two, ckpt


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="module")
def two_player_onnx(tmp_path_factory):
    from livepiano.learn.export import export

    _, ckpt = _two_player_model()
    folder = tmp_path_factory.mktemp("two")
    torch.save(ckpt, folder / "two.pt")
    card = export(folder / "two.pt", folder / "two.onnx", log=lambda *_: None)
    return folder / "two.onnx", card


def test_a_network_given_players_computes_what_it_did_until_trained():
    from livepiano.learn.network import PerformanceRNN, with_players

    model, _ = train_tiny(codec.CONTROL_DIM, steps=5)
    config = type(model.config)(**{**model.config.to_dict(), "players": 2})
    two = PerformanceRNN(config)
    two.load_state_dict(with_players(model.state_dict(), model.config))
    two.eval()
    x = torch.tensor([PATTERN * 3])
    who = torch.randint(0, 2, x.shape)
    a = model(x, *model.zero_state(1))[0]
    b = two(x, *two.zero_state(1), None, who)[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_a_widened_network_computes_the_same_and_its_new_units_learn():
    from livepiano.learn.network import PerformanceRNN, widened

    model, _ = train_tiny(codec.CONTROL_DIM, steps=5)
    config = type(model.config)(**{**model.config.to_dict(), "hidden": 48})
    wide = PerformanceRNN(config)
    wide.load_state_dict(widened(model.state_dict(), model.config, 48))
    wide.eval()
    x = torch.tensor([PATTERN * 3])
    control = torch.rand(1, x.shape[1], codec.CONTROL_DIM)
    a = model(x, *model.zero_state(1), control)[0]
    b = wide(x, *wide.zero_state(1), control)[0]
    assert torch.allclose(a, b, atol=1e-5)
    # The new units are alive: their outgoing weights get a gradient at once.
    wide.train()
    logits = wide(x[:, :-1], *wide.zero_state(1), control[:, :-1])[0]
    torch.nn.functional.cross_entropy(logits.reshape(-1, codec.VOCAB_SIZE),
                                      x[:, 1:].reshape(-1)).backward()
    assert wide.head.weight.grad[:, 32:].abs().sum() > 0
    assert wide.lstm.weight_hh_l0.grad[:32 * 4, 32:].abs().sum() > 0 or \
        wide.lstm.weight_ih_l1.grad[:, 32:].abs().sum() > 0


def test_a_network_cannot_be_narrowed(tmp_path):
    from livepiano import LivepianoError
    from livepiano.learn import checkpoint

    model, ckpt = train_tiny(0, steps=1)
    with pytest.raises(LivepianoError, match="can only be widened"):
        checkpoint.network(ckpt, tmp_path / "x.pt", widen=16)


def test_the_export_takes_the_player_input_and_its_card_says_so(two_player_onnx):
    from livepiano.runtime.modelfile import model_shape, open_session

    path, card = two_player_onnx
    shape = model_shape(open_session(path), path)
    assert shape.two_players and shape.control_dim == codec.CONTROL_DIM
    assert "player" in card["onnx"]["inputs"]
    assert card["players"]["flags"] == {"own": OWN, "other": OTHER}
    assert card["onnx"]["parity_max_abs_diff"] < 1e-3  # checked with random flags


def test_the_player_flag_reaches_the_model(two_player_onnx):
    from livepiano.runtime.engine import Engine

    path, _ = two_player_onnx
    phrase = [codec.velocity_event(20), 60, codec.shift(10), codec.note_off(60), 64]
    heard = Engine(path, seed=1)
    heard.prime(phrase)  # the player's
    continued = Engine(path, seed=1)
    continued.prime(phrase, own=True)
    assert not np.allclose(heard.logits, continued.logits, atol=1e-4)
    # The same flags by hand, through onnxruntime: the player's notes as OTHER, shifts OWN.
    from livepiano.runtime.modelfile import model_feeds

    tokens = np.array([phrase], np.int64)
    flags = np.array([[OTHER, OTHER, OWN, OTHER, OTHER]], np.int64)
    h = np.zeros((heard.layers, 1, heard.hidden), np.float32)
    feeds = model_feeds(heard.shape, tokens, h, h.copy(), None, flags)
    logits = heard.session.run(["logits"], feeds)[0][0, -1]
    assert np.allclose(logits, heard.logits, atol=1e-5)
    # What the engine samples it hears as its own.
    tok = heard.sample()
    feeds = model_feeds(heard.shape, np.array([phrase + [tok]], np.int64), h, h.copy(), None,
                        np.concatenate([flags, [[OWN]]], axis=1))
    assert np.allclose(heard.session.run(["logits"], feeds)[0][0, -1], heard.logits, atol=1e-4)


def test_the_players_notes_are_never_the_engines_to_end(two_player_onnx):
    from livepiano.runtime.engine import Engine

    path, _ = two_player_onnx
    e = Engine(path, seed=2, pitch_range=(70, 100))  # it cannot sound these pitches itself
    e.prime([codec.velocity_event(20), 60, 64, 67])
    theirs = {codec.note_off(60), codec.note_off(64), codec.note_off(67)}
    for _ in range(300):
        assert e.sample() not in theirs
    assert {60, 64, 67} <= set(e.sounding())  # still held by the player


def test_a_one_player_model_still_plays_and_ignores_who(tiny_models):
    from livepiano.runtime.engine import Engine

    path = tiny_models["cond"]["onnx"]
    a, b = Engine(path, seed=3), Engine(path, seed=3)
    assert not a.two_players
    a.prime(PATTERN)
    b.prime(PATTERN, own=True)
    assert np.allclose(a.logits, b.logits)
    assert [a.sample() for _ in range(50)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("midi"), tmp_path_factory.mktemp("cache"))


def test_training_scores_only_its_own_events(cache, tmp_path):
    from livepiano.learn.train import Run

    cfg = tiny(cache, tmp_path / "two.pt", two_players=True, solo_share=0.0, duet_share=0.0,
               max_steps=2)
    run = Run(cfg, resume=False, log=lambda *a: None, rank=0, world=1,
              device=torch.device("cpu"))
    try:
        seen_other = 0
        for _ in range(3):
            batch = run.next_batch()
            for i, lane in enumerate(run.lanes):
                n = batch.lengths[i]
                at = lane.position
                target_flags = lane.flags[at + 1:at + n + 1]
                assert (batch.scored[i, :n] == (target_flags == OWN)).all()
                assert (batch.who[i, :n] == lane.flags[at:at + n]).all()
                seen_other += int((target_flags == OTHER).sum())
            run.agree(batch, False)
            assert batch.scored_tokens == int(batch.scored.sum()) < batch.tokens
            run.train_step(batch)
        assert seen_other > 0
    finally:
        run.close()


def test_a_two_player_run_resumes_exactly(cache, tmp_path):
    from livepiano.learn.train import train

    kw = dict(two_players=True, solo_share=0.3, duet_share=0.3)
    train(tiny(cache, tmp_path / "straight.pt", max_steps=6, **kw), resume=False,
          log=lambda *a: None)
    split = tiny(cache, tmp_path / "split.pt", max_steps=3, **kw)
    train(split, resume=False, log=lambda *a: None)
    split.max_steps = 6
    result = train(split, resume=True, log=lambda *a: None)
    a = torch.load(tmp_path / "straight.pt", weights_only=False)
    b = torch.load(tmp_path / "split.pt", weights_only=False)
    assert a["config"]["players"] == 2 and "val_nll_beside" in a["meta"]["history"][-1]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert result["tokens"] == a["tokens_seen"]


def test_the_run_says_which_precision_it_chose(cache, tmp_path, monkeypatch):
    from livepiano import LivepianoError
    from livepiano.learn import train as train_module

    lines = []
    train_module.train(tiny(cache, tmp_path / "p.pt", max_steps=1), resume=False,
                       log=lines.append)
    native = train_module.native_bf16(torch.device("cpu"))
    assert ("bf16 autocast" if native else "float32") in lines[0]
    ckpt = torch.load(tmp_path / "p.pt", weights_only=False)
    assert ckpt["meta"]["precision"] == ("bf16 autocast" if native else "float32")
    # Where the CPU has no native bf16, asking for it is one clear line.
    monkeypatch.setattr(train_module, "native_bf16", lambda device: False)
    with pytest.raises(LivepianoError, match="native bf16"):
        train_module.train(tiny(cache, tmp_path / "q.pt", max_steps=1, precision="bf16"),
                           resume=False, log=lambda *a: None)


def test_no_flags_means_every_event_is_its_own():
    two, _ = _two_player_model()
    x = torch.tensor([PATTERN * 2])
    zero = two(x, *two.zero_state(1), None, torch.zeros_like(x))[0]
    assert torch.equal(two(x, *two.zero_state(1))[0], zero)
    assert not torch.allclose(two(x, *two.zero_state(1), None, torch.ones_like(x))[0], zero)
