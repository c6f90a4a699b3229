"""Deployment: ONNX export with a parity check, DeepStream / TensorRT files, onnxruntime backend.

`run_export` is the export action the CLI (and any service) calls. Submodules import torch, onnx
and onnxruntime, so nothing here is imported by `import reidnet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reidnet.config import ExperimentSpec
from reidnet.errors import ReidnetError

if TYPE_CHECKING:
    from reidnet.export.onnx import ParityReport

DEFAULT_ONNX_NAME = "reid_model.onnx"


@dataclass
class ExportOutcome:
    onnx_file: Path
    parity: ParityReport
    metadata: dict[str, str]
    deployment_files: dict[str, Path]


def export_target(spec: ExperimentSpec) -> Path:
    """`export.onnx_file`, else `<results_dir>/export/reid_model.onnx`."""
    if spec.export.onnx_file:
        return Path(spec.export.onnx_file)
    return spec.action_results_dir("export") / DEFAULT_ONNX_NAME


def run_export(spec: ExperimentSpec, force: bool = False) -> ExportOutcome:
    """Export `export.checkpoint` to ONNX (checked, parity-tested) and write the deployment files.

    Existing files at the targets are refused unless `force`.
    """
    from reidnet.engine import checkpoint as ckpt
    from reidnet.engine.record import refuse_overwrite, run_record
    from reidnet.export.deepstream import deployment_paths, write_deployment_files
    from reidnet.export.onnx import export_checkpoint

    config = spec.export
    onnx_file = export_target(spec)
    if onnx_file.is_dir():
        raise ReidnetError(f"export.onnx_file {onnx_file} is a folder: give a file name (.onnx)")
    refuse_overwrite([onnx_file, *deployment_paths(onnx_file).values()], "export", force)
    with run_record(spec, "export", "cpu", out_dir=onnx_file.parent):
        checkpoint = ckpt.load_checkpoint(config.checkpoint, "export.checkpoint", spec)
        ckpt.report_spec_disagreements(checkpoint, spec, config.checkpoint)
        exported = export_checkpoint(checkpoint, onnx_file, opset_version=config.opset_version)
        files = write_deployment_files(exported.onnx_file, exported.metadata)
    return ExportOutcome(exported.onnx_file, exported.parity, exported.metadata, files)
