"""Training under torchrun: the environment read right, `reidnet train` launching torchrun when
asked for several GPUs, and two CPU processes (gloo) training one model with DDP: one set of
outputs, validation on features gathered from both ranks, resume, and the loss of a single
process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from reidnet.contracts import LATEST_CHECKPOINT, Architecture
from reidnet.runtime import checkpoint as ckpt
from reidnet.runtime.retrieval import score_model
from reidnet.training import distributed
from reidnet.training.trainer import TrainingRun, train
from tiny_training import TINY, tiny_spec

GLOBAL_BATCH = 32
EPOCHS = 2


def test_torchrun_environment_gives_ranks_and_shares(monkeypatch):
    for name, value in {"RANK": 3, "WORLD_SIZE": 8, "LOCAL_RANK": 1, "LOCAL_WORLD_SIZE": 4}.items():
        monkeypatch.setenv(name, str(value))
    context = distributed.torchrun_context()
    assert (context.rank, context.local_rank, context.world_size) == (3, 1, 8)
    assert context.enabled and not context.is_main
    assert list(distributed.shard(20, context)) == [3, 11, 19]


def test_outside_torchrun_a_process_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    context = distributed.torchrun_context()
    assert (context.world_size, context.is_main, context.enabled) == (1, True, False)
    assert distributed.process_device(context, [0], "cpu") == torch.device("cpu")


def test_several_gpus_on_one_machine_relaunch_under_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    argv = ["train", "-e", "spec.yaml", "train.num_gpus=4"]
    command = distributed.torchrun_relaunch(4, 1, argv)
    assert command[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
        "-m",
        "reidnet",
        *argv,
    ]
    assert distributed.torchrun_relaunch(1, 1, argv) is None  # one GPU: train in this process
    assert distributed.torchrun_relaunch(4, 2, argv) is None  # nodes: torchrun on each machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.torchrun_relaunch(4, 1, argv) is None  # too few GPUs: a warning instead
    monkeypatch.setenv("RANK", "0")
    assert distributed.torchrun_relaunch(2, 1, argv) is None  # already under torchrun


def write_spec(data: Path, results: Path, path: Path) -> Path:
    raw = json.loads(json.dumps(TINY))
    raw["results_dir"] = str(results)
    raw["dataset"].update(
        train_dataset_dir=str(data / "bounding_box_train"),
        test_dataset_dir=str(data / "bounding_box_test"),
        query_dataset_dir=str(data / "query"),
        batch_size=GLOBAL_BATCH,  # the global batch, split between the processes
    )
    raw["train"].update(num_epochs=EPOCHS, validation_interval=EPOCHS)
    path.write_text(yaml.safe_dump(raw))
    return path


def torchrun(spec: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port: parallel test runs do not collide
        "--nproc_per_node",
        "2",
        "-m",
        "reidnet",
        "train",
        "-e",
        str(spec),
        *overrides,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=environment, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def metrics_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_train_once_and_like_one_process(synthetic, tmp_path):
    results = tmp_path / "ddp"
    spec_file = write_spec(synthetic, results, tmp_path / "spec.yaml")
    done = torchrun(spec_file)
    assert done.stdout.count("checkpoint:") == 1  # rank 0 alone reports
    out = results / "train"
    assert sorted(p.name for p in out.glob("*.pth")) == [
        "model_epoch_001.pth",
        "model_epoch_002.pth",
        "reid_model_best.pth",
        "reid_model_latest.pth",
    ]
    lines = metrics_lines(out)
    assert [line["epoch"] for line in lines] == [1, 2]  # written once, not once per rank
    assert json.loads((out / "status.json").read_text())["state"] == "done"

    # Validation on features gathered from both ranks equals a single-process evaluation of the
    # checkpoint written right after it.
    saved = ckpt.load_checkpoint(out / f"model_epoch_{EPOCHS:03d}.pth")
    spec = tiny_spec(synthetic, tmp_path / "single")
    run = TrainingRun(spec)
    model = ckpt.model_from_checkpoint(saved)
    single = score_model(
        model,
        Architecture.from_checkpoint(saved),
        run.query_records,
        run.gallery_records,
        spec,
        run.device,
    ).metrics
    for key in ("mAP", "rank-1", "mINP"):
        assert lines[-1]["validation"][key] == pytest.approx(single[key], abs=1e-3), key

    # One process, the same global batch: the same number of steps and a comparable loss.
    alone = train(
        tiny_spec(
            synthetic,
            tmp_path / "one",
            f"dataset.batch_size={GLOBAL_BATCH}",
            f"train.num_epochs={EPOCHS}",
            f"train.validation_interval={EPOCHS}",
        )
    ).history
    assert [h["steps"] for h in alone] == [line["steps"] for line in lines]
    for both in (alone, lines):
        assert both[-1]["loss_total"] < both[0]["loss_total"]
    assert lines[-1]["loss_total"] == pytest.approx(alone[-1]["loss_total"], rel=0.15)

    # Resuming under torchrun continues from the latest checkpoint.
    torchrun(spec_file, f"train.num_epochs={EPOCHS + 1}")
    assert [line["epoch"] for line in metrics_lines(out)] == [1, 2, 3]
    assert ckpt.load_checkpoint(out / LATEST_CHECKPOINT)["epoch"] == EPOCHS + 1
