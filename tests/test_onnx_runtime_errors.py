"""ONNX graphs that load but cannot serve as embedders: a clear ReidnetError, never a traceback
from onnxruntime, nor images scored as embeddings (red-team faults 16 and 17)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from reidnet.errors import ReidnetError
from reidnet.runtime.onnx_backend import OnnxBackend


def _save(graph: onnx.GraphProto, path, check: bool = True) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if check:  # the checker wants every output's shape declared
        onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


IMAGES = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 2])


def pooled_graph(path) -> str:
    """[N, 3, 4, 2] -> [N, 3]: the mean of each channel, a valid (tiny) embedder."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["fc_pred"], axes=[2, 3], keepdims=0)],
        "pooled",
        [IMAGES],
        [helper.make_tensor_value_info("fc_pred", TensorProto.FLOAT, ["N", 3])],
    )
    return _save(graph, path)


def fixed_reshape_graph(path) -> str:
    """Reshapes to a fixed [2, 24]: valid for a batch of 2, a run-time failure for any other."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 24])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["fc_pred"])],
        "fixed",
        [IMAGES],
        [helper.make_tensor_value_info("fc_pred", TensorProto.FLOAT, [2, 24])],
        [shape],
    )
    return _save(graph, path)


def image_output_graph(path) -> str:
    """Identity: images out, [N, 3, 4, 2], which flattened would look like 24-d embeddings."""
    output = helper.make_tensor_value_info("fc_pred", TensorProto.FLOAT, ["N", 3, 4, 2])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["fc_pred"])], "images", [IMAGES], [output]
    )
    return _save(graph, path)


def images(count: int) -> np.ndarray:
    return np.arange(count * 24, dtype=np.float32).reshape(count, 3, 4, 2)


def test_a_valid_graph_gives_the_channel_means(tmp_path):
    features = OnnxBackend(pooled_graph(tmp_path / "ok.onnx")).run(images(2))
    # Channel c of image n holds 24n + 8c + 0..7: its mean is 24n + 8c + 3.5.
    np.testing.assert_allclose(features, [[3.5, 11.5, 19.5], [27.5, 35.5, 43.5]])


def test_a_graph_failing_at_run_time_is_a_clear_error(tmp_path):
    model = OnnxBackend(fixed_reshape_graph(tmp_path / "fixed.onnx"))
    assert model.run(images(2)).shape == (2, 24)
    with pytest.raises(ReidnetError) as caught:
        model.run(images(3))
    message = str(caught.value)
    assert "fixed.onnx failed in onnxruntime on a batch of shape [3, 3, 4, 2]" in message
    assert "export it again" in message


def test_an_image_shaped_output_is_refused_when_the_graph_loads(tmp_path):
    with pytest.raises(ReidnetError, match=r"must output embeddings \[N, D\].*\['N', 3, 4, 2\]"):
        OnnxBackend(image_output_graph(tmp_path / "images.onnx"))


def test_a_declared_shape_the_graph_does_not_keep_is_caught_at_run_time(tmp_path):
    """Reshape to [N, 3, -1] declared as [N, 24]: onnxruntime trusts the declaration."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [0, 3, -1])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["fc_pred"])],
        "lying",
        [IMAGES],
        [helper.make_tensor_value_info("fc_pred", TensorProto.FLOAT, ["N", 24])],
        [shape],
    )
    model = OnnxBackend(_save(graph, tmp_path / "lying.onnx", check=False))
    with pytest.raises(ReidnetError, match=r"of shape \[2, 3, 8\] for 2 images"):
        model.run(images(2))
