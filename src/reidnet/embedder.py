"""`Embedder`: L2-normalised embeddings of crops from a checkpoint or an ONNX model, in three lines.

    embedder = reidnet.Embedder.from_file("reid_model.onnx")
    features = embedder.embed(["a.jpg", pil_image, uint8_hwc_array])  # [3, D] float32
    similarity = features @ features.T

Preprocessing is the evaluation's (resize, [0, 1], normalise with the model's pixel mean/std), so
the embeddings equal the L2-normalised features `reidnet evaluate` scores.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reidnet.data.transforms import read_image_rgb
from reidnet.engine import checkpoint as ckpt
from reidnet.engine.embed import autocast_for, resolve_device
from reidnet.errors import ReidnetError
from reidnet.export.runtime import OnnxReidModel, Preprocessing

logger = logging.getLogger(__name__)

ImageInput = str | os.PathLike | Image.Image | np.ndarray
Backend = Callable[[torch.Tensor], np.ndarray]  # normalised images [N, 3, H, W] -> [N, D]


class Embedder:
    """Turns image crops into L2-normalised float32 embeddings, `batch_size` images at a time."""

    def __init__(
        self,
        backend: Backend,
        preprocessing: Preprocessing,
        *,
        feat_dim: int | None = None,
        batch_size: int = 64,
        model_file: str | Path | None = None,
    ) -> None:
        if batch_size < 1:
            raise ReidnetError(f"Embedder batch_size must be at least 1, got {batch_size}")
        self.backend = backend
        self.preprocessing = preprocessing
        self.feat_dim = feat_dim
        self.batch_size = batch_size
        self.model_file = Path(model_file) if model_file is not None else None
        self._transform = preprocessing.transform()

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        *,
        batch_size: int = 64,
        amp: bool = False,
    ) -> Embedder:
        """A reidnet `.pth` checkpoint (PyTorch), a TAO checkpoint, or any ReID `.onnx` model
        (onnxruntime).

        `device` picks CUDA or the CPU (default: CUDA when available). PyTorch embeds in fp32
        (equal to ONNX Runtime's to float precision); `amp=True` uses bf16 autocast on CUDA
        for speed. A graph without reidnet
        metadata is fed at its own fixed input size (else 256x128) with the ImageNet-style
        mean/std reidnet trains with; evaluate such a graph with a spec to choose others.
        """
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            return cls._from_onnx(path, device, batch_size)
        return cls._from_checkpoint(path, device, batch_size, amp)

    @classmethod
    def _from_checkpoint(
        cls, path: Path, device: str | torch.device | None, batch_size: int, amp: bool
    ) -> Embedder:
        checkpoint = ckpt.load_checkpoint(path, key="Embedder.from_file path")
        device = resolve_device(device)
        model = ckpt.model_from_checkpoint(checkpoint, device)
        architecture = checkpoint["architecture"]
        preprocessing = Preprocessing(
            architecture["input_height"],
            architecture["input_width"],
            tuple(architecture["pixel_mean"]),
            tuple(architecture["pixel_std"]),
            source="checkpoint",
        )
        return cls(
            _TorchBackend(model, device, amp),
            preprocessing,
            feat_dim=architecture["feat_dim"],
            batch_size=batch_size,
            model_file=path,
        )

    @classmethod
    def _from_onnx(cls, path: Path, device: str | torch.device | None, batch_size: int) -> Embedder:
        model = OnnxReidModel(path, device, key="Embedder.from_file path")
        fallback = Preprocessing(256, 128, source="reidnet defaults")
        preprocessing = model.preprocessing(fallback)
        if not model.has_reidnet_metadata:
            logger.warning(
                "%s has no reidnet metadata: feeding %dx%d RGB normalised with mean %s, std %s",
                path,
                preprocessing.height,
                preprocessing.width,
                list(preprocessing.pixel_mean),
                list(preprocessing.pixel_std),
            )
        return cls(
            lambda images: model.run(images.numpy()),
            preprocessing,
            feat_dim=model.feat_dim,
            batch_size=batch_size,
            model_file=path,
        )

    def embed(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Embeddings [N, D] (float32, unit L2 norm) of paths, PIL images or uint8 HxWx3 RGB arrays.

        One image gives [1, D]; an [N, H, W, 3] uint8 array is N images.
        """
        items = _as_list(images)
        batches = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            tensors = torch.stack([self._transform(_as_rgb(item)) for item in chunk])
            batches.append(self.backend(tensors))
        if not batches:
            return np.zeros((0, self.feat_dim or 0), np.float32)
        features = np.concatenate(batches).astype(np.float32, copy=False)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return features / np.maximum(norms, 1e-12)

    def __repr__(self) -> str:
        p = self.preprocessing
        return (
            f"Embedder({self.model_file}, input {p.height}x{p.width}, feat_dim {self.feat_dim}, "
            f"batch_size {self.batch_size})"
        )


class _TorchBackend:
    """The eval forward of a PyTorch network: fp32, or bf16 autocast on CUDA with `amp`."""

    def __init__(self, model: torch.nn.Module, device: torch.device, amp: bool = False) -> None:
        self.model, self.device, self.amp = model.eval(), device, amp

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with autocast_for(self.device, self.amp):
            features = self.model(images.to(self.device))
        return features.float().cpu().numpy()


def _as_list(images) -> list:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    return list(images)


def _as_rgb(image: ImageInput) -> Image.Image:
    if isinstance(image, (str, os.PathLike)):
        return read_image_rgb(image)
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ReidnetError(
                f"Embedder.embed takes uint8 RGB arrays of shape [H, W, 3]; got {image.dtype} "
                f"{list(image.shape)}. Convert with np.asarray(pil_image.convert('RGB'))"
            )
        return Image.fromarray(image)
    raise ReidnetError(
        f"Embedder.embed takes image paths, PIL images or uint8 [H, W, 3] arrays; got "
        f"{type(image).__name__}"
    )
