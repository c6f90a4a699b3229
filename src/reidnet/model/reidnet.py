"""ReIdentificationNet: a ResNet trunk, global average pooling, an optional 1x1 projection to
``feat_dim`` and a BNNeck head (the "Bag of Tricks" strong baseline, Luo et al. 2019).

Training forward returns ``(cls_score, global_feat)``; eval forward returns the embedding, which is
what evaluation, inference and ONNX export all use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from reidnet.contracts import (
    Architecture,
    Backbone,
    LastStride,
    Neck,
    NeckFeat,
    Network,
    PretrainChoice,
)
from reidnet.errors import ReidnetError
from reidnet.model.backbone import build_backbone
from reidnet.model.weights import load_state_dict_file, strip_wrapper_prefixes

logger = logging.getLogger(__name__)


# Checkpoints of the reference implementation name the parts differently; map them onto ours.
_REFERENCE_ALIASES = (
    ("base.feature.", "projection."),
    ("base.", "backbone."),
    ("bottleneck.", "bnneck."),
)


@dataclass
class StateLoadReport:
    """What ``load_reid_state`` did, for the caller's logs."""

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    classifier_reinitialised: bool = False

    @property
    def num_loaded(self) -> int:
        return len(self.loaded)

    def describe(self) -> str:
        lines = [f"loaded {self.num_loaded} tensors"]
        lines += [f"skipped {key}: {reason}" for key, reason in self.skipped.items()]
        return "; ".join(lines)


