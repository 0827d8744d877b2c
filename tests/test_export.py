"""Export: a tiny model trained on a repeating phrase, exported to ONNX and checked against torch.

``tiny_models`` (also used by test_engine.py) builds two small models (2 layers of 32, one
unconditioned, one conditioned), trains each for a few dozen steps on ``PATTERN`` so that
they have learnt something, writes checkpoints in the format `livepiano train` writes and
exports them with the real exporter.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from livepiano import LivepianoError
from livepiano.core import codec

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

# A phrase of 11 events (0.45 s): C-E-G, then a short rest.
PATTERN = [codec.velocity_event(20), 60, codec.shift(10), codec.note_off(60),
           64, codec.shift(10), codec.note_off(64), 67, codec.shift(20), codec.note_off(67),
           codec.shift(5)]
TRAIN_STEPS = 60
_BUILT: dict = {}


def train_tiny(control_dim: int, steps: int = TRAIN_STEPS, seed: int = 0):
    """(eval-mode model, checkpoint dict) of a 2x32 LSTM trained on PATTERN."""
    from livepiano.learn.network import ModelConfig, PerformanceRNN

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = ModelConfig(embedding=16, hidden=32, layers=2, control_dim=control_dim, dropout=0.1)
    model = PerformanceRNN(config)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    stream = np.tile(np.asarray(PATTERN, dtype=np.int64), 20)
    window, batch = 48, 8
    ctl = torch.from_numpy(codec.control_vector(PATTERN)) if control_dim else None
    model.train()
    for step in range(steps):
        starts = rng.integers(0, len(PATTERN), batch)
        x = torch.from_numpy(np.stack([stream[s:s + window + 1] for s in starts]))
        control = None
        if control_dim and step % 2:
            control = ctl.expand(batch, window, control_dim)
        h, c = model.zero_state(batch)
        logits, _, _ = model(x[:, :-1], h, c, control)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, codec.VOCAB_SIZE),
                                                 x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ckpt = {"config": config.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "step": steps, "tokens": steps * batch * window, "epochs": 12.5,
            "meta": {"data": {"cache": "cache/pattern", "source": "tests/PATTERN",
                              "train_files": 1, "train_tokens": len(stream)},
                     "val_nll": 0.75, "history": [{"step": steps, "tokens": steps * batch * window,
                                                   "val_nll": 0.75}],
                     "augment": {"stretch": [0.95, 1.05], "transpose": 4},
                     "control_dropout": 0.5 if control_dim else 0.0}}
    return model, ckpt


def write_pattern_midis(folder: Path, count: int = 3, repeats: int = 150) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        codec.tokens_to_midi(PATTERN * repeats).save(folder / f"pattern_{i}.mid")
    return folder


def build(tmp_root: Path) -> dict:
    """{'unc'|'cond': {'onnx', 'yaml', 'ckpt', 'model', 'card'}} built once per process."""
    if _BUILT:
        return _BUILT
    from livepiano.learn.export import export

    midis = write_pattern_midis(tmp_root / "pattern_midi")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only cost here
    try:
        for name, control_dim in (("unc", 0), ("cond", codec.CONTROL_DIM)):
            _build_one(tmp_root, name, control_dim, midis, export)
    finally:
        torch.set_num_threads(threads)
    _BUILT["midis"] = midis
    return _BUILT


def _build_one(tmp_root: Path, name: str, control_dim: int, midis: Path, export) -> None:
    model, ckpt = train_tiny(control_dim)
    folder = tmp_root / name
    folder.mkdir()
    ckpt_path = folder / "tiny.pt"
    torch.save(ckpt, ckpt_path)
    onnx_path = tmp_root / "models" / f"tiny_{name}.onnx"
    card = export(ckpt_path, onnx_path, eval_data=midis if name == "unc" else None,
                  log=lambda *_: None)
    _BUILT[name] = {"onnx": onnx_path, "yaml": onnx_path.with_suffix(".yaml"),
                    "ckpt": ckpt_path, "model": model, "card": card}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny_models"))


def _session(path):
    from livepiano.runtime.modelfile import open_session

    return open_session(path, 1)


def _run(sess, tokens, h, c, control=None):
    feeds = {"token": np.asarray(tokens, np.int64), "h": h, "c": c}
    if control is not None:
        feeds["control"] = control
    return sess.run(["logits", "h_out", "c_out"], feeds)


def _zero(model, batch):
    shape = (model.config.layers, batch, model.config.hidden)
    return np.zeros(shape, np.float32), np.zeros(shape, np.float32)


# --- the ONNX file -------------------------------------------------------------------------

def test_contract_inputs_outputs(tiny_models):
    for name in ("unc", "cond"):
        sess = _session(tiny_models[name]["onnx"])
        inputs = {i.name: i for i in sess.get_inputs()}
        outputs = {o.name: o for o in sess.get_outputs()}
        expected = ["token", "h", "c"] + (["control"] if name == "cond" else [])
        assert [i.name for i in sess.get_inputs()] == expected
        assert set(outputs) == {"logits", "h_out", "c_out"}
        assert inputs["token"].type == "tensor(int64)"
        assert inputs["h"].type == inputs["c"].type == "tensor(float)"
        assert inputs["h"].shape[0] == 2 and inputs["h"].shape[2] == 32
        assert all(isinstance(d, str) for d in inputs["token"].shape)  # B and T dynamic
        assert outputs["logits"].shape[2] == codec.VOCAB_SIZE
        if name == "cond":
            assert inputs["control"].shape[2] == codec.CONTROL_DIM


def test_self_contained_single_file(tiny_models):
    path = tiny_models["unc"]["onnx"]
    proto = onnx.load(str(path), load_external_data=False)
    assert not [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        ["tiny_unc.onnx", "tiny_unc.yaml", "tiny_cond.onnx", "tiny_cond.yaml"])
    # the weights are inside: the file is bigger than the raw float32 weights
    params = sum(p.numel() for p in tiny_models["unc"]["model"].parameters())
    assert path.stat().st_size > params * 4


@pytest.mark.parametrize("name", ["unc", "cond"])
def test_matches_torch_eval_mode(tiny_models, name):
    model = tiny_models[name]["model"].eval()
    sess = _session(tiny_models[name]["onnx"])
    rng = np.random.default_rng(1)
    for batch, steps in ((1, 1), (3, 64), (2, 17)):
        tokens = rng.integers(0, codec.VOCAB_SIZE, (batch, steps))
        h = rng.standard_normal((2, batch, 32)).astype(np.float32) * 0.3
        c = rng.standard_normal((2, batch, 32)).astype(np.float32) * 0.3
        control = (rng.random((batch, steps, codec.CONTROL_DIM)).astype(np.float32)
                   if name == "cond" else None)
        got = _run(sess, tokens, h, c, control)
        with torch.no_grad():
            ref = model(torch.from_numpy(tokens), torch.from_numpy(h), torch.from_numpy(c),
                        None if control is None else torch.from_numpy(control))
        for a, b in zip(got, ref):
            assert a.shape == tuple(b.shape)
            np.testing.assert_allclose(a, b.numpy(), atol=1e-4)
        # eval mode: no dropout, the same answer twice
        again = _run(sess, tokens, h, c, control)
        np.testing.assert_array_equal(got[0], again[0])


def test_zero_control_means_unconditioned(tiny_models):
    model = tiny_models["cond"]["model"]
    sess = _session(tiny_models["cond"]["onnx"])
    tokens = np.asarray([PATTERN * 2])
    h, c = _zero(model, 1)
    got = _run(sess, tokens, h, c, np.zeros((1, tokens.shape[1], codec.CONTROL_DIM), np.float32))
    with torch.no_grad():
        ref = model(torch.from_numpy(tokens), torch.from_numpy(h), torch.from_numpy(c), None)
    np.testing.assert_allclose(got[0], ref[0].numpy(), atol=1e-4)
    half = np.full((1, tokens.shape[1], codec.CONTROL_DIM), 0.5, np.float32)
    other = _run(sess, tokens, h, c, half)
    assert np.abs(other[0] - got[0]).max() > 1e-3  # the control input is wired in


def test_step_by_step_equals_one_batched_call(tiny_models):
    model = tiny_models["unc"]["model"]
    sess = _session(tiny_models["unc"]["onnx"])
    tokens = np.asarray([PATTERN * 3], dtype=np.int64)
    h, c = _zero(model, 1)
    full_logits, full_h, full_c = _run(sess, tokens, h, c)
    step_logits = []
    for t in range(tokens.shape[1]):
        lg, h, c = _run(sess, tokens[:, t:t + 1], h, c)
        step_logits.append(lg[0, 0])
    np.testing.assert_allclose(np.stack(step_logits), full_logits[0], atol=1e-5)
    np.testing.assert_allclose(h, full_h, atol=1e-5)
    np.testing.assert_allclose(c, full_c, atol=1e-5)


def test_state_carried_between_calls_equals_one_long_call(tiny_models):
    model = tiny_models["cond"]["model"]
    sess = _session(tiny_models["cond"]["onnx"])
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, codec.VOCAB_SIZE, (3, 40))
    control = rng.random((3, 40, codec.CONTROL_DIM)).astype(np.float32)
    h, c = _zero(model, 3)
    full = _run(sess, tokens, h, c, control)
    parts = []
    for a, b in ((0, 13), (13, 14), (14, 40)):
        lg, h, c = _run(sess, tokens[:, a:b], h, c, control[:, a:b])
        parts.append(lg)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full[0], atol=1e-5)
    np.testing.assert_allclose(h, full[1], atol=1e-5)
    np.testing.assert_allclose(c, full[2], atol=1e-5)


def test_dynamic_batch_rows_are_independent(tiny_models):
    model = tiny_models["unc"]["model"]
    sess = _session(tiny_models["unc"]["onnx"])
    rng = np.random.default_rng(3)
    for batch in (1, 3, 5):
        for steps in (1, 7, 64):
            tokens = rng.integers(0, codec.VOCAB_SIZE, (batch, steps))
            h, c = _zero(model, batch)
            logits, h_out, c_out = _run(sess, tokens, h, c)
            assert logits.shape == (batch, steps, codec.VOCAB_SIZE)
            assert h_out.shape == c_out.shape == (2, batch, 32)
            h1, c1 = _zero(model, 1)
            last = _run(sess, tokens[-1:], h1, c1)[0]
            np.testing.assert_allclose(last[0], logits[-1], atol=1e-5)


def test_trained_model_learnt_the_pattern(tiny_models):
    """The fixture models are not random: after a phrase, the next event is predictable."""
    model = tiny_models["unc"]["model"]
    sess = _session(tiny_models["unc"]["onnx"])
    tokens = np.asarray([PATTERN * 3], dtype=np.int64)
    h, c = _zero(model, 1)
    logits = _run(sess, tokens[:, :-1], h, c)[0][0].astype(np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    nll = -np.mean(logp[np.arange(len(PATTERN), tokens.shape[1] - 1), tokens[0, len(PATTERN) + 1:]])
    assert nll < 1.5 < math.log(codec.VOCAB_SIZE)


# --- the parity check itself ----------------------------------------------------------------

def test_parity_check_catches_a_wrong_export(tiny_models, tmp_path):
    from livepiano.learn.export import TOLERANCE, load_checkpoint, parity

    model, _ = load_checkpoint(tiny_models["unc"]["ckpt"])
    good = parity(model, tiny_models["unc"]["onnx"])
    assert set(good) == {(1, 1), (1, 64), (3, 1), (3, 64)}
    assert max(good.values()) < 1e-4
    with torch.no_grad():
        model.head.bias.add_(0.01)  # the file no longer matches these weights
    bad = parity(model, tiny_models["unc"]["onnx"])
    assert max(bad.values()) > TOLERANCE


def test_export_in_train_mode_checkpoint_is_still_eval(tiny_models, tmp_path):
    """Dropout is off in the file even though the model was saved from training."""
    from livepiano.learn.export import load_checkpoint

    model, ckpt = load_checkpoint(tiny_models["cond"]["ckpt"])
    assert not model.training
    assert ckpt["config"]["dropout"] == 0.1


# --- the YAML card ----------------------------------------------------------------------------

def test_yaml_card(tiny_models):
    import yaml

    unc = yaml.safe_load(tiny_models["unc"]["yaml"].read_text())
    cond = yaml.safe_load(tiny_models["cond"]["yaml"].read_text())
    for card in (unc, cond):
        voc = card["vocabulary"]
        assert voc["size"] == 388
        assert voc["layout"]["note_on"]["ids"] == [0, 127]
        assert voc["layout"]["note_off"]["ids"] == [128, 255]
        assert voc["layout"]["time_shift"]["ids"] == [256, 355]
        assert voc["layout"]["velocity"]["ids"] == [356, 387]
        assert card["model"]["layers"] == 2 and card["model"]["hidden"] == 32
        assert card["model"]["embedding"] == 16
        assert card["licence"] == "weights derived from MAESTRO v3.0.0, CC BY-NC-SA 4.0"
        tr = card["training"]
        assert tr["data"] == {"source": "tests/PATTERN", "cache": "cache/pattern", "files": 1,
                              "tokens": len(PATTERN) * 20}
        assert tr["steps"] == TRAIN_STEPS and tr["tokens"] == TRAIN_STEPS * 8 * 48
        assert tr["epochs"] == 12.5
        assert card["evaluation"]["validation_nll"] == 0.75
        assert card["onnx"]["parity_max_abs_diff"] < 1e-3
    assert unc["control"] is None
    assert cond["control"]["layout"] == codec.CONTROL_LAYOUT
    assert cond["control"]["dim"] == codec.CONTROL_DIM
    assert cond["evaluation"]["test_nll"] is None
    test = unc["evaluation"]["test"]
    assert unc["evaluation"]["test_nll"] == test["nll"]
    assert test["files"] == 3 and test["segments"] >= 6 and test["events"] > 100
    assert 0 < test["nll"] < 2.0


def test_a_validation_score_is_never_recorded_as_the_test_nll(tiny_models, tmp_path):
    import yaml

    from livepiano.learn.export import export

    src = write_pattern_midis(tmp_path / "maestro", count=2, repeats=40)
    (src / "maestro.csv").write_text(
        "midi_filename,split\npattern_0.mid,validation\npattern_1.mid,train\n")
    said = []
    out = tmp_path / "scored.onnx"
    export(tiny_models["unc"]["ckpt"], out, eval_data=src, split="validation", log=said.append)
    ev = yaml.safe_load(out.with_suffix(".yaml").read_text())["evaluation"]
    assert ev["test_nll"] is None and ev["test"] is None
    assert ev["validation_split"]["split"] == "validation"
    assert ev["validation_split"]["files"] == 1 and 0 < ev["validation_split"]["nll"] < 2.0
    assert any(line.startswith("validation NLL") for line in said)


# --- errors -----------------------------------------------------------------------------------

def test_bad_checkpoint_is_one_clear_error(tmp_path):
    from livepiano.learn.export import export

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(LivepianoError, match="not a readable torch checkpoint"):
        export(junk, tmp_path / "m.onnx", log=lambda *_: None)
    with pytest.raises(LivepianoError, match="no checkpoint at"):
        export(tmp_path / "missing.pt", tmp_path / "m.onnx", log=lambda *_: None)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(LivepianoError, match="not a livepiano checkpoint"):
        export(tmp_path / "other.pt", tmp_path / "m.onnx", log=lambda *_: None)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_cli_export(tiny_models, tmp_path, run_livepiano):
    out = tmp_path / "cli_model.onnx"
    r = run_livepiano("export", tiny_models["cond"]["ckpt"], "-o", out)
    assert r.returncode == 0, r.stderr
    assert "max |onnxruntime - torch|" in r.stdout
    assert "B=3 T=64" in r.stdout and "B=1 T=1 " in r.stdout
    assert out.is_file() and out.with_suffix(".yaml").is_file()
    bad = run_livepiano("export", tmp_path / "nothing.pt", "-o", out)
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_int8_export(tiny_models, tmp_path):
    """--int8: the same contract, a smaller file, next-event distributions close to float32."""
    import yaml

    from livepiano.learn.evaluate import evaluate
    from livepiano.learn.export import export

    out = tmp_path / "tiny_int8.onnx"
    card = export(tiny_models["cond"]["ckpt"], out, int8=True, log=lambda *_: None)
    assert card["onnx"]["weights"].startswith("int8")
    assert card["onnx"]["int8_mean_kl"] < 0.02
    assert yaml.safe_load(out.with_suffix(".yaml").read_text())["onnx"]["int8_mean_kl"] >= 0
    proto = onnx.load(str(out))
    assert any(n.op_type == "DynamicQuantizeLSTM" for n in proto.graph.node)
    sess = _session(out)
    assert [i.name for i in sess.get_inputs()] == ["token", "h", "c", "control"]
    h, c = _zero(tiny_models["cond"]["model"], 3)
    tokens = np.asarray([PATTERN * 2] * 3)
    control = np.zeros((3, tokens.shape[1], codec.CONTROL_DIM), np.float32)
    q = _run(sess, tokens, h, c, control)
    f = _run(_session(tiny_models["cond"]["onnx"]), tokens, h, c, control)
    assert q[0].shape == f[0].shape and np.abs(q[0] - f[0]).max() < 0.5
    midis = tiny_models["midis"]
    nll_q = evaluate(out, midis, limit=1).nll
    nll_f = evaluate(tiny_models["cond"]["onnx"], midis, limit=1).nll
    assert abs(nll_q - nll_f) < 0.05
