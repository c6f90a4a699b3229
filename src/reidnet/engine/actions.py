"""The evaluate and inference actions: a trained model scored on, or run over, a set of images.

The CLI and the REST service both call these functions.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from reidnet.config import ExperimentSpec
from reidnet.data.market import ImageRecord, is_image_file, read_records
from reidnet.engine import checkpoint as ckpt
from reidnet.engine.embed import extract_features, resolve_device
from reidnet.engine.record import now_iso, refuse_overwrite, run_record
from reidnet.engine.retrieval import RetrievalScore, score_retrieval
from reidnet.errors import ReidnetError

logger = logging.getLogger(__name__)


@dataclass
class EvaluationOutcome:
    metrics: dict[str, Any]
    results_file: Path
    plots: dict[str, Path] = field(default_factory=dict)


@dataclass
class InferenceOutcome:
    json_file: Path
    npy_file: Path
    index_file: Path
    count: int


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


def embed_paths(
    model: torch.nn.Module,
    architecture: dict,
    paths: list,
    spec: ExperimentSpec,
    device,
    amp: bool = False,
) -> torch.Tensor:
    """Features of `paths` with the checkpoint's input size and normalisation."""
    return extract_features(
        model,
        paths,
        height=architecture["input_height"],
        width=architecture["input_width"],
        pixel_mean=architecture["pixel_mean"],
        pixel_std=architecture["pixel_std"],
        batch_size=spec.dataset.val_batch_size,
        num_workers=spec.dataset.num_workers,
        device=device,
        amp=amp,
    )


class FeatureSource(Protocol):
    """What evaluate and inference embed images with: a checkpoint or an ONNX model."""

    @property
    def model_file(self) -> str: ...

    def embed(self, paths: list, spec: ExperimentSpec) -> torch.Tensor:
        """Raw (not L2-normalised) float32 features [N, D] on the CPU, in the order of paths."""
        ...


@dataclass
class CheckpointFeatures:
    """A PyTorch network with its checkpoint's input size and normalisation."""

    model: torch.nn.Module
    architecture: dict
    device: torch.device
    model_file: str = ""
    amp: bool = False  # bf16 autocast on CUDA (`<action>.amp`); fp32 otherwise
    recorded_spec: dict | None = None  # the spec the checkpoint was trained with
    epoch: int | None = None  # the training epoch the checkpoint was saved at

    def embed(self, paths: list, spec: ExperimentSpec) -> torch.Tensor:
        return embed_paths(self.model, self.architecture, paths, spec, self.device, self.amp)


def feature_source(
    spec: ExperimentSpec, action: str, device: str | torch.device | None = None
) -> FeatureSource:
    """`<action>.onnx_file` or a `.onnx` checkpoint path run by onnxruntime, else the checkpoint."""
    config = getattr(spec, action)
    device = resolve_device(device, config.gpu_id)
    if config.onnx_file or str(config.checkpoint or "").lower().endswith(".onnx"):
        from reidnet.export.runtime import OnnxFeatures

        key = f"{action}.onnx_file" if config.onnx_file else f"{action}.checkpoint"
        if config.onnx_file and config.checkpoint:
            logger.info("%s is set: %s.checkpoint is not used", key, action)
        return OnnxFeatures.load(config.onnx_file or config.checkpoint, spec, device, key)
    checkpoint = ckpt.load_checkpoint(config.checkpoint, f"{action}.checkpoint", spec)
    ckpt.report_spec_disagreements(checkpoint, spec, config.checkpoint)
    model = ckpt.model_from_checkpoint(checkpoint, device)
    return CheckpointFeatures(
        model,
        checkpoint["architecture"],
        device,
        str(config.checkpoint),
        config.amp,
        checkpoint.get("spec"),
        checkpoint.get("epoch"),
    )


def score_features(
    source: FeatureSource,
    query_records: list[ImageRecord],
    gallery_records: list[ImageRecord],
    spec: ExperimentSpec,
) -> RetrievalScore:
    """Retrieval metrics of a feature source on query/gallery records."""
    features = source.embed([r.path for r in query_records + gallery_records], spec)
    count = len(query_records)
    return score_retrieval(features[:count], features[count:], query_records, gallery_records, spec)


def score_model(
    model: torch.nn.Module,
    architecture: dict,
    query_records: list[ImageRecord],
    gallery_records: list[ImageRecord],
    spec: ExperimentSpec,
    device: torch.device,
) -> RetrievalScore:
    """Retrieval metrics of a model (trained or not) on query/gallery records."""
    source = CheckpointFeatures(model, architecture, device)
    return score_features(source, query_records, gallery_records, spec)


