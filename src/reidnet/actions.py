"""The four actions of a spec, named as the CLI names them: train, evaluate, inference, export.

`reidnet <action> -e spec.yaml` calls these functions, and the REST service runs that same
command for every job, so a Python caller, the CLI and the service share one code path. They are
also `reidnet.train`, `reidnet.evaluate`, `reidnet.inference` and `reidnet.export`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reidnet.config import ExperimentSpec
from reidnet.contracts import EVALUATION_FILE, ONNX_FILE
from reidnet.data.market import ImageRecord, is_image_file, read_records
from reidnet.errors import ReidnetError
from reidnet.runtime.base import Backend
from reidnet.runtime.load import load_backend
from reidnet.runtime.record import now_iso, refuse_overwrite, run_record
from reidnet.runtime.retrieval import RetrievalScore, embed_for_spec, score_backend
from reidnet.runtime.torch_backend import TorchBackend
from reidnet.utils.atomic import atomic_write_text, full_disk_reported
from reidnet.utils.devices import resolve_device

if TYPE_CHECKING:
    from reidnet.deploy.onnx import ParityReport
    from reidnet.training.trainer import TrainResult

logger = logging.getLogger(__name__)

INFERENCE_FILE = "result.json"  # the reference's name; the .npy and .csv sit beside it
CMC_CURVE_FILE, SAMPLED_MATCHES_FILE = "cmc_curve.png", "sampled_matches.png"


def train(spec: ExperimentSpec, device: str | torch.device | None = None) -> TrainResult:
    """Train (or resume, or fine-tune) the model a spec describes, into `<results_dir>/train`.

    Under torchrun every process calls this; see reidnet.training.trainer (imported here, so
    evaluating or exporting never loads the training stack).
    """
    from reidnet.training.trainer import train as run_training

    return run_training(spec, device)


def torchrun_command(spec: ExperimentSpec, argv: list[str]) -> list[str] | None:
    """The torchrun command line that trains `spec` with one process per GPU (reidnet's
    arguments `argv` passed on), or None when this process trains itself (see
    reidnet.training.distributed.torchrun_relaunch)."""
    from reidnet.training.distributed import torchrun_relaunch

    return torchrun_relaunch(spec.train.num_gpus, spec.train.num_nodes, argv)


# ---------------------------------------------------------------------------------------------
# evaluate


@dataclass
class EvaluationOutcome:
    metrics: dict[str, Any]
    results_file: Path
    plots: dict[str, Path] = field(default_factory=dict)


def evaluate(
    spec: ExperimentSpec, device: str | torch.device | None = None, force: bool = False
) -> EvaluationOutcome:
    """Score the checkpoint or ONNX model on query/gallery; write results.json and both plots,
    next to the run's record (resolved spec, log, environment). Existing results are refused
    unless `force`."""
    out_dir = spec.action_results_dir("evaluate")
    refuse_overwrite([out_dir / EVALUATION_FILE, *plot_paths(spec, out_dir)], "evaluate", force)
    with run_record(spec, "evaluate", device) as out_dir:
        backend = action_backend(spec, "evaluate", device)
        query_dir, gallery_dir = query_gallery_folders(spec, "evaluate", _trained_spec(backend))
        query_records, gallery_records = read_records(query_dir), read_records(gallery_dir)
        score = score_backend(backend, query_records, gallery_records, spec)
        results = {
            "checkpoint": str(backend.model_file),
            **describe_backend(backend),
            "evaluated": now_iso(),
            "query_dataset": str(query_dir),
            "test_dataset": str(gallery_dir),
            "num_query": len(query_records),
            "num_gallery": len(gallery_records),
            **score.metrics,
            "cmc": [float(v) for v in score.cmc],
        }
        results_file = out_dir / EVALUATION_FILE
        atomic_write_text(results_file, json.dumps(results, indent=2))
        plots = write_plots(score, query_records, gallery_records, spec, out_dir, backend)
        logger.info(
            "mAP %.4f rank-1 %.4f of %s: %s",
            score.metrics["mAP"],
            score.metrics["rank-1"],
            backend.model_file,
            results_file,
        )
    return EvaluationOutcome(score.metrics, results_file, plots)


def action_backend(
    spec: ExperimentSpec, action: str, device: str | torch.device | None = None
) -> Backend:
    """The model an action embeds with: `<action>.onnx_file` run by onnxruntime, else
    `<action>.checkpoint` (an ONNX graph too when it is a `.onnx` file)."""
    config = getattr(spec, action)
    device = resolve_device(device, config.gpu_id)
    if config.onnx_file:
        if config.checkpoint:
            logger.info("%s.onnx_file is set: %s.checkpoint is not used", action, action)
        return load_backend(
            config.onnx_file, device, key=f"{action}.onnx_file", spec=spec, kind="onnx"
        )
    return load_backend(
        config.checkpoint, device, key=f"{action}.checkpoint", spec=spec, amp=config.amp
    )


def _trained_spec(backend: Backend) -> dict | None:
    """The spec a checkpoint was trained with (None for an ONNX graph)."""
    return backend.trained_spec if isinstance(backend, TorchBackend) else None


def query_gallery_folders(
    spec: ExperimentSpec, action: str, recorded: dict | None = None
) -> tuple[Path, Path]:
    """The query and gallery folders of an action: `<action>.query_dataset` / `.test_dataset`,
    else the dataset section, else the dataset the checkpoint was trained with (`recorded`, the
    spec stored in the checkpoint), with a log line saying which."""
    section = getattr(spec, action)
    query = section.query_dataset or spec.dataset.query_dataset_dir
    gallery = section.test_dataset or spec.dataset.test_dataset_dir
    if (not query or not gallery) and recorded:
        stored = recorded.get("dataset") or {}
        if stored.get("query_dataset_dir") and stored.get("test_dataset_dir"):
            query = query or stored["query_dataset_dir"]
            gallery = gallery or stored["test_dataset_dir"]
            logger.info(
                "query %s and gallery %s: from the spec stored in the checkpoint (set "
                "%s.query_dataset / %s.test_dataset to use others)",
                query,
                gallery,
                action,
                action,
            )
    if not query or not gallery:
        raise ReidnetError(
            f"{action} needs query and gallery folders: set {action}.query_dataset and "
            f"{action}.test_dataset (or dataset.query_dataset_dir and dataset.test_dataset_dir)"
        )
    return Path(query), Path(gallery)


def describe_backend(backend: Backend) -> dict[str, Any]:
    """Which model a result came from: its architecture, input size and training epoch."""
    size = [backend.preprocessing.height, backend.preprocessing.width]
    if isinstance(backend, TorchBackend) and backend.architecture is not None:
        model = backend.architecture.network_fields()
        return {"model": model, "input_size": size, "epoch": backend.epoch}
    return {"model": {"format": "onnx"}, "input_size": size, "epoch": None}


def write_plots(
    score: RetrievalScore,
    query_records: list[ImageRecord],
    gallery_records: list[ImageRecord],
    spec: ExperimentSpec,
    out_dir: Path,
    backend: Backend | None = None,
) -> dict[str, Path]:
    from reidnet.evaluation.plots import plot_cmc, plot_sampled_matches

    config, ranking = spec.evaluate, spec.re_ranking
    cmc_path, matches_path = plot_paths(spec, out_dir)
    plot_cmc(
        score.cmc,
        cmc_path,
        title="CMC" + (" (re-ranked)" if score.reranked else ""),
        model=_model_label(backend),
        dataset=_dataset_label(query_records),
        mean_ap=score.metrics["mAP"],
    )
    plot_sampled_matches(
        [str(r.path) for r in query_records],
        [str(r.path) for r in gallery_records],
        score.distmat,
        np.array([r.pid for r in query_records]),
        np.array([r.pid for r in gallery_records]),
        matches_path,
        num_query=min(ranking.num_query, len(query_records)),
        max_rank=min(ranking.max_rank, len(gallery_records)),
        query_camids=np.array([r.camid for r in query_records]),
        gallery_camids=np.array([r.camid for r in gallery_records]),
        same_camera_filter=config.same_camera_filter,
    )
    return {"cmc_curve": cmc_path, "sampled_matches": matches_path}


def plot_paths(spec: ExperimentSpec, out_dir: Path) -> tuple[Path, Path]:
    """The CMC curve and sampled-matches figures evaluate writes."""
    config = spec.evaluate
    return (
        Path(config.output_cmc_curve_plot or out_dir / CMC_CURVE_FILE),
        Path(config.output_sampled_matches_plot or out_dir / SAMPLED_MATCHES_FILE),
    )


def _model_label(backend: Backend | None) -> str | None:
    """'resnet_18 (model_epoch_012.pth)' for a checkpoint, the file name for an ONNX model."""
    if backend is None or backend.model_file is None:
        return None
    name = Path(backend.model_file).name
    if isinstance(backend, TorchBackend) and backend.architecture is not None:
        return f"{backend.architecture.backbone} ({name})"
    return name


def _dataset_label(query_records: list[ImageRecord]) -> str:
    """The dataset root's name (the folder above query/) for Market-1501 layouts."""
    folder = Path(query_records[0].path).resolve().parent
    return folder.parent.name or folder.name


