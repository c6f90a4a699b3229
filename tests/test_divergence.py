"""A diverging run on the tiny synthetic set: a non-finite loss stops training with one message
and leaves the last good checkpoint alone; a loss grown a thousandfold is warned about once
(issue 30, item 10)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import yaml

from cli_process import run_reidnet, user_error
from reidnet.actions import train
from reidnet.runtime import checkpoint as ckpt
from tiny_training import TINY, tiny_spec


@pytest.mark.slow
def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(synthetic, tmp_path):
    raw = json.loads(json.dumps(TINY))
    raw["dataset"].update(
        train_dataset_dir=str(synthetic / "bounding_box_train"),
        test_dataset_dir=str(synthetic / "bounding_box_test"),
        query_dataset_dir=str(synthetic / "query"),
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    # Epoch 1 trains at base_lr 0.001; from epoch 2 on, gamma makes the learning rate 1e24. Step 1
    # of epoch 2 still sees epoch 1's weights; its update overflows every later forward.
    overrides = ["train.optim.lr_steps=[2]", "train.optim.gamma=1e27", f"results_dir={tmp_path}"]
    message = user_error(run_reidnet("train", "-e", str(spec_file), *overrides, timeout=900))
    assert (
        "training stopped: the loss became non-finite at epoch 2, step 2 (the epoch's mean loss "
        "is nan, its learning rate 1e+24); lower train.optim.base_lr (now 0.001). Nothing of "
        "epoch 2 was written; the latest checkpoint, "
    ) in message
    assert "distmat" not in message  # stopped before validating NaN features
    folder = tmp_path / "train"
    assert sorted(p.name for p in folder.glob("*.pth")) == [
        "model_epoch_001.pth",
        "reid_model_best.pth",
        "reid_model_latest.pth",
    ]
    latest = ckpt.load_checkpoint(folder / "reid_model_latest.pth")
    assert latest["epoch"] == 1
    assert all(torch.isfinite(w).all() for w in latest["model"].values() if w.is_floating_point())
    assert [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").open()] == [1]


def diverging(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the loss is diverging" in r.getMessage()]


@pytest.mark.slow
def test_a_loss_grown_a_thousandfold_is_warned_about_once_and_a_healthy_loss_is_not(
    synthetic, tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="reidnet.training.trainer")
    train(tiny_spec(synthetic, tmp_path / "healthy", "train.validation_interval=100"))
    assert diverging(caplog) == []
    # base_lr 1e6 (as on the quick start) stays finite: the first step's loss is about
    # 6.8 (cross-entropy near ln 16 identities, the triplet loss near 4), epoch 1's mean 1e14.
    train(tiny_spec(synthetic, tmp_path / "blown", "train.optim.base_lr=1e6"))
    warnings = diverging(caplog)
    assert len(warnings) == 1, warnings  # two diverged epochs, one warning
    assert "epoch 1's mean loss" in warnings[0]
    assert "lower train.optim.base_lr (now 1e+06)" in warnings[0]
