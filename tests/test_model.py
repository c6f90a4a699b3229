"""ReIdentificationNet and its ResNet backbones: shapes, last stride, BNNeck, offline ImageNet
weights, checkpoint loading and ONNX export. Expected outputs come from the trunk's feature map
with pooling, projection and BatchNorm written out by hand. Small inputs (64x32) and resnet_18
keep it fast.
"""

import logging
import random

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from reidnet.errors import ReidnetError
from reidnet.model import BACKBONES, ReIdentificationNet, build_backbone


def tiny_batch(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 64, 32, generator=torch.Generator().manual_seed(0))


def small_net(**kwargs) -> ReIdentificationNet:
    torch.manual_seed(0)
    return ReIdentificationNet("resnet_18", num_classes=kwargs.pop("num_classes", 6), **kwargs)


# --- backbone -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "channels", "block_type"),
    [
        ("resnet_18", 512, torchvision.models.resnet.BasicBlock),
        ("resnet_34", 512, torchvision.models.resnet.BasicBlock),
        ("resnet_50", 2048, torchvision.models.resnet.Bottleneck),
        ("resnet_101", 2048, torchvision.models.resnet.Bottleneck),
        ("resnet_152", 2048, torchvision.models.resnet.Bottleneck),
    ],
)
def test_each_backbone_is_a_torchvision_trunk_with_stride_one_last_stage(
    name, channels, block_type
):
    trunk, out_channels = build_backbone(name, last_stride=1)
    assert out_channels == channels
    assert list(dict(trunk.named_children())) == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"
    ]  # fmt: skip
    first = trunk.layer4[0]
    assert isinstance(first, block_type)
    strided = first.conv1 if block_type is torchvision.models.resnet.BasicBlock else first.conv2
    assert strided.stride == (1, 1)
    assert first.downsample[0].stride == (1, 1)


def test_last_stride_one_keeps_layer3_resolution():
    trunk, _ = build_backbone("resnet_50", last_stride=1)
    with torch.no_grad():
        assert trunk(torch.randn(2, 3, 64, 32)).shape == (2, 2048, 4, 2)


def test_last_stride_two_is_plain_resnet():
    trunk, _ = build_backbone("resnet_18", last_stride=2)
    with torch.no_grad():
        assert trunk(torch.randn(2, 3, 64, 32)).shape == (2, 512, 2, 1)


def test_last_stride_one_doubles_both_sides_of_the_last_feature_map():
    images = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        strided = build_backbone("resnet_18", last_stride=2)[0](images)
        kept = build_backbone("resnet_18", last_stride=1)[0](images)
    assert strided.shape == (2, 512, 4, 2)  # 128x64 / 32
    assert kept.shape == (2, 512, 8, 4)  # 128x64 / 16


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ReidnetError, match=r"model\.backbone") as excinfo:
        build_backbone("resnet_42")
    assert all(name in str(excinfo.value) for name in BACKBONES)


def _assert_trunk_matches(trunk: nn.Module, reference: nn.Module) -> None:
    reference_state = reference.state_dict()
    for key, tensor in trunk.state_dict().items():
        assert torch.equal(tensor, reference_state[key]), key


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda sd: sd, id="torchvision-state-dict"),
        pytest.param(
            lambda sd: {"epoch": 3, "state_dict": {f"module.base.{k}": v for k, v in sd.items()}},
            id="checkpoint-with-prefixes",
        ),
        pytest.param(lambda sd: {"model": {f"backbone.{k}": v for k, v in sd.items()}}, id="model"),
    ],
)
def test_imagenet_weights_load_from_explicit_file(tmp_path, wrap, caplog):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    weights_file = tmp_path / "weights.pth"
    torch.save(wrap(reference.state_dict()), weights_file)
    with caplog.at_level(logging.INFO, logger="reidnet.model.backbone"):
        trunk, _ = build_backbone(
            "resnet_18", pretrain_choice="imagenet", pretrained_model_path=weights_file
        )
    _assert_trunk_matches(trunk, reference)
    # Every trunk tensor (all but fc.weight / fc.bias) was loaded, and the log says so.
    expected = len(reference.state_dict()) - 2
    assert f"loaded {expected} of {expected} trunk tensors" in caplog.text


def test_imagenet_weights_load_from_torchvision_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(2)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    trunk, _ = build_backbone("resnet_18", pretrain_choice="imagenet")
    _assert_trunk_matches(trunk, reference)


