"""The decoded training set held once per machine under torchrun: two gloo processes share one
file-backed copy that only local rank 0 decodes, and fall back to private copies when shared
memory has no room."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from imagefiles import write_image
from live_server import free_port
from reidnet.data.gpu import decode_resized
from reidnet.training.distributed import DistributedContext, one_copy_per_node

SHAPE_HW = (16, 8)


def _rank(rank: int, port: int, paths: list[str], shared: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        context = DistributedContext(rank=rank, local_rank=rank, world_size=2, local_world_size=2)

        def fill(tensor: torch.Tensor) -> None:
            (Path(out) / f"filled-by-{rank}").touch()
            decode_resized(paths, *SHAPE_HW, workers=1, out=tensor)

        images = one_copy_per_node(
            (len(paths), 3, *SHAPE_HW), fill, context, shared_memory=Path(shared)
        )
        torch.save(images.clone(), Path(out) / f"images-{rank}.pt")
        dist.barrier()
        if rank == 0:  # a write by one rank after the file is gone shows in the other's tensor
            images[0, 0, 0, 0] = 255 - int(images[0, 0, 0, 0])
        dist.barrier()
        (Path(out) / f"first-{rank}").write_text(str(int(images[0, 0, 0, 0])))
    finally:
        dist.destroy_process_group()


def _run_two_ranks(tmp_path: Path, shared: Path) -> tuple[list[str], Path]:
    paths = [
        str(write_image(tmp_path / "img" / f"{i}.jpg", seed=i, size=(20, 12))) for i in range(5)
    ]
    out = tmp_path / "out"
    out.mkdir()
    mp.start_processes(
        _rank,
        args=(free_port(), paths, str(shared), str(out)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    return paths, out


def test_one_rank_decodes_into_shared_memory_that_both_map_and_nothing_stays(tmp_path):
    shared = tmp_path / "shm"
    shared.mkdir()
    paths, out = _run_two_ranks(tmp_path, shared)
    expected = decode_resized(paths, *SHAPE_HW)
    for rank in (0, 1):
        assert torch.equal(torch.load(out / f"images-{rank}.pt"), expected)
    assert sorted(p.name for p in out.glob("filled-by-*")) == ["filled-by-0"]
    assert list(shared.iterdir()) == []  # unlinked once both had mapped it
    assert (out / "first-0").read_text() == (out / "first-1").read_text()  # the same pages
    assert (out / "first-1").read_text() == str(255 - int(expected[0, 0, 0, 0]))


def test_without_room_in_shared_memory_each_rank_decodes_its_own_copy(tmp_path):
    paths, out = _run_two_ranks(tmp_path, tmp_path / "no-such-shm")
    expected = decode_resized(paths, *SHAPE_HW)
    assert sorted(p.name for p in out.glob("filled-by-*")) == ["filled-by-0", "filled-by-1"]
    for rank in (0, 1):
        assert torch.equal(torch.load(out / f"images-{rank}.pt"), expected)
    # private copies: rank 0's write does not reach rank 1
    assert (out / "first-1").read_text() == str(int(expected[0, 0, 0, 0]))


def test_a_single_process_fills_a_private_tensor():
    calls = []
    tensor = one_copy_per_node(
        (2, 3), lambda t: (calls.append(1), t.fill_(7)), DistributedContext()
    )
    assert calls == [1] and torch.equal(tensor, torch.full((2, 3), 7, dtype=torch.uint8))
