"""The re-identification network: ResNet backbones and the BNNeck model built on them."""

from reidnet.model.backbone import BACKBONES, build_backbone
from reidnet.model.reidnet import ReIdentificationNet, StateLoadReport

__all__ = ["BACKBONES", "ReIdentificationNet", "StateLoadReport", "build_backbone"]
