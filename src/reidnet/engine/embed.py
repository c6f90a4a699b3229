"""Embeddings of images: one `Backend` protocol, one loader chosen by file type, one batch loop.

A backend is a model as an embedding function: normalised images [N, 3, H, W] in, raw (not
L2-normalised) features [N, D] out, with the preprocessing that turns a crop into its input.
`load_backend` picks the backend of a model file (a checkpoint runs in PyTorch, a `.onnx` graph
in onnxruntime) and `embed_images` runs any backend over a list of images. Evaluate, inference,
validation and the `Embedder` all embed through them, so they agree to float precision.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from reidnet.contracts import Architecture
from reidnet.data.dataset import ImageDataset
from reidnet.data.transforms import (
    PIXEL_MEAN,
    PIXEL_STD,
    Transform,
    build_eval_transform,
    read_image_rgb,
)

logger = logging.getLogger(__name__)

ModelFileKind = Literal["checkpoint", "onnx"]


def resolve_device(device: str | torch.device | None = None, gpu_id: int = 0) -> torch.device:
    """The requested device, else CUDA (`cuda:gpu_id`) when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{gpu_id}")
    return torch.device("cpu")


def loader_workers(requested: int) -> int:
    """Data-loader workers: the spec's value, never more than the CPU count."""
    return max(0, min(requested, os.cpu_count() or 1))


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA where supported (fp16 otherwise); nothing on the CPU."""
    if device.type != "cuda" or not enabled:
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@dataclass(frozen=True)
class Preprocessing:
    """How a crop becomes the model's input: resize, scale to [0, 1], normalise (RGB)."""

    height: int
    width: int
    pixel_mean: tuple[float, ...] = PIXEL_MEAN
    pixel_std: tuple[float, ...] = PIXEL_STD
    source: str = "defaults"

    @classmethod
    def of(cls, architecture: Architecture, source: str = "checkpoint") -> Preprocessing:
        return cls(
            architecture.input_height,
            architecture.input_width,
            architecture.pixel_mean,
            architecture.pixel_std,
            source,
        )

    def transform(self) -> Transform:
        return build_eval_transform(self.height, self.width, self.pixel_mean, self.pixel_std)


# What a graph without reidnet metadata is fed when no spec says otherwise.
DEFAULT_PREPROCESSING = Preprocessing(256, 128, source="reidnet defaults")


def spec_preprocessing(spec) -> Preprocessing:
    """The fallback for graphs without reidnet metadata: the spec's input size and pixel stats."""
    return Preprocessing(
        spec.model.input_height,
        spec.model.input_width,
        tuple(spec.dataset.pixel_mean),
        tuple(spec.dataset.pixel_std),
        source="spec (model.input_height/input_width, dataset.pixel_mean/pixel_std)",
    )


class Backend(Protocol):
    """A model as an embedding function (see the module docstring)."""

    preprocessing: Preprocessing
    feat_dim: int | None  # None: a graph whose output size is only known once it runs
    model_file: Path | None  # None: a model built in memory
    pin_memory: bool  # whether batches should arrive in page-locked memory (CUDA copies)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Raw float32 features [N, D] of normalised images [N, 3, H, W] (any device)."""
        ...


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
        from reidnet.engine.checkpoint import model_from_checkpoint

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


def model_file_kind(path: str | os.PathLike) -> ModelFileKind:
    """`.onnx`: an ONNX graph; anything else (.pth, .pt, .tlt, .ckpt): a checkpoint."""
    return "onnx" if Path(path).suffix.lower() == ".onnx" else "checkpoint"


def load_backend(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    *,
    key: str = "model file",
    spec=None,
    amp: bool = False,
    kind: ModelFileKind | None = None,
) -> Backend:
    """The backend of a model file, by its type (`kind`, else `model_file_kind`).

    `key` is what errors tell the user to fix. With `spec`, a checkpoint's disagreements with
    its explicit model settings are warned about and a graph without reidnet metadata is fed as
    the spec says; without one, TAO's defaults and reidnet's 256x128 input apply. `device`
    None: CUDA when available (for a checkpoint: PyTorch's; for a graph: onnxruntime's).
    """
    kind = kind or model_file_kind(path)
    if kind == "onnx":
        return _load_onnx(Path(path), device, key, spec)
    from reidnet.engine import checkpoint as ckpt

    checkpoint = ckpt.load_checkpoint(path, key, spec)
    if spec is not None:
        ckpt.report_spec_disagreements(checkpoint, spec, path)
    return TorchBackend.from_checkpoint(checkpoint, resolve_device(device), amp, path)


def _load_onnx(path: Path, device, key: str, spec) -> Backend:
    from reidnet.engine.onnx_backend import OnnxBackend

    fallback = spec_preprocessing(spec) if spec is not None else DEFAULT_PREPROCESSING
    backend = OnnxBackend(path, device, key, fallback)
    p = backend.preprocessing
    if spec is None and not backend.has_reidnet_metadata:
        logger.warning(
            "%s has no reidnet metadata: feeding %dx%d RGB normalised with mean %s, std %s",
            path,
            p.height,
            p.width,
            list(p.pixel_mean),
            list(p.pixel_std),
        )
    else:
        logger.info(
            "running %s with onnxruntime (%s); preprocessing from %s: %dx%d, mean %s, std %s",
            path,
            backend.provider,
            p.source,
            p.height,
            p.width,
            list(p.pixel_mean),
            list(p.pixel_std),
        )
    return backend


def embed_batches(backend: Backend, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """The one embedding loop: features [N, D] (float32, on the CPU, in order) of every batch.

    Each batch's features move to the CPU as they come, so a large gallery never holds the
    device's memory (training keeps its state there during validation).
    """
    features = [backend(images).cpu() for images in batches]
    if not features:
        return torch.empty(0, backend.feat_dim or 0)
    return torch.cat(features)


def embed_images(
    backend: Backend,
    images: Sequence[Any],
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    read: Callable[[Any], Any] = read_image_rgb,
) -> torch.Tensor:
    """Features [N, D] (float32, CPU, in the order of `images`) of image files, or of anything
    `read` turns into an RGB PIL image, preprocessed as the backend's model expects."""
    loader = DataLoader(
        ImageDataset(images, backend.preprocessing.transform(), read=read),
        batch_size=batch_size,
        shuffle=False,
        num_workers=loader_workers(num_workers),
        pin_memory=backend.pin_memory,
    )
    return embed_batches(backend, (batch for batch, _ in loader))


def extract_features(
    model: nn.Module,
    paths: Sequence[str | Path],
    *,
    height: int,
    width: int,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    batch_size: int = 128,
    num_workers: int = 0,
    device: torch.device | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """`embed_images` of a network in memory (validation during training): eval mode for the
    loop, the model's previous mode after it."""
    device = device or next(model.parameters()).device
    preprocessing = Preprocessing(height, width, tuple(pixel_mean), tuple(pixel_std), "caller")
    backend = TorchBackend(model, device, preprocessing, amp, getattr(model, "feat_dim", None))
    return embed_images(backend, paths, batch_size=batch_size, num_workers=num_workers)
