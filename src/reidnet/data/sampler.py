"""P x K identity sampling for metric learning: every batch holds P distinct identities with K
images each, so the batch-hard triplet loss always finds positives and negatives.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler

from reidnet.errors import ReidnetError


class RandomIdentitySampler(Sampler[int]):
    """Yields the dataset indices of P x K batches, reshuffled per epoch and shardable for DDP.

    One epoch, as in the strong baseline: each identity's images are cut into chunks of K
    (identities with fewer than K images get one chunk drawn with replacement; larger ones are
    shuffled and split into full chunks, dropping the remainder), then batches are drawn by
    picking P distinct identities at random among those with chunks left and taking one chunk
    of each, while at least P identities have chunks left. Unlike the baseline, the identities
    left over at the end (fewer than P) are not dropped: they fill one last batch, completed with
    fresh chunks of identities picked at random, so every identity is seen in every epoch.

    ``batch_size`` is the global batch, as in TAO: under DDP every P x K batch is split into
    ``num_replicas`` parts of P / num_replicas whole identities (K images each), one per rank, so
    N processes train on the same batches as one process would. The epoch is a pure function of
    ``(seed, epoch)``; all ranks compute it identically. Call ``set_epoch`` before each epoch, as
    with ``DistributedSampler``.
    """

    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if num_instances < 1 or batch_size < 1 or batch_size % num_instances:
            raise ReidnetError(
                f"dataset.batch_size ({batch_size}) must be a positive multiple of "
                f"dataset.num_instances ({num_instances}): each batch holds "
                f"batch_size / num_instances identities with num_instances images each."
            )
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        if (batch_size // num_instances) % num_replicas:
            raise ReidnetError(
                f"dataset.batch_size {batch_size} is the global batch: "
                f"{batch_size // num_instances} identities x {num_instances} images, which "
                f"{num_replicas} processes cannot share with whole identities. Use a "
                f"dataset.batch_size whose identity count (batch_size / num_instances) is a "
                f"multiple of {num_replicas}, e.g. "
                f"{_round_up(batch_size // num_instances, num_replicas) * num_instances}."
            )
        self.global_batch_size = batch_size
        self.batch_size = batch_size // num_replicas  # this rank's part of each batch
        self.num_instances = num_instances
        self.num_identities_per_batch = batch_size // num_instances
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._indices_by_label: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            self._indices_by_label[int(label)].append(index)
        if len(self._indices_by_label) < self.num_identities_per_batch:
            raise ReidnetError(
                f"a batch needs {self.num_identities_per_batch} distinct identities "
                f"(dataset.batch_size {batch_size} / dataset.num_instances {num_instances}) "
                f"but the training set has {len(self._indices_by_label)}. Lower "
                f"dataset.batch_size or raise dataset.num_instances."
            )
        self._cached: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This rank's part of every batch of the current epoch (``batch_size`` indices each)."""
        if self._cached is None or self._cached[0] != self.epoch:
            all_batches = self._epoch_batches(random.Random(self.seed + self.epoch))
            start = self.rank * self.batch_size  # chunks of K are consecutive in a batch
            share = [batch[start : start + self.batch_size] for batch in all_batches]
            self._cached = (self.epoch, share)
        return self._cached[1]

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return len(self.batches()) * self.batch_size

    def _chunk(self, rng: random.Random, indices: list[int]) -> list[int]:
        """One fresh chunk of K images of an identity."""
        if len(indices) < self.num_instances:
            return rng.choices(indices, k=self.num_instances)
        return rng.sample(indices, self.num_instances)

    def _chunks_of(self, rng: random.Random, indices: list[int]) -> list[list[int]]:
        k = self.num_instances
        if len(indices) < k:
            return [rng.choices(indices, k=k)]
        shuffled = rng.sample(indices, len(indices))
        return [shuffled[start : start + k] for start in range(0, len(shuffled) - k + 1, k)]

    def _epoch_batches(self, rng: random.Random) -> list[list[int]]:
        p = self.num_identities_per_batch
        chunks = {
            label: self._chunks_of(rng, indices)
            for label, indices in self._indices_by_label.items()
        }
        # `available` lists identities with chunks left; `position` allows O(1) removal by
        # swapping with the last entry, which keeps large datasets linear.
        available = list(chunks)
        position = {label: i for i, label in enumerate(available)}
        batches: list[list[int]] = []
        while len(available) >= p:
            batch: list[int] = []
            for label in rng.sample(available, p):
                batch += chunks[label].pop()
                if not chunks[label]:
                    last = available[-1]
                    available[position[label]] = last
                    position[last] = position[label]
                    available.pop()
                    del position[label]
            batches.append(batch)
        if available:
            batches.append(self._last_batch(rng, available, chunks))
        return batches

    def _last_batch(
        self, rng: random.Random, leftover: list[int], chunks: dict[int, list[list[int]]]
    ) -> list[int]:
        batch = [index for label in leftover for index in chunks[label].pop()]
        leftover_labels = set(leftover)
        others = [label for label in self._indices_by_label if label not in leftover_labels]
        for label in rng.sample(others, self.num_identities_per_batch - len(leftover)):
            batch += self._chunk(rng, self._indices_by_label[label])
        return batch


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
