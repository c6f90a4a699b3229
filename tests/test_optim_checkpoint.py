"""Learning-rate schedule values, optimizer groups and crash-safe checkpoint writes."""

import errno
import math
import os
import shutil

import pytest
import torch
from torch import nn

from reidnet.config import OptimConfig
from reidnet.errors import ReidnetError
from reidnet.runtime import checkpoint as ckpt
from reidnet.training.optim import EpochSchedule, build_optimizer
from reidnet.utils.atomic import atomic_torch_save


# TAO and the strong baseline step WarmupMultiStepLR once before epoch 1, so epoch n (1-based)
# runs at last_epoch = n: factor 0.01 * (1 - n/10) + n/10 during warm-up, x0.1 from epoch 40.
@pytest.mark.parametrize(
    ("epoch", "factor"),
    [
        (1, 0.109),  # 0.01 * 0.9 + 0.1
        (2, 0.208),  # 0.01 * 0.8 + 0.2
        (5, 0.505),
        (9, 0.901),
        (10, 1.0),  # warm-up over at epoch 10
        (39, 1.0),
        (40, 0.1),  # first drop at epoch 40
        (69, 0.1),
        (70, 0.01),  # second drop at epoch 70
        (120, 0.01),
    ],
)
def test_warmup_multistep_factors_are_indexed_as_tao(epoch, factor):
    assert EpochSchedule(OptimConfig(), 120).factor(epoch) == pytest.approx(factor)


def test_constant_warmup():
    constant = EpochSchedule(OptimConfig(warmup_method="constant"), 120)
    assert constant.factor(3) == pytest.approx(0.01)
    assert constant.factor(10) == pytest.approx(1.0)


def test_cosine_is_taos_schedule_with_its_own_warmup():
    """TAO's CosineLRScheduler: epoch n at t = n - 1; warm-up from 0.01 x base_lr over
    warmup_epochs, then lr_min + (lr - lr_min)(1 + cos(pi t / T)) / 2, lr_min = 0.002 x base_lr."""
    optim = OptimConfig(warmup_method="cosine", base_lr=1.0, warmup_epochs=4)
    cosine = EpochSchedule(optim, 100)
    assert cosine.lr(1.0, 1) == pytest.approx(0.01)  # t = 0: warmup_lr_init
    assert cosine.lr(1.0, 3) == pytest.approx(0.01 + 2 * 0.99 / 4)  # t = 2
    assert cosine.lr(1.0, 5) == pytest.approx(0.002 + 0.998 * 0.5 * (1 + math.cos(0.04 * math.pi)))
    assert cosine.lr(1.0, 51) == pytest.approx(0.002 + 0.998 * 0.5)  # t = 50: halfway
    # A group with its own lr (bias_lr_factor, large_fc_lr) shares the absolute start and floor.
    assert cosine.lr(2.0, 1) == pytest.approx(0.01)
    assert cosine.lr(2.0, 51) == pytest.approx(0.002 + 1.998 * 0.5)


def test_large_fc_lr_gives_the_classifier_twice_the_base_lr():
    model = nn.Module()
    model.backbone = nn.Linear(3, 2, bias=False)
    model.classifier = nn.Linear(2, 5, bias=False)
    optimizer = build_optimizer(model, OptimConfig(base_lr=0.1, large_fc_lr=True))
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lrs[id(model.classifier.weight)] == pytest.approx(0.2)
    assert lrs[id(model.backbone.weight)] == pytest.approx(0.1)
    plain = build_optimizer(model, OptimConfig(base_lr=0.1))
    assert {g["lr"] for g in plain.param_groups} == {0.1}


def test_bias_parameters_get_their_own_lr_and_decay_and_frozen_ones_are_left_out():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model[1].bias.requires_grad_(False)
    optim = OptimConfig(base_lr=0.1, bias_lr_factor=2, weight_decay=0.01, weight_decay_bias=0.0)
    optimizer = build_optimizer(model, optim)
    weights, biases = optimizer.param_groups
    assert (weights["lr"], weights["weight_decay"], len(weights["params"])) == (0.1, 0.01, 2)
    assert (biases["lr"], biases["weight_decay"], len(biases["params"])) == (0.2, 0.0, 1)
    EpochSchedule(optim, 120).apply(optimizer, 40)  # epoch 40: the first at x0.1
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.02])


def test_a_crash_mid_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    target = tmp_path / "reid_model_latest.pth"
    atomic_torch_save({"epoch": 1}, target)
    before = target.read_bytes()

    def torn_save(payload, stream):
        stream.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"epoch": 2}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["reid_model_latest.pth"]  # no temp file left


def _disk_full(code: int):
    def save(payload, stream):
        stream.write(b"part of a checkpoint")
        raise OSError(code, os.strerror(code))

    return save


def _disk_full_as_torch_reports_it(payload, stream):
    """torch.save's zip writer, handling the OSError of a full disk, raises its own error."""
    stream.write(b"part of a checkpoint")
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from None


@pytest.mark.parametrize(
    ("save", "problem"),
    [
        (_disk_full(errno.ENOSPC), "no space left"),
        (_disk_full_as_torch_reports_it, "no space left"),
        (_disk_full(errno.EDQUOT), "disk quota exceeded"),
    ],
)
def test_a_full_disk_names_the_write_its_size_and_the_free_space(
    tmp_path, monkeypatch, save, problem
):
    target = tmp_path / "reid_model_latest.pth"
    atomic_torch_save({"epoch": 1, "model": {"w": torch.ones(3)}}, target)
    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(9, 8, 1_500_000))
    payload = {"epoch": 2, "model": {"w": torch.zeros(1_000_000)}}  # 4,000,000 bytes of float32
    with pytest.raises(ReidnetError) as caught:
        atomic_torch_save(payload, target, "the epoch-2 resume checkpoint")
    assert str(caught.value) == (
        f"{problem} writing the epoch-2 resume checkpoint (reid_model_latest.pth): it needed "
        f"about 4.0 MB, 1.5 MB free on the file system of {tmp_path}; any earlier "
        "reid_model_latest.pth is intact; free some space there and run again"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["reid_model_latest.pth"]  # no temp file left
    monkeypatch.undo()
    previous = torch.load(target, weights_only=True)
    assert previous["epoch"] == 1 and torch.equal(previous["model"]["w"], torch.ones(3))


def test_load_checkpoint_errors_name_the_key_and_the_problem(tmp_path):
    with pytest.raises(ReidnetError, match=r"set evaluate\.checkpoint="):
        ckpt.load_checkpoint(None)
    with pytest.raises(ReidnetError, match=r"does not exist: check export\.checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pth", "export.checkpoint")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ReidnetError, match="cannot be read"):
        ckpt.load_checkpoint(tmp_path / "junk.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(ReidnetError, match="neither a reidnet checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pth")


def test_unreadable_checkpoints_get_one_short_message(tmp_path):
    """Neither PyTorch's weights_only advice ("re-running with weights_only=False will likely
    succeed", wrong for a damaged or foreign file) nor its miniz paragraph reach the user."""
    import pickle

    truncated = tmp_path / "truncated.pth"
    torch.save({"x": torch.zeros(64)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    foreign = tmp_path / "foreign.pth"
    torch.save({"x": pickle.UnpicklingError("any class at all")}, foreign)
    for path in (truncated, foreign):
        with pytest.raises(ReidnetError) as caught:
            ckpt.load_checkpoint(path, "evaluate.checkpoint")
        message = str(caught.value)
        assert str(path) in message and "weights_only" not in message
        assert "internal miniz error" not in message and len(message) < 400, message
