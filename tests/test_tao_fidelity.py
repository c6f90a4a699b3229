"""TAO fidelity: a TAO checkpoint or TAO-layout ONNX embeds in reidnet exactly as TAO's network.

The reference network below is written from TAO's facts (re_identification/model/backbones/
resnet.py and baseline.py), not with reidnet's modules: no ReLU after the stem's bn1, Bottleneck
blocks at every depth, a 1x1 `base.feature` convolution with a bias on the feature map before
pooling, a BNNeck and a bias-free classifier. Its BatchNorm statistics are calibrated on its own
activations, so every BatchNorm does real work (random statistics would hide a missing one).
"""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from imagefiles import write_image
from reidnet.config import load_spec
from reidnet.contracts import Architecture
from reidnet.convert import convert
from reidnet.embedder import Embedder
from reidnet.errors import ReidnetError
from reidnet.runtime import checkpoint as ckpt

HEIGHT, WIDTH = 64, 32


class RefBottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + residual)


class RefTaoBase(nn.Module):
    """TAO's ResNet: stem without ReLU, Bottleneck stages, biased 1x1 `feature` conv."""

    def __init__(self, layers, feat_dim: int, last_stride: int = 1):
        super().__init__()
        self.inplanes = 64
        self.feat_dim = feat_dim
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(64, layers[0], 1)
        self.layer2 = self._stage(128, layers[1], 2)
        self.layer3 = self._stage(256, layers[2], 2)
        self.layer4 = self._stage(512, layers[3], last_stride)
        if feat_dim != 2048:
            self.feature = nn.Conv2d(2048, feat_dim, 1)

    def _stage(self, planes, blocks, stride):
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * 4),
        )
        stage = [RefBottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        stage += [RefBottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x):
        x = self.maxpool(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.feature(x) if self.feat_dim != 2048 else x


class RefBaseline(nn.Module):
    def __init__(self, layers, feat_dim: int, num_classes: int):
        super().__init__()
        self.base = RefTaoBase(layers, feat_dim)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.bottleneck = nn.BatchNorm1d(feat_dim)
        self.classifier = nn.Linear(feat_dim, num_classes, bias=False)

    def forward(self, x):
        feat = self.bottleneck(self.gap(self.base(x)).flatten(1))
        return feat  # eval, neck_feat "after"


def _calibrated(layers, feat_dim, num_classes=7, seed=0) -> RefBaseline:
    torch.manual_seed(seed)
    model = RefBaseline(layers, feat_dim, num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.momentum = None  # cumulative average over the calibration batches
            if isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.uniform_(-0.5, 0.5)
        model.train()
        for _ in range(3):
            model(torch.randn(8, 3, HEIGHT, WIDTH))
    return model.eval()


def _images(count=6, seed=1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, HEIGHT, WIDTH, generator=generator)


def _centred_cosines(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    # Random networks map every image to nearly one direction: compare what depends on the image.
    mean = reference.mean(0, keepdims=True)
    a, b = ours - mean, reference - mean
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _assert_same(ours: np.ndarray, reference: np.ndarray) -> None:
    scale = np.abs(reference).max()
    assert np.abs(ours - reference).max() <= 1e-4 * scale
    assert _centred_cosines(ours, reference).min() > 0.99999


def _tao_spec(tmp_path, **model):
    overrides = [f"model.input_height={HEIGHT}", f"model.input_width={WIDTH}"]
    overrides += [f"model.{key}={value}" for key, value in model.items()]
    return load_spec(None, [*overrides, f"results_dir={tmp_path / 'results'}"])


def _save_lightning(model: RefBaseline, path, prefix="model.") -> None:
    state = {prefix + key: value for key, value in model.state_dict().items()}
    torch.save({"epoch": 119, "global_step": 1000, "state_dict": state}, path)


def _export_onnx(model: nn.Module, path, fold: bool) -> None:
    torch.onnx.export(
        model,
        (torch.zeros(2, 3, HEIGHT, WIDTH),),
        str(path),
        input_names=["input"],
        output_names=["fc_pred"],
        dynamic_axes={"input": {0: "batch"}, "fc_pred": {0: "batch"}},
        opset_version=17,
        do_constant_folding=fold,
        dynamo=False,
    )


def _reidnet_embeddings(checkpoint: dict, images: torch.Tensor) -> np.ndarray:
    model = ckpt.model_from_checkpoint(checkpoint)
    with torch.no_grad():
        return model(images).numpy()


CASES = [
    pytest.param(((3, 4, 6, 3), 256, "resnet_50"), id="resnet_50-feat256"),
    pytest.param(((2, 2, 2, 2), 128, "resnet_18"), id="resnet_18-bottleneck-feat128"),
]


@pytest.fixture(scope="module", params=CASES)
def tao_model(request, tmp_path_factory):
    layers, feat_dim, backbone = request.param
    folder = tmp_path_factory.mktemp(backbone)
    model = _calibrated(layers, feat_dim)
    pth = folder / "tao_model.pth"
    _save_lightning(model, pth)
    with torch.no_grad():
        reference = model(_images()).numpy()
    return {
        "model": model,
        "pth": pth,
        "folder": folder,
        "reference": reference,
        "backbone": backbone,
        "feat_dim": feat_dim,
    }


def test_tao_checkpoint_embeds_as_tao(tao_model, tmp_path):
    spec = _tao_spec(tmp_path)
    checkpoint = ckpt.load_checkpoint(tao_model["pth"], "evaluate.checkpoint", spec)
    architecture = Architecture.from_checkpoint(checkpoint)
    assert architecture.network == "tao"
    assert architecture.backbone == tao_model["backbone"]
    assert architecture.feat_dim == tao_model["feat_dim"]
    assert checkpoint["num_classes"] == 7
    _assert_same(_reidnet_embeddings(checkpoint, _images()), tao_model["reference"])


def test_torchvision_network_would_embed_differently(tao_model, tmp_path):
    """The check above can fail: the same weights in torchvision's stem (with its ReLU) give
    other embeddings, which is what loading TAO weights into the wrong network did."""
    spec = _tao_spec(tmp_path)
    checkpoint = ckpt.load_checkpoint(tao_model["pth"], "evaluate.checkpoint", spec)
    model = ckpt.model_from_checkpoint(checkpoint)
    model.backbone.bn1.register_forward_hook(lambda _m, _i, output: torch.relu(output))
    with torch.no_grad():
        stem_relu = model(_images()).numpy()
    assert _centred_cosines(stem_relu, tao_model["reference"]).min() < 0.999


@pytest.mark.parametrize("fold", [True, False], ids=["bn-folded", "bn-separate"])
def test_convert_onnx_embeds_as_tao(tao_model, tmp_path, fold):
    onnx_file = tmp_path / "tao.onnx"
    _export_onnx(tao_model["model"], onnx_file, fold)
    ops = [node.op_type for node in onnx.load(str(onnx_file)).graph.node]
    # Folding removes every trunk BatchNormalization; the BNNeck (after pooling) stays.
    assert ops.count("BatchNormalization") == (1 if fold else ops.count("Conv"))
    target, architecture = convert(onnx_file, tmp_path / "converted.pth", _tao_spec(tmp_path))
    assert architecture.network == "tao"
    assert architecture.feat_dim == tao_model["feat_dim"]
    assert architecture.last_stride == 1
    assert architecture.input_size == (HEIGHT, WIDTH)
    checkpoint = ckpt.load_checkpoint(target)
    _assert_same(_reidnet_embeddings(checkpoint, _images()), tao_model["reference"])


def test_tao_checkpoint_exports_and_embedder_reads_it(tao_model, tmp_path):
    """A TAO .pth through `reidnet export` (parity-checked) and the Embedder, both as TAO."""
    from reidnet.actions import export

    spec = _tao_spec(tmp_path)
    spec.export.checkpoint = str(tao_model["pth"])
    outcome = export(spec)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(outcome.onnx_file))
    exported = session.run(["fc_pred"], {"input": _images().numpy()})[0]
    _assert_same(exported, tao_model["reference"])

    converted, _ = convert(outcome.onnx_file, tmp_path / "again.pth", spec)
    embedder = Embedder.from_file(converted, device="cpu")
    assert embedder.feat_dim == tao_model["feat_dim"]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from reidnet.datatools.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic_dataset(
        root, identities=6, test_identities=2, cameras=2, images_per_identity=4, size=(64, 32)
    )
    return root


@pytest.mark.parametrize("source", ["tao-pth", "converted-onnx"])
def test_fine_tune_from_tao_checkpoint_builds_tao_network(
    tao_model, tmp_path, tiny_dataset, source
):
    """pretrain_choice self with a TAO file, or with `convert` of TAO's ONNX (no classifier): the
    trainer builds TAO's network from the file, and one training step runs."""
    from reidnet.training.trainer import TrainingRun

    pretrained = tao_model["pth"]
    if source == "converted-onnx":
        _export_onnx(tao_model["model"], tmp_path / "tao.onnx", fold=True)
        pretrained, _ = convert(
            tmp_path / "tao.onnx", tmp_path / "converted.pth", _tao_spec(tmp_path)
        )
    spec = load_spec(
        None,
        [
            f"results_dir={tmp_path / 'results'}",
            f"dataset.train_dataset_dir={tiny_dataset / 'bounding_box_train'}",
            "model.pretrain_choice=self",
            f"model.pretrained_model_path={pretrained}",
            f"model.input_height={HEIGHT}",
            f"model.input_width={WIDTH}",
            "dataset.batch_size=8",
            "dataset.num_workers=0",
        ],
    )
    run = TrainingRun(spec, device="cpu")
    try:
        assert run.model.network == "tao"
        assert run.spec.model.feat_dim == tao_model["feat_dim"]
        with torch.no_grad():
            ours = run.model.eval()(_images()).numpy()
        _assert_same(ours, tao_model["reference"])
        assert run.model.classifier.out_features == 4  # 6 identities, 2 held out for test
        run.spec.train.num_epochs = 1
        assert np.isfinite(run.fit().history[0]["loss_total"])
    finally:
        run.close()


def test_encrypted_tao_checkpoint_is_refused_clearly(tmp_path):
    path = tmp_path / "encrypted.tlt"
    torch.save({"state_dict": b"\x00\x01ciphertext", "state_dict_encrypted": True}, path)
    with pytest.raises(ReidnetError, match=r"encrypted TAO checkpoint.*reidnet convert"):
        ckpt.load_checkpoint(path, "evaluate.checkpoint")
    spec = load_spec(None, ["model.pretrain_choice=self", f"model.pretrained_model_path={path}"])
    from reidnet.model.weights import load_state_dict_file

    with pytest.raises(ReidnetError, match="encryption_key"):
        load_state_dict_file(spec.model.pretrained_model_path)


def test_tao_weights_refused_by_torchvision_network(tao_model):
    """Loading TAO's biased projection into a bias-free network is an error, not a skip."""
    from reidnet.model import ReIdentificationNet

    model = ReIdentificationNet(
        tao_model["backbone"], num_classes=7, feat_dim=tao_model["feat_dim"], network="tao"
    )
    model.load_reid_state(torch.load(tao_model["pth"])["state_dict"], strict_classifier=True)
    plain = ReIdentificationNet("resnet_50", num_classes=7, feat_dim=tao_model["feat_dim"])
    if tao_model["backbone"] == "resnet_50":
        with pytest.raises(ReidnetError, match=r"projection\.bias has no place"):
            plain.load_reid_state(torch.load(tao_model["pth"])["state_dict"], True)


def test_convert_refuses_existing_target_and_non_reid_graph(tmp_path):
    target = tmp_path / "out.pth"
    target.write_bytes(b"keep me")
    source = tmp_path / "model.onnx"
    buffer = io.BytesIO()
    torch.onnx.export(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()),
        (torch.zeros(1, 3, 8, 8),),
        buffer,
        dynamo=False,
    )
    source.write_bytes(buffer.getvalue())
    with pytest.raises(ReidnetError, match="--force"):
        convert(source, target, load_spec(None, []))
    assert target.read_bytes() == b"keep me"
    with pytest.raises(ReidnetError, match="trunk convolutions"):
        convert(source, target, load_spec(None, []), force=True)
    assert target.read_bytes() == b"keep me"


def test_evaluate_inference_and_embedder_embed_in_fp32_unless_asked(tao_model, tmp_path):
    """bf16 autocast is opt-in (`evaluate.amp`, `inference.amp`, `Embedder(amp=True)`)."""
    from reidnet.actions import action_backend
    from reidnet.runtime import torch_backend
    from reidnet.runtime.retrieval import embed_for_spec

    seen = []
    real = torch_backend.autocast_for

    def recording(device, enabled=True):
        seen.append(enabled)
        return real(device, enabled)

    spec = _tao_spec(tmp_path)
    spec.evaluate.checkpoint = str(tao_model["pth"])
    backend = action_backend(spec, "evaluate", device="cpu")
    image = write_image(tmp_path / "0001_c1s1_000001_00.jpg", size=(HEIGHT, WIDTH))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_backend, "autocast_for", recording)
        embed_for_spec(backend, [image], spec)
        spec.inference.checkpoint = str(tao_model["pth"])
        spec.inference.amp = True
        embed_for_spec(action_backend(spec, "inference", device="cpu"), [image], spec)
        Embedder.from_file(tao_model["pth"], device="cpu").embed([image])
        Embedder.from_file(tao_model["pth"], device="cpu", amp=True).embed([image])
    assert seen == [False, True, False, True]
