"""Multi-GPU and multi-node training on PyTorch's own engine: torchrun starts one process per GPU
and DDP averages the gradients. This module reads torchrun's environment, picks each process's
device, starts the process group (NCCL on GPUs, gloo on CPUs) and holds the few collectives the
trainer needs. A process not started by torchrun is a world of one and nothing here talks.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job: global rank, rank on its node, number of processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs, metrics and status."""
        return self.rank == 0


def torchrun_context() -> DistributedContext:
    """The context torchrun's environment variables describe (a world of one without them)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistributedContext()
    world_size = int(os.environ["WORLD_SIZE"])
    return DistributedContext(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=world_size,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world_size)),
    )


def process_device(
    context: DistributedContext, gpu_ids: list[int], requested: str | torch.device | None = None
) -> torch.device:
    """This process's device: the requested one, else `cuda:gpu_ids[local_rank]` (`train.gpu_ids`
    lists the GPUs of a node, one per process), else the CPU when there is no GPU."""
    if requested is not None:
        return torch.device(requested)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if context.local_rank < len(gpu_ids):
        return torch.device(f"cuda:{gpu_ids[context.local_rank]}")
    if context.local_rank == len(gpu_ids):  # the first process beyond the list says it once
        logger.warning(
            "train.gpu_ids lists %d GPU(s) but torchrun started %d processes per node: "
            "process i uses cuda:i (set train.num_gpus and train.gpu_ids to match "
            "--nproc_per_node)",
            len(gpu_ids),
            context.local_world_size,
        )
    return torch.device(f"cuda:{context.local_rank}")


def start(context: DistributedContext, device: torch.device) -> bool:
    """Join the process group (NCCL for CUDA, gloo for the CPU); True if this call started it."""
    if not context.enabled or dist.is_initialized():
        return False
    # Generous timeout: the other ranks wait while rank 0 scores a validation (re-ranking a
    # large gallery takes minutes).
    timeout = timedelta(minutes=30)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    logger.debug(
        "rank %d of %d joined the process group on %s", context.rank, context.world_size, device
    )
    return True


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def control_group(device: torch.device):
    """A gloo group for small host-side agreements (stop requests): on GPUs it spares the CUDA
    stream a synchronisation; on CPUs the default group is already gloo."""
    return dist.new_group(backend="gloo") if device.type == "cuda" else None


def any_rank(flag: bool, group=None) -> bool:
    """True on every rank when `flag` is true on at least one (a collective: all ranks call it)."""
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
    return bool(value.item())


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), which each rank updated
    with its own batches since DDP last synchronised them."""
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of parameters that DDP does not own (the center-loss centers)."""
    world = dist.get_world_size()
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad.div_(world)


def average_(values: torch.Tensor) -> torch.Tensor:
    """In place: the mean of `values` over the ranks."""
    dist.all_reduce(values)
    return values.div_(dist.get_world_size())


def minimum_(values: torch.Tensor) -> torch.Tensor:
    """In place: the minimum of `values` over the ranks."""
    dist.all_reduce(values, op=dist.ReduceOp.MIN)
    return values


def shard(count: int, context: DistributedContext) -> range:
    """The positions of `count` items this rank handles: rank, rank + world, ..."""
    return range(context.rank, count, context.world_size)


def gather_shards(
    local_rows: torch.Tensor, count: int, context: DistributedContext, device: torch.device
) -> torch.Tensor:
    """Reassemble [count, D] rows computed shard by shard (`shard`) on every rank, in order.

    Every rank receives the whole matrix on the CPU. Shards differ by at most one row; they are
    padded to the same length for all_gather.
    """
    longest = -(-count // context.world_size)
    padded = torch.zeros((longest, *local_rows.shape[1:]), dtype=local_rows.dtype, device=device)
    padded[: local_rows.shape[0]] = local_rows.to(device)
    gathered = [torch.empty_like(padded) for _ in range(context.world_size)]
    dist.all_gather(gathered, padded)
    result = torch.empty((count, *local_rows.shape[1:]), dtype=local_rows.dtype)
    for rank, rows in enumerate(gathered):
        positions = range(rank, count, context.world_size)
        result[rank :: context.world_size] = rows[: len(positions)].cpu()
    return result


def broadcast_object(value, context: DistributedContext, group=None):
    """Rank 0's `value` on every rank."""
    holder = [value if context.is_main else None]
    dist.broadcast_object_list(holder, src=0, group=group)
    return holder[0]


SHARED_MEMORY = Path("/dev/shm")


def one_copy_per_node(
    shape: tuple[int, ...],
    fill: Callable[[torch.Tensor], None],
    context: DistributedContext,
    group=None,
    shared_memory: Path = SHARED_MEMORY,
) -> torch.Tensor:
    """A uint8 CPU tensor of `shape` that `fill` writes, held once per machine.

    Under torchrun with several processes on a machine, its local rank 0 fills a file in
    shared memory (/dev/shm) and the machine's other ranks map the same pages, so a decoded
    training set costs one copy of host memory and one decode per node, not one per GPU. The
    file is unlinked as soon as every rank has mapped it: nothing stays behind in /dev/shm, even
    when the run is killed later. Where /dev/shm has no room for it (Docker gives 64 MB unless
    run with --shm-size), each rank fills a private copy, with a warning. A collective: every
    rank calls it; `group` is a gloo group (`control_group`) where the default one is NCCL.
    """
    size = math.prod(shape)
    if not context.enabled or context.local_world_size == 1:
        private = torch.empty(shape, dtype=torch.uint8)
        fill(private)
        return private
    name = broadcast_object(f"reidnet-{uuid.uuid4().hex}.u8", context, group)
    try:
        room = shutil.disk_usage(shared_memory).free
    except OSError:
        room = 0
    if not any_rank(room < size * 1.02 + 2**26, group):  # every rank takes the same path
        path = shared_memory / name
        if context.local_rank == 0:
            fill(torch.from_file(str(path), shared=True, size=size, dtype=torch.uint8).view(shape))
        dist.barrier(group=group)
        mapped = torch.from_file(str(path), shared=True, size=size, dtype=torch.uint8)
        dist.barrier(group=group)
        if context.local_rank == 0:
            path.unlink(missing_ok=True)
        if context.is_main:
            logger.info(
                "one %.2f GB copy per machine, shared by its %d processes through %s",
                size / 1e9,
                context.local_world_size,
                shared_memory,
            )
        return mapped.view(shape)
    if context.is_main:
        logger.warning(
            "%s has %.1f GB free, too little for one shared %.1f GB copy of the decoded images: "
            "each of the %d processes on a machine decodes and holds its own (give the "
            "container more shared memory, e.g. docker run --shm-size)",
            shared_memory,
            room / 1e9,
            size / 1e9,
            context.local_world_size,
        )
    private = torch.empty(shape, dtype=torch.uint8)
    fill(private)
    return private


def torchrun_relaunch(num_gpus: int, num_nodes: int, argv: list[str]) -> list[str] | None:
    """The torchrun command that runs `argv` (reidnet's arguments) on `num_gpus` GPUs of this
    machine, or None when this process should train itself: already under torchrun, one GPU,
    several nodes (each node runs torchrun itself), or fewer GPUs than asked for."""
    if num_gpus < 2 or num_nodes > 1 or "RANK" in os.environ:
        return None
    if torch.cuda.device_count() < num_gpus:
        return None
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={num_gpus}",
        "-m",
        "reidnet",
        *argv,
    ]
