"""ResNet trunks for re-identification: torchvision's conv1..layer4, an optional stride-1 last
stage, and ImageNet weights read from a local file only (training machines are often offline).

Two networks share these names. ``torchvision`` is torchvision's ResNet (BasicBlock for depths 18
and 34, a ReLU after the stem's bn1): the network its ImageNet weights were trained as. ``tao`` is
the trunk of NVIDIA TAO's ReIdentificationNet (and of the strong baseline it comes from): no ReLU
after bn1 (the baseline's commented-out "missed relu"), and Bottleneck blocks at every depth, so
its resnet_18 is Bottleneck x [2, 2, 2, 2] and its resnet_34 the same network as its resnet_50,
all with 2048 output channels. TAO checkpoints only embed as TAO computes with the ``tao`` trunk.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models import WeightsEnum

from reidnet.errors import ReidnetError

logger = logging.getLogger(__name__)

PRETRAIN_CHOICES = ("imagenet", "self", "none")
NETWORKS = ("torchvision", "tao")

# Bottleneck blocks per stage of TAO's trunk, by its backbone names (TAO's Baseline passes
# block=Bottleneck whatever the depth).
TAO_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "resnet_18": (2, 2, 2, 2),
    "resnet_34": (3, 4, 6, 3),
    "resnet_50": (3, 4, 6, 3),
    "resnet_101": (3, 4, 23, 3),
    "resnet_152": (3, 8, 36, 3),
}

# Prefixes that wrappers put in front of the trunk's own keys: DDP ("module."), the reference's
# Baseline ("base."), Lightning modules ("model."), torch.compile ("_orig_mod."), other toolkits.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "base.")


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one ResNet depth: torchvision builder, its ImageNet weights, output channels."""

    builder: Callable[..., tvm.ResNet]
    imagenet_weights: WeightsEnum
    channels: int


BACKBONES: dict[str, BackboneSpec] = {
    "resnet_18": BackboneSpec(tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet_34": BackboneSpec(tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1, 512),
    "resnet_50": BackboneSpec(tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, 2048),
    "resnet_101": BackboneSpec(tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1, 2048),
    "resnet_152": BackboneSpec(tvm.resnet152, tvm.ResNet152_Weights.IMAGENET1K_V1, 2048),
}


def build_backbone(
    name: str,
    last_stride: int = 1,
    pretrain_choice: str = "none",
    pretrained_model_path: str | os.PathLike[str] | None = None,
    network: str = "torchvision",
) -> tuple[nn.Module, int]:
    """Return the trunk mapping images [N,3,H,W] to feature maps [N,C,h,w], and C.

    The trunk is an ``nn.Sequential`` whose children keep torchvision's names (conv1, bn1, relu,
    maxpool, layer1..layer4), so torchvision state dicts load into it key for key; the ``tao``
    network has no ``relu`` child (it has no parameters, so the keys are the same). With
    ``last_stride=1`` layer4 keeps the resolution of layer3 (16x8 maps at 256x128 input).
    ``pretrain_choice="imagenet"`` loads ImageNet weights; "self" and "none" leave the trunk
    randomly initialised ("self" checkpoints hold the whole network and are loaded by the caller).
    """
    spec = _backbone_spec(name)
    if network not in NETWORKS:
        raise ReidnetError(f"model.network must be one of {', '.join(NETWORKS)}, got {network!r}.")
    if last_stride not in (1, 2):
        raise ReidnetError(f"model.last_stride must be 1 or 2, got {last_stride!r}.")
    if pretrain_choice not in PRETRAIN_CHOICES:
        raise ReidnetError(
            f"model.pretrain_choice must be one of {', '.join(PRETRAIN_CHOICES)}, "
            f"got {pretrain_choice!r}."
        )
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
    if pretrain_choice == "imagenet":
        weights_file = imagenet_weights_file(name, pretrained_model_path)
        load_trunk_weights(trunk, load_state_dict_file(weights_file), name, weights_file)
    return trunk, channels


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


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the tensors of a ``.pth`` state dict or of a checkpoint dict that nests one.

    Checkpoints are unwrapped through their "state_dict" / "model" entries (reidnet, Lightning,
    TAO and most training scripts save one of these). Non-tensor entries are dropped. Only data
    is unpickled (``weights_only``, plus numpy arrays): a file that needs arbitrary code is
    refused.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(safe_numpy_globals()):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ReidnetError(f"checkpoint {str(path)!r} does not exist.") from None
    except Exception as exc:
        raise ReidnetError(
            f"cannot read {str(path)!r} as a PyTorch state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). If it is a checkpoint holding "
            f"Python objects from a source you trust, re-save only its state dict with "
            f"torch.save(torch.load(path, weights_only=False)['state_dict'], new_path)."
        ) from exc
    from reidnet.model.tao import refuse_encrypted

    refuse_encrypted(content, path)
    content = _unwrap_checkpoint(content)
    if not isinstance(content, Mapping):
        raise ReidnetError(
            f"{str(path)!r} holds a {type(content).__name__}, not a state dict of tensors."
        )
    return {key: value for key, value in content.items() if isinstance(value, torch.Tensor)}


def safe_numpy_globals() -> list[object]:
    """What unpickling plain numpy arrays and scalars needs (training checkpoints store the
    numpy RNG state and metric values); data only, nothing that runs code."""
    import numpy as np

    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    dtype_classes = [getattr(dtypes, name) for name in dtypes.__all__] if dtypes else []
    return [reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def _unwrap_checkpoint(content: object) -> object:
    """Descend through "state_dict" / "model" entries until the tensors are reached."""
    while isinstance(content, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
        else:
            return content
    return content


def strip_wrapper_prefixes(key: str, prefixes: tuple[str, ...] = _WRAPPER_PREFIXES) -> str:
    """Remove every leading wrapper prefix ("module.", "base.", ...) from a state-dict key."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def load_trunk_weights(
    trunk: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    name: str,
    source: str | os.PathLike[str],
) -> int:
    """Copy every tensor of ``state_dict`` whose key and shape match the trunk; return the count.

    The ImageNet classifier (``fc.*``) is ignored. Anything else left out is logged, and a file
    that matches nothing at all is an error (it is not a checkpoint of this backbone).
    """
    own = trunk.state_dict()
    matched: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    wrong_shape: list[str] = []
    for key, tensor in state_dict.items():
        key = strip_wrapper_prefixes(key)
        if key.startswith("fc."):
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
    trunk.load_state_dict(matched, strict=False)
    missing = [key for key in own if key not in matched]
    logger.info("%s: loaded %d of %d trunk tensors from %s", name, len(matched), len(own), source)
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shape)):
        if keys:
            shown = ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "")
            logger.warning("%s: %d %s key(s) not loaded: %s", source, len(keys), label, shown)
    return len(matched)
