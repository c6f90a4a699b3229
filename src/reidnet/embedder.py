"""`Embedder`: L2-normalised embeddings of crops from a checkpoint or an ONNX model, in three lines.

    embedder = reidnet.Embedder.from_file("reid_model.onnx")
    features = embedder.embed(["a.jpg", pil_image, uint8_hwc_array])  # [3, D] float32
    similarity = features @ features.T

Preprocessing is the evaluation's (resize, [0, 1], normalise with the model's pixel mean/std), so
the embeddings equal the L2-normalised features `reidnet evaluate` scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reidnet.data.transforms import read_image_rgb
from reidnet.errors import ReidnetError
from reidnet.runtime.base import Backend, Preprocessing
from reidnet.runtime.embed import embed_images
from reidnet.runtime.load import load_backend

ImageInput = str | os.PathLike | Image.Image | np.ndarray


class Embedder:
    """Turns image crops into L2-normalised float32 embeddings, `batch_size` images at a time,
    with any `Backend` (reidnet.runtime.embed)."""

    def __init__(self, backend: Backend, *, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ReidnetError(f"Embedder batch_size must be at least 1, got {batch_size}")
        self.backend = backend
        self.batch_size = batch_size

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
        backend = load_backend(path, device, key="Embedder.from_file path", amp=amp)
        return cls(backend, batch_size=batch_size)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.backend.preprocessing

    @property
    def feat_dim(self) -> int | None:
        return self.backend.feat_dim

    @property
    def model_file(self) -> Path | None:
        return self.backend.model_file

    def embed(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Embeddings [N, D] (float32, unit L2 norm) of paths, PIL images or uint8 HxWx3 RGB arrays.

        One image gives [1, D]; an [N, H, W, 3] uint8 array is N images.
        """
        features = embed_images(
            self.backend, _as_list(images), batch_size=self.batch_size, read=_as_rgb
        ).numpy()
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return features / np.maximum(norms, 1e-12)

    def __repr__(self) -> str:
        p = self.preprocessing
        return (
            f"Embedder({self.model_file}, input {p.height}x{p.width}, feat_dim {self.feat_dim}, "
            f"batch_size {self.batch_size})"
        )


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
