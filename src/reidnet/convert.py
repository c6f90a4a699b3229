"""`reidnet convert`: a reidnet checkpoint from a TAO checkpoint or from a TAO-layout ONNX graph.

The ONNX case is NVIDIA's deployable ReIdentificationNet (`resnet50_market1501_aicity156.onnx`:
input `input` [N,3,256,128], output `fc_pred`, exported by torch), with or without BatchNorm
folded into the convolutions. Its architecture is read from the graph itself: the number of
convolutions gives the depth, a ReLU (or not) between the stem and its max-pool the network, the
stride of layer4's first 3x3 convolution the last stride, a final 1x1 convolution the feat_dim and
a BatchNormalization after the pooling the BNNeck. A graph with depthwise (grouped) convolutions
is read as reidnet's mobilenet_v2 (52 trunk convolutions, then an optional projection; the stride
of features.14's depthwise convolution is the last stride). The weights are then matched
convolution by
convolution in execution order (the order the exporter writes), each pair checked by shape and
stride, so a graph of any other layout is refused instead of loaded wrongly.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reidnet.contracts import Architecture
from reidnet.errors import ReidnetError

logger = logging.getLogger(__name__)

# Convolutions of each trunk (stem + blocks + shortcut convolutions), by network and depth.
_TRUNK_CONVS = {
    "tao": {29: "resnet_18", 53: "resnet_50", 104: "resnet_101", 155: "resnet_152"},
    "torchvision": {
        20: "resnet_18",
        36: "resnet_34",
        53: "resnet_50",
        104: "resnet_101",
        155: "resnet_152",
    },
}
_MOBILENET_V2_CONVS = 52  # stem, 2 in features.1, 3 in each of features.2..17, features.18
# The trunk convolution whose stride is the last stride (the shortcut conv of a ResNet's layer4
# carries it for Bottleneck and BasicBlock alike).
_LAST_STRIDE_CONV = {"mobilenet_v2": "features.14.conv.1.0", "resnet": "layer4.0.downsample.0"}
_BN_EPS = 1e-5  # torch's BatchNorm default, which reidnet's modules use


@dataclass
class _Conv:
    """One Conv node with its constants, and the BatchNormalization right after it, if any."""

    name: str
    weight: np.ndarray
    bias: np.ndarray | None
    strides: tuple[int, ...]
    batch_norm: dict[str, Any] | None


def convert(
    source: str | Path, target: str | Path, spec, force: bool = False
) -> tuple[Path, Architecture]:
    """Write the reidnet checkpoint of `source` (TAO .pth/.tlt/.ckpt, or .onnx) to `target`."""
    from reidnet.runtime.checkpoint import load_checkpoint
    from reidnet.utils.atomic import atomic_torch_save

    source, target = Path(source), Path(target)
    if not source.is_file():
        raise ReidnetError(f"{source} does not exist: give a TAO checkpoint or ONNX file")
    if target.exists() and not force:
        raise ReidnetError(f"{target} exists: pass --force to replace it, or pick another path")
    if source.suffix.lower() == ".onnx":
        checkpoint = checkpoint_from_onnx(source, spec)
    else:
        checkpoint = load_checkpoint(source, "convert SOURCE", spec)
    _check_loads(checkpoint)
    atomic_torch_save(checkpoint, target)
    return target, Architecture.from_checkpoint(checkpoint, source)


def _check_loads(checkpoint: dict[str, Any]) -> None:
    from reidnet.runtime.checkpoint import model_from_checkpoint

    model_from_checkpoint(checkpoint)  # raises when the weights do not fit the architecture


def checkpoint_from_onnx(path: Path, spec) -> dict[str, Any]:
    """The reidnet checkpoint dict of a TAO-layout (or reidnet-exported) ONNX graph."""
    import onnx

    from reidnet.contracts import checkpoint_header
    from reidnet.model import ReIdentificationNet

    try:
        model_proto = onnx.load(str(path))
    except Exception as error:
        raise ReidnetError(f"{path} cannot be read as ONNX ({type(error).__name__})") from None
    graph = model_proto.graph
    reader = _GraphReader(graph)
    convs = reader.convs()
    if reader.has_grouped_convs():
        backbone, network, channels = "mobilenet_v2", "torchvision", 1280
        projection = convs.pop() if len(convs) == _MOBILENET_V2_CONVS + 1 else None
        if len(convs) != _MOBILENET_V2_CONVS:
            raise ReidnetError(
                f"{path} has depthwise convolutions but {len(convs)} trunk convolutions where "
                f"reidnet's mobilenet_v2 has {_MOBILENET_V2_CONVS}: not a reidnet MobileNetV2 "
                "graph (graphs exported with the flip feature are not read: export without it)"
            )
    else:
        backbone, network, projection = _resnet_layout(reader, convs, spec, path)
        channels = 2048 if network == "tao" or backbone not in ("resnet_18", "resnet_34") else 512
    feat_dim = int(projection.weight.shape[0]) if projection is not None else channels
    neck = reader.neck_batch_norm()
    height, width = reader.input_size(spec)
    metadata = {prop.key: prop.value for prop in model_proto.metadata_props}
    mean = _json_list(metadata.get("pixel_mean")) or list(spec.dataset.pixel_mean)
    std = _json_list(metadata.get("pixel_std")) or list(spec.dataset.pixel_std)

    order = _trunk_conv_order(backbone, network)
    family = "mobilenet_v2" if backbone == "mobilenet_v2" else "resnet"
    last_stride = convs[order.index(_LAST_STRIDE_CONV[family])].strides[0]
    architecture = Architecture(
        backbone=backbone,
        network=network,
        feat_dim=feat_dim,
        last_stride=int(last_stride),
        neck="bnneck",
        neck_feat="after" if neck is not None else "before",
        with_flip_feature=False,
        input_height=height,
        input_width=width,
        pixel_mean=tuple(mean),
        pixel_std=tuple(std),
    )
    model = ReIdentificationNet.from_architecture(architecture, num_classes=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for module_name, conv in zip(order, convs, strict=True):
        _load_conv(state, f"backbone.{module_name}", conv, path)
    if projection is not None:
        _load_projection(state, projection, network, path)
    if neck is not None:
        for ours, theirs in (("weight", "scale"), ("bias", "B")):
            state[f"bnneck.{ours}"] = torch.from_numpy(neck[theirs].copy())
        state["bnneck.running_mean"] = torch.from_numpy(neck["mean"].copy())
        state["bnneck.running_var"] = torch.from_numpy(neck["var"] + neck["epsilon"] - _BN_EPS)
    header = checkpoint_header(
        epoch=0, spec_dict=spec.model_dump(mode="json"), identity_keys=[], architecture=architecture
    )
    logger.info(
        "%s: %s (%s network), feat_dim %d, last_stride %d, %s BatchNorm, %dx%d input",
        path,
        backbone,
        network,
        feat_dim,
        last_stride,
        "folded" if convs[0].batch_norm is None else "separate",
        height,
        width,
    )
    return {**header, "model": state, "source": {"format": "onnx", "file": str(path)}}


def _resnet_layout(reader, convs: list, spec, path: Path) -> tuple[str, str, _Conv | None]:
    """Depth, network and projection of a ResNet graph (pops the projection off ``convs``)."""
    network = "torchvision" if reader.stem_has_relu() else "tao"
    projection = convs.pop() if reader.ends_in_projection(convs[-1] if convs else None) else None
    backbone = _TRUNK_CONVS[network].get(len(convs))
    if backbone is None:
        raise ReidnetError(
            f"{path} has {len(convs)} trunk convolutions, which matches no {network} ResNet "
            f"({', '.join(f'{n}: {c}' for c, n in _TRUNK_CONVS[network].items())}); is it a "
            "ReIdentificationNet graph? (graphs exported with the flip feature are not read: "
            "export without it)"
        )
    if backbone == "resnet_50" and spec.model.backbone == "resnet_34" and network == "tao":
        backbone = "resnet_34"  # the same network in TAO
    return backbone, network, projection


def _trunk_conv_order(backbone: str, network: str) -> list[str]:
    """The trunk's convolution module names in the order its forward runs them."""
    from reidnet.model.backbone import build_backbone

    trunk, _ = build_backbone(backbone, last_stride=1, network=network)
    order: list[str] = []
    hooks = [
        module.register_forward_hook(lambda *_, name=name: order.append(name))
        for name, module in trunk.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    with torch.no_grad():
        trunk.eval()(torch.zeros(1, 3, 64, 32))
    for hook in hooks:
        hook.remove()
    return order


def _batch_norm_name(conv_name: str) -> str:
    """The BatchNorm that follows a trunk convolution: conv1 -> bn1, downsample.0 -> .1, and in
    MobileNetV2 the next index of the same Sequential (features.1.conv.1 -> features.1.conv.2)."""
    if conv_name.startswith("backbone.features."):
        head, index = conv_name.rsplit(".", 1)
        return f"{head}.{int(index) + 1}"
    if conv_name.endswith("downsample.0"):
        return conv_name[: -len("0")] + "1"
    return re.sub(r"conv(\d)$", r"bn\1", conv_name)


def _load_conv(state: dict, name: str, conv: _Conv, path: Path) -> None:
    weight_key, bn = f"{name}.weight", _batch_norm_name(name)
    expected = tuple(state[weight_key].shape)
    if tuple(conv.weight.shape) != expected:
        raise ReidnetError(
            f"{path}: convolution {conv.name} has weights {tuple(conv.weight.shape)} where "
            f"{name} needs {expected}: the graph's layout is not a ReIdentificationNet ResNet"
        )
    state[weight_key] = torch.from_numpy(conv.weight.copy())
    bias = conv.bias if conv.bias is not None else np.zeros(expected[0], np.float32)
    if conv.batch_norm is None:
        # BatchNorm folded into the convolution: an identity BatchNorm carrying the bias
        # (var + eps = 1) gives the same output.
        state[f"{bn}.weight"] = torch.ones(expected[0])
        state[f"{bn}.bias"] = torch.from_numpy(bias.copy())
        state[f"{bn}.running_mean"] = torch.zeros(expected[0])
        state[f"{bn}.running_var"] = torch.full((expected[0],), 1.0 - _BN_EPS)
    else:
        norm = conv.batch_norm
        state[f"{bn}.weight"] = torch.from_numpy(norm["scale"].copy())
        state[f"{bn}.bias"] = torch.from_numpy(norm["B"].copy())
        state[f"{bn}.running_mean"] = torch.from_numpy(norm["mean"] - bias)
        state[f"{bn}.running_var"] = torch.from_numpy(norm["var"] + norm["epsilon"] - _BN_EPS)


def _load_projection(state: dict, projection: _Conv, network: str, path: Path) -> None:
    state["projection.weight"] = torch.from_numpy(projection.weight.copy())
    if network == "tao":
        bias = projection.bias if projection.bias is not None else np.zeros(len(projection.weight))
        state["projection.bias"] = torch.from_numpy(bias.astype(np.float32))
    elif projection.bias is not None and np.any(projection.bias):
        raise ReidnetError(
            f"{path}: the final projection has a bias but the stem has a ReLU: this mix is "
            "neither TAO's network nor torchvision's"
        )


def _json_list(text: str | None) -> list[float] | None:
    import json

    return [float(v) for v in json.loads(text)] if text else None


class _GraphReader:
    """Constants and node relations of an ONNX graph, for reading a ResNet out of it."""

    def __init__(self, graph) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            if node.op_type == "Constant":
                for attribute in node.attribute:
                    if attribute.name == "value":
                        self.constants[node.output[0]] = numpy_helper.to_array(attribute.t)
            elif node.op_type == "Identity" and node.input[0] in self.constants:
                self.constants[node.output[0]] = self.constants[node.input[0]]
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def _constant(self, name: str) -> np.ndarray:
        if name not in self.constants:
            raise ReidnetError(f"ONNX value {name!r} is not a constant: weights must be stored")
        return np.asarray(self.constants[name], dtype=np.float32)

    def _only_consumer(self, output: str):
        nodes = self.consumers.get(output, [])
        return nodes[0] if len(nodes) == 1 else None

    def convs(self) -> list[_Conv]:
        convs = []
        for node in self.graph.node:
            if node.op_type != "Conv":
                continue
            attributes = {a.name: list(a.ints) for a in node.attribute}
            after = self._only_consumer(node.output[0])
            norm = None
            if after is not None and after.op_type == "BatchNormalization":
                norm = self._batch_norm(after)
            has_bias = len(node.input) > 2 and node.input[2]
            convs.append(
                _Conv(
                    node.name or node.output[0],
                    self._constant(node.input[1]),
                    self._constant(node.input[2]) if has_bias else None,
                    tuple(attributes.get("strides", [1, 1])),
                    norm,
                )
            )
        if not convs:
            raise ReidnetError("the ONNX graph has no convolution: not a ResNet ReID model")
        return convs

    def _batch_norm(self, node) -> dict[str, Any]:
        values = dict(zip(("scale", "B", "mean", "var"), node.input[1:5], strict=True))
        norm: dict[str, Any] = {key: self._constant(name) for key, name in values.items()}
        norm["epsilon"] = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        norm["output"] = node.output[0]
        return norm

    def _after(self, node):
        """The node after a Conv, skipping its BatchNormalization."""
        nxt = self._only_consumer(node.output[0])
        if nxt is not None and nxt.op_type == "BatchNormalization":
            nxt = self._only_consumer(nxt.output[0])
        return nxt

    def has_grouped_convs(self) -> bool:
        """Depthwise convolutions: a MobileNet, not a ResNet."""
        return any(
            attribute.name == "group" and attribute.i > 1
            for node in self.graph.node
            if node.op_type == "Conv"
            for attribute in node.attribute
        )

    def stem_has_relu(self) -> bool:
        stem = next(n for n in self.graph.node if n.op_type == "Conv")
        nxt = self._after(stem)
        return nxt is not None and nxt.op_type == "Relu"

    def ends_in_projection(self, last: _Conv | None) -> bool:
        """The last Conv is a projection unless it ends a residual block (feeds an Add)."""
        if last is None:
            return False
        node = next(n for n in self.graph.node if (n.name or n.output[0]) == last.name)
        nxt = self._after(node)
        return nxt is None or nxt.op_type != "Add"

    def neck_batch_norm(self) -> dict[str, Any] | None:
        """The BNNeck: a BatchNormalization that does not follow a Conv (it follows pooling)."""
        conv_outputs = {n.output[0] for n in self.graph.node if n.op_type == "Conv"}
        for node in reversed(self.graph.node):
            if node.op_type == "BatchNormalization" and node.input[0] not in conv_outputs:
                return self._batch_norm(node)
        return None

    def input_size(self, spec) -> tuple[int, int]:
        dims = self.graph.input[0].type.tensor_type.shape.dim
        if len(dims) == 4 and dims[2].dim_value > 0 and dims[3].dim_value > 0:
            return int(dims[2].dim_value), int(dims[3].dim_value)
        return spec.model.input_height, spec.model.input_width