def test_missing_imagenet_weights_explain_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ReidnetError) as excinfo:
        build_backbone("resnet_50", pretrain_choice="imagenet")
    message = str(excinfo.value)
    assert "resnet50-0676ba61.pth" in message
    assert str(tmp_path / "checkpoints" / "resnet50-0676ba61.pth") in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert "model.pretrained_model_path" in message


def test_missing_explicit_weights_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(ReidnetError, match=r"model\.pretrained_model_path") as excinfo:
        build_backbone("resnet_18", pretrain_choice="imagenet", pretrained_model_path=missing)
    assert str(missing) in str(excinfo.value)


def test_weights_of_another_network_are_refused(tmp_path):
    weights_file = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, weights_file)
    with pytest.raises(ReidnetError, match="no weights for resnet_18"):
        build_backbone("resnet_18", pretrain_choice="imagenet", pretrained_model_path=weights_file)


def test_unreadable_weights_file_is_named(tmp_path):
    weights_file = tmp_path / "broken.pth"
    weights_file.write_bytes(b"not a checkpoint")
    with pytest.raises(ReidnetError, match=r"broken\.pth"):
        build_backbone("resnet_18", pretrain_choice="imagenet", pretrained_model_path=weights_file)


def test_files_that_would_run_code_when_unpickled_are_refused(tmp_path):
    from fractions import Fraction  # any class outside torch's weights-only allowlist

    weights_file = tmp_path / "pickled.pth"
    state = torchvision.models.resnet18().state_dict()
    torch.save({"state_dict": state, "note": Fraction(1, 2)}, weights_file)
    with pytest.raises(ReidnetError, match="pickled") as excinfo:
        build_backbone("resnet_18", pretrain_choice="imagenet", pretrained_model_path=weights_file)
    assert "re-save only its state dict" in str(excinfo.value)


# --- ReIdentificationNet ------------------------------------------------------------------------


def forward_capturing_trunk(net: ReIdentificationNet, images: torch.Tensor):
    """`net(images)` and the trunk's feature map of that same pass (of the first pass with the
    flip feature), read by a forward hook."""
    maps = []
    handle = net.backbone.register_forward_hook(lambda _m, _i, output: maps.append(output))
    try:
        output = net(images)
    finally:
        handle.remove()
    return output, maps[0]


def pooled_and_projected(net: ReIdentificationNet, feature_map: torch.Tensor) -> torch.Tensor:
    """Global average pooling and the 1x1 projection written out as a mean and a matrix product."""
    pooled = feature_map.mean(dim=(2, 3))
    if net.projection is None:
        return pooled
    return pooled @ net.projection.weight[:, :, 0, 0].T


def test_training_forward_classifies_the_batch_normalised_feature_and_returns_the_raw_one():
    # num_classes == feat_dim and an identity classifier: the scores are the BNNeck output.
    net = small_net(num_classes=64, feat_dim=64).train()
    with torch.no_grad():
        net.classifier.weight.copy_(torch.eye(64))
        net.bnneck.weight.uniform_(0.5, 2)
    (cls_score, global_feat), feature_map = forward_capturing_trunk(net, tiny_batch())
    # The triplet loss sees the pooled, projected feature before the BNNeck...
    torch.testing.assert_close(global_feat, pooled_and_projected(net, feature_map))
    # ...the classifier sees it normalised with the statistics of this batch (biased variance).
    mean, var = global_feat.mean(0), global_feat.var(0, unbiased=False)
    expected = (global_feat - mean) / torch.sqrt(var + 1e-5) * net.bnneck.weight
    torch.testing.assert_close(cls_score, expected, rtol=1e-4, atol=1e-4)
    # and the running statistics eval will use moved 10% of the way (momentum 0.1) from 0 / 1.
    torch.testing.assert_close(net.bnneck.running_mean, 0.1 * mean.detach())
    unbiased = global_feat.var(0, unbiased=True).detach()
    torch.testing.assert_close(net.bnneck.running_var, 0.9 + 0.1 * unbiased)


@pytest.mark.parametrize("feat_dim", [512, 64], ids=["trunk-channels", "projected"])
@pytest.mark.parametrize(
    ("neck", "neck_feat"), [("bnneck", "after"), ("bnneck", "before"), ("no", "after")]
)
def test_output_shapes_and_dtypes_for_each_neck_option(neck, neck_feat, feat_dim):
    net = small_net(num_classes=6, feat_dim=feat_dim, neck=neck, neck_feat=neck_feat)
    cls_score, global_feat = net.train()(tiny_batch(3))
    assert cls_score.shape == (3, 6) and global_feat.shape == (3, feat_dim)
    with torch.no_grad():
        embedding = net.eval()(tiny_batch(5))
    assert embedding.shape == (5, feat_dim)
    assert cls_score.dtype == global_feat.dtype == embedding.dtype == torch.float32