# ---------------------------------------------------------------------------------------------
# inference


@dataclass
class InferenceOutcome:
    json_file: Path
    npy_file: Path
    index_file: Path
    count: int


def inference(
    spec: ExperimentSpec,
    device: str | torch.device | None = None,
    input_dir: str | Path | None = None,
    force: bool = False,
) -> InferenceOutcome:
    """Embed every image; write the reference's JSON, a float32 .npy and a CSV index.

    Embeddings are the model's raw output (not L2-normalised), as in the reference. The model is
    `inference.checkpoint`, or `inference.onnx_file` run by onnxruntime.
    """
    config = spec.inference
    json_file = (
        Path(config.output_file)
        if config.output_file
        else spec.action_results_dir("inference") / INFERENCE_FILE
    )
    outputs = [json_file, json_file.with_suffix(".npy"), json_file.with_suffix(".csv")]
    refuse_overwrite(outputs, "inference", force)
    with run_record(spec, "inference", device, out_dir=json_file.parent):
        backend = action_backend(spec, "inference", device)
        items = inference_records(spec, input_dir, _trained_spec(backend))
        features = embed_for_spec(backend, [r.path for _, r in items], spec)
        return write_embeddings(items, features.numpy().astype(np.float32), json_file)


def inference_records(
    spec: ExperimentSpec, input_dir: str | Path | None, recorded: dict | None = None
) -> list[tuple[str, ImageRecord]]:
    """(subset, record) pairs: every image of `input_dir`, else every query and gallery image."""
    if input_dir is not None:
        folder = Path(input_dir)
        if not folder.is_dir():
            raise ReidnetError(f"--input {folder} is not a folder of images")
        paths = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
        if not paths:
            raise ReidnetError(f"--input {folder} holds no jpg/jpeg/png/bmp image")
        return [("input", ImageRecord(p, -1, -1)) for p in paths]
    query_dir, gallery_dir = query_gallery_folders(spec, "inference", recorded)
    return [("query", r) for r in read_records(query_dir)] + [
        ("gallery", r) for r in read_records(gallery_dir)
    ]


