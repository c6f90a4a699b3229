"""ONNX export, parity check and deployment files; evaluate and inference through onnxruntime."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from reidnet import __version__
from reidnet.actions import evaluate, export, inference
from reidnet.cli import app
from reidnet.config import load_spec
from reidnet.contracts import Architecture, checkpoint_header
from reidnet.data.transforms import build_eval_transform, read_image_rgb
from reidnet.datatools.synthetic import generate_synthetic_dataset
from reidnet.deploy import onnx as onnx_export
from reidnet.deploy.deepstream import deepstream_normalisation
from reidnet.deploy.onnx import read_metadata
from reidnet.errors import ReidnetError
from reidnet.model import ReIdentificationNet
from reidnet.runtime import checkpoint as ckpt
from reidnet.runtime.base import Preprocessing
from reidnet.runtime.onnx_backend import OnnxBackend
from reidnet.utils.atomic import atomic_torch_save

TINY = {
    "model": {
        "backbone": "resnet_18",
        "pretrain_choice": "none",
        "input_height": 32,
        "input_width": 16,
        "feat_dim": 64,
        "with_flip_feature": True,
    },
    "dataset": {"num_workers": 0, "val_batch_size": 16},
}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic_dataset(
        root, identities=12, test_identities=6, cameras=3, images_per_identity=6, size=(64, 32)
    )
    return root


def tiny_spec(data: Path, results: Path, *overrides: str, extra: dict | None = None):
    raw = json.loads(json.dumps(TINY))
    raw["results_dir"] = str(results)
    raw["dataset"].update(
        test_dataset_dir=str(data / "bounding_box_test"), query_dataset_dir=str(data / "query")
    )
    for section, values in (extra or {}).items():
        raw.setdefault(section, {}).update(values)
    return load_spec(data=raw, overrides=list(overrides))


def write_checkpoint(spec, path: Path, num_classes: int = 5) -> Path:
    """A reidnet checkpoint of an untrained tiny network whose BatchNorm stats are not trivial."""
    torch.manual_seed(0)
    model = ReIdentificationNet(
        "resnet_18",
        num_classes=num_classes,
        feat_dim=spec.model.feat_dim,
        with_flip_feature=spec.model.with_flip_feature,
    )
    with torch.no_grad():  # running statistics from a few batches, as after training
        for _ in range(3):
            model(torch.randn(8, 3, 32, 16) * 2 + 0.5)
    header = checkpoint_header(
        epoch=1,
        spec_dict=spec.model_dump(mode="json"),
        identity_keys=[f"id{i}" for i in range(num_classes)],
        architecture=Architecture.from_spec(spec),
    )
    return atomic_torch_save({**header, "model": model.state_dict()}, path)


@pytest.fixture(scope="module")
def exported(synthetic, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    checkpoint = write_checkpoint(tiny_spec(synthetic, root), root / "model.pth")
    spec = tiny_spec(synthetic, root / "results", f"export.checkpoint={checkpoint}")
    return checkpoint, export(spec)


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def torch_features(checkpoint: Path, images: torch.Tensor) -> np.ndarray:
    model = ckpt.model_from_checkpoint(ckpt.load_checkpoint(checkpoint))
    with torch.no_grad():
        return model(images).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- the ONNX file ---------------------------------------------------------------------------


def test_export_writes_a_checked_graph_with_the_reference_names(exported):
    _, outcome = exported
    assert outcome.onnx_file.name == "reid_model.onnx"
    assert outcome.onnx_file.parent.name == "export"
    model = onnx.load(str(outcome.onnx_file))
    onnx.checker.check_model(model, full_check=True)
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    assert graph_input.name == "input" and graph_output.name == "fc_pred"
    assert dims(graph_input) == ["batch", 3, 32, 16]
    assert dims(graph_output) == ["batch", 64]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert outcome.parity.batch_size == 8
    assert outcome.parity.min_cosine >= 0.9999 and outcome.parity.max_abs_diff < 1e-3


@pytest.mark.parametrize("batch", [1, 7])
def test_dynamic_batch_runs_and_matches_pytorch_with_the_flip_feature(exported, batch):
    checkpoint, outcome = exported
    images = torch.randn(batch, 3, 32, 16, generator=torch.Generator().manual_seed(batch))
    session = ort.InferenceSession(str(outcome.onnx_file), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"input": images.numpy()})
    expected = torch_features(checkpoint, images)
    assert onnx_out.shape == (batch, 64)
    np.testing.assert_allclose(onnx_out, expected, rtol=1e-4, atol=1e-4)
    # The flip feature is inside the graph: the output differs from one pass without it.
    model = ckpt.model_from_checkpoint(ckpt.load_checkpoint(checkpoint))
    with torch.no_grad():
        single_pass = model._embedding(images).numpy()
    assert not np.allclose(onnx_out, single_pass, atol=1e-2)


def test_metadata_round_trips_through_the_file(exported):
    _, outcome = exported
    metadata = read_metadata(outcome.onnx_file)
    expected = {
        "reidnet_version": __version__,
        "backbone": "resnet_18",
        "input_height": "32",
        "input_width": "16",
        "color_order": "RGB",
        "feat_dim": "64",
        "neck_feat": "after",
        "with_flip_feature": "true",
        "l2_normalized": "false",
        "num_classes": "5",
    }
    assert {k: metadata[k] for k in expected} == expected
    assert json.loads(metadata["pixel_mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(metadata["pixel_std"]) == [0.226, 0.226, 0.226]
    # The runtime reads preprocessing from the metadata, not from whatever fallback it is given.
    fallback = Preprocessing(64, 64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), source="spec")
    preprocessing = OnnxBackend(outcome.onnx_file, fallback=fallback).preprocessing
    assert preprocessing == Preprocessing(
        32, 16, (0.485, 0.456, 0.406), (0.226, 0.226, 0.226), source="reidnet metadata"
    )


def test_existing_files_are_refused_unless_forced(exported, synthetic, tmp_path):
    checkpoint, _ = exported
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()
    target.write_bytes(b"an older model")
    spec = tiny_spec(
        synthetic, tmp_path, f"export.checkpoint={checkpoint}", f"export.onnx_file={target}"
    )
    with pytest.raises(ReidnetError, match="--force"):
        export(spec)
    assert target.read_bytes() == b"an older model"
    outcome = export(spec, force=True)
    assert read_metadata(outcome.onnx_file)["feat_dim"] == "64"
    target.unlink()  # a deployment file left alone is refused too
    with pytest.raises(ReidnetError, match=r"deepstream_tracker_reid\.yml"):
        export(spec)


def test_a_graph_that_fails_parity_is_never_left_at_the_target(
    exported, synthetic, tmp_path, monkeypatch
):
    checkpoint, _ = exported
    honest_write = onnx_export.write_graph

    def write_a_different_network(model, path, size, opset_version):
        drifted = ReIdentificationNet("resnet_18", num_classes=5, feat_dim=64).eval()
        honest_write(drifted, path, size, opset_version)

    monkeypatch.setattr(onnx_export, "write_graph", write_a_different_network)
    target = tmp_path / "out" / "model.onnx"
    spec = tiny_spec(
        synthetic, tmp_path, f"export.checkpoint={checkpoint}", f"export.onnx_file={target}"
    )
    with pytest.raises(ReidnetError, match=r"parity check.*min cosine"):
        export(spec)
    # nothing of the model is left; the run's record stays, with the error in its log
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "environment.json",
        "export.log",
        "resolved_spec.yaml",
    ]


def test_cli_export_prints_parity_and_the_written_files(exported, synthetic, tmp_path):
    checkpoint, _ = exported
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(synthetic, tmp_path).model_dump(mode="json")))
    target = tmp_path / "cli" / "reid.onnx"
    args = ["export", "-e", str(spec_file), f"export.checkpoint={checkpoint}"]
    result = CliRunner().invoke(app, [*args, f"export.onnx_file={target}"])
    assert result.exit_code == 0, result.output
    assert "min cosine 1.0000000" in result.output or "min cosine 0.99999" in result.output
    for name in ("reid.onnx", "deepstream_tracker_reid.yml", "nvinfer_sgie_reid.txt"):
        assert name in result.output
    again = CliRunner().invoke(app, [*args, f"export.onnx_file={target}"])
    assert isinstance(again.exception, ReidnetError)
    assert "--force" in str(again.exception)


# --- deployment files -------------------------------------------------------------------------


def test_deepstream_files_hold_the_numbers_of_the_default_normalisation(exported):
    _, outcome = exported
    files = outcome.deployment_files
    tracker_text = files["deepstream_tracker_reid.yml"].read_text()
    reid = yaml.safe_load(tracker_text)["ReID"]
    assert reid["offsets"] == [123.675, 116.28, 103.53]
    assert "netScaleFactor: 0.01735207357\n" in tracker_text
    assert reid["reidFeatureSize"] == 64 and reid["inferDims"] == [3, 32, 16]
    assert reid["addFeatureNormalization"] == 1 and reid["colorFormat"] == 0
    assert reid["onnxFile"] == str(outcome.onnx_file.resolve())
    expected_keys = {
        "reidType",
        "batchSize",
        "workspaceSize",
        "reidHistorySize",
        "networkMode",
        "inputOrder",
        "keepAspc",
    }
    assert expected_keys <= set(reid)

    nvinfer = files["nvinfer_sgie_reid.txt"].read_text().splitlines()
    for line in (
        "[property]",
        "net-scale-factor=0.01735207357",
        "offsets=123.675;116.28;103.53",
        "infer-dims=3;32;16",
        "onnx-file=reid_model.onnx",
        "network-type=100",
        "output-tensor-meta=1",
        "process-mode=2",
        "network-mode=2",
        "output-blob-names=fc_pred",
    ):
        assert line in nvinfer
    assert any(line.startswith("batch-size=") for line in nvinfer)

    script = files["trtexec.sh"]
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and os.access(script, os.X_OK)
    for flag in (
        "--onnx=reid_model.onnx",
        "--fp16",
        "--minShapes=input:1x3x32x16",
        "--optShapes=input:16x3x32x16",
        "--maxShapes=input:100x3x32x16",
    ):
        assert flag in text


def test_per_channel_std_gives_per_channel_offsets_one_scale_and_a_warning(caplog):
    uniform = deepstream_normalisation([0.485, 0.456, 0.406], [0.226, 0.226, 0.226])
    assert uniform.exact and uniform.net_scale_factor == pytest.approx(0.01735207357, abs=1e-11)
    with caplog.at_level(logging.WARNING):
        imagenet = deepstream_normalisation([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert imagenet.offsets == pytest.approx((123.675, 116.28, 103.53))
    # 1/(255*0.229) = 0.0171248, 1/(255*0.224) = 0.0175070, 1/(255*0.225) = 0.0174292
    assert imagenet.net_scale_factor == pytest.approx(0.0173537, abs=1e-7)
    assert not imagenet.exact
    assert "one net-scale-factor" in caplog.text


# --- evaluate and inference through onnxruntime ----------------------------------------------


def test_evaluate_via_onnx_equals_evaluate_via_the_checkpoint(exported, synthetic, tmp_path):
    checkpoint, outcome = exported
    by_checkpoint = evaluate(
        tiny_spec(synthetic, tmp_path / "a", f"evaluate.checkpoint={checkpoint}")
    )
    by_onnx = evaluate(
        tiny_spec(
            synthetic,
            tmp_path / "b",
            f"evaluate.checkpoint={checkpoint}",  # onnx_file wins over the checkpoint
            f"evaluate.onnx_file={outcome.onnx_file}",
        )
    )
    for key in ("mAP", "rank-1", "rank-5", "mINP", "num_valid_queries"):
        assert by_onnx.metrics[key] == pytest.approx(by_checkpoint.metrics[key], abs=1e-4), key
    saved = json.loads(by_onnx.results_file.read_text())
    assert saved["checkpoint"] == str(outcome.onnx_file)
    assert set(saved) == set(json.loads(by_checkpoint.results_file.read_text()))
    np.testing.assert_allclose(
        saved["cmc"], json.loads(by_checkpoint.results_file.read_text())["cmc"], atol=1e-4
    )


def test_inference_takes_an_onnx_path_as_the_checkpoint(exported, synthetic, tmp_path):
    checkpoint, outcome = exported
    by_checkpoint = inference(
        tiny_spec(synthetic, tmp_path / "a", f"inference.checkpoint={checkpoint}")
    )
    by_onnx = inference(
        tiny_spec(synthetic, tmp_path / "b", f"inference.checkpoint={outcome.onnx_file}")
    )
    np.testing.assert_allclose(
        np.load(by_onnx.npy_file), np.load(by_checkpoint.npy_file), rtol=1e-4, atol=1e-4
    )
    assert by_onnx.index_file.read_text() == by_checkpoint.index_file.read_text()


class ThirdPartyReid(nn.Module):
    """A small embedding network standing in for a ReID model made elsewhere."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.head = nn.Linear(8, 12)

    def forward(self, images):
        return self.head(self.features(images).flatten(1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter
def test_a_third_party_graph_is_evaluated_with_the_spec_normalisation(synthetic, tmp_path):
    torch.manual_seed(0)
    network = ThirdPartyReid().eval()
    graph = tmp_path / "someone_elses_reid.onnx"
    torch.onnx.export(  # fixed batch 4, other names, no metadata
        network,
        (torch.zeros(4, 3, 32, 16),),
        str(graph),
        input_names=["images"],
        output_names=["embeddings"],
        opset_version=17,
        dynamo=False,
    )
    assert read_metadata(graph) == {}
    normalisation = {"pixel_mean": [0.5, 0.5, 0.5], "pixel_std": [0.25, 0.25, 0.25]}
    spec = tiny_spec(
        synthetic,
        tmp_path / "r",
        f"inference.onnx_file={graph}",
        f"evaluate.onnx_file={graph}",
        "dataset.val_batch_size=7",  # batches of 7 through a graph that takes 4
        extra={"dataset": normalisation},
    )
    outcome = inference(spec)
    paths = [e["img_path"] for e in json.loads(outcome.json_file.read_text())]

    def reference(pixel_mean, pixel_std):
        transform = build_eval_transform(32, 16, pixel_mean, pixel_std)
        images = torch.stack([transform(read_image_rgb(p)) for p in paths])
        with torch.no_grad():
            return network(images).numpy()

    features = np.load(outcome.npy_file)
    assert features.shape == (len(paths), 12)
    np.testing.assert_allclose(features, reference(**normalisation), rtol=1e-4, atol=1e-5)
    assert not np.allclose(features, reference([0.485, 0.456, 0.406], [0.226] * 3), atol=1e-3)
    metrics = evaluate(spec).metrics
    assert 0.0 < metrics["mAP"] <= 1.0 and metrics["num_valid_queries"] > 0


def test_a_file_that_is_not_onnx_names_the_key(synthetic, tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not a protobuf")
    spec = tiny_spec(synthetic, tmp_path, f"evaluate.onnx_file={bogus}")
    with pytest.raises(ReidnetError, match=r"cannot be loaded by onnxruntime.*evaluate\.onnx_file"):
        evaluate(spec)
    missing = tiny_spec(synthetic, tmp_path, f"inference.checkpoint={tmp_path / 'nope.onnx'}")
    with pytest.raises(ReidnetError, match=r"does not exist: check inference\.checkpoint"):
        inference(missing)
