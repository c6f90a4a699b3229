"""Trunks for re-identification: torchvision's ResNet conv1..layer4 and MobileNetV2 ``features``,
an optional stride-1 last stage, and ImageNet weights read from a local file only (training
machines are often offline).

Two networks share these names. ``torchvision`` is torchvision's ResNet (BasicBlock for depths 18
and 34, a ReLU after the stem's bn1): the network its ImageNet weights were trained as. ``tao`` is
the trunk of NVIDIA TAO's ReIdentificationNet (and of the strong baseline it comes from): no ReLU
after bn1 (the baseline's commented-out "missed relu"), and Bottleneck blocks at every depth, so
its resnet_18 is Bottleneck x [2, 2, 2, 2] and its resnet_34 the same network as its resnet_50,
all with 2048 output channels. TAO checkpoints only embed as TAO computes with the ``tao`` trunk.

``mobilenet_v2`` is torchvision's MobileNetV2 ``features`` (1280 channels), the light trunk edge
deployments ask for; TAO has no such network, so it exists only as ``torchvision``. Its ImageNet
weights load from torchvision's current key layout and from the older one (before the
Conv2dNormActivation wrapper), by the explicit rules of ``MOBILENET_V2_LEGACY_RULES``.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models import WeightsEnum

from reidnet.contracts import Backbone, LastStride, Network, PretrainChoice
from reidnet.errors import ReidnetError
from reidnet.model.weights import load_state_dict_file, strip_wrapper_prefixes

logger = logging.getLogger(__name__)


# Bottleneck blocks per stage of TAO's trunk, by its backbone names (TAO's Baseline passes
# block=Bottleneck whatever the depth).
TAO_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "resnet_18": (2, 2, 2, 2),
    "resnet_34": (3, 4, 6, 3),
    "resnet_50": (3, 4, 6, 3),
    "resnet_101": (3, 4, 23, 3),
    "resnet_152": (3, 8, 36, 3),
}


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one trunk: torchvision builder, its ImageNet weights, output channels, and
    the family that says how the trunk is cut out of the torchvision model."""

    builder: Callable[..., nn.Module]
    imagenet_weights: WeightsEnum
    channels: int
    family: str = "resnet"