def write_embeddings(
    items: list[tuple[str, ImageRecord]], features: np.ndarray, json_file: Path
) -> InferenceOutcome:
    if len(items) != len(features):
        raise RuntimeError(f"{len(items)} images but {len(features)} embeddings")
    json_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = json_file.with_name(f".{json_file.name}.tmp")
    with full_disk_reported("the embeddings", json_file):
        try:
            with open(temporary, "w") as stream:  # streamed: never one huge string
                stream.write("[\n")
                for i, ((_, record), vector) in enumerate(zip(items, features, strict=True)):
                    entry = {"img_path": str(record.path), "embedding": [float(v) for v in vector]}
                    stream.write(("," if i else "") + json.dumps(entry) + "\n")
                stream.write("]\n")
            os.replace(temporary, json_file)
        finally:
            temporary.unlink(missing_ok=True)
    npy_file, index_file = json_file.with_suffix(".npy"), json_file.with_suffix(".csv")
    with full_disk_reported("the embeddings", npy_file, features.nbytes, atomic=False):
        np.save(npy_file, features)
    with (
        full_disk_reported("the embeddings index", index_file, atomic=False),
        open(index_file, "w", newline="") as stream,
    ):
        writer = csv.writer(stream)
        writer.writerow(["row", "img_path", "subset", "pid", "camid"])
        for row, (subset, record) in enumerate(items):
            writer.writerow([row, record.path, subset, record.pid, record.camid])
    logger.info(
        "wrote %d embeddings to %s (+ %s, %s)",
        len(items),
        json_file,
        npy_file.name,
        index_file.name,
    )
    return InferenceOutcome(json_file, npy_file, index_file, len(items))


# ---------------------------------------------------------------------------------------------
# export


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
    return spec.action_results_dir("export") / ONNX_FILE


def export(spec: ExperimentSpec, force: bool = False) -> ExportOutcome:
    """Export `export.checkpoint` to ONNX (checked, parity-tested) and write the deployment files.

    Existing files at the targets are refused unless `force`.
    """
    from reidnet.deploy.deepstream import deployment_paths, write_deployment_files
    from reidnet.deploy.onnx import export_checkpoint
    from reidnet.runtime import checkpoint as ckpt

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