def test_projection_only_when_feat_dim_differs_from_trunk_channels():
    assert small_net(feat_dim=512).projection is None
    projection = small_net(feat_dim=128).projection
    assert projection.kernel_size == (1, 1)
    assert (projection.in_channels, projection.out_channels) == (512, 128)
    assert projection.bias is None


def test_bnneck_shift_is_frozen_at_zero_and_classifier_is_small():
    net = small_net(num_classes=100, feat_dim=128)
    assert not net.bnneck.bias.requires_grad
    assert torch.equal(net.bnneck.bias, torch.zeros(128))
    assert torch.equal(net.bnneck.weight, torch.ones(128))
    assert net.classifier.bias is None
    assert 0.0009 < net.classifier.weight.std().item() < 0.0011
    assert (net.feat_dim, net.num_classes, net.backbone_name) == (128, 100, "resnet_18")


def _non_trivial_running_stats(net: ReIdentificationNet) -> None:
    with torch.no_grad():
        net.bnneck.running_mean.uniform_(-1, 1)
        net.bnneck.running_var.uniform_(0.5, 2)
        net.bnneck.weight.uniform_(0.5, 2)


def _hand_bnneck(net: ReIdentificationNet, feature: torch.Tensor) -> torch.Tensor:
    """Eval BatchNorm with the running statistics, written out (the shift is frozen at 0)."""
    bn = net.bnneck
    return (feature - bn.running_mean) / torch.sqrt(bn.running_var + 1e-5) * bn.weight


def test_eval_embedding_after_neck_is_the_feature_normalised_with_running_stats():
    net = small_net(feat_dim=64, neck_feat="after").eval()
    _non_trivial_running_stats(net)
    running = net.bnneck.running_mean.clone(), net.bnneck.running_var.clone()
    with torch.no_grad():
        embedding, feature_map = forward_capturing_trunk(net, tiny_batch())
    expected = _hand_bnneck(net, pooled_and_projected(net, feature_map))
    torch.testing.assert_close(embedding, expected)
    # Eval never touches the statistics: embedding an image does not change the next one.
    assert torch.equal(net.bnneck.running_mean, running[0])
    assert torch.equal(net.bnneck.running_var, running[1])


def test_eval_embedding_before_neck_is_the_raw_feature_of_the_same_weights():
    after = small_net(feat_dim=64, neck_feat="after").eval()
    _non_trivial_running_stats(after)
    before = small_net(feat_dim=64, neck_feat="before").eval()
    before.load_state_dict(after.state_dict())
    images = tiny_batch()
    with torch.no_grad():
        raw, feature_map = forward_capturing_trunk(before, images)
        torch.testing.assert_close(raw, pooled_and_projected(before, feature_map))
        torch.testing.assert_close(after(images), _hand_bnneck(after, raw))
        assert not torch.allclose(raw, after(images), atol=1e-2)  # the choice matters


def test_no_neck_classifies_the_feature_directly():
    net = small_net(num_classes=3, feat_dim=64, neck="no")
    assert net.bnneck is None
    weight = torch.zeros(3, 64)
    weight[0, 0], weight[1, 1], weight[2, :2] = 1.0, -2.0, 1.0
    with torch.no_grad():
        net.classifier.weight.copy_(weight)
        (cls_score, global_feat), feature_map = forward_capturing_trunk(net.train(), tiny_batch())
        torch.testing.assert_close(global_feat, pooled_and_projected(net, feature_map))
        # scores: feature 0, -2 x feature 1, and their sum, with no normalisation between.
        features = global_feat[:, :2]
        expected = torch.stack([features[:, 0], -2 * features[:, 1], features.sum(1)], 1)
        torch.testing.assert_close(cls_score, expected)
        embedding, feature_map = forward_capturing_trunk(net.eval(), tiny_batch())
        torch.testing.assert_close(embedding, pooled_and_projected(net, feature_map))


def test_flip_feature_sums_image_and_mirror_embeddings():
    net = small_net(feat_dim=64, with_flip_feature=True).eval()
    _non_trivial_running_stats(net)
    images = tiny_batch()
    with torch.no_grad():
        plain = small_net(feat_dim=64).eval()
        plain.load_state_dict(net.state_dict())
        expected = plain(images) + plain(images.flip(-1))
        torch.testing.assert_close(net(images), expected)
        # Hence mirroring the input does not change the embedding.
        torch.testing.assert_close(net(images.flip(-1)), net(images))
        # Not so for an upside-down input: the flip is the horizontal one.
        assert not torch.allclose(net(images.flip(-2)), net(images), atol=1e-3)


