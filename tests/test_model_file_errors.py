"""A model file that is not what livepiano exports is answered in one line that says what is
wrong; and running a model leaves nothing under ~/.cache/Microsoft."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.runtime.engine import Engine
from livepiano.runtime.modelfile import read_model_card

onnx = pytest.importorskip("onnx")


def _model(path, h=(2, 1, 8), c=(2, 1, 8), logits=(1, 1, codec.VOCAB_SIZE)):
    """An ONNX graph with a livepiano model's inputs and outputs (and the given shapes)."""
    from onnx import TensorProto, helper

    def value(name, shape, kind=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, kind, list(shape))

    zeros = helper.make_tensor("zeros", TensorProto.FLOAT, list(logits),
                               [0.0] * int(__import__("math").prod(logits)))
    nodes = [helper.make_node("Constant", [], ["logits"], value=zeros),
             helper.make_node("Identity", ["h"], ["h_out"]),
             helper.make_node("Identity", ["c"], ["c_out"])]
    graph = helper.make_graph(
        nodes, "m", [value("token", (1, 1), TensorProto.INT64), value("h", h), value("c", c)],
        [value("logits", logits), value("h_out", h), value("c_out", c)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_fixed_wrong_shapes_are_named_not_called_symbolic(tmp_path):
    with pytest.raises(LivepianoError) as e:
        Engine(_model(tmp_path / "rank.onnx", h=(2, 8), c=(2, 8)))
    assert "h has the shape [2, 8]" in str(e.value) and "symbolic" not in str(e.value)
    with pytest.raises(LivepianoError) as e:
        Engine(_model(tmp_path / "sizes.onnx", c=(2, 1, 16)))
    assert "must agree" in str(e.value) and "symbolic" not in str(e.value)


def test_a_broken_model_card_is_one_line(tmp_path):
    model = _model(tmp_path / "m.onnx")
    model.with_suffix(".yaml").write_text("model:\n  layers: [1, 2\n  hidden: 3\n")
    with pytest.raises(LivepianoError) as e:
        read_model_card(model)
    assert "\n" not in str(e.value) and "line " in str(e.value) and "not valid YAML" in str(e.value)


def test_no_telemetry_files_under_the_cache(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=os.getcwd())
    code = ("from livepiano.runtime.engine import Engine; from livepiano.runtime.modelfile import "
            "resolve_model; Engine(resolve_model(None))")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert not (home / ".cache" / "Microsoft").exists()
