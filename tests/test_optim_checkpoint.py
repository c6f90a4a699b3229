"""Learning-rate schedule values, optimizer groups and crash-safe checkpoint writes."""

import pytest
import torch
from torch import nn

from reidnet.config import OptimConfig
from reidnet.engine import checkpoint as ckpt
from reidnet.engine.optim import EpochSchedule, build_optimizer
from reidnet.errors import ReidnetError


@pytest.mark.parametrize(
    ("epoch", "factor"),
    [
        (0, 0.01),  # warm-up starts at warmup_factor
        (5, 0.01 * 0.5 + 0.5),  # halfway: linear between 0.01 and 1
        (10, 1.0),  # warm-up over
        (39, 1.0),
        (40, 0.1),  # first step
        (69, 0.1),
        (70, 0.01),  # second step
        (119, 0.01),
    ],
)
def test_warmup_multistep_factors(epoch, factor):
    assert EpochSchedule(OptimConfig(), 120).factor(epoch) == pytest.approx(factor)


def test_constant_warmup_and_cosine():
    constant = EpochSchedule(OptimConfig(warmup_method="constant"), 120)
    assert constant.factor(3) == pytest.approx(0.01)
    assert constant.factor(10) == pytest.approx(1.0)
    cosine = EpochSchedule(OptimConfig(warmup_method="cosine", warmup_iters=10), 110)
    assert cosine.factor(10) == pytest.approx(1.0)
    assert cosine.factor(60) == pytest.approx(0.5)  # halfway through the 100 decay epochs
    assert cosine.factor(110) == pytest.approx(0.0, abs=1e-12)


def test_bias_parameters_get_their_own_lr_and_decay_and_frozen_ones_are_left_out():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model[1].bias.requires_grad_(False)
    optim = OptimConfig(base_lr=0.1, bias_lr_factor=2, weight_decay=0.01, weight_decay_bias=0.0)
    optimizer = build_optimizer(model, optim)
    weights, biases = optimizer.param_groups
    assert (weights["lr"], weights["weight_decay"], len(weights["params"])) == (0.1, 0.01, 2)
    assert (biases["lr"], biases["weight_decay"], len(biases["params"])) == (0.2, 0.0, 1)
    EpochSchedule(optim, 120).apply(optimizer, 40)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.02])


def test_a_crash_mid_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    target = tmp_path / "reid_model_latest.pth"
    ckpt.atomic_torch_save({"epoch": 1}, target)
    before = target.read_bytes()

    def torn_save(payload, stream):
        stream.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_torch_save({"epoch": 2}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["reid_model_latest.pth"]  # no temp file left


def test_load_checkpoint_errors_name_the_key_and_the_problem(tmp_path):
    with pytest.raises(ReidnetError, match=r"set evaluate\.checkpoint="):
        ckpt.load_checkpoint(None)
    with pytest.raises(ReidnetError, match=r"does not exist: check export\.checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pth", "export.checkpoint")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ReidnetError, match="cannot be read"):
        ckpt.load_checkpoint(tmp_path / "junk.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(ReidnetError, match="not a reidnet checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pth")
