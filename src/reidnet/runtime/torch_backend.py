"""The PyTorch backend: a network in memory or rebuilt from a checkpoint, as a `Backend`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidnet.contracts import Architecture
from reidnet.runtime.base import Preprocessing
from reidnet.runtime.checkpoint import model_from_checkpoint
from reidnet.utils.devices import autocast_for


@dataclass
class TorchBackend:
    """The eval forward of a PyTorch network (flip feature included when the model has it): fp32,
    so CPU, CUDA and ONNX embeddings of one model agree, or bf16 autocast on CUDA with `amp`."""

    model: nn.Module
    device: torch.device
    preprocessing: Preprocessing
    amp: bool = False
    feat_dim: int | None = None
    model_file: Path | None = None
    # From the checkpoint, when the network was loaded from one.
    architecture: Architecture | None = None
    trained_spec: dict[str, Any] | None = None
    epoch: int | None = None

    @classmethod
    def for_model(
        cls, model: nn.Module, architecture: Architecture, device: torch.device, amp: bool = False
    ) -> TorchBackend:
        """A network in memory (being trained, or just built) fed as `architecture` says."""
        return cls(
            model,
            device,
            Preprocessing.of(architecture, "architecture"),
            amp,
            architecture.feat_dim,
            architecture=architecture,
        )

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: dict[str, Any],
        device: torch.device,
        amp: bool = False,
        model_file: str | Path | None = None,
    ) -> TorchBackend:
        source = model_file or "the checkpoint"
        architecture = Architecture.from_checkpoint(checkpoint, source)
        return cls(
            model_from_checkpoint(checkpoint, device),
            device,
            Preprocessing.of(architecture),
            amp,
            architecture.feat_dim,
            Path(model_file) if model_file is not None else None,
            architecture,
            checkpoint.get("spec"),
            checkpoint.get("epoch"),
        )

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        was_training = self.model.training
        self.model.eval()
        try:
            with autocast_for(self.device, self.amp):
                return self.model(images).float()
        finally:
            self.model.train(was_training)
