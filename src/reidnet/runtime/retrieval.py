"""Score a model on query/gallery records: features -> distances (re-ranked if asked) -> metrics.

Shared by the evaluate action and validation during training, so both report the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reidnet.config import ExperimentSpec
from reidnet.contracts import Architecture
from reidnet.data.market import ImageRecord
from reidnet.runtime.base import Backend
from reidnet.runtime.embed import embed_images
from reidnet.runtime.torch_backend import TorchBackend


@dataclass
class RetrievalScore:
    metrics: dict[str, Any]
    distmat: np.ndarray
    cmc: np.ndarray
    reranked: bool


def score_retrieval(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    query_records: list[ImageRecord],
    gallery_records: list[ImageRecord],
    spec: ExperimentSpec,
    max_rank: int = 50,
) -> RetrievalScore:
    """mAP, CMC, mINP on L2-normalised features, with k-reciprocal re-ranking when enabled."""
    from reidnet.evaluation import k_reciprocal_rerank, pairwise_distance, rank_metrics

    ranking = spec.re_ranking
    if ranking.re_ranking:
        normalised_query = torch.nn.functional.normalize(query_features.float(), dim=1)
        normalised_gallery = torch.nn.functional.normalize(gallery_features.float(), dim=1)
        distmat = k_reciprocal_rerank(
            normalised_query,
            normalised_gallery,
            k1=ranking.k1,
            k2=ranking.k2,
            lambda_value=ranking.lambda_value,
        )
    else:
        distmat = pairwise_distance(query_features, gallery_features, normalize=True)
    distmat = _as_numpy(distmat)
    result = rank_metrics(
        distmat,
        np.array([r.pid for r in query_records]),
        np.array([r.pid for r in gallery_records]),
        np.array([r.camid for r in query_records]),
        np.array([r.camid for r in gallery_records]),
        max_rank=max_rank,
        same_camera_filter=spec.evaluate.same_camera_filter,
        ap=spec.evaluate.ap,
        query_paths=[str(r.path) for r in query_records],
        gallery_paths=[str(r.path) for r in gallery_records],
    )
    metrics = result.as_dict()
    metrics["re_ranking"] = ranking.re_ranking
    metrics["ap"] = spec.evaluate.ap
    return RetrievalScore(metrics, distmat, np.asarray(result.cmc), ranking.re_ranking)


def embed_for_spec(backend: Backend, paths: list, spec: ExperimentSpec) -> torch.Tensor:
    """Raw features [N, D] of `paths`, batched and read as the spec's dataset section says."""
    return embed_images(
        backend,
        paths,
        batch_size=spec.dataset.val_batch_size,
        num_workers=spec.dataset.num_workers,
    )


def score_backend(
    backend: Backend,
    query_records: list[ImageRecord],
    gallery_records: list[ImageRecord],
    spec: ExperimentSpec,
) -> RetrievalScore:
    """Retrieval metrics of a backend (a model file's, or a network in memory) on query/gallery."""
    features = embed_for_spec(backend, [r.path for r in query_records + gallery_records], spec)
    count = len(query_records)
    return score_retrieval(features[:count], features[count:], query_records, gallery_records, spec)


def score_model(
    model: torch.nn.Module,
    architecture: Architecture,
    query_records: list[ImageRecord],
    gallery_records: list[ImageRecord],
    spec: ExperimentSpec,
    device: torch.device,
) -> RetrievalScore:
    """Retrieval metrics of a network in memory (trained or not), fed as `architecture` says."""
    backend = TorchBackend.for_model(model, architecture, device)
    return score_backend(backend, query_records, gallery_records, spec)


def _as_numpy(matrix) -> np.ndarray:
    if isinstance(matrix, torch.Tensor):
        return matrix.detach().float().cpu().numpy()
    return np.asarray(matrix)
