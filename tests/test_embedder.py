"""reidnet.Embedder: the same L2-normalised embeddings from paths, PIL images and arrays, from a
checkpoint or its ONNX export, equal to the features evaluation scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reidnet
from imagefiles import write_image
from reidnet.config import load_spec
from reidnet.contracts import Architecture, checkpoint_header
from reidnet.deploy.onnx import export_checkpoint
from reidnet.errors import ReidnetError
from reidnet.model import ReIdentificationNet
from reidnet.runtime import checkpoint as ckpt
from reidnet.runtime.embed import extract_features
from reidnet.utils.atomic import atomic_torch_save

SPEC = {
    "model": {"backbone": "resnet_18", "input_height": 32, "input_width": 16, "feat_dim": 48},
    "dataset": {"pixel_mean": [0.5, 0.4, 0.3], "pixel_std": [0.2, 0.2, 0.2]},
}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny reidnet checkpoint (non-default normalisation) and its ONNX export."""
    root = tmp_path_factory.mktemp("embedder")
    spec = load_spec(data=SPEC)
    torch.manual_seed(0)
    model = ReIdentificationNet("resnet_18", num_classes=3, feat_dim=48)
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 16))  # non-trivial BatchNorm running statistics
    header = checkpoint_header(
        epoch=1,
        spec_dict=spec.model_dump(mode="json"),
        identity_keys=["a", "b", "c"],
        architecture=Architecture.from_spec(spec),
    )
    checkpoint = atomic_torch_save({**header, "model": model.state_dict()}, root / "m.pth")
    onnx_file = export_checkpoint(ckpt.load_checkpoint(checkpoint), root / "m.onnx").onnx_file
    return checkpoint, onnx_file


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("crops")
    return [write_image(folder / f"crop_{i}.png", seed=i, size=(60, 28)) for i in range(5)]


def test_every_input_type_gives_the_same_unit_embedding(model_files, crops):
    embedder = reidnet.Embedder.from_file(model_files[0], device="cpu")
    path = crops[0]
    image = Image.open(path)
    array = np.asarray(image.convert("RGB"))
    by_path = embedder.embed(str(path))
    assert by_path.shape == (1, 48) and by_path.dtype == np.float32
    assert np.linalg.norm(by_path) == pytest.approx(1.0, abs=1e-6)
    for other in (embedder.embed(path), embedder.embed(image), embedder.embed([array])):
        np.testing.assert_allclose(other, by_path, atol=1e-6)
    stacked = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in crops])
    np.testing.assert_allclose(embedder.embed(stacked), embedder.embed(crops), atol=1e-6)


def test_embeddings_are_the_normalised_evaluation_features(model_files, crops):
    checkpoint = ckpt.load_checkpoint(model_files[0])
    architecture = Architecture.from_checkpoint(checkpoint)
    evaluation = extract_features(
        ckpt.model_from_checkpoint(checkpoint),
        crops,
        height=32,
        width=16,
        pixel_mean=architecture.pixel_mean,
        pixel_std=architecture.pixel_std,
    )
    expected = torch.nn.functional.normalize(evaluation, dim=1).numpy()
    embedder = reidnet.Embedder.from_file(model_files[0], device="cpu")
    np.testing.assert_allclose(embedder.embed(crops), expected, atol=1e-5)


def test_onnx_and_checkpoint_embedders_agree(model_files, crops):
    from_checkpoint = reidnet.Embedder.from_file(model_files[0], device="cpu").embed(crops)
    onnx_embedder = reidnet.Embedder.from_file(model_files[1], device="cpu")
    assert onnx_embedder.preprocessing.source == "reidnet metadata"
    assert onnx_embedder.preprocessing.pixel_mean == (0.5, 0.4, 0.3)
    from_onnx = onnx_embedder.embed(crops)
    assert from_onnx.shape == (5, 48) and from_onnx.dtype == np.float32
    assert (from_onnx * from_checkpoint).sum(1).min() > 0.9999


def test_batching_does_not_change_the_embeddings(model_files, crops):
    one_batch = reidnet.Embedder.from_file(model_files[1], device="cpu").embed(crops)
    in_pairs = reidnet.Embedder.from_file(model_files[1], device="cpu", batch_size=2)
    np.testing.assert_allclose(in_pairs.embed(crops), one_batch, atol=1e-6)
    assert in_pairs.embed([]).shape == (0, 48)


def test_bad_inputs_raise_a_reidnet_error(model_files, tmp_path):
    embedder = reidnet.Embedder.from_file(model_files[1], device="cpu")
    with pytest.raises(ReidnetError, match=r"uint8 RGB arrays of shape \[H, W, 3\]"):
        embedder.embed(np.zeros((32, 16, 3), np.float32))
    with pytest.raises(ReidnetError, match="got int"):
        embedder.embed([3])
    with pytest.raises(ReidnetError, match="cannot read image"):
        embedder.embed(tmp_path / "missing.jpg")
    with pytest.raises(ReidnetError, match="does not exist"):
        reidnet.Embedder.from_file(tmp_path / "nope.onnx")


def test_embedder_is_exposed_lazily_on_the_package():
    from reidnet.embedder import Embedder

    assert reidnet.Embedder is Embedder
    with pytest.raises(AttributeError, match="no attribute 'Embeder'"):
        _ = reidnet.Embeder
