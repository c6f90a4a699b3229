"""The onnxruntime backend: any [N, 3, H, W] -> [N, D] re-identification graph as an embedding
function for evaluate, inference and the Embedder (see reidnet.runtime.embed).

The graph's input and output are discovered, not assumed, so third-party ReID models run too.
Preprocessing comes from reidnet's metadata when the graph carries it, else from the fallback
(the spec's, or reidnet's defaults): a graph's fixed input size always wins over the fallback's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from reidnet.contracts import METADATA_MARKER, OUTPUT_NAME, Architecture
from reidnet.errors import ReidnetError
from reidnet.runtime.base import DEFAULT_PREPROCESSING, Preprocessing

logger = logging.getLogger(__name__)

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def onnx_providers(device: str | torch.device | None = None) -> list:
    """CUDA when asked for (or unspecified) and onnxruntime has it, else the CPU."""
    import onnxruntime as ort

    device = torch.device(device) if device is not None else None
    if (device is None or device.type == "cuda") and (
        "CUDAExecutionProvider" in ort.get_available_providers()
    ):
        cuda = ("CUDAExecutionProvider", {"device_id": (device.index or 0) if device else 0})
        return [cuda, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxBackend:
    """An onnxruntime session over a re-identification graph: normalised images in, embeddings
    out (a `Backend`). `key` is what errors tell the user to fix."""

    pin_memory = False  # onnxruntime reads numpy arrays

    def __init__(
        self,
        onnx_file: str | Path,
        device: str | torch.device | None = None,
        key: str = "onnx_file",
        fallback: Preprocessing = DEFAULT_PREPROCESSING,
    ) -> None:
        import onnxruntime as ort

        self.onnx_file = Path(onnx_file)
        if not self.onnx_file.is_file():
            raise ReidnetError(f"ONNX model {self.onnx_file} does not exist: check {key}")
        try:
            self.session = ort.InferenceSession(
                str(self.onnx_file), providers=onnx_providers(device)
            )
        except Exception as error:
            raise ReidnetError(
                f"{self.onnx_file} cannot be loaded by onnxruntime ({type(error).__name__}: "
                f"{error}): check {key} points to an ONNX model"
            ) from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._discover_io(key)
        self.preprocessing = self._preprocessing(fallback)

    @property
    def model_file(self) -> Path:
        return self.onnx_file

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph (CUDA or CPU)."""
        return self.session.get_providers()[0]

    def _discover_io(self, key: str) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape if len(inputs) == 1 else []
        channels = shape[1] if len(shape) == 4 else None
        if len(shape) != 4 or (isinstance(channels, int) and channels != 3):
            found = ", ".join(f"{i.name} {i.shape}" for i in inputs)
            raise ReidnetError(
                f"{self.onnx_file} ({key}) must take one image tensor [N, 3, H, W] (NCHW, RGB); "
                f"its inputs are {found}"
            )
        self.input_name = inputs[0].name
        self.input_dtype = _NUMPY_TYPES.get(inputs[0].type, np.float32)
        named = [o for o in outputs if o.name == OUTPUT_NAME]
        output = (named or outputs)[0]
        if len(outputs) > 1 and not named:
            logger.warning(
                "%s has %d outputs; using the first, %s", self.onnx_file, len(outputs), output.name
            )
        if output.shape and len(output.shape) != 2:  # [] : rank unknown, checked per batch
            raise ReidnetError(
                f"{self.onnx_file} ({key}) must output embeddings [N, D]; its output "
                f"{output.name} has shape {output.shape}: give a re-identification model's "
                "ONNX (e.g. from `reidnet export`), not an image-to-image graph"
            )
        self.output_name = output.name
        batch, _, height, width = shape
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.fixed_size = (
            (height, width) if isinstance(height, int) and isinstance(width, int) else None
        )
        last = output.shape[-1] if output.shape else None
        self.feat_dim = last if isinstance(last, int) else None

    @property
    def has_reidnet_metadata(self) -> bool:
        return METADATA_MARKER in self.metadata

    def _preprocessing(self, fallback: Preprocessing) -> Preprocessing:
        """reidnet metadata when present; else `fallback`, at the graph's fixed size if any."""
        recorded = Architecture.from_onnx_metadata(self.metadata, self.onnx_file)
        if recorded is not None:
            return Preprocessing.of(recorded, "reidnet metadata")
        height, width = self.fixed_size or (fallback.height, fallback.width)
        if self.fixed_size and self.fixed_size != (fallback.height, fallback.width):
            logger.info(
                "%s takes %dx%d images (its input shape), not %dx%d",
                self.onnx_file.name,
                height,
                width,
                fallback.height,
                fallback.width,
            )
        return Preprocessing(
            height, width, tuple(fallback.pixel_mean), tuple(fallback.pixel_std), fallback.source
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(images.numpy()))

    def run(self, images: np.ndarray) -> np.ndarray:
        """Embeddings [N, D] float32 of normalised images [N, 3, H, W]."""
        images = np.ascontiguousarray(images, dtype=self.input_dtype)
        step = self.fixed_batch or max(len(images), 1)
        features = []
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            missing = step - len(chunk) if self.fixed_batch else 0
            if missing:  # a graph with a fixed batch size: pad the last chunk, drop the padding
                chunk = np.concatenate([chunk, np.zeros((missing, *chunk.shape[1:]), chunk.dtype)])
            output = self._run_chunk(chunk)
            features.append(output[: len(chunk) - missing])
        if not features:
            return np.zeros((0, self.feat_dim or 0), np.float32)
        return np.concatenate(features).astype(np.float32, copy=False)

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        try:
            (output,) = self.session.run([self.output_name], {self.input_name: chunk})
        except Exception as error:  # onnxruntime raises its own untyped Fail/RuntimeException
            message = str(error).strip().splitlines()[0][:500] if str(error).strip() else ""
            raise ReidnetError(
                f"{self.onnx_file} failed in onnxruntime on a batch of shape "
                f"{list(chunk.shape)} ({type(error).__name__}: {message}): the graph cannot run "
                "on these images (a fixed shape inside it?); export it again with a dynamic "
                "batch and this input size"
            ) from None
        if output.ndim != 2 or output.shape[0] != len(chunk):
            raise ReidnetError(
                f"{self.onnx_file} returned {self.output_name} of shape {list(output.shape)} for "
                f"{len(chunk)} images: a re-identification model outputs embeddings [N, D]"
            )
        return output
