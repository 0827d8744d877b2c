"""The model file: which ``.onnx`` to use, its YAML card, and an onnxruntime session on it
with the shape (layers, hidden size, conditioning) read from the graph."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.core.shipped import shipped_file

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "performance_rnn.onnx"


MODEL_ENV = "LIVEPIANO_MODEL"


def default_model_path() -> Path:
    """The model to use when none is named: ``$LIVEPIANO_MODEL``, else
    ``models/performance_rnn.onnx`` at the repository root (or inside the installed package)."""
    env = os.environ.get(MODEL_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise LivepianoError(f"no model at {path} (from ${MODEL_ENV}); "
                                 f"point ${MODEL_ENV} at an .onnx file or pass --model.")
        return path
    path = shipped_file("models", DEFAULT_MODEL_NAME)
    if path is None:
        raise LivepianoError(f"no model at models/{DEFAULT_MODEL_NAME}; train one (README) or "
                             f"pass --model.")
    return path


def resolve_model(path: str | os.PathLike | None) -> Path:
    """``path`` checked to exist, or the default model when ``path`` is None."""
    if path is None:
        return default_model_path()
    p = Path(path).expanduser()
    if not p.is_file():
        raise LivepianoError(f"no model at {p}; give the path of an exported .onnx file.")
    return p


def read_model_card(model_path: str | os.PathLike) -> dict:
    """The YAML written beside an exported model (``NAME.yaml``), or {} when there is none."""
    card = Path(model_path).with_suffix(".yaml")
    if not card.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(card.read_text(encoding="utf-8"))
    except OSError as e:
        raise LivepianoError(f"{card} is unreadable ({e.strerror or e}); export the model "
                             f"again.") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        raise LivepianoError(f"{card} is not valid YAML ({where}{what}); export the model "
                             f"again.") from None
    return data if isinstance(data, dict) else {}


def open_session(model_path: str | os.PathLike, intra_op_threads: int = 1):
    """An onnxruntime CPU session: sequential execution, 1 inter-op thread."""
    # onnxruntime otherwise writes a device id and a database under ~/.cache/Microsoft on
    # every run, for telemetry an instrument has no business sending (read when its
    # environment is created, so before the first session)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        log.debug("onnxruntime cannot load %s", model_path, exc_info=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LivepianoError(f"{model_path} is not a usable ONNX model ({first[:200]}); "
                             f"export it again with `livepiano export`.") from None


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    control_dim: int  # 0: unconditioned
    vocab_size: int
    two_players: bool = False  # takes a player flag beside every event


def model_feeds(shape: ModelShape, token: np.ndarray, h: np.ndarray, c: np.ndarray,
                control: np.ndarray | None = None, player: np.ndarray | None = None) -> dict:
    """The inputs of one call of a model of ``shape``: only those it takes, the optional ones
    as given or zeros (an all-zero control: unconditioned; all-zero player flags: every
    event its own)."""
    feeds = {"token": token, "h": h, "c": c}
    if shape.control_dim:
        feeds["control"] = (control if control is not None else
                            np.zeros((*token.shape, shape.control_dim), np.float32))
    if shape.two_players:
        feeds["player"] = player if player is not None else np.zeros(token.shape, np.int64)
    return feeds


def model_shape(session, model_path="the model") -> ModelShape:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    missing = [n for n in ("token", "h", "c") if n not in inputs]
    missing += [n for n in ("logits", "h_out", "c_out") if n not in outputs]
    if missing:
        raise LivepianoError(f"{model_path} lacks the {', '.join(missing)} input/output of a "
                             f"livepiano model; export it with `livepiano export`.")
    expected = {"token": 2, "h": 3, "c": 3, "control": 3, "player": 2, "logits": 3, "h_out": 3,
                "c_out": 3}
    for name, rank in expected.items():
        node = inputs.get(name) or outputs.get(name)
        if node is not None and len(node.shape) != rank:
            raise LivepianoError(f"{model_path}'s {name} has the shape {list(node.shape)}, not "
                                 f"the {rank} dimensions of a livepiano model; export it with "
                                 f"`livepiano export`.")
    layers, _, hidden = inputs["h"].shape
    control = inputs["control"].shape[2] if "control" in inputs else 0
    vocab = outputs["logits"].shape[2]
    if not all(isinstance(x, int) for x in (layers, hidden, control, vocab)):
        raise LivepianoError(f"{model_path} has symbolic layer/hidden/control sizes; "
                             f"export it with `livepiano export`.")
    for name in ("c", "h_out", "c_out"):
        node = inputs.get(name) or outputs.get(name)
        sizes = (node.shape[0], node.shape[2])
        if sizes != (layers, hidden):
            raise LivepianoError(f"{model_path}'s {name} has the shape {list(node.shape)} where "
                                 f"h has {list(inputs['h'].shape)} (layers and hidden sizes "
                                 f"must agree); export it with `livepiano export`.")
    if vocab != codec.VOCAB_SIZE:
        raise LivepianoError(f"{model_path} predicts {vocab} events, not the {codec.VOCAB_SIZE} "
                             f"of livepiano's vocabulary; use a livepiano model.")
    return ModelShape(layers, hidden, control, vocab, "player" in inputs)
