"""The re-identification network: ResNet and MobileNetV2 backbones and the BNNeck model on them."""

from reidnet.model.backbone import BACKBONES, build_backbone
from reidnet.model.reidnet import ReIdentificationNet, StateLoadReport

__all__ = ["BACKBONES", "ReIdentificationNet", "StateLoadReport", "build_backbone"]
