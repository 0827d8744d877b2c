"""Checkpoint -> one self-contained ONNX file + a YAML model card, checked against torch.

    livepiano export runs/ckpt.pt -o models/NAME.onnx [--eval-data CACHE_OR_MIDI_DIR]

The ONNX graph (the contract in ARCHITECTURE.md):
    inputs  token int64 [B, T], h float32 [L, B, H], c float32 [L, B, H],
            control float32 [B, T, C] (conditioned models only; zeros = unconditioned)
            player int64 [B, T] (models that know who played only; 0 own, 1 the other's)
    outputs logits float32 [B, T, 388], h_out, c_out
B and T are dynamic: one file primes a phrase in one call and steps one event at a time.
Exported in eval mode (no dropout), weights inside the file (no external data).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import warnings
from pathlib import Path

import numpy as np

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.learn import checkpoint

OPSET = 17
TOLERANCE = 1e-3
# An int8 file is checked by how far its next-event distributions drift from torch's along
# a stream the model itself plays (mean KL divergence, nats per event).
INT8_KL_TOLERANCE = 0.02
LICENCE = "weights derived from MAESTRO v3.0.0, CC BY-NC-SA 4.0"
PARITY_SHAPES = ((1, 1), (1, 64), (3, 1), (3, 64))  # (B, T)


def load_checkpoint(path: str | os.PathLike):
    """(model in eval mode, checkpoint dict) of a checkpoint written by `livepiano train`."""
    state = checkpoint.read(path)
    model = checkpoint.network(state, path)
    model.eval()
    return model, state


class _OnnxGraph:
    """What torch.onnx traces: the model with named inputs and outputs (built lazily so
    this module imports without torch)."""

    @staticmethod
    def build(model):
        import torch

        class Conditioned(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, token, h, c, control):
                return self.m(token, h, c, control)

        class Unconditioned(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, token, h, c):
                return self.m(token, h, c)

        class TwoPlayers(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, token, h, c, control, player):
                return self.m(token, h, c, control, player)

        class TwoPlayersUnconditioned(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, token, h, c, player):
                return self.m(token, h, c, None, player)

        kind = {(True, False): Conditioned, (False, False): Unconditioned,
                (True, True): TwoPlayers, (False, True): TwoPlayersUnconditioned}
        wrapper = kind[(bool(model.config.control_dim), bool(model.config.players))](model)
        return wrapper.eval()


def _inputs(config, batch: int, steps: int, rng: np.random.Generator, zero_state: bool = False):
    feeds = {"token": rng.integers(0, codec.VOCAB_SIZE, (batch, steps)).astype(np.int64)}
    shape = (config.layers, batch, config.hidden)
    scale = 0.0 if zero_state else 0.5
    feeds["h"] = (rng.standard_normal(shape) * scale).astype(np.float32)
    feeds["c"] = (rng.standard_normal(shape) * scale).astype(np.float32)
    if config.control_dim:
        feeds["control"] = rng.random((batch, steps, config.control_dim)).astype(np.float32)
    if config.players:
        feeds["player"] = rng.integers(0, config.players, (batch, steps)).astype(np.int64)
    return feeds


def write_onnx(model, path: str | os.PathLike) -> None:
    """Trace ``model`` (eval mode) to one self-contained ONNX file at ``path``."""
    import torch

    config = model.config
    graph = _OnnxGraph.build(model.eval())
    rng = np.random.default_rng(0)
    example = _inputs(config, 2, 5, rng)
    names = list(example)
    args = tuple(torch.from_numpy(example[n]) for n in names)
    dynamic = {"token": {0: "B", 1: "T"}, "h": {1: "B"}, "c": {1: "B"},
               "logits": {0: "B", 1: "T"}, "h_out": {1: "B"}, "c_out": {1: "B"}}
    for name in ("control", "player"):
        if name in example:
            dynamic[name] = {0: "B", 1: "T"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, str(path), dynamo=False, input_names=names,
                          output_names=["logits", "h_out", "c_out"], dynamic_axes=dynamic,
                          opset_version=OPSET, do_constant_folding=True, external_data=False)
    model.eval()  # the exporter may restore the wrapper's training flag on the way out


def check_self_contained(path: str | os.PathLike) -> None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(proto)
    external = [t.name for t in proto.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise LivepianoError(f"{path} keeps {len(external)} weight tensors in an external file; "
                             f"the export must be one self-contained file.")


def parity(model, onnx_path: str | os.PathLike, shapes=PARITY_SHAPES, seed: int = 0) -> dict:
    """Max abs difference between torch and onnxruntime per (B, T) on random tokens, from a
    zero and from a random state."""
    import torch

    from livepiano.runtime.modelfile import open_session

    session = open_session(onnx_path, 1)
    rng = np.random.default_rng(seed)
    out = {}
    model.eval()
    for batch, steps in shapes:
        worst = 0.0
        for zero_state in (True, False):
            feeds = _inputs(model.config, batch, steps, rng, zero_state)
            got = session.run(["logits", "h_out", "c_out"], feeds)
            with torch.no_grad():
                ref = model(*(torch.from_numpy(feeds[n]) if n in feeds else None
                              for n in ("token", "h", "c", "control", "player")))
            for a, b in zip(got, ref):
                if a.shape != tuple(b.shape):
                    raise LivepianoError(f"{onnx_path}: onnxruntime gives shape {a.shape} where "
                                         f"torch gives {tuple(b.shape)}; the export is broken.")
                worst = max(worst, float(np.abs(a - b.numpy()).max()))
        out[(batch, steps)] = worst
    return out


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Weights of the LSTMs and the output layer to int8 (onnxruntime dynamic quantization:
    activations stay float, the LSTM becomes com.microsoft DynamicQuantizeLSTM). About 4x
    smaller and, since a step is bound by reading the weights, about 3x faster on a CPU."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("root").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["LSTM", "MatMul", "Gemm"],
                         weight_type=QuantType.QInt8)


def int8_drift(model, onnx_path: str | os.PathLike, tokens: int = 512, seed: int = 0) -> dict:
    """How far an int8 file drifts from torch along a stream sampled from the model itself:
    mean KL(torch || int8) per event, and the max abs logit difference."""
    import torch

    rng = np.random.default_rng(seed)
    config = model.config
    h, c = model.zero_state(1)
    tok = torch.tensor([[codec.velocity_event(16)]])
    stream = [int(tok)]
    with torch.no_grad():
        for _ in range(tokens - 1):
            logits, h, c = model(tok, h, c)
            p = torch.softmax(logits[0, -1].double(), -1).numpy()
            nxt = int(rng.choice(codec.VOCAB_SIZE, p=p / p.sum()))
            stream.append(nxt)
            tok = torch.tensor([[nxt]])
        x = torch.tensor([stream])
        h0, c0 = model.zero_state(1)
        ref = model(x, h0, c0)[0][0].double()
    from livepiano.runtime.modelfile import open_session

    session = open_session(onnx_path, 1)
    feeds = {"token": x.numpy(), "h": h0.numpy(), "c": c0.numpy()}
    if config.control_dim:
        feeds["control"] = np.zeros((1, len(stream), config.control_dim), np.float32)
    if config.players:
        feeds["player"] = np.zeros((1, len(stream)), np.int64)
    got = torch.from_numpy(session.run(["logits"], feeds)[0][0]).double()
    logp, logq = torch.log_softmax(ref, -1), torch.log_softmax(got, -1)
    kl = float((logp.exp() * (logp - logq)).sum(-1).mean())
    return {"mean_kl": kl, "max_abs_logit_diff": float((ref - got).abs().max())}


def vocabulary_card() -> dict:
    return {
        "size": codec.VOCAB_SIZE,
        "steps_per_second": codec.STEPS_PER_SECOND,
        "layout": {
            "note_on": {"ids": [codec.NOTE_ON, codec.NOTE_OFF - 1], "id": "pitch p -> p"},
            "note_off": {"ids": [codec.NOTE_OFF, codec.TIME_SHIFT - 1], "id": "pitch p -> 128 + p"},
            "time_shift": {"ids": [codec.TIME_SHIFT, codec.VELOCITY - 1],
                           "id": "s steps of 10 ms (1..100) -> 255 + s"},
            "velocity": {"ids": [codec.VELOCITY, codec.VOCAB_SIZE - 1],
                         "id": "bin b (1..32) -> 355 + b; velocity = 1 + 4 (b - 1)"},
        },
    }


def model_card(name: str, model, ckpt: dict, checkpoint_path, diffs: dict, test: dict | None,
               int8: dict | None = None) -> dict:
    config = model.config
    meta = ckpt.get("meta") or {}
    data = meta.get("data") or {}
    params = sum(int(p.numel()) for p in model.parameters())
    val = meta.get("val_nll")
    if val is not None and not math.isfinite(float(val)):
        val = None  # no validation split was scored
    # What --eval-data scored counts as the test figure only when it was held out: the test
    # split, or a folder without splits; a validation (or train) score is kept under its name.
    scored_split = None if test is None else test.get("split")
    held_out = test is not None and scored_split in (None, "test")
    return {
        "name": name,
        "format": "livepiano performance-rnn onnx, version 1",
        "vocabulary": vocabulary_card(),
        "model": {"type": "lstm", "layers": config.layers, "hidden": config.hidden,
                  "embedding": config.embedding, "dropout": config.dropout,
                  "parameters": params},
        "onnx": {"opset": OPSET,
                 "inputs": {"token": "int64 [B, T]",
                            "h": f"float32 [{config.layers}, B, {config.hidden}]",
                            "c": f"float32 [{config.layers}, B, {config.hidden}]",
                            **({"control": f"float32 [B, T, {config.control_dim}] "
                                           f"(zeros = unconditioned)"}
                               if config.control_dim else {}),
                            **({"player": "int64 [B, T] (0 its own event, 1 the other "
                                          "player's; time-shifts 0)"}
                               if config.players else {})},
                 "outputs": {"logits": f"float32 [B, T, {codec.VOCAB_SIZE}]",
                             "h_out": "like h", "c_out": "like c"},
                 "parity_max_abs_diff": float(f"{max(diffs.values()):.3g}"),
                 "weights": "int8 (dynamic quantization)" if int8 else "float32",
                 **({"int8_mean_kl": float(f"{int8['mean_kl']:.3g}"),
                     "int8_max_abs_logit_diff": float(f"{int8['max_abs_logit_diff']:.3g}")}
                    if int8 else {})},
        "players": ({"flags": {"own": 0, "other": 1},
                     "trained_on": meta.get("players"),
                     "scored": "its own events only; the other player's are heard"}
                    if config.players else None),
        "control": ({"dim": config.control_dim,
                     "layout": (list(codec.CONTROL_LAYOUT)
                                if config.control_dim == codec.CONTROL_DIM else None),
                     "zeros": "unconditioned",
                     "density_scale": codec.DENSITY_SCALE}
                    if config.control_dim else None),
        "training": {
            "data": {"source": data.get("source"), "cache": data.get("cache"),
                     "files": data.get("train_files"), "tokens": data.get("train_tokens")},
            "licence": LICENCE,
            "steps": ckpt.get("step"),  # of this run; tokens and epochs count from the start
            "tokens": ckpt.get("tokens_seen", ckpt.get("tokens")),  # "tokens" before torchrun
            **({"continued_from": {"checkpoint": str(meta["init_from"].get("path")),
                                   "tokens": meta["init_from"].get("tokens_seen")}}
               if isinstance(meta.get("init_from"), dict) else {}),
            "processes": ckpt.get("world_size"),
            "epochs": None if ckpt.get("epochs") is None else round(float(ckpt["epochs"]), 3),
            "augment": meta.get("augment"),
            "control_dropout": meta.get("control_dropout"),
            "checkpoint": str(checkpoint_path),
        },
        "evaluation": {
            "validation_nll": None if val is None else round(float(val), 4),
            "test_nll": test.get("nll") if held_out else None,
            "test": test if held_out else None,
            **({f"{scored_split}_split": test} if test is not None and not held_out else {}),
            "unit": "nats per event over 30-second segments, each from a zero state",
        },
        "licence": LICENCE,
        "exported": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def export(checkpoint: str | os.PathLike, output: str | os.PathLike, *, eval_data=None,
           split: str = "test", limit: int | None = None, int8: bool = False, threads: int = 1,
           log=print) -> dict:
    """Write ``output`` (.onnx) and the YAML card beside it; returns the card. With
    ``int8`` the float32 graph is checked against torch first, then quantized and checked
    again by its drift (see ``int8_drift``)."""
    import yaml

    output = Path(output)
    if output.suffix != ".onnx":
        raise LivepianoError(f"{output}: the output must end in .onnx "
                             f"(the card goes beside it as .yaml).")
    model, ckpt = load_checkpoint(checkpoint)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part")
    try:
        write_onnx(model, tmp)
        check_self_contained(tmp)
        diffs = parity(model, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for (b, t), d in diffs.items():
        log(f"parity B={b} T={t:<3} max |onnxruntime - torch| = {d:.2e}")
    worst = max(diffs.values())
    if not worst <= TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise LivepianoError(f"onnxruntime differs from torch by {worst:.2e} (over {TOLERANCE:g}); "
                             f"the export is wrong, nothing was written.")
    drift = None
    if int8:
        qtmp = output.with_name(output.name + ".int8.part")
        try:
            quantize_int8(tmp, qtmp)
            check_self_contained(qtmp)
            drift = int8_drift(model, qtmp)
        except BaseException:
            qtmp.unlink(missing_ok=True)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        log(f"int8: mean KL(torch || int8) = {drift['mean_kl']:.2e} nats/event, "
            f"max |logit difference| = {drift['max_abs_logit_diff']:.2e}")
        if not drift["mean_kl"] <= INT8_KL_TOLERANCE:
            qtmp.unlink(missing_ok=True)
            raise LivepianoError(f"the int8 model drifts from torch by {drift['mean_kl']:.3f} nats "
                                 f"per event (over {INT8_KL_TOLERANCE}); export it without --int8.")
        tmp = qtmp
    os.replace(tmp, output)
    test = None
    if eval_data is not None:
        from livepiano.learn.evaluate import evaluate

        result = evaluate(output, eval_data, split=split, limit=limit, threads=threads)
        test = result.to_dict()
        log(f"{result.split or 'held-out'} NLL {result.nll:.4f} nats/event over "
            f"{result.segments} segments "
            f"({result.events} events, {result.files} files)")
    card = model_card(output.stem, model, ckpt, checkpoint, diffs, test, drift)
    card_path = output.with_suffix(".yaml")
    card_path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True),
                         encoding="utf-8")
    size = output.stat().st_size
    log(f"wrote {output} ({size / 2**20:.1f} MiB, {card['model']['parameters']:,} parameters) "
        f"and {card_path}")
    return card