def evaluate(
    spec: ExperimentSpec, device: str | torch.device | None = None, force: bool = False
) -> EvaluationOutcome:
    """Score the checkpoint or ONNX model on query/gallery; write results.json and both plots,
    next to the run's record (resolved spec, log, environment). Existing results are refused
    unless `force`."""
    out_dir = spec.action_results_dir("evaluate")
    refuse_overwrite([out_dir / "results.json", *plot_paths(spec, out_dir)], "evaluate", force)
    with run_record(spec, "evaluate", device) as out_dir:
        source = feature_source(spec, "evaluate", device)
        recorded = getattr(source, "recorded_spec", None)
        query_dir, gallery_dir = query_gallery_folders(spec, "evaluate", recorded)
        query_records, gallery_records = read_records(query_dir), read_records(gallery_dir)
        score = score_features(source, query_records, gallery_records, spec)
        results = {
            "checkpoint": source.model_file,
            **describe_source(source),
            "evaluated": now_iso(),
            "query_dataset": str(query_dir),
            "test_dataset": str(gallery_dir),
            "num_query": len(query_records),
            "num_gallery": len(gallery_records),
            **score.metrics,
            "cmc": [float(v) for v in score.cmc],
        }
        results_file = out_dir / "results.json"
        ckpt.atomic_write_text(results_file, json.dumps(results, indent=2))
        plots = write_plots(score, query_records, gallery_records, spec, out_dir, source)
        logger.info(
            "mAP %.4f rank-1 %.4f of %s: %s",
            score.metrics["mAP"],
            score.metrics["rank-1"],
            source.model_file,
            results_file,
        )
    return EvaluationOutcome(score.metrics, results_file, plots)


def describe_source(source: FeatureSource) -> dict[str, Any]:
    """Which model a result came from: its architecture, input size and training epoch."""
    architecture = getattr(source, "architecture", None)
    if architecture is not None:
        model = {key: architecture.get(key) for key in ckpt.ARCHITECTURE_FIELDS}
        size = [architecture["input_height"], architecture["input_width"]]
        return {"model": model, "input_size": size, "epoch": getattr(source, "epoch", None)}
    preprocessing = getattr(source, "preprocessing", None)
    size = [preprocessing.height, preprocessing.width] if preprocessing is not None else None
    return {"model": {"format": "onnx"}, "input_size": size, "epoch": None}


def write_plots(
    score: RetrievalScore,
    query_records: list[ImageRecord],
    gallery_records: list[ImageRecord],
    spec: ExperimentSpec,
    out_dir: Path,
    source: FeatureSource | None = None,
) -> dict[str, Path]:
    from reidnet.evaluation.plots import plot_cmc, plot_sampled_matches

    config, ranking = spec.evaluate, spec.re_ranking
    cmc_path, matches_path = plot_paths(spec, out_dir)
    plot_cmc(
        score.cmc,
        cmc_path,
        title="CMC" + (" (re-ranked)" if score.reranked else ""),
        model=_model_label(source),
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
        Path(config.output_cmc_curve_plot or out_dir / "cmc_curve.png"),
        Path(config.output_sampled_matches_plot or out_dir / "sampled_matches.png"),
    )


def _model_label(source: FeatureSource | None) -> str | None:
    """'resnet_18 (model_epoch_012.pth)' for a checkpoint, the file name for an ONNX model."""
    if source is None or not source.model_file:
        return None
    name = Path(source.model_file).name
    architecture = getattr(source, "architecture", None)
    return f"{architecture['backbone']} ({name})" if architecture else name


def _dataset_label(query_records: list[ImageRecord]) -> str:
    """The dataset root's name (the folder above query/) for Market-1501 layouts."""
    folder = Path(query_records[0].path).resolve().parent
    return folder.parent.name or folder.name


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


def run_inference(
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
        else spec.action_results_dir("inference") / "result.json"
    )
    outputs = [json_file, json_file.with_suffix(".npy"), json_file.with_suffix(".csv")]
    refuse_overwrite(outputs, "inference", force)
    with run_record(spec, "inference", device, out_dir=json_file.parent):
        source = feature_source(spec, "inference", device)
        items = inference_records(spec, input_dir, getattr(source, "recorded_spec", None))
        features = source.embed([r.path for _, r in items], spec).numpy().astype(np.float32)
        return write_embeddings(items, features, json_file)


def write_embeddings(
    items: list[tuple[str, ImageRecord]], features: np.ndarray, json_file: Path
) -> InferenceOutcome:
    if len(items) != len(features):
        raise RuntimeError(f"{len(items)} images but {len(features)} embeddings")
    json_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = json_file.with_name(f".{json_file.name}.tmp")
    with open(temporary, "w") as stream:  # streamed: large sets never build one huge string
        stream.write("[\n")
        for i, ((_, record), vector) in enumerate(zip(items, features, strict=True)):
            entry = {"img_path": str(record.path), "embedding": [float(v) for v in vector]}
            stream.write(("," if i else "") + json.dumps(entry) + "\n")
        stream.write("]\n")
    os.replace(temporary, json_file)
    npy_file, index_file = json_file.with_suffix(".npy"), json_file.with_suffix(".csv")
    np.save(npy_file, features)
    with open(index_file, "w", newline="") as stream:
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
