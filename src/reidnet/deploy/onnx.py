"""ONNX export of a reidnet checkpoint: the graph, its reidnet metadata, and the parity check.

The graph takes `input` float32 [batch, 3, H, W] (dynamic batch, pixels already normalised) and
returns `fc_pred` [batch, feat_dim], the names TAO's ReIdentificationNet uses, so DeepStream and
Triton configs written for it work unchanged. The file appears at its target path only after
`onnx.checker` and the onnxruntime-vs-PyTorch parity check pass.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from reidnet._version import __version__
from reidnet.contracts import INPUT_NAME, OUTPUT_NAME, Architecture
from reidnet.errors import ReidnetError
from reidnet.runtime import checkpoint as ckpt
from reidnet.utils.atomic import full_disk_reported, tensor_bytes

BATCH_DIM = "batch"
MIN_COSINE = 0.9999
PARITY_BATCH = 8


@dataclass(frozen=True)
class ParityReport:
    """How closely onnxruntime reproduces PyTorch on the same batch."""

    batch_size: int
    max_abs_diff: float
    min_cosine: float

    def describe(self) -> str:
        return (
            f"onnxruntime vs PyTorch on {self.batch_size} images: max |diff| "
            f"{self.max_abs_diff:.3g}, min cosine {self.min_cosine:.7f}"
        )


@dataclass(frozen=True)
class OnnxExport:
    onnx_file: Path
    parity: ParityReport
    metadata: dict[str, str]


def export_metadata(checkpoint: dict[str, Any]) -> dict[str, str]:
    """What a consumer of the ONNX file needs to feed it and read its output, as strings."""
    return Architecture.from_checkpoint(checkpoint).onnx_metadata(checkpoint["num_classes"])


def read_metadata(onnx_file: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (empty for a graph not made by reidnet)."""
    model = onnx.load(str(onnx_file), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def export_checkpoint(
    checkpoint: dict[str, Any],
    onnx_file: str | Path,
    *,
    opset_version: int = 17,
    min_cosine: float = MIN_COSINE,
) -> OnnxExport:
    """Write `checkpoint`'s eval-mode network to `onnx_file` once it passes checker and parity.

    The graph is written to a temporary file in the target folder and renamed over `onnx_file`
    only after the checks pass, so a failed export never leaves a file at the target path.
    """
    onnx_file = Path(onnx_file)
    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    model = ckpt.model_from_checkpoint(checkpoint, torch.device("cpu"))
    architecture = Architecture.from_checkpoint(checkpoint)
    size = architecture.input_size
    temporary = onnx_file.with_name(f".{onnx_file.name}.{os.getpid()}.tmp")
    metadata = export_metadata(checkpoint)
    # The graph holds the weights: their size is about what a full disk refused.
    weights = tensor_bytes(checkpoint["model"])
    with full_disk_reported("the ONNX graph", onnx_file, weights):
        try:
            write_graph(model, temporary, size, opset_version)
            _finish_graph(temporary, metadata)
            images = parity_images(size, architecture.pixel_mean, architecture.pixel_std)
            parity = check_parity(model, temporary, images)
            if parity.min_cosine < min_cosine:
                raise ReidnetError(
                    f"export of {onnx_file} failed the parity check: {parity.describe()}; the "
                    f"minimum cosine must be at least {min_cosine}. No file was written. Try "
                    "another export.opset_version (17-20) and report this with your torch and "
                    "onnxruntime versions"
                )
            os.replace(temporary, onnx_file)
        finally:
            temporary.unlink(missing_ok=True)
    return OnnxExport(onnx_file, parity, metadata)


def write_graph(model: nn.Module, path: Path, size: tuple[int, int], opset_version: int) -> None:
    """Trace the eval forward (flip feature included) into an ONNX graph with a dynamic batch.

    The TorchScript exporter writes opset 17 natively and names the batch axis; the dynamo
    exporter (torch's default) starts at opset 18 and its conversion down to 17 breaks on
    ReduceMean, while TensorRT 8.6 (DeepStream 6.3/6.4) reads opsets up to 17.
    """
    example = torch.zeros(2, 3, *size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            opset_version=opset_version,
            dynamo=False,
        )


def _finish_graph(path: Path, metadata: dict[str, str]) -> None:
    """Attach the metadata and run the ONNX checker (with shape inference)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name, model.producer_version = "reidnet", __version__
    model.doc_string = (
        f"reidnet {metadata['backbone']} re-identification embedding: input [batch, 3, "
        f"{metadata['input_height']}, {metadata['input_width']}] RGB normalised with pixel_mean/"
        f"pixel_std, output fc_pred [batch, {metadata['feat_dim']}] (not L2-normalised)"
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ReidnetError(f"the exported graph fails onnx.checker: {error}") from None
    onnx.save(model, str(path))


def parity_images(
    size: tuple[int, int], pixel_mean, pixel_std, batch_size: int = PARITY_BATCH, seed: int = 0
) -> torch.Tensor:
    """A fixed batch of random RGB images, normalised the way evaluation normalises crops."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch_size, 3, *size), generator=generator).float() / 255
    mean = torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels - mean) / std


def check_parity(model: nn.Module, onnx_file: Path, images: torch.Tensor) -> ParityReport:
    """Max absolute difference and minimum per-image cosine of ONNX vs PyTorch outputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (exported,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    with torch.no_grad():
        expected = model.eval()(images).numpy()
    exported, expected = exported.astype(np.float64), expected.astype(np.float64)
    cosine = (exported * expected).sum(1) / np.maximum(
        np.linalg.norm(exported, axis=1) * np.linalg.norm(expected, axis=1), 1e-12
    )
    return ParityReport(
        batch_size=len(images),
        max_abs_diff=float(np.abs(exported - expected).max()),
        min_cosine=float(cosine.min()),
    )
