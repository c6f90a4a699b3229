"""`load_backend`: the backend of a model file, by its type (a checkpoint runs in PyTorch, a
`.onnx` graph in onnxruntime)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import torch

from reidnet.runtime import checkpoint as ckpt
from reidnet.runtime.base import DEFAULT_PREPROCESSING, Backend, spec_preprocessing
from reidnet.runtime.torch_backend import TorchBackend
from reidnet.utils.devices import resolve_device

logger = logging.getLogger(__name__)

ModelFileKind = Literal["checkpoint", "onnx"]


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
    checkpoint = ckpt.load_checkpoint(path, key, spec)
    if spec is not None:
        ckpt.report_spec_disagreements(checkpoint, spec, path)
    return TorchBackend.from_checkpoint(checkpoint, resolve_device(device), amp, path)


def _load_onnx(path: Path, device, key: str, spec) -> Backend:
    from reidnet.runtime.onnx_backend import OnnxBackend  # onnxruntime only when a graph is run

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
