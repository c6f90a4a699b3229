"""TAO ReIdentificationNet checkpoints: recognise them by their key layout and read them as
reidnet checkpoints, so every action takes them where it takes its own.

TAO (PyTorch Lightning) saves ``{"state_dict": {"model.base.conv1.weight", ...}, "epoch": ...}``:
the trunk under ``base.`` (Bottleneck blocks at every depth, no stem ReLU), the biased 1x1
projection as ``base.feature`` (present when feat_dim is not 2048), the BNNeck as ``bottleneck``
and the bias-free classifier as ``classifier``. A trainable NGC model (``.tlt``) holds the same
state dict, with or without the ``model.`` prefix. What the weights cannot tell (last stride,
neck_feat, flip feature, input size, normalisation) comes from the spec, whose defaults are TAO's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from reidnet.contracts import PIXEL_MEAN, PIXEL_STD, Architecture, checkpoint_header
from reidnet.errors import ReidnetError
from reidnet.model.backbone import TAO_LAYERS
from reidnet.model.weights import load_state_dict_file, safe_numpy_globals

logger = logging.getLogger(__name__)

# Explicit renames, first match wins: TAO's module names -> reidnet's.
_KEY_RULES = (
    ("base.feature.", "projection."),
    ("base.", "backbone."),
    ("bottleneck.", "bnneck."),
    ("classifier.", "classifier."),
)
_WRAPPERS = ("model.", "module.", "_orig_mod.")
_BLOCK_KEY = re.compile(r"^base\.layer([1-4])\.(\d+)\.conv3\.weight$")


def tao_state_dict(content: object) -> dict[str, torch.Tensor] | None:
    """The TAO-named tensors of a loaded file (wrappers stripped), or None if it is not TAO's."""
    if not isinstance(content, Mapping):
        return None
    state = content.get("state_dict", content)
    if not isinstance(state, Mapping):
        return None
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for wrapper in _WRAPPERS:
            if key.startswith(wrapper):
                key = key[len(wrapper) :]
        tensors[key] = value
    # TAO's trunk is Bottleneck at every depth; a BasicBlock "base." trunk is not TAO's network.
    if "base.conv1.weight" not in tensors or "base.layer1.0.conv3.weight" not in tensors:
        return None
    return tensors


def tao_architecture(
    state: Mapping[str, torch.Tensor],
    model_spec,
    path,
    pixel_mean: tuple[float, ...] = PIXEL_MEAN,
    pixel_std: tuple[float, ...] = PIXEL_STD,
) -> Architecture:
    """The architecture fields the weights fix (depth, feat_dim, neck), the rest from the spec
    (the normalisation: the dataset section's, which the model section does not hold)."""
    counts = [0, 0, 0, 0]
    for key in state:
        match = _BLOCK_KEY.match(key)
        if match:
            stage, block = int(match.group(1)) - 1, int(match.group(2))
            counts[stage] = max(counts[stage], block + 1)
    depths = [name for name, layers in TAO_LAYERS.items() if list(layers) == counts]
    if not depths:
        raise ReidnetError(
            f"{path} has a TAO trunk with {counts} Bottleneck blocks per stage, which matches no "
            f"TAO backbone ({', '.join(f'{n} {list(v)}' for n, v in TAO_LAYERS.items())})."
        )
    # TAO's resnet_34 and resnet_50 are one network: keep the spec's name when it is one of them.
    backbone = model_spec.backbone if model_spec.backbone in depths else depths[-1]
    feature = state.get("base.feature.weight")
    feat_dim = int(feature.shape[0]) if feature is not None else 2048
    neck = "bnneck" if "bottleneck.weight" in state else "no"
    return Architecture(
        backbone=backbone,
        network="tao",
        feat_dim=feat_dim,
        last_stride=model_spec.last_stride,
        neck=neck,
        neck_feat=model_spec.neck_feat,
        with_flip_feature=model_spec.with_flip_feature,
        input_height=model_spec.input_height,
        input_width=model_spec.input_width,
        pixel_mean=tuple(float(v) for v in pixel_mean),
        pixel_std=tuple(float(v) for v in pixel_std),
    )


def reidnet_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TAO's tensor names mapped to reidnet's by `_KEY_RULES`; other tensors are left out
    (a neck-less TAO classifier's bias: reidnet's classifier has none, and it never embeds)."""
    mapped = {}
    for key, value in state.items():
        for theirs, ours in _KEY_RULES:
            if key.startswith(theirs):
                mapped[ours + key[len(theirs) :]] = value
                break
        else:
            logger.info("TAO checkpoint: %s is not part of a reidnet model, left out", key)
    return mapped


def checkpoint_from_tao(content: Mapping, path: str | Path, spec) -> dict[str, Any] | None:
    """A reidnet checkpoint dict built from a TAO checkpoint's content, or None if not TAO's."""
    state = tao_state_dict(content)
    if state is None:
        return None
    architecture = tao_architecture(
        state, spec.model, path, spec.dataset.pixel_mean, spec.dataset.pixel_std
    )
    weights = reidnet_keys(state)
    classifier = weights.get("classifier.weight")
    num_classes = int(classifier.shape[0]) if classifier is not None else 0
    header = checkpoint_header(
        epoch=int(content.get("epoch", 0) or 0),
        spec_dict=spec.model_dump(mode="json"),
        identity_keys=[f"tao:{label}" for label in range(num_classes)],
        architecture=architecture,
    )
    logger.info(
        "%s is a TAO checkpoint: %s (TAO network), feat_dim %d, %d classes; last_stride %d, "
        "neck_feat %s and the %dx%d input come from the spec",
        path,
        architecture.backbone,
        architecture.feat_dim,
        num_classes,
        architecture.last_stride,
        architecture.neck_feat,
        architecture.input_height,
        architecture.input_width,
    )
    return {**header, "model": weights, "source": {"format": "tao", "file": str(path)}}


def adopt_pretrained_architecture(model_spec, path: str | Path | None):
    """`model` for fine-tuning from `path` (pretrain_choice self): a TAO checkpoint fixes the
    network, depth, feat_dim and neck, so the fine-tuned model starts as the network TAO trained.
    A spec value that disagrees gets one warning naming both values."""
    if not path:
        return model_spec
    state = tao_state_dict(load_state_dict_file(path))
    if state is not None:
        found, origin = tao_architecture(state, model_spec, path), "the TAO checkpoint"
    else:
        found, origin = _reidnet_architecture(path), "the checkpoint"
        if found is None:
            return model_spec
    update = {}
    for field in ("network", "backbone", "feat_dim", "neck"):
        trained = getattr(found, field)
        if getattr(model_spec, field) == trained:
            continue
        if field in model_spec.model_fields_set:
            logger.warning(
                "model.%s is %r but %s %s was trained with %r: using %r",
                field,
                getattr(model_spec, field),
                origin,
                path,
                trained,
                trained,
            )
        update[field] = trained
    if update:
        logger.info("fine-tuning the network of %s: %s", path, update)
    return model_spec.model_copy(update=update)


def _reidnet_architecture(path: str | Path) -> Architecture | None:
    """The architecture a reidnet checkpoint records (`reidnet convert` writes one), or None for
    a plain state dict, whose architecture the spec must then give."""
    with torch.serialization.safe_globals(safe_numpy_globals()):
        content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, dict) or "architecture" not in content:
        return None
    return Architecture.from_checkpoint(content, path)