BACKBONES: dict[str, BackboneSpec] = {
    "resnet_18": BackboneSpec(tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet_34": BackboneSpec(tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1, 512),
    "resnet_50": BackboneSpec(tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, 2048),
    "resnet_101": BackboneSpec(tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1, 2048),
    "resnet_152": BackboneSpec(tvm.resnet152, tvm.ResNet152_Weights.IMAGENET1K_V1, 2048),
    "mobilenet_v2": BackboneSpec(
        tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1, 1280, "mobilenet_v2"
    ),
}

# torchvision's older MobileNetV2 layout kept each InvertedResidual as one flat Sequential (conv,
# BN, ReLU6, conv, BN, ReLU6, conv, BN); today the first convs sit in Conv2dNormActivation
# wrappers. Old index -> current path inside ``features.N.conv``, for the blocks without an
# expansion conv (features.1, expand ratio 1) and with one (features.2..17). The stem
# (features.0) and the last 1x1 conv (features.18) kept their keys.
MOBILENET_V2_LEGACY_RULES: dict[str, dict[int, str]] = {
    "no_expansion": {0: "0.0", 1: "0.1", 3: "1", 4: "2"},
    "expansion": {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"},
}
_LEGACY_BLOCK_KEY = re.compile(r"^features\.(\d+)\.conv\.(\d+)\.(\w+)$")


def build_backbone(
    name: Backbone,
    last_stride: LastStride = 1,
    pretrain_choice: PretrainChoice = "none",
    pretrained_model_path: str | os.PathLike[str] | None = None,
    network: Network = "torchvision",
) -> tuple[nn.Module, int]:
    """Return the trunk mapping images [N,3,H,W] to feature maps [N,C,h,w], and C.

    The trunk is an ``nn.Sequential`` whose children keep torchvision's names (conv1, bn1, relu,
    maxpool, layer1..layer4), so torchvision state dicts load into it key for key; the ``tao``
    network has no ``relu`` child (it has no parameters, so the keys are the same). With
    ``last_stride=1`` layer4 keeps the resolution of layer3 (16x8 maps at 256x128 input).
    ``mobilenet_v2``'s trunk is one child, ``features``, as in torchvision's MobileNetV2.
    ``pretrain_choice="imagenet"`` loads ImageNet weights; "self" and "none" leave the trunk
    randomly initialised ("self" checkpoints hold the whole network and are loaded by the caller).
    """
    spec = _backbone_spec(name)
    if spec.family == "mobilenet_v2":  # torchvision's network only (the spec checks)
        trunk, channels = _mobilenet_v2_trunk(spec, last_stride), spec.channels
    else:
        trunk, channels = _resnet_trunk(name, spec, last_stride, network)
    if pretrain_choice == "imagenet":
        weights_file = imagenet_weights_file(name, pretrained_model_path)
        load_trunk_weights(trunk, load_state_dict_file(weights_file), name, weights_file)
    return trunk, channels


def _resnet_trunk(
    name: str, spec: BackboneSpec, last_stride: int, network: str
) -> tuple[nn.Sequential, int]:
    if network == "tao":
        resnet = tvm.resnet.ResNet(tvm.resnet.Bottleneck, list(TAO_LAYERS[name]))
        children = ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4")
        channels = 2048
    else:
        resnet = spec.builder(weights=None)
        children = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        channels = spec.channels
    if last_stride == 1:
        _set_last_stride_one(resnet)
    trunk = nn.Sequential(OrderedDict((child, getattr(resnet, child)) for child in children))
    return trunk, channels


def _mobilenet_v2_trunk(spec: BackboneSpec, last_stride: int) -> nn.Sequential:
    """torchvision's MobileNetV2 ``features`` under that name, so its keys load as they are.

    With ``last_stride=1`` the last stride-2 block (features.14, the first 160-channel block)
    runs at stride 1: 256x128 input then gives 16x8 final maps, as layer4 of a stride-1 ResNet.
    """
    features = spec.builder(weights=None).features
    if last_stride == 1:
        strided = [
            block
            for block in features
            if isinstance(block, tvm.mobilenetv2.InvertedResidual) and block.stride == 2
        ]
        last = strided[-1]
        depthwise = next(
            m for m in last.conv.modules() if isinstance(m, nn.Conv2d) and m.groups > 1
        )
        depthwise.stride = (1, 1)
        last.stride = 1  # its input and output widths differ, so it stays without a shortcut
    return nn.Sequential(OrderedDict(features=features))


def _backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ReidnetError(
            f"model.backbone {name!r} is not supported; use one of {', '.join(BACKBONES)}."
        )
    return BACKBONES[name]


def _set_last_stride_one(resnet: tvm.ResNet) -> None:
    # torchvision puts the stride of a block on conv1 (BasicBlock) or conv2 (Bottleneck, the
    # "ResNet v1.5" layout), and on the 1x1 conv of the shortcut.
    first_block = resnet.layer4[0]
    if isinstance(first_block, tvm.resnet.Bottleneck):
        first_block.conv2.stride = (1, 1)
    else:
        first_block.conv1.stride = (1, 1)
    first_block.downsample[0].stride = (1, 1)


def imagenet_weights_file(
    name: str, pretrained_model_path: str | os.PathLike[str] | None = None
) -> Path:
    """Locate the ImageNet weights of ``name`` without downloading anything.

    An explicit ``pretrained_model_path`` wins; otherwise torchvision's own cache
    (``torch.hub.get_dir()/checkpoints/<file name of the weights URL>``) is used.
    """
    weights = _backbone_spec(name).imagenet_weights
    file_name = os.path.basename(urlparse(weights.url).path)
    if pretrained_model_path is not None:
        path = Path(pretrained_model_path).expanduser()
        if not path.is_file():
            raise ReidnetError(
                f"model.pretrained_model_path {str(path)!r} does not exist. For {name} with "
                f"pretrain_choice imagenet it should be torchvision's {file_name} "
                f"(download it from {weights.url})."
            )
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not cached.is_file():
        raise ReidnetError(
            f"ImageNet weights for {name} not found: expected {file_name} at {cached}, and "
            f"reidnet never downloads. Download {weights.url} on a connected machine, then either "
            f"copy it to {cached} or set model.pretrained_model_path to its path "
            f"(or set model.pretrain_choice to none to train from scratch)."
        )
    return cached


def load_trunk_weights(
    trunk: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    name: str,
    source: str | os.PathLike[str],
) -> int:
    """Copy the tensors of ``state_dict`` into the trunk; return the count.

    Keys lose their wrapper prefixes, and MobileNetV2 files in torchvision's older layout are
    renamed by ``MOBILENET_V2_LEGACY_RULES``. The ImageNet classifier (``fc.*``, ``classifier.*``)
    is ignored and other extra keys are logged. Every trunk tensor must be loaded (BatchNorm's
    ``num_batches_tracked`` counters excepted, which older files lack): a file that leaves any
    out, or gives one another shape, is an error listing them, since a half-initialised trunk
    would train silently worse.
    """
    if _backbone_spec(name).family == "mobilenet_v2":
        state_dict = mobilenet_v2_current_keys(state_dict)
    own = trunk.state_dict()
    matched: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    wrong_shape: list[str] = []
    for key, tensor in state_dict.items():
        key = strip_wrapper_prefixes(key)
        if key.startswith(("fc.", "classifier.")):
            continue
        if key not in own:
            unexpected.append(key)
        elif own[key].shape != tensor.shape:
            wrong_shape.append(f"{key} {tuple(tensor.shape)} vs {tuple(own[key].shape)}")
        else:
            matched[key] = tensor
    if not matched:
        raise ReidnetError(
            f"{str(source)!r} holds no weights for {name} (no key and shape matches). Check "
            f"model.pretrained_model_path and model.backbone."
        )
    missing = [key for key in own if key not in matched and not key.endswith("num_batches_tracked")]
    if missing or wrong_shape:
        problems = [f"{len(missing)} trunk tensor(s) not in the file: {_listing(missing)}"]
        if wrong_shape:
            problems.append(f"{len(wrong_shape)} of another shape: {_listing(wrong_shape)}")
        if unexpected:
            problems.append(f"{len(unexpected)} key(s) with no place: {_listing(unexpected)}")
        raise ReidnetError(
            f"{str(source)!r} does not initialise the whole {name} trunk ({'; '.join(problems)}). "
            f"Check model.pretrained_model_path and model.backbone: the file must be "
            f"torchvision's ImageNet {name} state dict."
        )
    trunk.load_state_dict(matched, strict=False)
    logger.info("%s: loaded %d of %d trunk tensors from %s", name, len(matched), len(own), source)
    if unexpected:
        logger.warning(
            "%s: %d key(s) with no place in the trunk ignored: %s",
            source,
            len(unexpected),
            _listing(unexpected),
        )
    return len(matched)


def _listing(keys: list[str], shown: int = 8) -> str:
    return ", ".join(keys[:shown]) + (" ..." if len(keys) > shown else "")


def mobilenet_v2_current_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a MobileNetV2 state dict in torchvision's older layout to the current one.

    The older layout is recognised by a ``features.N.conv.0.weight`` key (today conv.0 is a
    Conv2dNormActivation, so its weight is ``conv.0.0.weight``); a file in the current layout is
    returned unchanged. A block counts as expanded when its old keys reach index 6 (the third
    conv). A block index the rules do not know is an error naming the key.
    """
    keys = {strip_wrapper_prefixes(key): key for key in state_dict}
    if not any(re.fullmatch(r"features\.\d+\.conv\.0\.weight", key) for key in keys):
        return dict(state_dict)
    expanded_blocks = {
        int(match.group(1))
        for key in keys
        if (match := _LEGACY_BLOCK_KEY.match(key)) and int(match.group(2)) >= 6
    }
    renamed = {}
    for key, original in keys.items():
        match = _LEGACY_BLOCK_KEY.match(key)
        if match is None:
            renamed[key] = state_dict[original]
            continue
        block, index, leaf = int(match.group(1)), int(match.group(2)), match.group(3)
        rules = MOBILENET_V2_LEGACY_RULES[
            "expansion" if block in expanded_blocks else "no_expansion"
        ]
        if index not in rules:
            raise ReidnetError(
                f"{original!r} looks like torchvision's older MobileNetV2 layout, but conv "
                f"index {index} holds no parameters there (expected one of "
                f"{sorted(rules)}): the file is not a MobileNetV2 state dict."
            )
        renamed[f"features.{block}.conv.{rules[index]}.{leaf}"] = state_dict[original]
    return renamed
