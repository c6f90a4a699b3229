"""Where a training epoch's batches come from: the sampler's index lists, seeded per epoch, and
the two pipelines that turn them into (images, labels): images decoded once and augmented as
tensors (`gpu`), or a DataLoader of per-image transforms (`dataloader`).

Each epoch's randomness (sampling order, augmentation) is seeded from (seed, epoch), so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have on the CPU.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from reidnet.config import ExperimentSpec
from reidnet.data import gpu
from reidnet.data.dataset import ImageDataset
from reidnet.data.market import TrainSet
from reidnet.data.sampler import RandomIdentitySampler
from reidnet.data.transforms import build_train_transform
from reidnet.training import distributed
from reidnet.training.distributed import DistributedContext
from reidnet.utils.devices import loader_workers
from reidnet.utils.randomness import seed_everything

# Decode threads per node: PIL releases the GIL, so threads scale up to the cores.
MAX_DECODE_THREADS = 16


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch` (0-based) of a run seeded with `seed`."""
    return seed * 1009 + epoch


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch for one epoch; other ranks draw their own augmentations."""
    if seed < 0:
        return
    value = epoch_seed(seed, epoch)
    if rank:
        value = int(np.random.SeedSequence([value, rank]).generate_state(1)[0])
    seed_everything(value)


def decode_threads(local_world_size: int = 1, cpus: int | None = None) -> int:
    """Decode threads for one process: the node's cores (at most 16) shared by its ranks."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(MAX_DECODE_THREADS, cpus) // max(1, local_world_size))


def epoch_batches(
    spec: ExperimentSpec, labels: list[int], dist: DistributedContext, epoch: int
) -> list[list[int]]:
    """This rank's index lists for epoch `epoch`: P x K identity batches, or shuffled slices of
    the global batch for the softmax sampler."""
    data, seed = spec.dataset, max(spec.train.seed, 0)
    if data.sampler == "softmax":
        # The same order on every rank (each takes its own share), whatever their seeds.
        shuffle = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(len(labels), generator=shuffle).tolist()
        size = data.batch_size  # the global batch, as in TAO; each rank takes a slice
        batches = [order[i : i + size] for i in range(0, len(order) - size + 1, size)]
        part = len(batches[0] if batches else order) // dist.world_size
        rank = dist.rank
        return [b[rank * part : (rank + 1) * part] for b in batches or [order]]
    sampler = RandomIdentitySampler(
        labels,
        data.batch_size,
        data.num_instances,
        seed=seed,
        num_replicas=dist.world_size,
        rank=dist.rank,
    )
    sampler.set_epoch(epoch)
    return sampler.batches()


class TrainBatches:
    """Turns an epoch's index lists into (images, labels) batches with the spec's pipeline.

    The gpu pipeline decodes the training images at its first epoch and keeps them.
    """

    def __init__(
        self,
        spec: ExperimentSpec,
        train_set: TrainSet,
        pipeline: str,
        device: torch.device,
        dist: DistributedContext,
        control_group=None,
    ):
        self.spec, self.train_set, self.pipeline = spec, train_set, pipeline
        self.device, self.dist, self.control_group = device, dist, control_group
        self._store: gpu.DecodedImages | None = None

    def source(self, batches: list[list[int]], skip: int):
        """The epoch's batches from step `skip` on (call after `seed_epoch`)."""
        if self.pipeline != "gpu":
            return self._loader(batches[skip:])
        # Drawn from the epoch-seeded generator: a resumed run augments each step as before.
        augment_seed = int(torch.randint(0, 2**62, ()).item())
        store, labels, augment = self._decoded()
        return gpu.DeviceBatches(store, labels, batches, augment, augment_seed, skip)

    def _decoded(self):
        if self._store is None:
            model = self.spec.model
            paths = [r.path for r in self.train_set.records]
            size = (model.input_height, model.input_width)
            threads = decode_threads(self.dist.local_world_size)
            self._store = gpu.load_decoded(
                paths,
                *size,
                self.device,
                memory_share=self.spec.train.gpu_data_memory_share,
                workers=threads,
                verbose=self.dist.is_main,
                decode=lambda: distributed.one_copy_per_node(
                    (len(paths), 3, *size),
                    lambda out: gpu.decode_resized(paths, *size, threads, out=out),
                    self.dist,
                    self.control_group,
                ),
            )
            self._labels = torch.tensor(self.train_set.labels).to(self.device)
            self._augment = gpu.BatchAugment(**augmentation(self.spec))
        return self._store, self._labels, self._augment

    def _loader(self, batches: list[list[int]]) -> DataLoader:
        data = self.spec.dataset
        transform = build_train_transform(**augmentation(self.spec))
        records = self.train_set.records
        dataset = ImageDataset([r.path for r in records], transform, self.train_set.labels)
        workers = loader_workers(data.num_workers)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_seed_worker if workers else None,
            generator=torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item())),
        )


def augmentation(spec: ExperimentSpec) -> dict:
    """The spec's training augmentation, as both pipelines (tensor and per-image) take it."""
    data, model = spec.dataset, spec.model
    return {
        "height": model.input_height,
        "width": model.input_width,
        "pixel_mean": data.pixel_mean,
        "pixel_std": data.pixel_std,
        "flip_prob": data.prob,
        "padding": data.padding,
        "re_prob": data.re_prob,
    }


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