class ReIdentificationNet(nn.Module):
    """Backbone -> GAP -> [1x1 projection] -> BNNeck -> bias-free linear classifier.

    The projection (present when ``feat_dim`` differs from the trunk's channel count) is a 1x1
    convolution with no BN or activation of its own, bias-free in the ``torchvision`` network (the
    BNNeck right after it normalises the feature, and a shift does not change triplet distances)
    and with a bias in the ``tao`` network, as TAO's ``base.feature`` has one: a TAO checkpoint's
    embeddings depend on it. It is applied after pooling, which equals projecting the feature map
    first, as the reference does (both are affine), at 1/(h*w) of the cost: 1/128 at 256x128.

    ``num_classes`` may be 0 for a network converted from a graph that has no classifier (an
    ONNX export): it embeds and exports, and fine-tuning gives it a classifier of its own.
    """

    def __init__(
        self,
        backbone: Backbone = "resnet_50",
        *,
        num_classes: int,
        last_stride: LastStride = 1,
        feat_dim: int = 256,
        neck: Neck = "bnneck",
        neck_feat: NeckFeat = "after",
        with_flip_feature: bool = False,
        pretrain_choice: PretrainChoice = "none",
        pretrained_model_path: str | os.PathLike[str] | None = None,
        network: Network = "torchvision",
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.neck = neck
        self.neck_feat = neck_feat
        self.with_flip_feature = with_flip_feature
        self.network = network

        self.backbone, channels = build_backbone(
            backbone, last_stride, pretrain_choice, pretrained_model_path, network
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.projection = (
            nn.Conv2d(channels, feat_dim, kernel_size=1, bias=network == "tao")
            if feat_dim != channels
            else None
        )
        self.bnneck = nn.BatchNorm1d(feat_dim) if neck == "bnneck" else None
        self.classifier = nn.Linear(feat_dim, num_classes, bias=False)
        self._init_head()

        if pretrain_choice == "self":
            self._load_self_pretrained(pretrained_model_path)

    @classmethod
    def from_architecture(
        cls,
        architecture: Architecture,
        num_classes: int,
        *,
        pretrain_choice: PretrainChoice = "none",
        pretrained_model_path: str | os.PathLike[str] | None = None,
    ) -> ReIdentificationNet:
        """The network an architecture describes: the one way training, checkpoints and
        conversion build it (weights from `pretrain_choice`, else freshly initialised)."""
        return cls(
            architecture.backbone,
            num_classes=num_classes,
            last_stride=architecture.last_stride,
            feat_dim=architecture.feat_dim,
            neck=architecture.neck,
            neck_feat=architecture.neck_feat,
            with_flip_feature=architecture.with_flip_feature,
            pretrain_choice=pretrain_choice,
            pretrained_model_path=pretrained_model_path,
            network=architecture.network,
        )

    def _init_head(self) -> None:
        if self.projection is not None:
            nn.init.kaiming_normal_(self.projection.weight, a=0, mode="fan_in")
            if self.projection.bias is not None:
                nn.init.zeros_(self.projection.bias)
        if self.bnneck is not None:
            # BNNeck as in BoT: a learnable scale but no shift, so the bias-free classifier
            # separates identities by direction around the origin.
            nn.init.ones_(self.bnneck.weight)
            nn.init.zeros_(self.bnneck.bias)
            self.bnneck.bias.requires_grad_(False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def _load_self_pretrained(self, path: str | os.PathLike[str] | None) -> None:
        if path is None:
            raise ReidnetError(
                "model.pretrain_choice is self but model.pretrained_model_path is not set: "
                "point it to a reidnet checkpoint, or use pretrain_choice imagenet or none."
            )
        report = self.load_reid_state(load_state_dict_file(path), strict_classifier=False)
        logger.info("pretrained re-id weights from %s: %s", path, report.describe())

    def global_feature(self, images: torch.Tensor) -> torch.Tensor:
        """The pre-BNNeck feature [N, feat_dim] (the one the triplet loss sees)."""
        pooled = self.pool(self.backbone(images))
        if self.projection is not None:
            pooled = self.projection(pooled)
        return pooled.flatten(1)

    def _embedding(self, images: torch.Tensor) -> torch.Tensor:
        global_feat = self.global_feature(images)
        if self.bnneck is not None and self.neck_feat == "after":
            return self.bnneck(global_feat)
        return global_feat

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Training: ``(cls_score [N, num_classes], global_feat [N, feat_dim])``.
        Eval: the embedding [N, feat_dim], not L2-normalised; with ``with_flip_feature`` the sum
        of the embeddings of the images and of their horizontal mirrors.
        """
        if self.training:
            global_feat = self.global_feature(images)
            neck_out = self.bnneck(global_feat) if self.bnneck is not None else global_feat
            return self.classifier(neck_out), global_feat
        embedding = self._embedding(images)
        if self.with_flip_feature:
            # Two passes rather than one over [x; flip(x)]: splitting a batch of dynamic size
            # back in two does not survive ONNX export, and eval batches are large anyway.
            embedding = embedding + self._embedding(images.flip(-1))
        return embedding

    def load_reid_state(
        self, state_dict: Mapping[str, torch.Tensor], strict_classifier: bool
    ) -> StateLoadReport:
        """Load backbone, projection and BNNeck from ``state_dict``; the classifier if it fits.

        Keys may carry wrapper prefixes (DDP "module.", Lightning "model.", torch.compile) or the
        reference implementation's names ("base.", "bottleneck."). Every embedding tensor must be
        present with the right shape, otherwise the embedding would be wrong: that is an error.
        A classifier of another shape is an error when ``strict_classifier``, else it is
        re-initialised and reported.
        """
        incoming = {_normalise_key(key): value for key, value in state_dict.items()}
        own = self.state_dict()
        report = StateLoadReport()
        problems = []
        for key in sorted(incoming.keys() - own.keys()):
            if key.startswith(("backbone.", "projection.", "bnneck.")):
                # An embedding tensor this network has no place for (TAO's projection bias in
                # a torchvision network): dropping it would change every embedding.
                problems.append(f"{key} has no place in this network")
            else:
                report.skipped[key] = "not part of this model"
        usable = {}
        for key, tensor in own.items():
            if key.startswith("classifier."):
                continue
            if key not in incoming:
                if not key.endswith("num_batches_tracked"):
                    problems.append(f"{key} is missing")
            elif incoming[key].shape != tensor.shape:
                problems.append(
                    f"{key} has shape {tuple(incoming[key].shape)}, model {tuple(tensor.shape)}"
                )
            else:
                usable[key] = incoming[key]
        if problems:
            raise ReidnetError(
                f"the checkpoint does not match model.backbone {self.backbone_name} "
                f"(model.network {self.network}) with model.feat_dim {self.feat_dim} and "
                f"model.neck {self.neck}: "
                f"{'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}. "
                f"Set these model keys to the values the checkpoint was trained with."
            )
        classifier = incoming.get("classifier.weight")
        if classifier is not None and classifier.shape == self.classifier.weight.shape:
            usable["classifier.weight"] = classifier
        else:
            reason = (
                "absent from the checkpoint"
                if classifier is None
                else f"checkpoint has {classifier.shape[0]} classes x {classifier.shape[1]}, "
                f"model {self.num_classes} x {self.feat_dim}"
            )
            if strict_classifier:
                raise ReidnetError(
                    f"the checkpoint's classifier does not fit this model ({reason}). Set "
                    f"dataset.num_classes to the checkpoint's identity count, or load it as "
                    f"pretrained weights (model.pretrain_choice self)."
                )
            nn.init.normal_(self.classifier.weight, std=0.001)
            report.skipped["classifier.weight"] = f"{reason}; re-initialised"
            report.classifier_reinitialised = True
        self.load_state_dict(usable, strict=False)
        report.loaded = sorted(usable)
        return report


def _normalise_key(key: str) -> str:
    key = strip_wrapper_prefixes(key, ("module.", "_orig_mod.", "model."))
    for reference_prefix, ours in _REFERENCE_ALIASES:
        if key.startswith(reference_prefix):
            return ours + key[len(reference_prefix) :]
    return key