def test_channels_last_gives_the_same_embedding():
    net = small_net(feat_dim=64).eval()
    images = tiny_batch()
    with torch.no_grad():
        expected = net(images)
        net = net.to(memory_format=torch.channels_last)
        got = net(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_load_reid_state_round_trip_with_prefixes():
    source = small_net(num_classes=6, feat_dim=64).eval()
    _non_trivial_running_stats(source)
    target = small_net(num_classes=6, feat_dim=64).eval()
    torch.nn.init.zeros_(target.classifier.weight)
    report = target.load_reid_state(
        {f"module.{k}": v for k, v in source.state_dict().items()}, strict_classifier=True
    )
    assert report.num_loaded == len(source.state_dict())
    assert report.skipped == {}
    assert torch.equal(target.classifier.weight, source.classifier.weight)
    images = tiny_batch()
    with torch.no_grad():
        torch.testing.assert_close(target(images), source(images))


def test_load_reid_state_reinitialises_a_classifier_of_another_size():
    source = small_net(num_classes=6, feat_dim=64).eval()
    target = small_net(num_classes=9, feat_dim=64).eval()
    report = target.load_reid_state(source.state_dict(), strict_classifier=False)
    assert report.classifier_reinitialised
    assert "6 classes" in report.skipped["classifier.weight"]
    assert report.num_loaded == len(source.state_dict()) - 1
    assert target.classifier.weight.shape == (9, 64)
    images = tiny_batch()
    with torch.no_grad():
        torch.testing.assert_close(target(images), source(images))


def test_load_reid_state_strict_classifier_refuses_another_size():
    source = small_net(num_classes=6, feat_dim=64)
    target = small_net(num_classes=9, feat_dim=64)
    with pytest.raises(ReidnetError, match=r"dataset\.num_classes"):
        target.load_reid_state(source.state_dict(), strict_classifier=True)


def test_load_reid_state_refuses_another_feat_dim():
    source = small_net(num_classes=6, feat_dim=64)
    target = small_net(num_classes=6, feat_dim=128)
    with pytest.raises(ReidnetError, match=r"model\.feat_dim 128"):
        target.load_reid_state(source.state_dict(), strict_classifier=False)


def test_pretrain_choice_self_loads_a_reid_checkpoint(tmp_path):
    source = small_net(num_classes=6, feat_dim=64).eval()
    _non_trivial_running_stats(source)
    checkpoint = tmp_path / "reid.pth"
    # Shaped like a reidnet training checkpoint: weights under "model", numpy RNG state and
    # numpy metric values beside them.
    torch.save(
        {
            "epoch": 120,
            "model": source.state_dict(),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state()},
            "history": [{"mAP": np.float64(0.5)}],
        },
        checkpoint,
    )
    target = ReIdentificationNet(
        "resnet_18",
        num_classes=3,
        feat_dim=64,
        pretrain_choice="self",
        pretrained_model_path=checkpoint,
    ).eval()
    images = tiny_batch()
    with torch.no_grad():
        torch.testing.assert_close(target(images), source(images))


def test_pretrain_choice_self_needs_a_path():
    with pytest.raises(ReidnetError, match=r"model\.pretrained_model_path"):
        small_net(pretrain_choice="self")


def test_flip_embedding_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    """Through the exporter `reidnet export` uses (TorchScript, opset 17, TAO's tensor names)."""
    ort = pytest.importorskip("onnxruntime")
    from reidnet.deploy.onnx import write_graph

    net = small_net(feat_dim=64, with_flip_feature=True).eval()
    _non_trivial_running_stats(net)
    onnx_file = tmp_path / "reid.onnx"
    write_graph(net, onnx_file, (64, 32), opset_version=17)  # traced with a batch of 2
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["fc_pred"]
    images = tiny_batch(3)
    (exported,) = session.run(None, {"input": images.numpy()})
    with torch.no_grad():
        expected = net(images).numpy()
    np.testing.assert_allclose(exported, expected, rtol=1e-4, atol=1e-4)
    # The mirror pass is inside the graph: a mirrored batch embeds the same.
    (mirrored,) = session.run(None, {"input": images.flip(-1).numpy()})
    np.testing.assert_allclose(mirrored, exported, rtol=1e-4, atol=1e-4)
