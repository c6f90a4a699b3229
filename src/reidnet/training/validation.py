"""Validation during training: retrieval metrics on the spec's query and gallery.

With the gpu pipeline the query and gallery images are decoded once and kept in host memory;
each validation copies them to the device batch by batch, so between validations they take no
GPU memory from training. Under torchrun every rank embeds its share and rank 0 scores them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from reidnet.data import gpu
from reidnet.runtime.embed import extract_features
from reidnet.runtime.retrieval import score_retrieval
from reidnet.training import distributed
from reidnet.training.batches import decode_threads
from reidnet.training.parts import RunParts
from reidnet.utils.devices import autocast_for

# On CUDA validation embeds at least this many images per forward: eval keeps no activations
# for a backward pass, so large batches cost little memory and keep the GPU busy.
CUDA_EVAL_BATCH = 512


class Validator:
    def __init__(self, parts: RunParts):
        self.parts = parts
        self._decoded: gpu.DecodedImages | None = None

    def __call__(self) -> dict[str, Any]:
        """The metrics of the current weights; every rank returns them."""
        parts, dist = self.parts, self.parts.dist
        if dist.enabled:
            distributed.broadcast_buffers(parts.model)  # every rank embeds with rank 0's BN stats
        records = parts.query_records + parts.gallery_records
        positions = distributed.shard(len(records), dist)
        features = self._features([records[i].path for i in positions])
        if dist.enabled:
            features = distributed.gather_shards(features, len(records), dist, parts.device)
        metrics = None
        if dist.is_main:
            count = len(parts.query_records)
            score = score_retrieval(
                features[:count],
                features[count:],
                parts.query_records,
                parts.gallery_records,
                parts.spec,
            )
            metrics = score.metrics
        if dist.enabled:
            metrics = distributed.broadcast_object(metrics, dist)
        return metrics

    def _features(self, paths: list[Path]) -> torch.Tensor:
        parts = self.parts
        model, data = parts.spec.model, parts.spec.dataset
        batch_size = data.val_batch_size
        if parts.device.type == "cuda":
            batch_size = max(batch_size, CUDA_EVAL_BATCH)
        if parts.pipeline != "gpu":
            return extract_features(
                parts.model,
                paths,
                height=model.input_height,
                width=model.input_width,
                pixel_mean=data.pixel_mean,
                pixel_std=data.pixel_std,
                batch_size=batch_size,
                num_workers=data.num_workers,
                device=parts.device,
                amp=parts.spec.train.amp,
            )
        if self._decoded is None:
            self._decoded = gpu.load_decoded(
                paths,
                model.input_height,
                model.input_width,
                parts.device,
                placement="host",
                workers=decode_threads(parts.dist.local_world_size),
                what="query and gallery images",
                verbose=parts.dist.is_main,
            )
        return gpu.embed_decoded(
            parts.model,
            self._decoded,
            gpu.Normalize(data.pixel_mean, data.pixel_std),
            batch_size,
            lambda: autocast_for(parts.device, parts.spec.train.amp),
        )
